//! `attnscope simulate`: replay every method on a real model's exact attention and measure it.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use attnscope_analysis::budget::Budget;
use attnscope_analysis::registry::{self, MethodKind};
use attnscope_analysis::run_dir::{Manifest, ManifestMethod, Run, TokenRow, FORMAT_VERSION};
use attnscope_analysis::sim::{simulate, MethodRun, SimConfig};
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
    /// Layers to simulate: `all` or a list like `0,3,10-12`.
    #[arg(long, default_value = "all")]
    layers: String,
    /// Key block size of the captured block masses and pooled maps.
    #[arg(long, default_value_t = 64)]
    capture_block: usize,
    /// Output run directory.
    #[arg(long)]
    out: PathBuf,
    /// Overwrite an existing run directory.
    #[arg(long)]
    force: bool,
    /// No progress output.
    #[arg(long)]
    quiet: bool,
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
    let budgets = budgets(&a)?;
    let infos = registry::parse_list(&a.methods)?;
    let ov = overrides(&a.params)?;
    let model = model_arg::load(&a.model, a.input.tokenizer.as_deref(), a.quiet)?;
    let layers = parse_layers(&a.layers, model.config.n_layers)?;
    let inp = input::prepare(&a.input, &model, a.quiet)?;
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
    let cfg = SimConfig {
        methods,
        budgets: budgets.clone(),
        layers: layers.clone(),
        capture_block: a.capture_block.max(1),
        freq_top_k: 64,
        freq_queries: 256,
        query_block: a.capture_block.max(1),
    };
    let plain = PunctOptions {
        newlines: false,
        ..PunctOptions::default()
    };
    let punct: Vec<bool> = inp
        .pieces
        .iter()
        .map(|p| is_punct_piece(p, &plain))
        .collect();
    let newline: Vec<bool> = inp
        .pieces
        .iter()
        .zip(&punct)
        .map(|(p, &pu)| !pu && is_punct_piece(p, &PunctOptions::default()))
        .collect();
    let n_sim = layers.as_ref().map_or(model.config.n_layers, Vec::len);
    let bar = model_arg::bar(
        a.quiet,
        model.config.n_layers as u64,
        &format!("simulating {n_sim} layers"),
    );
    let started = Instant::now();
    let results = simulate(
        &model,
        &inp.ids,
        &punct,
        &newline,
        &inp.needles,
        &cfg,
        &mut |_| bar.inc(1),
    )?;
    bar.finish_and_clear();
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        model: model.source.display().to_string(),
        architecture: model.config.arch.name().to_string(),
        input: inp.name.clone(),
        n_tokens: inp.ids.len(),
        seed: a.input.seed,
        device: "cpu".into(),
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
        budgets: budgets.iter().map(budget_label).collect(),
        layers: layers.unwrap_or_else(|| (0..model.config.n_layers).collect()),
        capture_block: cfg.capture_block,
        seconds: started.elapsed().as_secs_f64(),
    };
    let tokens = inp
        .ids
        .iter()
        .enumerate()
        .map(|(i, &id)| TokenRow {
            position: i,
            id,
            piece: inp.pieces[i].clone(),
            is_punct: punct[i],
            is_newline: newline[i],
        })
        .collect();
    let run = Run {
        dir: a.out.clone(),
        manifest,
        results,
        tokens,
    };
    run.write(a.force)?;
    if !a.quiet {
        eprintln!("wrote {} ({:.1} s)", a.out.display(), run.manifest.seconds);
        let mut t: Vec<(&String, &f64)> = run.results.method_seconds.iter().collect();
        t.sort_by(|a, b| b.1.total_cmp(a.1));
        let parts: Vec<String> = t.iter().map(|(m, s)| format!("{m} {s:.1}s")).collect();
        eprintln!("method time: {}", parts.join(", "));
    }
    super::report::print_table(&run, false)
}
