//! `attnscope bench --simulate`: the simulator's cost per method on chosen layers of one input,
//! without the rest of the forward pass. The first run saves the post-RoPE Q/K/V of those layers
//! (`--qkv-cache`); later runs replay from that file, so a benchmark of one 8k layer takes seconds
//! of setup instead of a full forward pass. The replay is the runner's own per-layer code
//! ([`SimHook`]'s `on_layer`: exact capture, every method on every KV group, calibration, metrics,
//! IoU), so its numbers are the `simulate` numbers of those layers.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use attnscope_analysis::budget::Budget;
use attnscope_analysis::bundle::qkv::{read_qkv, write_qkv, SavedLayer};
use attnscope_analysis::input::SimInput;
use attnscope_analysis::registry;
use attnscope_analysis::results::summarize;
use attnscope_analysis::sim::{MethodRun, SimConfig, SimHook};
use attnscope_core::attention::{AttentionHook, HookAction, LayerQkv};
use serde_json::json;

use super::super::{input, model_arg};

/// Options of `bench --simulate`.
#[derive(clap::Args, Debug, Clone)]
pub struct SimArgs {
    /// Time the simulator (methods, calibration, metrics) on --layers instead of the forward pass.
    #[arg(long)]
    pub simulate: bool,
    /// --simulate: layers to replay, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "3")]
    pub layers: Vec<usize>,
    /// --simulate: methods, `all` (methods that fit on calibration text are left out) or a list.
    #[arg(long, default_value = "all")]
    pub methods: String,
    /// --simulate: target sparsities, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "0.9")]
    pub sparsity: Vec<f64>,
    /// --simulate: file caching the layers' Q/K/V (default: in the system temp folder, named by
    /// model file, text, length and layers).
    #[arg(long)]
    pub qkv_cache: Option<PathBuf>,
    /// --simulate: write the method summary and per-method seconds as JSON to this file.
    #[arg(long)]
    pub summary: Option<PathBuf>,
    /// --simulate: methods run side by side within a KV group (0: all; 1: one after another, so
    /// that each method's CPU seconds are its own).
    #[arg(long, default_value_t = 0)]
    pub method_jobs: usize,
}

/// Saves the post-RoPE Q/K/V of chosen layers during a forward pass.
struct SaveHook<'a> {
    layers: &'a [usize],
    saved: Vec<SavedLayer>,
}

impl AttentionHook for SaveHook<'_> {
    fn on_layer(&mut self, qkv: &LayerQkv<'_>) -> attnscope_core::Result<HookAction> {
        if self.layers.contains(&qkv.layer) {
            self.saved.push(SavedLayer::from_layer(qkv));
        }
        Ok(HookAction::Dense)
    }

    fn inspects(&self, layer: usize) -> bool {
        self.layers.contains(&layer)
    }
}

/// The punctuation masks saved beside a Q/K/V cache file.
fn masks_path(cache: &std::path::Path) -> PathBuf {
    let mut p = cache.as_os_str().to_owned();
    p.push(".masks.json");
    PathBuf::from(p)
}

/// User and system CPU seconds of this process so far (Linux `/proc/self/stat`).
fn cpu_seconds() -> Option<(f64, f64)> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = 100.0; // USER_HZ on Linux
    Some((
        f.get(11)?.parse::<f64>().ok()? / tick,
        f.get(12)?.parse::<f64>().ok()? / tick,
    ))
}

/// The replayed layers' Q/K/V with the input's punctuation flags and where they came from:
/// the cache file when it exists with its flags beside it (no model is read), else a forward
/// pass of the model over `n` tokens of `text`, saved to the cache.
type Replayed = (Vec<SavedLayer>, Vec<bool>, Vec<bool>, String);

