//! `attnscope simulate`: replay every method on a real model's exact attention and measure it.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use attnscope_analysis::budget::Budget;
use attnscope_analysis::bundle::io::write_json;
use attnscope_analysis::bundle::partial::{DoneInput, Pending};
use attnscope_analysis::bundle::qkv::write_qkv;
use attnscope_analysis::bundle::{
    context_of, hash_weights, now_unix, prepare_out, qkv_file_name, BudgetInfo, Bundle,
    CalibrationInfo, Format, InputInfo, Manifest, ManifestMethod, ModelInfo, Partial, QkvFile,
    TokenRow, ToolInfo, FORMAT_VERSION,
};
use attnscope_analysis::registry::{self, MethodKind};
use attnscope_analysis::sim::SimResults;
use attnscope_analysis::sim::{simulate, CalibrationText, MethodRun, SimConfig};
use attnscope_datasets::punct::{is_punct_piece, PunctOptions};

use super::{input, model_arg};

#[derive(clap::Args)]
pub struct Args {
    /// Model: a registry name (fetched when missing), a HF folder, or a .gguf file.
    #[arg(long, default_value = "smollm2-135m")]
    model: String,
    #[command(flatten)]
    input: input::InputArgs,
    /// Methods: `all` or a comma-separated list (see `attnscope methods`).
    #[arg(long, default_value = "all")]
    methods: String,
    /// Target sparsities, comma-separated (e.g. 0.9,0.95,0.973); each method is calibrated to them.
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["budget_tokens", "top_p"])]
    sparsity: Vec<f64>,
    /// Keys per query, forced keys included.
    #[arg(long, conflicts_with = "top_p")]
    budget_tokens: Option<usize>,
    /// Match the sparsity exact top-p over the true attention reaches at this p.
    #[arg(long)]
    top_p: Option<f64>,
    /// A method parameter, `method.name=value` (repeatable), e.g. `phsa.lambda=0.3`.
    #[arg(long = "param")]
    params: Vec<String>,
    /// Run a method once per value of one parameter, e.g. `phsa.lambda=0,0.25,0.5,0.75,1`
    /// (repeatable); rows are labelled `phsa[lambda=0.25]`.
    #[arg(long)]
    sweep: Vec<String>,
    /// Calibration text for methods that fit settings on it (phsa-fit): a corpus text name or a
    /// file; use a different text from --text. Default when such a method runs: plrabn12 (lcet10
    /// when --text is plrabn12).
    #[arg(long)]
    calibration_text: Option<String>,
    /// Tokens of calibration text [default: --len with --calibration-text, else --len capped at
    /// 2048].
    #[arg(long)]
    calibration_len: Option<usize>,
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
    /// Several seeds in one run, e.g. `0,1,2` (a different paragraph of the text, or a different
    /// task instance, per seed); overrides --seed. Rows carry the input index.
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
    /// Run id stored in the bundle's manifest and `metrics.run` (default: the folder's name).
    #[arg(long)]
    run_id: Option<String>,
    /// Output run directory.
    #[arg(long)]
    out: PathBuf,
    /// Overwrite an existing run directory.
    #[arg(long)]
    force: bool,
    /// Continue an interrupted run in --out with the same options (finished inputs are kept).
    #[arg(long, conflicts_with = "force")]
    resume: bool,
    /// No progress output.
    #[arg(long)]
    quiet: bool,
    /// Where the forward pass runs: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: attnscope_core::Device,
    /// Storage on the GPU: f32 (exact, matches the CPU path) or bf16 (fast).
    #[arg(long, default_value = "f32")]
    precision: attnscope_core::device::Precision,
}

fn parse_layers(spec: &str, n_layers: usize) -> Result<Option<Vec<usize>>> {
    if spec == "all" {
        return Ok(None);
    }
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<usize>()?, b.parse::<usize>()?),
            None => {
                let x = part
                    .parse::<usize>()
                    .with_context(|| format!("--layers: '{part}'"))?;
                (x, x)
            }
        };
        if a > b || b >= n_layers {
            bail!(
                "--layers: '{part}' is out of range; the model has layers 0..{}",
                n_layers - 1
            );
        }
        out.extend(a..=b);
    }
    out.sort_unstable();
    out.dedup();
    Ok(Some(out))
}

