//! `attnscope simulate`: replay every method on a real model's exact attention and measure it.

use std::time::Instant;

use anyhow::{bail, Result};
use attnscope_analysis::bundle::{
    BundleWriter, CalibrationInfo, Format, InputInfo, Manifest, OutMode, ShardInfo,
};
use attnscope_analysis::input::SimInput;
use attnscope_analysis::shard::Shard;
use attnscope_analysis::sim::{MethodRun, Queries, SimConfig, Simulation};

use super::{input, model_arg, run_args::RunArgs};

mod options;
mod preset;
pub use options::parse_layers;
use options::{budgets, selection_budgets, sweep_runs};
pub use options::{not_the_knob, overrides};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    run: RunArgs,
    #[command(flatten)]
    input: input::InputArgs,
    /// Target sparsities, comma-separated (e.g. 0.9,0.95,0.973); each method is calibrated to them.
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["budget_tokens", "top_p"])]
    sparsity: Vec<f64>,
    /// Keys per query, forced keys included.
    #[arg(long, conflicts_with = "top_p")]
    budget_tokens: Option<usize>,
    /// Match the sparsity exact top-p over the true attention reaches at this p.
    #[arg(long)]
    top_p: Option<f64>,
    /// Run a method once per value of one parameter, e.g. `phsa.lambda=0,0.25,0.5,0.75,1`
    /// (repeatable); rows are labelled `phsa[lambda=0.25]`.
    #[arg(long)]
    sweep: Vec<String>,
    /// Layers simulated at once on worker threads while the forward pass goes on (0: half the CPU
    /// threads, at least 2, fewer when memory is short). Per-method seconds overlap when above 1.
    #[arg(long, default_value_t = 0)]
    layer_jobs: usize,
    /// Methods run side by side within a KV group (0: all of them; 1: one after another, so that
    /// the per-method seconds do not overlap within a layer).
    #[arg(long, default_value_t = 0)]
    method_jobs: usize,
    /// Layers to simulate: `all` or a list like `0,3,10-12`.
    #[arg(long, default_value = "all")]
    layers: String,
    /// Key block size of the captured block masses and pooled maps.
    #[arg(long, default_value_t = 64)]
    capture_block: usize,
    /// Queries scored: `all` (sparsity and metrics over every query: the causal-triangle
    /// average) or `last:N` (the last N queries of each input, each seeing its whole context:
    /// decode accounting). Selection, calibration and metrics cover the scored queries only.
    /// [default: all, or the preset's]
    #[arg(long, value_parser = parse_queries)]
    queries: Option<Queries>,
    /// A named protocol: a paper's settings, each with its source (`attnscope methods --params`
    /// lists them): `phsa-paper`. Explicit --param, budget and --queries options win.
    #[arg(long)]
    preset: Option<String>,
    /// Several seeds in one run, e.g. `0,1,2` (seed 0 starts at the top of the text, other seeds
    /// at a paragraph chosen by the seed; a different task instance per seed); overrides --seed.
    /// Rows hold the input index.
    #[arg(long, value_delimiter = ',')]
    seeds: Vec<u64>,
    /// Several texts in one run (corpus names or files), each with every seed; overrides --text.
    #[arg(long, value_delimiter = ',')]
    texts: Vec<String>,
    /// Table format of the bundle: `parquet` or `ipc` (Arrow IPC: faster, larger).
    #[arg(long, default_value = "parquet")]
    format: String,
    /// Budgets whose per-query-block kept blocks go to the `selections` table: budget indices
    /// (`0,2`), `all` or `none`.
    #[arg(long, default_value = "0")]
    selections: String,
    /// Save the post-RoPE Q/K/V of these simulated layers (e.g. `3,20`) as safetensors, for live
    /// re-selection in the viewer.
    #[arg(long, value_name = "LAYERS")]
    save_qkv: Option<String>,
    /// Run only part K of N of the sweep (every text of --texts with every seed of --seeds), e.g.
    /// `2/4`, into its own bundle: the inputs at positions K-1, K-1+N, K-1+2N, ... of the sweep,
    /// keeping their input index. `attnscope merge` joins the N bundles into the whole run's.
    #[arg(long, value_name = "K/N", value_parser = parse_shard)]
    shard: Option<Shard>,
    /// Run id stored in the bundle's manifest and `metrics.run` (default: the folder's name).
    #[arg(long)]
    run_id: Option<String>,
    /// Continue an interrupted run in --out with the same options (finished inputs are kept).
    #[arg(long, conflicts_with = "force")]
    resume: bool,
    /// The command line as given, recorded in the bundle's manifest (set by the caller).
    #[arg(skip)]
    pub command: Vec<String>,
}