fn load_layers(model_spec: &str, text: &str, n: usize, a: &SimArgs) -> Result<Replayed> {
    let layers: Vec<String> = a.layers.iter().map(ToString::to_string).collect();
    // With --qkv-cache pointing at an existing file (and its masks beside it), no model is read:
    // the benchmark runs on machines that only hold those two files.
    let given = a
        .qkv_cache
        .clone()
        .filter(|c| c.exists() && masks_path(c).exists());
    Ok(if let Some(cache) = given {
        let (punct, newline): (Vec<bool>, Vec<bool>) =
            serde_json::from_str(&std::fs::read_to_string(masks_path(&cache))?)?;
        (
            read_qkv(&cache)?,
            punct,
            newline,
            cache.display().to_string(),
        )
    } else {
        let mut model = model_arg::load(model_spec, None, true)?;
        model.release_output_head();
        let args = input::InputArgs::plain(text, n, 0);
        let inp = input::prepare(&args, &model, true)?;
        let (punct, newline) = (inp.punct.clone(), inp.newline.clone());
        if let Some(&bad) = a.layers.iter().find(|&&l| l >= model.config.n_layers) {
            bail!(
                "layer {bad} is out of range: the model has {} layers",
                model.config.n_layers
            );
        }
        let cache = a.qkv_cache.clone().unwrap_or_else(|| {
            let stem = model
                .source
                .file_stem()
                .map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned());
            std::env::temp_dir().join(format!(
                "attnscope-bench-{stem}-{}-{n}-l{}.safetensors",
                text.replace(['/', '.'], "_"),
                layers.join("_")
            ))
        });
        let saved = if cache.exists() {
            read_qkv(&cache)?
        } else {
            let t = Instant::now();
            let mut hook = SaveHook {
                layers: &a.layers,
                saved: Vec::new(),
            };
            model.forward(&inp.ids, &mut hook)?;
            write_qkv(&cache, 0, &hook.saved)?;
            eprintln!(
                "forward pass to capture Q/K/V: {:.1}s (cached in {})",
                t.elapsed().as_secs_f64(),
                cache.display()
            );
            hook.saved
        };
        std::fs::write(
            masks_path(&cache),
            serde_json::to_string(&(&punct, &newline))?,
        )?;
        (saved, punct, newline, model.source.display().to_string())
    })
}

/// The benchmarked methods at their defaults (methods that fit on calibration text left out).
fn bench_methods(a: &SimArgs) -> Result<Vec<MethodRun>> {
    let mut methods = Vec::new();
    for info in registry::parse_list(&a.methods)? {
        let selector = info.build_with(&[])?;
        if selector.needs_calibration() {
            eprintln!(
                "{}: fits on calibration text, left out of the benchmark",
                info.name
            );
            continue;
        }
        methods.push(MethodRun {
            label: info.name.to_string(),
            info,
            overrides: Vec::new(),
            selector,
        });
    }
    Ok(methods)
}

/// Runs `bench --simulate`.
pub fn run(model_spec: &str, text: &str, n: usize, json_out: bool, a: &SimArgs) -> Result<()> {
    let (saved, punct, newline, source) = load_layers(model_spec, text, n, a)?;
    let methods = bench_methods(a)?;
    let mut cfg = SimConfig::new(
        methods,
        a.sparsity.iter().map(|&s| Budget::Sparsity(s)).collect(),
    );
    cfg.layer_jobs = 1;
    cfg.method_jobs = a.method_jobs;
    let replayed = SimInput {
        punct,
        newline,
        ..SimInput::default()
    };
    let mut hook = SimHook::new(&cfg, &replayed);
    let cpu0 = cpu_seconds();
    let t = Instant::now();
    for l in &saved {
        let (q, k, v) = l.token_major();
        let qkv = LayerQkv {
            layer: l.layer,
            n_heads: l.n_heads,
            n_kv_heads: l.n_kv_heads,
            head_dim: l.head_dim,
            q: q.view(),
            k: k.view(),
            v: v.view(),
            rule: attnscope_core::attention::ScoreRule::plain(l.head_dim),
        };
        hook.on_layer(&qkv)?;
    }
    let wall = t.elapsed().as_secs_f64();
    let cpu = match (cpu0, cpu_seconds()) {
        (Some(a), Some(b)) => Some((b.0 - a.0, b.1 - a.1)),
        _ => None,
    };
    let res = hook.results;
    let mut per: Vec<(&String, &(f64, f64))> = hook.profile.seconds.iter().collect();
    per.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1).then(b.1 .0.total_cmp(&a.1 .0)));
    let summary = summarize(&res.metrics);
    if let Some(path) = &a.summary {
        let body = json!({
            "tokens": n, "layers": a.layers, "threads": rayon::current_num_threads(),
            "wall_seconds": wall, "user_seconds": cpu.map(|c| c.0), "sys_seconds": cpu.map(|c| c.1),
            "method_seconds": res.method_seconds, "profile": hook.profile.seconds,
            "methods": summary, "iou": res.iou,
        });
        std::fs::write(path, serde_json::to_string_pretty(&body)?)?;
    }
    if json_out {
        println!(
            "{}",
            json!({"tokens": n, "layers": a.layers, "threads": rayon::current_num_threads(),
            "wall_seconds": wall, "user_seconds": cpu.map(|c| c.0),
            "method_seconds": res.method_seconds, "profile": hook.profile.seconds})
        );
        return Ok(());
    }
    println!(
        "{source} | {n} tokens | layers {:?} | {} threads",
        a.layers,
        rayon::current_num_threads()
    );
    println!(
        "replay: {wall:.2}s wall{}",
        cpu.map_or_else(String::new, |c| format!(
            ", {:.2}s user, {:.2}s sys",
            c.0, c.1
        ))
    );
    println!("{:>20} {:>9} {:>9}", "method or phase", "wall s", "cpu s");
    for (m, (w, c)) in per {
        println!("{m:>20} {w:>9.2} {c:>9.2}");
    }
    Ok(())
}