fn budgets(a: &Args) -> Result<Vec<Budget>> {
    if let Some(k) = a.budget_tokens {
        if k == 0 {
            bail!("--budget-tokens must be at least 1");
        }
        if k > a.input.len {
            bail!(
                "--budget-tokens {k} is larger than the input of {} tokens (--len)",
                a.input.len
            );
        }
        return Ok(vec![Budget::Tokens(k)]);
    }
    if let Some(p) = a.top_p {
        if !(0.0..=1.0).contains(&p) {
            bail!("--top-p {p} is outside [0, 1]");
        }
        return Ok(vec![Budget::TopP(p)]);
    }
    let s = if a.sparsity.is_empty() {
        vec![0.9]
    } else {
        a.sparsity.clone()
    };
    if let Some(bad) = s.iter().find(|x| !(0.0..1.0).contains(*x)) {
        bail!("--sparsity {bad} is outside [0, 1)");
    }
    Ok(s.into_iter().map(Budget::Sparsity).collect())
}

fn budget_label(b: &Budget) -> String {
    match b {
        Budget::Tokens(k) => format!("tokens={k}"),
        Budget::Sparsity(s) => format!("sparsity={s}"),
        Budget::TopP(p) => format!("top_p={p}"),
    }
}

/// Expands `--sweep method.param=v1,v2,...` into one run per value, labelled
/// `method[param=value]`, each with the method's other `--param` overrides.
fn sweep_runs(sweeps: &[String], ov: &[(String, String, f64)]) -> Result<Vec<MethodRun>> {
    let mut runs = Vec::new();
    for sw in sweeps {
        let (lhs, values) = sw
            .split_once('=')
            .with_context(|| format!("--sweep '{sw}': expected method.param=v1,v2,..."))?;
        let (m, name) = lhs
            .split_once('.')
            .with_context(|| format!("--sweep '{sw}': expected method.param=v1,v2,..."))?;
        let info = registry::find(m)?;
        for v in values.split(',').map(str::trim).filter(|v| !v.is_empty()) {
            let x: f64 = v
                .parse()
                .with_context(|| format!("--sweep '{sw}': '{v}' is not a number"))?;
            let mut mine: Vec<(String, f64)> = ov
                .iter()
                .filter(|(om, k, _)| om == m && k != name)
                .map(|(_, k, v)| (k.clone(), *v))
                .collect();
            mine.push((name.to_string(), x));
            runs.push(MethodRun {
                label: format!("{m}[{name}={v}]"),
                info,
                selector: info.build_with(&mine)?,
                overrides: mine,
            });
        }
    }
    Ok(runs)
}

/// Punctuation flags (newline-only tokens excluded) and newline-only flags of token pieces.
fn masks(pieces: &[String]) -> (Vec<bool>, Vec<bool>) {
    let plain = PunctOptions {
        newlines: false,
        ..PunctOptions::default()
    };
    let punct: Vec<bool> = pieces.iter().map(|p| is_punct_piece(p, &plain)).collect();
    let newline = pieces
        .iter()
        .zip(&punct)
        .map(|(p, &pu)| !pu && is_punct_piece(p, &PunctOptions::default()))
        .collect();
    (punct, newline)
}

/// Splits `method.name=value` overrides by method, checking method names.
fn overrides(params: &[String]) -> Result<Vec<(String, String, f64)>> {
    params
        .iter()
        .map(|p| {
            let (lhs, v) = p
                .split_once('=')
                .with_context(|| format!("--param '{p}': expected method.name=value"))?;
            let (m, name) = lhs
                .split_once('.')
                .with_context(|| format!("--param '{p}': expected method.name=value"))?;
            registry::find(m)?;
            let v: f64 = v
                .parse()
                .with_context(|| format!("--param '{p}': '{v}' is not a number"))?;
            Ok((m.to_string(), name.to_string(), v))
        })
        .collect()
}

