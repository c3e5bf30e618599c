//! `attnscope eval`: what each method's selection does to the model's own output (sparse
//! prefill; perplexity of the last N tokens, KL to dense, needle accuracy by teacher forcing).
//! Parses the options and calls `attnscope_analysis::eval`.

use anyhow::{bail, Context, Result};
use attnscope_analysis::budget::Budget;
use attnscope_analysis::bundle::{Bundle, CalibrationInfo, InputInfo, Manifest};
use attnscope_analysis::eval::{run_eval, EvalConfig, EvalInput};
use attnscope_analysis::input::{ids_sha256, SimInput};
use attnscope_analysis::results::SimResults;
use attnscope_analysis::sim::MethodRun;
use attnscope_datasets::TaskParams;

use super::simulate::{calibration_spec, parse_layers};
use super::{input, model_arg, run_args::RunArgs};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    run: RunArgs,
    #[command(flatten)]
    input: input::InputArgs,
    /// Seeds: a list and ranges, e.g. `0-19` or `0,3,5-7` (overrides --seed).
    #[arg(long)]
    seeds: Option<String>,
    /// Needle depths of a synthetic task, e.g. `0.1,0.5,0.9` (overrides --depth).
    #[arg(long, value_delimiter = ',')]
    depths: Vec<f64>,
    /// Plain text: score the perplexity of its last N tokens (required with --dataset text).
    #[arg(long, value_parser = input::at_least_one)]
    ppl_last: Option<usize>,
    /// Target sparsities, comma-separated; each method is calibrated to them per layer.
    #[arg(long, value_delimiter = ',', conflicts_with = "budget_tokens")]
    sparsity: Vec<f64>,
    /// Keys per query, forced keys included.
    #[arg(long)]
    budget_tokens: Option<usize>,
    /// Layers made sparse: `all` or a list like `0,3,10-12` (the others stay dense).
    #[arg(long, default_value = "all")]
    layers: String,
    /// Skip recall, output error and cosine of the sparse layers (saves the exact attention).
    #[arg(long)]
    no_fidelity: bool,
    /// The command line as given, recorded in the bundle's manifest (set by the caller).
    #[arg(skip)]
    pub command: Vec<String>,
}

/// `--seeds`: whole numbers and ranges `a-b`, comma-separated.
fn parse_seeds(spec: &str) -> Result<Vec<u64>> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let num = |x: &str| {
            x.trim()
                .parse::<u64>()
                .with_context(|| format!("--seeds '{spec}': '{x}' is not a whole number"))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b || b - a > 100_000 {
                    bail!("--seeds '{spec}': '{part}' is not a range a-b with a <= b");
                }
                out.extend(a..=b);
            }
            None => out.push(num(part)?),
        }
    }
    if out.is_empty() {
        bail!("--seeds '{spec}': no seeds given");
    }
    Ok(out)
}

/// The configured methods with their `--param` overrides.
/// `--methods none` evaluates dense attention alone (a task's accuracy anchor).
fn method_runs(a: &Args) -> Result<Vec<MethodRun>> {
    if a.run.methods == "none" {
        return Ok(Vec::new());
    }
    let runs = a.run.listed_methods()?;
    if runs.is_empty() {
        bail!(
            "--methods '{}': no methods given (`none` evaluates dense attention alone)",
            a.run.methods
        );
    }
    Ok(runs)
}

/// Every input: each seed of a plain text (scored on its last --ppl-last tokens), or each seed
/// at each depth of a task (its reference answer teacher-forced).
fn inputs(a: &Args, model: &attnscope_core::Model) -> Result<Vec<(EvalInput, u64)>> {
    let seeds = match &a.seeds {
        Some(s) => parse_seeds(s)?,
        None => vec![a.input.seed],
    };
    let mut out = Vec::new();
    if a.input.dataset == "text" {
        let Some(last) = a.ppl_last else {
            bail!("--dataset text: give --ppl-last N, the tokens whose perplexity is scored");
        };
        for &seed in &seeds {
            let args = input::InputArgs {
                seed,
                ..input::InputArgs::plain(&a.input.text, a.input.len, seed)
            };
            let args = input::InputArgs {
                offset: a.input.offset,
                keep_crlf: a.input.keep_crlf,
                latin1: a.input.latin1,
                ..args
            };
            let sim = input::prepare(&args, model, a.run.quiet)?;
            out.push((EvalInput::text(sim, last)?, seed));
        }
        return Ok(out);
    }
    if a.ppl_last.is_some() {
        bail!("--ppl-last is for plain text; a task scores its reference answer");
    }
    if a.input.len > model.config.max_context {
        bail!(
            "--len {} is more than the model's context of {} tokens",
            a.input.len,
            model.config.max_context
        );
    }
    let hay = input::load_text(&a.input.text, &a.input.text_options(), a.run.quiet)?;
    let depths: Vec<Option<f64>> = match a.depths.is_empty() {
        true => vec![a.input.depth],
        false => a.depths.iter().map(|&d| Some(d)).collect(),
    };
    for &seed in &seeds {
        for &depth in &depths {
            let mut p = TaskParams::new(a.input.len, seed);
            p.depth = depth;
            p.offset = a.input.offset;
            let (ev, _) = EvalInput::generate_task(&a.input.dataset, model.tokenizer()?, &hay, &p)?;
            out.push((ev, seed));
        }
    }
    Ok(out)
}

