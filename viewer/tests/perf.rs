//! Open time and frame time, and live re-selection time. The 32k benchmarks (24 layers x 14 heads,
//! 512 x 512 maps; one layer of 14 heads with captured Q/K/V for live re-selection) are ignored by
//! default: `cargo test -p attnscope-viewer --release --test perf -- --ignored --nocapture 32k`.
//! Small synthetic bundles check the same paths on every run.

mod common;

use std::time::{Duration, Instant};

use attnscope_analysis::registry;
use attnscope_viewer::app::{OpenOptions, ViewerApp};
use attnscope_viewer::bench::headless_pan_zoom;
use attnscope_viewer::data::RunData;
use attnscope_viewer::live::{compute_once, LiveBudget, LiveRequest, LiveResult, LiveSource};
use attnscope_viewer::synthetic::{self, Spec};
use attnscope_viewer::views;

fn head_map() -> OpenOptions {
    OpenOptions {
        view: views::find(views::head_map::NAME),
        ..OpenOptions::default()
    }
}

/// The benchmark bundle of `spec`: in the folder `keep_env` names when set (written there once,
/// then reused), else in a temporary folder (returned so that it lives as long as the test).
/// Returns the folder and its size in bytes.
fn bench_bundle(
    keep_env: &str,
    spec: &Spec,
    what: &str,
) -> (tempfile::TempDir, std::path::PathBuf, u64) {
    let keep = std::env::var_os(keep_env).map(std::path::PathBuf::from);
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = keep.unwrap_or_else(|| tmp.path().join("run"));
    if !dir.join("manifest.json").is_file() {
        let t = Instant::now();
        synthetic::write(&dir, spec).expect("write");
        eprintln!(
            "wrote the synthetic {what} bundle in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
    let bytes: u64 = std::fs::read_dir(&dir)
        .expect("dir")
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    (tmp, dir, bytes)
}

#[test]
fn small_synthetic_bundle_opens_pans_and_zooms() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("run");
    synthetic::write(&dir, &Spec::small()).expect("write");
    let mut app = ViewerApp::open_now(&dir, head_map());
    let run = &app.loaded().expect("opens").run;
    assert_eq!(run.layers.len(), 3);
    assert_eq!(run.head(0, 1, 2).map(|h| h.n_blocks), Some(16));
    let (stats, moved) = headless_pan_zoom(&mut app, 120, egui::vec2(1280.0, 820.0));
    eprintln!("small synthetic bundle, headless: {stats}; view changed in {moved} frames");
    assert_eq!(stats.frames, 120);
    assert!(
        moved > 60,
        "the script panned and zoomed ({moved} frames moved)"
    );
}

#[test]
#[ignore = "benchmark: writes a ~400 MB bundle; run with --release --ignored --nocapture"]
fn viewer_32k_open_and_frame_time() {
    let spec = Spec::qwen_32k();
    let (_tmp, dir, bytes) = bench_bundle("ATTNSCOPE_VIEWER_BENCH_DIR", &spec, "32k");
    // Open as the app does: background thread, the first frame drawn once the small tables
    // are in, then the maps and selections.
    let t = Instant::now();
    let mut app = ViewerApp::new(Some(dir.clone()), head_map());
    app.wait_loaded(Duration::from_secs(120), false);
    let ctx = egui::Context::default();
    let input = egui::RawInput {
        screen_rect: Some(egui::Rect::from_min_size(
            egui::Pos2::ZERO,
            egui::vec2(1400.0, 900.0),
        )),
        ..Default::default()
    };
    let mut out = ctx.run_ui(input, |ui| app.ui(ui));
    out.textures_delta.clear();
    let _ = ctx.tessellate(out.shapes, out.pixels_per_point);
    let first_frame_s = t.elapsed().as_secs_f64();
    app.wait_loaded(Duration::from_secs(120), true);
    let all_s = t.elapsed().as_secs_f64();
    let run = &app.loaded().expect("opens").run;
    eprintln!(
        "32k bundle ({:.0} MB, {} layers x {} heads, {} x {} maps): first frame {:.2} s \
         (small tables {:.2} s), maps and selections in at {:.2} s (read {:.2} s)",
        bytes as f64 / 1e6,
        run.layers.len(),
        run.n_heads,
        spec.n_tokens / spec.block,
        spec.n_tokens / spec.block,
        first_frame_s,
        run.load_seconds,
        all_s,
        run.heavy_seconds
    );
    assert_eq!(run.heavy, attnscope_viewer::data::Heavy::Ready);
    let (stats, moved) = headless_pan_zoom(&mut app, 360, egui::vec2(1400.0, 900.0));
    eprintln!("32k head map pan/zoom, headless (egui pass + tessellation): {stats}; view changed in {moved} frames");
    assert!(moved > 180);
    // Overview of all 336 heads.
    app.current = views::find(views::overview::NAME).unwrap_or(0);
    let (ov, _) = headless_pan_zoom(&mut app, 120, egui::vec2(1400.0, 900.0));
    eprintln!("32k overview (336 cells), headless: {ov}");
}

/// The request the live view sends for `method` with its default parameters (`lambda` replaced
/// when given), as its controls do.
fn live_request(method: &str, lambda: Option<f64>, sparsity: f64) -> LiveRequest {
    let info = registry::find(method).expect("registered");
    LiveRequest {
        input: 0,
        layer: 0,
        method: method.into(),
        overrides: info
            .params
            .iter()
            .map(|p| {
                let v = match lambda {
                    Some(l) if p.name == "lambda" => l,
                    _ => p.default,
                };
                (p.name.to_string(), v)
            })
            .collect(),
        budget: LiveBudget::Sparsity(sparsity),
    }
}

/// Correctness basics of a live result (never timings).
fn check_live(res: &LiveResult, heads: usize, blocks: usize) {
    assert_eq!(res.heads.len(), heads, "a result for every q-head");
    for h in &res.heads {
        assert!((0.0..=1.0).contains(&h.recall), "recall {}", h.recall);
        assert!((0.0..=1.0).contains(&h.sparsity), "sparsity {}", h.sparsity);
        assert_eq!(h.recall_by_query_block.len(), blocks);
        assert!(h
            .recall_by_query_block
            .iter()
            .all(|r| (0.0..=1.0 + 1e-6).contains(r)));
    }
}

#[test]
fn small_synthetic_bundle_with_qkv_recomputes_live() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("run");
    let spec = Spec {
        qkv_layers: vec![1],
        ..Spec::small()
    };
    synthetic::write(&dir, &spec).expect("write");
    let run = RunData::open(&dir).expect("opens");
    assert_eq!(run.qkv_layers(0), vec![1]);
    let src = LiveSource::of(&run);
    for method in ["phsa", "infllm-v2", "oracle-topk"] {
        let mut req = live_request(method, None, 0.6);
        req.layer = 1;
        let res = compute_once(&src, &req).expect("computes");
        check_live(&res, spec.heads, spec.n_tokens / spec.block);
    }
}