pub fn run(a: Args) -> Result<()> {
    let started = Instant::now();
    let budgets = budgets(&a)?;
    let selection_budgets = selection_budgets(&a.selections, budgets.len())?;
    let _: Format = a.format.parse()?;
    let infos = registry::parse_list(&a.methods)?;
    let ov = overrides(&a.params)?;
    let mut model = model_arg::load(&a.model, a.input.tokenizer.as_deref(), a.quiet)?;
    model.to_device(a.device, a.precision)?;
    let load_s = started.elapsed().as_secs_f64();
    let layers = parse_layers(&a.layers, model.config.n_layers)?;
    let save_qkv = match &a.save_qkv {
        Some(spec) => {
            let l = parse_layers(spec, model.config.n_layers)?
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
    let mut methods = Vec::new();
    for info in infos {
        let mine: Vec<(String, f64)> = ov
            .iter()
            .filter(|(m, _, _)| m == info.name)
            .map(|(_, k, v)| (k.clone(), *v))
            .collect();
        methods.push(MethodRun {
            label: info.name.to_string(),
            info,
            selector: info.build_with(&mine)?,
            overrides: mine,
        });
    }
    methods.extend(sweep_runs(&a.sweep, &ov)?);
    let resume = prepare_out(&a.out, a.force, a.resume)?;
    let cfg_methods_fit: Vec<String> = methods
        .iter()
        .filter(|m| m.selector.needs_calibration())
        .map(|m| m.label.clone())
        .collect();
    let cfg = SimConfig {
        methods,
        budgets: budgets.clone(),
        layers: layers.clone(),
        capture_block: a.capture_block.max(1),
        freq_top_k: 64,
        freq_queries: 256,
        query_block: a.capture_block.max(1),
        selection_budgets,
        save_qkv,
        layer_jobs: a.layer_jobs,
        method_jobs: a.method_jobs,
        calibration: match calibration_spec(&a, &cfg_methods_fit) {
            Some((spec, len)) => {
                let args = input::InputArgs {
                    dataset: "text".into(),
                    text: spec.clone(),
                    len,
                    seed: a.input.seed,
                    depth: None,
                    tokenizer: None,
                };
                let cal = input::prepare(&args, &model, a.quiet)?;
                let (punct, newline) = masks(&cal.pieces);
                Some(CalibrationText {
                    name: spec,
                    ids: cal.ids,
                    punct,
                    newline,
                })
            }
            None => None,
        },
    };
    run_inputs(a, model, cfg, &budgets, resume, started, load_s)
}

/// The calibration text and its length in tokens, when a method fits settings on one: the
/// user's, or a held-out corpus text (a notice says which).
fn calibration_spec(a: &Args, fit: &[String]) -> Option<(String, usize)> {
    if let Some(spec) = &a.calibration_text {
        return Some((spec.clone(), a.calibration_len.unwrap_or(a.input.len)));
    }
    if fit.is_empty() {
        return None;
    }
    let spec = if a.input.text == "plrabn12" {
        "lcet10"
    } else {
        "plrabn12"
    };
    let len = a.calibration_len.unwrap_or(a.input.len.min(2048));
    if !a.quiet {
        eprintln!(
            "{} fit on calibration text: {spec}, {len} tokens (--calibration-text, --calibration-len)",
            fit.join(", ")
        );
    }
    Some((spec.to_string(), len))
}

/// `--selections`: budget indices, `all` or `none`.
fn selection_budgets(spec: &str, n_budgets: usize) -> Result<Vec<usize>> {
    match spec.trim() {
        "all" => Ok((0..n_budgets).collect()),
        "none" | "" => Ok(Vec::new()),
        s => s
            .split(',')
            .map(|x| {
                let i: usize = x.trim().parse().with_context(|| {
                    format!("--selections '{x}': expected budget indices, all or none")
                })?;
                if i >= n_budgets {
                    bail!("--selections {i}: the run has budgets 0..{}", n_budgets - 1);
                }
                Ok(i)
            })
            .collect(),
    }
}

fn budget_info(i: usize, b: &Budget) -> BudgetInfo {
    let (kind, value) = match *b {
        Budget::Tokens(k) => ("tokens", k as f64),
        Budget::Sparsity(s) => ("sparsity", s),
        Budget::TopP(p) => ("top_p", p),
    };
    BudgetInfo {
        index: i,
        label: budget_label(b),
        kind: kind.into(),
        value,
    }
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

fn token_rows(
    i: usize,
    inp: &input::PreparedInput,
    punct: &[bool],
    newline: &[bool],
) -> Vec<TokenRow> {
    let in_span = |p: usize| {
        inp.needles
            .iter()
            .any(|n| (n.span.0..n.span.1).contains(&p))
    };
    let is_query = |p: usize| inp.needles.iter().any(|n| n.queries.contains(&p));
    inp.ids
        .iter()
        .enumerate()
        .map(|(p, &id)| TokenRow {
            input: i,
            position: p,
            id,
            piece: inp.pieces[p].clone(),
            is_punct: punct[p],
            is_newline: newline[p],
            char_start: inp.offsets.get(p).map(|o| o.0),
            char_end: inp.offsets.get(p).map(|o| o.1),
            is_needle: in_span(p),
            is_needle_query: is_query(p),
        })
        .collect()
}

/// Tags every row of one input's results with its index.
fn tag_input(r: &mut SimResults, i: usize) {
    r.metrics.iter_mut().for_each(|x| x.input = i);
    r.iou.iter_mut().for_each(|x| x.input = i);
    r.heads.iter_mut().for_each(|x| x.input = i);
    r.selections.iter_mut().for_each(|x| x.input = i);
}

/// Runs every input of the plan, saving each as it finishes (so an interrupted run can resume),
/// then writes the bundle and prints the report.
fn run_inputs(
    mut a: Args,
    model: attnscope_core::Model,
    cfg: SimConfig,
    budgets: &[Budget],
    resume: Option<Partial>,
    started: Instant,
    load_s: f64,
) -> Result<()> {
    let format: Format = a.format.parse()?;
    let layers = cfg
        .layers
        .clone()
        .unwrap_or_else(|| (0..model.config.n_layers).collect());
    let c = &model.config;
    let mut manifest = Manifest {
        format_version: FORMAT_VERSION,
        run_id: a.run_id.clone().unwrap_or_else(|| {
            a.out
                .file_name()
                .map_or_else(|| "run".into(), |f| f.to_string_lossy().into_owned())
        }),
        tool: ToolInfo::current(),
        command: std::env::args().collect(),
        model: ModelInfo {
            spec: a.model.clone(),
            source: model.source.display().to_string(),
            architecture: c.arch.name().to_string(),
            n_layers: c.n_layers,
            n_heads: c.n_heads,
            n_kv_heads: c.n_kv_heads,
            head_dim: c.head_dim,
            max_context: c.max_context,
            storage: model.storage.clone(),
            files: Vec::new(),
        },
        methods: cfg
            .methods
            .iter()
            .map(|m| ManifestMethod {
                name: m.label.clone(),
                kind: match m.info.kind {
                    MethodKind::Published => "published",
                    MethodKind::Proxy => "proxy",
                    MethodKind::Oracle => "oracle",
                    MethodKind::Ours => "ours",
                }
                .into(),
                params: m
                    .info
                    .params(&m.overrides)
                    .map(|p| p.iter().map(|(k, v)| (k.to_string(), v)).collect())
                    .unwrap_or_default(),
            })
            .collect(),
        budgets: budgets
            .iter()
            .enumerate()
            .map(|(i, b)| budget_info(i, b))
            .collect(),
        layers,
        capture_block: cfg.capture_block,
        freq_top_k: cfg.freq_top_k,
        freq_queries: cfg.freq_queries,
        selection_budgets: cfg.selection_budgets.clone(),
        device: match a.device {
            attnscope_core::Device::Cpu => "cpu".into(),
            d => format!("{d} {}", a.precision),
        },
        format,
        method_devices: attnscope_analysis::gpu_methods::method_devices(
            &cfg,
            a.input.len,
            a.device != attnscope_core::Device::Cpu,
            a.input.dataset != "text",
        ),
        ..Manifest::default()
    };
    let plan = input_plan(&a);
    if plan.is_empty() {
        bail!("no inputs: --texts and --seeds must not be empty");
    }
    let fingerprint = serde_json::json!({
        "model": a.model, "weights": manifest.model.source, "dataset": a.input.dataset,
        "len": a.input.len, "depth": a.input.depth, "methods": manifest.methods,
        "budgets": manifest.budgets, "layers": manifest.layers, "capture_block": cfg.capture_block,
        "selections": cfg.selection_budgets, "save_qkv": cfg.save_qkv, "format": format,
        "calibration_text": a.calibration_text, "calibration_len": a.calibration_len,
    });
    // A fresh run checks its first input before it writes anything.
    let mut first = None;
    if resume.is_none() {
        a.input.text = plan[0].text.clone();
        a.input.seed = plan[0].seed;
        first = Some(input::prepare(&a.input, &model, a.quiet)?);
    }
    let partial = match resume {
        Some(p) => {
            p.check_same(&fingerprint, &plan)?;
            if !a.quiet {
                eprintln!(
                    "resuming {}: {} of {} inputs already finished",
                    a.out.display(),
                    p.done().len(),
                    plan.len()
                );
            }
            p
        }
        None => Partial::begin(
            &a.out,
            Pending {
                format_version: FORMAT_VERSION,
                fingerprint,
                inputs: plan.clone(),
            },
        )?,
    };
    // Hash the weights while the simulation runs.
    let source = model.source.clone();
    let hasher = std::thread::spawn(move || {
        let t = Instant::now();
        (hash_weights(&source), t.elapsed().as_secs_f64())
    });
    let ctx = context_of(&manifest);
    let done = partial.done();
    let mut all = SimResults::default();
    let mut tokens = Vec::new();
    let n_sim = manifest.layers.len();
    // Fault injection for tests: stop after this many inputs ran in this process.
    let stop_after: Option<usize> = std::env::var("ATTNSCOPE_INTERRUPT_AFTER_INPUTS")
        .ok()
        .and_then(|v| v.parse().ok());
    let mut ran = 0usize;
    for planned in &plan {
        let i = planned.index;
        let (mut results, toks, d) = if done.contains(&i) {
            partial.load(i, cfg.capture_block)?
        } else {
            a.input.text = planned.text.clone();
            a.input.seed = planned.seed;
            let inp = match first.take() {
                Some(x) if i == 0 => x,
                _ => input::prepare(&a.input, &model, a.quiet)?,
            };
            let (punct, newline) = masks(&inp.pieces);
            let msg = if plan.len() > 1 {
                format!("input {}/{}: simulating {n_sim} layers", i + 1, plan.len())
            } else {
                format!("simulating {n_sim} layers")
            };
            let bar = model_arg::bar(a.quiet, model.config.n_layers as u64, &msg);
            let t = Instant::now();
            let mut results = simulate(
                &model,
                &inp.ids,
                &punct,
                &newline,
                &inp.needles,
                &cfg,
                &mut |_| bar.inc(1),
            )?;
            bar.finish_and_clear();
            let pipeline = results.pipeline.summary();
            if !a.quiet {
                eprintln!("{pipeline}");
            }
            manifest.timings.pipeline.push(pipeline);
            manifest.timings.layer_spans.extend(
                results
                    .pipeline
                    .layers
                    .iter()
                    .map(|&(l, h, s, f)| [i as f64, l as f64, h, s, f]),
            );
            tag_input(&mut results, i);
            let toks = token_rows(i, &inp, &punct, &newline);
            let qkv = if results.qkv.is_empty() {
                None
            } else {
                let file = qkv_file_name(i);
                write_qkv(&a.out.join(&file), i, &results.qkv)?;
                Some(QkvFile {
                    input: i,
                    file,
                    layers: results.qkv.iter().map(|l| l.layer).collect(),
                })
            };
            results.qkv.clear();
            let d = DoneInput {
                info: InputInfo {
                    index: i,
                    name: inp.name.clone(),
                    text: planned.text.clone(),
                    seed: planned.seed,
                    n_tokens: inp.ids.len(),
                    n_needles: inp.needles.len(),
                },
                seconds: t.elapsed().as_secs_f64(),
                method_s: results.method_seconds.clone(),
                qkv,
                tables: Vec::new(),
                fitted: std::mem::take(&mut results.fitted),
            };
            partial.save(i, &results, &toks, &ctx, d.clone())?;
            ran += 1;
            if stop_after == Some(ran) {
                bail!(
                    "interrupted after {ran} input(s) (ATTNSCOPE_INTERRUPT_AFTER_INPUTS); finish \
                     the run with --resume"
                );
            }
            (results, toks, d)
        };
        all.metrics.append(&mut results.metrics);
        all.iou.append(&mut results.iou);
        all.heads.append(&mut results.heads);
        all.selections.append(&mut results.selections);
        tokens.extend(toks);
        for (m, s) in &d.method_s {
            *manifest.timings.method_s.entry(m.clone()).or_default() += s;
        }
        manifest
            .timings
            .inputs_s
            .push(if done.contains(&i) { 0.0 } else { d.seconds });
        manifest.qkv.extend(d.qkv.clone());
        // The calibration pass is the same for every input: keep one copy.
        if manifest.fitted.is_empty() {
            manifest.fitted = d.fitted.clone();
            manifest.calibration = cfg.calibration.as_ref().map(|c| CalibrationInfo {
                text: c.name.clone(),
                n_tokens: c.ids.len(),
            });
        }
        manifest.data.inputs.push(d.info);
    }
    manifest.n_tokens = manifest.data.inputs.first().map_or(0, |x| x.n_tokens);
    manifest.data.dataset = a.input.dataset.clone();
    manifest.data.len = a.input.len;
    manifest.data.depth = a.input.depth;
    match hasher.join() {
        Ok((Ok(files), s)) => {
            manifest.model.files = files;
            manifest.timings.hash_s = s;
        }
        Ok((Err(e), _)) => manifest.warnings.push(format!("weights not hashed: {e}")),
        Err(_) => manifest
            .warnings
            .push("weights not hashed: hashing thread failed".into()),
    }
    manifest.timings.load_s = load_s;
    manifest.created_unix = now_unix();
    let t = Instant::now();
    let mut bundle = Bundle {
        dir: a.out.clone(),
        manifest,
        results: all,
        tokens,
    };
    bundle.manifest.timings.total_s = started.elapsed().as_secs_f64();
    bundle.write(false)?;
    bundle.manifest.timings.write_s = t.elapsed().as_secs_f64();
    bundle.manifest.timings.total_s = started.elapsed().as_secs_f64();
    // Rewrite the manifest with the write time (the tables are unchanged).
    write_json(&a.out.join("manifest.json"), &bundle.manifest)?;
    partial.finish()?;
    if !a.quiet {
        eprintln!(
            "wrote {} ({:.1} s)",
            a.out.display(),
            bundle.manifest.timings.total_s
        );
        let mut t: Vec<(&String, &f64)> = bundle.manifest.timings.method_s.iter().collect();
        t.sort_by(|a, b| b.1.total_cmp(a.1));
        let parts: Vec<String> = t.iter().map(|(m, s)| format!("{m} {s:.1}s")).collect();
        eprintln!("method time: {}", parts.join(", "));
    }
    super::report::print_text(&bundle)
}