/// `--queries`: `all` or `last:N`.
fn parse_queries(s: &str) -> Result<Queries, String> {
    s.parse()
}

/// `--shard`: `K/N`, K from 1.
fn parse_shard(s: &str) -> Result<Shard, String> {
    s.parse()
        .map_err(|e: attnscope_analysis::AnalysisError| e.to_string())
}

/// The inputs of part `shard` of the sweep `sweep`; refused when the part would be empty.
fn part_plan(sweep: &[InputInfo], shard: Shard) -> Result<Vec<InputInfo>> {
    let part: Vec<InputInfo> = shard.part(sweep).into_iter().cloned().collect();
    if part.is_empty() {
        bail!(
            "--shard {shard}: the sweep has {} input(s) (--texts x --seeds), so part {} of {} \
             would be empty; split it into at most {} parts",
            sweep.len(),
            shard.index(),
            shard.count(),
            sweep.len()
        );
    }
    Ok(part)
}

/// The calibration text and its length in tokens, when a method (`fit`) fits settings on one:
/// the user's (`--calibration-text`, `--calibration-len`, default `len`), or a held-out corpus
/// text other than `text` (a notice says which), `len` capped at 2048 tokens.
pub fn calibration_spec(
    (spec, cal_len): (Option<&str>, Option<usize>),
    (text, len): (&str, usize),
    fit: &[String],
    quiet: bool,
) -> Option<(String, usize)> {
    if let Some(spec) = spec {
        return Some((spec.to_string(), cal_len.unwrap_or(len)));
    }
    if fit.is_empty() {
        return None;
    }
    let spec = if text == "plrabn12" {
        "lcet10"
    } else {
        "plrabn12"
    };
    let len = cal_len.unwrap_or(len.min(2048));
    if !quiet {
        eprintln!(
            "{} fit on calibration text: {spec}, {len} tokens (--calibration-text, --calibration-len)",
            fit.join(", ")
        );
    }
    Some((spec.to_string(), len))
}

/// The inputs of a run: every text (`--texts`, else `--text`) with every seed (`--seeds`, else
/// `--seed`).
fn input_plan(a: &Args) -> Vec<InputInfo> {
    let texts = if a.texts.is_empty() {
        vec![a.input.text.clone()]
    } else {
        a.texts.clone()
    };
    let seeds = if a.seeds.is_empty() {
        vec![a.input.seed]
    } else {
        a.seeds.clone()
    };
    texts
        .iter()
        .flat_map(|t| seeds.iter().map(move |&s| (t.clone(), s)))
        .enumerate()
        .map(|(index, (text, seed))| InputInfo {
            index,
            text,
            seed,
            ..InputInfo::default()
        })
        .collect()
}

/// The most layer or method jobs one run takes (each holds a layer's buffers or a thread).
const MAX_JOBS: usize = 256;

/// The configured methods: every listed method with its `--param` overrides, then the sweeps.
fn method_runs(a: &Args) -> Result<Vec<MethodRun>> {
    let ov = overrides(&a.run.params)?;
    let mut methods = a.run.listed_methods()?;
    methods.extend(sweep_runs(&a.sweep, &ov)?);
    if methods.is_empty() {
        bail!(
            "--methods '{}': no methods given (all, or a list; see `attnscope methods`)",
            a.run.methods
        );
    }
    Ok(methods)
}

