//! `attnscope report RUN [RUN2 ...] [--json | --markdown | --latex] [--compare A,B]`: the method
//! table of each run per budget, the relative information-loss reduction of method A over method
//! B (PHSA vs InfLLM v2 by default) with a bootstrap 95% interval (overall and per layer), and,
//! for several runs, a run-to-run comparison.

use std::path::PathBuf;

use anyhow::{bail, Result};
use attnscope_analysis::bundle::stats::{
    il_by_layer, mean_iou, relative_reduction, Reduction, Unit,
};
use attnscope_analysis::bundle::Bundle;
use attnscope_analysis::eval::{accuracy_by_depth, summarize_eval};
use attnscope_analysis::results::{summarize, MethodSummary};
use serde_json::{json, Value};

mod eval;
mod table;

use eval::eval_tables;
use table::{render, Style, Tab};

#[derive(clap::Args)]
pub struct Args {
    /// Run bundles written by `attnscope simulate` (several: compared run to run).
    #[arg(required = true, value_name = "RUN")]
    runs: Vec<PathBuf>,
    /// Print one JSON object.
    #[arg(long, conflicts_with_all = ["markdown", "latex"])]
    json: bool,
    /// Print Markdown tables.
    #[arg(long, conflicts_with = "latex")]
    markdown: bool,
    /// Print LaTeX tables (booktabs).
    #[arg(long)]
    latex: bool,
    /// Bootstrap resamples of the 95% interval (0: no interval).
    #[arg(long, default_value_t = 2000)]
    bootstrap: usize,
    /// Bootstrap resampling unit: `head` (input x layer x q-head) or `query-block`.
    #[arg(long, default_value = "head")]
    bootstrap_unit: String,
    /// Seed of the bootstrap.
    #[arg(long, default_value_t = 0)]
    bootstrap_seed: u64,
    /// The two methods compared, `A,B`: the relative information-loss reduction of A over B,
    /// `(IL_B - IL_A) / IL_B` (method labels as in the table, e.g. `phsa[lambda=1],phsa`).
    #[arg(long, default_value = "phsa,infllm-v2")]
    compare: String,
}

struct Opts {
    resamples: usize,
    unit: Unit,
    seed: u64,
    /// The compared methods (A over B).
    a: String,
    b: String,
}

impl Default for Opts {
    /// What `report` does without options: 2000 bootstrap resamples by head, seed 0, PHSA vs
    /// InfLLM v2.
    fn default() -> Self {
        Self {
            resamples: 2000,
            unit: Unit::Head,
            seed: 0,
            a: "phsa".into(),
            b: "infllm-v2".into(),
        }
    }
}

impl Opts {
    /// `A vs B`, as printed.
    fn pair(&self) -> String {
        format!("{} vs {}", self.a, self.b)
    }
}

fn pct(x: f64) -> String {
    format!("{:+.1}%", x * 100.0)
}

fn ci_text(r: &Reduction) -> String {
    match r.ci95 {
        Some((lo, hi)) => format!(
            " (95% CI [{}, {}], bootstrap over {} {}s)",
            pct(lo),
            pct(hi),
            r.n_units,
            r.unit.name()
        ),
        None => String::new(),
    }
}

fn headline(b: &Bundle, budget: usize, o: &Opts) -> Option<Reduction> {
    relative_reduction(
        &b.results.metrics,
        budget,
        &o.a,
        &o.b,
        o.unit,
        o.resamples,
        o.seed,
        b.manifest.scored_queries(),
        b.manifest.capture_block,
    )
}

/// A vs B per layer: (layer, IL of A, IL of B, reduction).
fn per_layer(b: &Bundle, budget: usize, o: &Opts) -> Vec<(usize, f64, f64, f64)> {
    let p = il_by_layer(&b.results.metrics, budget, &o.a);
    let i = il_by_layer(&b.results.metrics, budget, &o.b);
    p.iter()
        .filter_map(|&(l, x)| {
            let y = i.iter().find(|(li, _)| *li == l)?.1;
            Some((
                l,
                x,
                y,
                attnscope_analysis::metrics::relative_il_reduction(x, y),
            ))
        })
        .collect()
}

fn summaries(b: &Bundle, budget: usize) -> Vec<MethodSummary> {
    summarize(&b.results.metrics)
        .into_iter()
        .filter(|m| m.budget == budget)
        .collect()
}