/// Live re-selection at 32k tokens, one layer of Qwen2.5-Coder-0.5B's shape (14 q-heads, 2 KV
/// heads, head dim 64), through the app as a user drives it: the live view open, its first
/// request (PHSA, default parameters, 90% sparsity: reads Q/K/V and captures the layer), then
/// requests that change one thing (reusing the worker's cached layer). Frames are drawn at 60 Hz
/// while each request computes; their times show whether the UI thread ever waits.
/// `ATTNSCOPE_VIEWER_LIVE_BENCH_DIR=DIR` keeps (and reuses) the bundle.
#[test]
#[ignore = "benchmark: writes a ~170 MB bundle and captures 14 heads at 32k; run with --release --ignored --nocapture"]
fn live_32k_reselection() {
    let spec = Spec::qwen_32k_live();
    let (_tmp, dir, bytes) = bench_bundle("ATTNSCOPE_VIEWER_LIVE_BENCH_DIR", &spec, "32k live");
    eprintln!(
        "bundle: {:.0} MB, {} tokens, {} q-heads / {} KV heads, head dim {}",
        bytes as f64 / 1e6,
        spec.n_tokens,
        spec.heads,
        spec.kv_heads,
        spec.head_dim
    );
    let blocks = spec.n_tokens / spec.block;
    let mut app = ViewerApp::open_now(
        &dir,
        OpenOptions {
            view: views::find(views::live::NAME),
            ..OpenOptions::default()
        },
    );
    assert_eq!(
        app.loaded().expect("opens").run.qkv_layers(0),
        spec.qkv_layers
    );
    let ctx = egui::Context::default();
    let screen = egui::Rect::from_min_size(egui::Pos2::ZERO, egui::vec2(1400.0, 900.0));
    let steps: Vec<(&str, Option<LiveRequest>, LiveRequest)> = vec![
        (
            "first: phsa lambda=0.5 @ 0.90",
            None, // the live view sends it on its first frame
            live_request("phsa", Some(0.5), 0.9),
        ),
        (
            "phsa lambda 0.5 -> 0.3",
            Some(live_request("phsa", Some(0.3), 0.9)),
            live_request("phsa", Some(0.3), 0.9),
        ),
        (
            "sparsity 0.90 -> 0.95",
            Some(live_request("phsa", Some(0.3), 0.95)),
            live_request("phsa", Some(0.3), 0.95),
        ),
        (
            "method -> infllm-v2",
            Some(live_request("infllm-v2", None, 0.95)),
            live_request("infllm-v2", None, 0.95),
        ),
        (
            "method -> quest",
            Some(live_request("quest", None, 0.95)),
            live_request("quest", None, 0.95),
        ),
        (
            "method -> oracle-topk",
            Some(live_request("oracle-topk", None, 0.95)),
            live_request("oracle-topk", None, 0.95),
        ),
    ];
    let mut rows = Vec::new();
    let mut last_seq = 0;
    let mut t_frame = 0.0;
    for (label, send, expect) in steps {
        if let Some(req) = send {
            app.loaded_mut().expect("loaded").focus.live_request = Some(req);
        }
        let t = Instant::now();
        let mut ms = Vec::new();
        let res = loop {
            let start = Instant::now();
            let input = egui::RawInput {
                screen_rect: Some(screen),
                time: Some(t_frame),
                predicted_dt: 1.0 / 60.0,
                ..egui::RawInput::default()
            };
            let mut out = ctx.run_ui(input, |ui| app.ui(ui));
            out.textures_delta.clear();
            std::hint::black_box(ctx.tessellate(out.shapes, out.pixels_per_point));
            let dt = start.elapsed();
            ms.push(dt.as_secs_f64() * 1e3);
            t_frame += 1.0 / 60.0;
            let focus = &app.loaded().expect("loaded").focus;
            if let Some(e) = &focus.live_status.error {
                panic!("{label}: {e}");
            }
            if let Some(r) = focus.live.as_ref().filter(|r| r.seq > last_seq) {
                if !focus.live_status.busy {
                    break r.clone();
                }
            }
            assert!(t.elapsed().as_secs() < 900, "{label}: no result in 900 s");
            std::thread::sleep(Duration::from_secs_f64(1.0 / 60.0).saturating_sub(dt));
        };
        let wall = t.elapsed().as_secs_f64();
        last_seq = res.seq;
        assert_eq!(res.request, expect, "{label}: the request computed");
        check_live(&res, spec.heads, blocks);
        let frames = attnscope_viewer::bench::FrameStats::of(ms);
        eprintln!(
            "{label}: {wall:.2} s (read {:.2} s + capture {:.2} s, method + metrics {:.2} s); \
             recall {:.4}, sparsity {:.4}; UI {frames}",
            res.read_seconds,
            res.capture_seconds - res.read_seconds,
            res.seconds,
            res.mean_recall(),
            res.mean_sparsity()
        );
        rows.push((label, wall, res, frames));
    }
    eprintln!("\n| request | wall s | read Q/K/V s | capture s | method + metrics s | mean recall | mean sparsity | UI frames | p95 / max frame ms |");
    eprintln!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (label, wall, res, f) in &rows {
        eprintln!(
            "| {label} | {wall:.2} | {:.2} | {:.2} | {:.2} | {:.4} | {:.4} | {} | {:.2} / {:.1} |",
            res.read_seconds,
            res.capture_seconds - res.read_seconds,
            res.seconds,
            res.mean_recall(),
            res.mean_sparsity(),
            f.frames,
            f.p95_ms,
            f.max_ms
        );
    }
    // Only the first request captures; the others reuse the worker's layer.
    assert!(rows.iter().skip(1).all(|r| r.2.capture_seconds < 1.0));
}