/// The simulation's configuration from the options (the calibration text tokenized for `model`).
fn sim_config(a: &Args, model: &attnscope_core::Model) -> Result<SimConfig> {
    let budgets = budgets(a)?;
    let layers = parse_layers("--layers", &a.layers, model.config.n_layers)?;
    let save_qkv = match &a.save_qkv {
        Some(spec) => {
            let l = parse_layers("--save-qkv", spec, model.config.n_layers)?
                .unwrap_or_else(|| (0..model.config.n_layers).collect());
            if let Some(bad) = l
                .iter()
                .find(|x| layers.as_ref().is_some_and(|ls| !ls.contains(x)))
            {
                bail!("--save-qkv {bad}: layer {bad} is not simulated (--layers)");
            }
            l
        }
        None => Vec::new(),
    };
    let methods = method_runs(a)?;
    let fit: Vec<String> = methods
        .iter()
        .filter(|m| m.selector.needs_calibration())
        .map(|m| m.label.clone())
        .collect();
    let calibration = match calibration_spec(
        (a.run.calibration_text.as_deref(), a.run.calibration_len),
        (&a.input.text, a.input.len),
        &fit,
        a.run.quiet,
    ) {
        Some((spec, len)) => {
            let args = input::InputArgs {
                keep_crlf: a.input.keep_crlf,
                latin1: a.input.latin1,
                ..input::InputArgs::plain(&spec, len, a.input.seed)
            };
            let cal = input::prepare(&args, model, a.run.quiet)?;
            Some(SimInput { name: spec, ..cal })
        }
        None => None,
    };
    if a.capture_block == 0 {
        bail!("--capture-block 0: the block must be at least 1 token");
    }
    for (option, v) in [
        ("--layer-jobs", a.layer_jobs),
        ("--method-jobs", a.method_jobs),
    ] {
        if v > MAX_JOBS {
            bail!("{option} {v}: at most {MAX_JOBS} (0: automatic)");
        }
    }
    let queries = a.queries.unwrap_or_default();
    if let Queries::Last(k) = queries {
        if k > a.input.len {
            bail!(
                "--queries last:{k}: more queries than the input's {} tokens (--len); use \
                 --queries all",
                a.input.len
            );
        }
    }
    let mut cfg = SimConfig::new(methods, budgets);
    cfg.queries = queries;
    cfg.selection_budgets = selection_budgets(&a.selections, cfg.budgets.len())?;
    cfg.layers = layers;
    cfg.capture_block = a.capture_block.max(1);
    cfg.query_block = cfg.capture_block;
    cfg.save_qkv = save_qkv;
    cfg.layer_jobs = a.layer_jobs;
    cfg.method_jobs = a.method_jobs;
    cfg.calibration = calibration;
    Ok(cfg)
}

/// The manifest before the first input: the simulation's own description plus this command's
/// run id, command line, data and table format.
fn manifest(a: &Args, sim: &Simulation<'_>) -> Result<Manifest> {
    let mut m = Manifest::for_simulation(sim, &a.run.model, a.input.len, a.input.dataset != "text");
    m.run_id = a.run_id.clone().unwrap_or_else(|| {
        a.run
            .out
            .file_name()
            .map_or_else(|| "run".into(), |f| f.to_string_lossy().into_owned())
    });
    m.command = a.command.clone();
    m.format = a.format.parse()?;
    m.data.dataset = a.input.dataset.clone();
    m.data.len = a.input.len;
    m.data.depth = a.input.depth;
    m.calibration = sim.config().calibration.as_ref().map(|c| CalibrationInfo {
        text: c.name.clone(),
        n_tokens: c.ids.len(),
    });
    Ok(m)
}

/// The options that decide the results: a resumed run must have the same.
fn fingerprint(a: &Args, m: &Manifest, cfg: &SimConfig) -> serde_json::Value {
    let mut f = serde_json::json!({
        "model": a.run.model, "weights": m.model.source, "dataset": a.input.dataset,
        "len": a.input.len, "depth": a.input.depth, "methods": m.methods,
        "budgets": m.budgets, "layers": m.layers, "capture_block": cfg.capture_block,
        "selections": cfg.selection_budgets, "save_qkv": cfg.save_qkv, "format": m.format,
        "calibration_text": a.run.calibration_text, "calibration_len": a.run.calibration_len,
        "offset": a.input.offset, "keep_crlf": a.input.keep_crlf, "latin1": a.input.latin1,
    });
    // Recorded when not the default, so that bundles from before the option still resume.
    if cfg.queries != Queries::All {
        f["queries"] = serde_json::json!(cfg.queries.to_string());
    }
    f
}