fn describe(b: &Bundle) -> String {
    let m = &b.manifest;
    let inputs = m.data.inputs.len().max(1);
    let text = m
        .data
        .inputs
        .first()
        .map_or_else(String::new, |i| i.name.clone());
    let part = m.shard.as_ref().map_or_else(String::new, |s| {
        format!(
            " (part {}/{} of a sweep of {}: `attnscope merge` joins the parts)",
            s.index,
            s.count,
            s.sweep.len()
        )
    });
    format!(
        "{} | {} input{}{part} x {} tokens | {}{} | {}",
        m.model.identity(),
        inputs,
        if inputs == 1 { "" } else { "s" },
        m.n_tokens,
        text,
        if inputs > 1 { ", ..." } else { "" },
        queries_text(&m.queries)
    )
}

/// Which queries the numbers average over (the manifest's `queries`).
fn queries_text(queries: &str) -> String {
    match queries {
        "" | "all" => "every query scored (causal-triangle average)".into(),
        q => format!("queries {q} scored (decode accounting)"),
    }
}

fn method_table(b: &Bundle, budget: usize, label: &str) -> Tab {
    let s = summaries(b, budget);
    Tab {
        caption: format!("{} | budget {label}", describe(b)),
        head: [
            "method",
            "target",
            "sparsity",
            "recall",
            "info_loss",
            "KL",
            "out_err",
            "cosine",
            "needle",
            "reached",
        ]
        .map(String::from)
        .to_vec(),
        rows: s
            .iter()
            .map(|m| {
                vec![
                    m.name.clone(),
                    format!("{:.4}", m.target_sparsity),
                    format!("{:.4}", m.sparsity),
                    format!("{:.4}", m.recall),
                    format!("{:.4}", m.info_loss),
                    format!("{:.4}", m.kl),
                    format!("{:.4}", m.out_rel_err),
                    format!("{:.4}", m.cosine),
                    m.needle_recall
                        .map_or("-".to_string(), |v| format!("{v:.4}")),
                    format!("{:.0}%", m.reached * 100.0),
                ]
            })
            .collect(),
    }
}

/// The text report of one bundle (what `simulate` prints when it finishes).
pub fn print_text(b: &Bundle) -> Result<()> {
    print!("{}", render_bundle(b, Style::Text, &Opts::default()));
    Ok(())
}

fn render_bundle(b: &Bundle, style: Style, o: &Opts) -> String {
    let mut out = String::new();
    if !b.results.eval.is_empty() {
        for t in eval_tables(b) {
            out.push_str(&render(&t, style));
            out.push('\n');
        }
    }
    if b.results.metrics.is_empty() && !b.results.eval.is_empty() {
        return out;
    }
    for bi in &b.manifest.budgets {
        out.push_str(&render(&method_table(b, bi.index, &bi.label), style));
        let s = summaries(b, bi.index);
        let missed: Vec<&str> = s
            .iter()
            .filter(|m| m.reached < 1.0)
            .map(|m| m.name.as_str())
            .collect();
        let mut notes = Vec::new();
        if !missed.is_empty() {
            notes.push(format!(
                "note: {} did not reach the target everywhere (forced keys above the budget, or a \
                 knob too coarse); compare them at the sparsity they reached",
                missed.join(", ")
            ));
        }
        if let Some(r) = headline(b, bi.index, o) {
            notes.push(format!(
                "{}: information loss {:.4} vs {:.4}, relative reduction {}{}",
                o.pair(),
                r.il_a,
                r.il_b,
                pct(r.reduction),
                ci_text(&r)
            ));
            let layers: Vec<String> = per_layer(b, bi.index, o)
                .iter()
                .map(|(l, _, _, r)| format!("L{l} {}", pct(*r)))
                .collect();
            notes.push(format!("  per layer: {}", layers.join(", ")));
        }
        for n in notes {
            match style {
                Style::Latex => out.push_str(&format!("% {n}\n")),
                Style::Markdown => out.push_str(&format!("\n{n}\n")),
                Style::Text => out.push_str(&format!("{n}\n")),
            }
        }
        out.push('\n');
    }
    out
}

/// The JSON object `attnscope report RUN --json` prints for one bundle (2000 bootstrap
/// resamples by head, seed 0).
pub fn json(b: &Bundle) -> Value {
    bundle_json(b, &Opts::default())
}