fn config(a: &Args, model: &attnscope_core::Model) -> Result<EvalConfig> {
    let budgets = match (a.budget_tokens, a.sparsity.is_empty()) {
        (Some(k), _) => vec![Budget::Tokens(k)],
        (None, true) => vec![Budget::Sparsity(0.9)],
        (None, false) => a.sparsity.iter().map(|&s| Budget::Sparsity(s)).collect(),
    };
    let mut cfg = EvalConfig::new(method_runs(a)?, budgets);
    cfg.sim.layers = parse_layers("--layers", &a.layers, model.config.n_layers)?;
    cfg.fidelity = !a.no_fidelity;
    let fit: Vec<String> = cfg
        .sim
        .methods
        .iter()
        .filter(|m| m.selector.needs_calibration())
        .map(|m| m.label.clone())
        .collect();
    let spec = calibration_spec(
        (a.run.calibration_text.as_deref(), a.run.calibration_len),
        (&a.input.text, a.input.len),
        &fit,
        a.run.quiet,
    );
    if let Some((spec, len)) = spec {
        let args = input::InputArgs::plain(&spec, len, 0);
        let cal = input::prepare(&args, model, a.run.quiet)?;
        cfg.sim.calibration = Some(SimInput { name: spec, ..cal });
    }
    Ok(cfg)
}

pub fn run(a: Args) -> Result<()> {
    let started = std::time::Instant::now();
    if a.run.out.join("manifest.json").exists() && !a.run.force {
        bail!(
            "{}: already holds a finished run (manifest.json); pass --force to overwrite it",
            a.run.out.display()
        );
    }
    let model = a.run.load_model(a.input.tokenizer.as_deref())?;
    let cfg = config(&a, &model)?;
    cfg.check(&model)?;
    let inputs = inputs(&a, &model)?;
    let evals: Vec<EvalInput> = inputs.iter().map(|(e, _)| e.clone()).collect();
    let runs = evals.len() * (1 + cfg.sim.methods.len() * cfg.sim.budgets.len());
    let bar = model_arg::bar(a.run.quiet, runs as u64, "eval");
    let results = run_eval(&model, &cfg, &evals, &mut |p| {
        bar.set_message(format!("input {} {} {}", p.input, p.method, p.budget));
        bar.inc(1);
    })?;
    bar.finish_and_clear();
    let mut m = Manifest::for_eval(&model, &cfg, &a.run.model);
    m.run_id = a
        .run
        .out
        .file_name()
        .map_or_else(|| "run".into(), |f| f.to_string_lossy().into_owned());
    m.command = a.command.clone();
    m.data.dataset = a.input.dataset.clone();
    m.data.len = a.input.len;
    m.data.depth = a.input.depth;
    m.n_tokens = evals.first().map_or(0, EvalInput::len);
    m.calibration = cfg.sim.calibration.as_ref().map(|c| CalibrationInfo {
        text: c.name.clone(),
        n_tokens: c.ids.len(),
    });
    m.data.inputs = inputs
        .iter()
        .enumerate()
        .map(|(index, (e, seed))| InputInfo {
            index,
            name: e.input.name.clone(),
            text: a.input.text.clone(),
            seed: *seed,
            n_tokens: e.len(),
            n_needles: e.input.needles.len(),
            start_char: e.input.start_char,
            repeated: e.input.repeated,
            ids_sha256: ids_sha256(&e.input.ids),
        })
        .collect();
    m.timings.total_s = started.elapsed().as_secs_f64();
    let mut bundle = Bundle {
        dir: a.run.out.clone(),
        manifest: m,
        results: SimResults {
            eval: results.rows,
            ..SimResults::default()
        },
        tokens: evals
            .iter()
            .enumerate()
            .flat_map(|(i, e)| e.input.token_rows(i))
            .collect(),
    };
    bundle.write(a.run.force)?;
    if !a.run.quiet {
        super::report::print_text(&bundle)?;
        eprintln!("wrote {}", a.run.out.display());
    }
    Ok(())
}