pub fn run(mut a: Args) -> Result<()> {
    let started = Instant::now();
    let _: Format = a.format.parse()?;
    let preset = preset::apply(&mut a)?;
    budgets(&a)?;
    // The inputs of the whole sweep, and of the part this process runs (`--shard`).
    let sweep = input_plan(&a);
    let plan = match a.shard {
        Some(shard) => part_plan(&sweep, shard)?,
        None => sweep.clone(),
    };
    let mut model = a.run.load_model(a.input.tokenizer.as_deref())?;
    // The simulation reads attention only: a separate output head would sit unused.
    model.release_output_head();
    let load_s = started.elapsed().as_secs_f64();
    let sim = Simulation::new(&model, sim_config(&a, &model)?)?;
    let mut manifest = manifest(&a, &sim)?;
    manifest.timings.load_s = load_s;
    manifest.preset = preset;
    let mut fingerprint = fingerprint(&a, &manifest, sim.config());
    if let Some(shard) = a.shard {
        manifest.shard = Some(ShardInfo {
            index: shard.index(),
            count: shard.count(),
            sweep,
            options: fingerprint.clone(),
        });
        // A part resumes only as the same part.
        fingerprint["shard"] = serde_json::json!(shard.to_string());
    }
    let mode = match (a.run.force, a.resume) {
        (true, _) => OutMode::Force,
        (_, true) => OutMode::Resume,
        _ => OutMode::Fresh,
    };
    // A fresh run checks its first input before it writes anything.
    let mut first = None;
    if mode != OutMode::Resume {
        first = Some(prepare_planned(&mut a, &plan[0], &model)?);
    }
    let mut writer = BundleWriter::try_new(&a.run.out, manifest, plan.clone(), fingerprint, mode)?;
    if !a.run.quiet && !writer.resumed().is_empty() {
        eprintln!(
            "resuming {}: {} of {} inputs already finished",
            a.run.out.display(),
            writer.resumed().len(),
            plan.len()
        );
    }
    // Fault injection for tests: stop after this many inputs ran in this process.
    let stop_after: Option<usize> = std::env::var("ATTNSCOPE_INTERRUPT_AFTER_INPUTS")
        .ok()
        .and_then(|v| v.parse().ok());
    let mut ran = 0usize;
    for (position, planned) in plan.iter().enumerate() {
        if writer.is_done(planned.index) {
            continue;
        }
        let inp = match first.take() {
            Some(x) if position == 0 => x,
            _ => prepare_planned(&mut a, planned, &model)?,
        };
        let (results, seconds) = simulate_input(&a, &sim, &inp, position, plan.len())?;
        writer.write_input(planned.index, &inp, results, seconds)?;
        ran += 1;
        if stop_after == Some(ran) {
            bail!(
                "interrupted after {ran} input(s) (ATTNSCOPE_INTERRUPT_AFTER_INPUTS); finish the \
                 run with --resume"
            );
        }
    }
    let bundle = writer.close()?;
    if !a.run.quiet {
        eprintln!(
            "wrote {} ({:.1} s)",
            a.run.out.display(),
            started.elapsed().as_secs_f64()
        );
        let peak = bundle.manifest.timings.peak_host_bytes;
        if peak > 0 {
            eprintln!("peak host memory: {:.2} GiB", gib(peak));
        }
        let mut t: Vec<(&String, &f64)> = bundle.manifest.timings.method_s.iter().collect();
        t.sort_by(|a, b| b.1.total_cmp(a.1));
        let parts: Vec<String> = t.iter().map(|(m, s)| format!("{m} {s:.1}s")).collect();
        eprintln!("method time: {}", parts.join(", "));
    }
    super::report::print_text(&bundle)
}

/// Bytes in GiB.
fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

/// The input of a planned (text, seed).
fn prepare_planned(
    a: &mut Args,
    planned: &InputInfo,
    model: &attnscope_core::Model,
) -> Result<SimInput> {
    a.input.text = planned.text.clone();
    a.input.seed = planned.seed;
    input::prepare(&a.input, model, a.run.quiet)
}

/// Simulates one input with a progress bar: its results and seconds.
fn simulate_input(
    a: &Args,
    sim: &Simulation<'_>,
    inp: &SimInput,
    i: usize,
    total: usize,
) -> Result<(attnscope_analysis::results::SimResults, f64)> {
    let n_sim = sim
        .config()
        .layers
        .as_ref()
        .map_or(sim.model().config.n_layers, |l| l.len());
    let msg = if total > 1 {
        format!("input {}/{total}: simulating {n_sim} layers", i + 1)
    } else {
        format!("simulating {n_sim} layers")
    };
    if !a.run.quiet && sim.model().device() == attnscope_core::Device::Cpu {
        let plan = sim.memory_plan(inp.ids.len());
        eprintln!(
            "memory plan: {:.2} GiB per layer job ({} scored queries of {} tokens), {} at once, \
             {:.2} GiB for the layer captured meanwhile and up to {:.2} GiB for the forward \
             pass: {:.1} GiB; {} available",
            gib(plan.per_layer_job),
            sim.config().queries.of(inp.ids.len()).len(),
            inp.ids.len(),
            plan.layer_jobs,
            gib(plan.capture),
            gib(plan.forward),
            gib(plan.total()),
            plan.available
                .map_or("? GiB".into(), |b| format!("{:.1} GiB", gib(b)))
        );
    }
    let bar = model_arg::bar(a.run.quiet, sim.model().config.n_layers as u64, &msg);
    let t = Instant::now();
    let results = sim.run_with_progress(inp, &mut |_| bar.inc(1))?;
    bar.finish_and_clear();
    if !a.run.quiet {
        eprintln!("{}", results.pipeline.summary());
    }
    Ok((results, t.elapsed().as_secs_f64()))
}
