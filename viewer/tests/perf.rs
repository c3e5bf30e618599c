//! Open time and frame time. The 32k benchmark (24 layers x 14 heads, 512 x 512 maps) is
//! ignored by default: `cargo test --release --workspace -- --ignored --nocapture viewer_32k`.
//! A small synthetic bundle checks the same path on every run.

mod common;

use std::time::{Duration, Instant};

use attnscope_viewer::app::{OpenOptions, ViewerApp};
use attnscope_viewer::bench::headless_pan_zoom;
use attnscope_viewer::synthetic::{self, Spec};
use attnscope_viewer::views;

fn head_map() -> OpenOptions {
    OpenOptions {
        view: views::find(views::head_map::NAME),
        ..OpenOptions::default()
    }
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
    let keep = std::env::var_os("ATTNSCOPE_VIEWER_BENCH_DIR").map(std::path::PathBuf::from);
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = keep.unwrap_or_else(|| tmp.path().join("run"));
    let spec = Spec::qwen_32k();
    if !dir.join("manifest.json").is_file() {
        let t = Instant::now();
        synthetic::write(&dir, &spec).expect("write");
        eprintln!(
            "wrote the synthetic 32k bundle in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
    let bytes: u64 = std::fs::read_dir(&dir)
        .expect("dir")
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
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