fn bundle_json(b: &Bundle, o: &Opts) -> Value {
    let names: Vec<String> = b.manifest.methods.iter().map(|m| m.name.clone()).collect();
    let budgets: Vec<Value> = b
        .manifest
        .budgets
        .iter()
        .map(|bi| {
            let s = summaries(b, bi.index);
            let iou: Vec<Vec<Option<f64>>> = names
                .iter()
                .map(|x| {
                    names
                        .iter()
                        .map(|y| mean_iou(&b.results.iou, bi.index, x, y))
                        .collect()
                })
                .collect();
            json!({
                "budget": bi.label,
                "methods": s.iter().map(|m| json!({
                    "name": m.name, "sparsity": m.sparsity, "target_sparsity": m.target_sparsity,
                    "recall": m.recall, "info_loss": m.info_loss, "kl": m.kl,
                    "out_rel_err": m.out_rel_err, "cosine": m.cosine,
                    "needle_recall": m.needle_recall, "reached": m.reached,
                })).collect::<Vec<_>>(),
                "iou": { "methods": names, "matrix": iou },
                "method_comparison": headline(b, bi.index, o).map(|r| json!({
                    "method_a": o.a, "method_b": o.b,
                    "info_loss_a": r.il_a, "info_loss_b": r.il_b,
                    "relative_il_reduction": r.reduction,
                    "ci95": r.ci95.map(|(lo, hi)| [lo, hi]),
                    "bootstrap": { "unit": r.unit.name(), "resamples": r.resamples, "units": r.n_units },
                    "per_layer": per_layer(b, bi.index, o).iter().map(|(l, p, i, r)| json!({
                        "layer": l, "info_loss_a": p, "info_loss_b": i, "relative_il_reduction": r
                    })).collect::<Vec<_>>(),
                })),
            })
        })
        .collect();
    // The first budget's table at the top level, every budget under "budgets".
    let mut top = budgets.first().cloned().unwrap_or_else(|| json!({}));
    if let Some(obj) = top.as_object_mut() {
        obj.insert("run".into(), json!(b.dir));
        obj.insert("run_id".into(), json!(b.manifest.run_id));
        obj.insert("model".into(), json!(b.manifest.model.spec));
        obj.insert(
            "model_sha256".into(),
            json!(b.manifest.model.files.first().map(|f| &f.sha256)),
        );
        obj.insert("n_tokens".into(), json!(b.manifest.n_tokens));
        let queries = match b.manifest.queries.as_str() {
            "" => "all",
            q => q,
        };
        obj.insert("queries".into(), json!(queries));
        obj.insert("inputs".into(), json!(b.manifest.data.inputs.len()));
        if let Some(s) = &b.manifest.shard {
            obj.insert(
                "shard".into(),
                json!({ "index": s.index, "count": s.count, "sweep_inputs": s.sweep.len() }),
            );
        }
        obj.insert("budgets".into(), json!(budgets));
        if !b.results.eval.is_empty() {
            obj.insert(
                "eval".into(),
                json!({
                    "methods": summarize_eval(&b.results.eval),
                    "accuracy_by_depth": accuracy_by_depth(&b.results.eval),
                }),
            );
        }
    }
    top
}

/// Run-to-run comparison: per budget label and method found in every run, the information loss
/// of each run and its change from the first.
fn comparison(runs: &[Bundle], o: &Opts) -> (Vec<Tab>, Value) {
    let mut tabs = Vec::new();
    let mut js = Vec::new();
    let first = &runs[0];
    for bi in &first.manifest.budgets {
        let idx: Vec<Option<usize>> = runs
            .iter()
            .map(|r| {
                r.manifest
                    .budgets
                    .iter()
                    .find(|x| x.label == bi.label)
                    .map(|x| x.index)
            })
            .collect();
        if idx.iter().any(Option::is_none) {
            continue;
        }
        let idx: Vec<usize> = idx.into_iter().flatten().collect();
        let sums: Vec<Vec<MethodSummary>> = runs
            .iter()
            .zip(&idx)
            .map(|(r, &i)| summaries(r, i))
            .collect();
        let mut head = vec!["method".to_string()];
        head.extend(runs.iter().map(|r| format!("IL {}", r.manifest.run_id)));
        head.extend(
            runs.iter()
                .skip(1)
                .map(|r| format!("change {}", r.manifest.run_id)),
        );
        let mut rows = Vec::new();
        for m in &sums[0] {
            let ils: Option<Vec<f64>> = sums
                .iter()
                .map(|s| s.iter().find(|x| x.name == m.name).map(|x| x.info_loss))
                .collect();
            let Some(ils) = ils else { continue };
            let mut row = vec![m.name.clone()];
            row.extend(ils.iter().map(|x| format!("{x:.4}")));
            row.extend(
                ils.iter()
                    .skip(1)
                    .map(|x| attnscope_analysis::metrics::relative_il_reduction(*x, ils[0]))
                    .map(|r| pct(-r)),
            );
            js.push(json!({ "budget": bi.label, "method": m.name, "info_loss": ils }));
            rows.push(row);
        }
        let heads: Vec<Value> = runs
            .iter()
            .zip(&idx)
            .map(|(r, &i)| {
                headline(r, i, o).map_or(Value::Null, |h| {
                    json!({ "run": r.manifest.run_id, "relative_il_reduction": h.reduction,
                            "ci95": h.ci95.map(|(lo, hi)| [lo, hi]) })
                })
            })
            .collect();
        js.push(json!({ "budget": bi.label, "method_comparison": heads, "pair": o.pair() }));
        let mut row = vec![o.pair()];
        for (r, &i) in runs.iter().zip(&idx) {
            row.push(headline(r, i, o).map_or("-".into(), |h| {
                format!(
                    "{}{}",
                    pct(h.reduction),
                    h.ci95.map_or(String::new(), |(lo, hi)| format!(
                        " [{}, {}]",
                        pct(lo),
                        pct(hi)
                    ))
                )
            }));
        }
        row.resize(head.len(), String::new());
        rows.push(row);
        tabs.push(Tab {
            caption: format!(
                "run-to-run comparison | budget {} | information loss (change relative to {})",
                bi.label, first.manifest.run_id
            ),
            head,
            rows,
        });
    }
    (tabs, Value::Array(js))
}

/// Warns about runs that cannot be compared like for like, naming their manifests.
fn check_mix(runs: &[Bundle]) {
    let first = &runs[0];
    for r in &runs[1..] {
        if !first.manifest.model.same_weights(&r.manifest.model) {
            eprintln!(
                "warning: runs use different models: {} ({}) vs {} ({}); comparing them anyway",
                first.dir.join("manifest.json").display(),
                first.manifest.model.identity(),
                r.dir.join("manifest.json").display(),
                r.manifest.model.identity()
            );
        }
        if first.manifest.n_tokens != r.manifest.n_tokens {
            eprintln!(
                "warning: {} has {} tokens per input, {} has {}",
                first.dir.join("manifest.json").display(),
                first.manifest.n_tokens,
                r.dir.join("manifest.json").display(),
                r.manifest.n_tokens
            );
        }
    }
}

pub fn run(a: Args) -> Result<()> {
    let unit: Unit = match a.bootstrap_unit.parse() {
        Ok(u) => u,
        Err(e) => bail!("--bootstrap-unit: {e}"),
    };
    let Some((ma, mb)) = a.compare.split_once(',') else {
        bail!("--compare '{}': expected two method labels, A,B", a.compare);
    };
    let o = Opts {
        resamples: a.bootstrap,
        unit,
        seed: a.bootstrap_seed,
        a: ma.trim().to_string(),
        b: mb.trim().to_string(),
    };
    let runs: Vec<Bundle> = a
        .runs
        .iter()
        .map(|d| Bundle::read(d))
        .collect::<Result<_, _>>()?;
    check_mix(&runs);
    if a.json {
        let v = if runs.len() == 1 {
            bundle_json(&runs[0], &o)
        } else {
            json!({
                "runs": runs.iter().map(|b| bundle_json(b, &o)).collect::<Vec<_>>(),
                "comparison": comparison(&runs, &o).1,
            })
        };
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let style = if a.markdown {
        Style::Markdown
    } else if a.latex {
        Style::Latex
    } else {
        Style::Text
    };
    for b in &runs {
        print!("{}", render_bundle(b, style, &o));
    }
    if runs.len() > 1 {
        for t in comparison(&runs, &o).0 {
            print!("{}", render(&t, style));
            println!();
        }
    }
    Ok(())
}
