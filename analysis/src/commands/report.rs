//! `attnscope report RUN_DIR [--json]`: the method table of a run and the PHSA vs InfLLM v2
//! relative information-loss reduction, overall and per layer.

use std::path::PathBuf;

use anyhow::Result;
use attnscope_analysis::metrics::relative_il_reduction;
use attnscope_analysis::run_dir::Run;
use attnscope_analysis::sim::{summarize, MethodSummary};
use serde_json::json;

#[derive(clap::Args)]
pub struct Args {
    /// A run directory written by `attnscope simulate`.
    run: PathBuf,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let run = Run::read(&a.run)?;
    print_table(&run, a.json)
}

fn mean_iou(run: &Run, budget: usize, x: &str, y: &str) -> Option<f64> {
    let v: Vec<f64> = run
        .results
        .iou
        .iter()
        .filter(|r| {
            r.budget == budget
                && ((r.method_a == x && r.method_b == y) || (r.method_a == y && r.method_b == x))
        })
        .map(|r| r.iou)
        .collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// PHSA vs InfLLM v2 per layer: (layer, IL phsa, IL infllm-v2, reduction).
fn per_layer(run: &Run, budget: usize) -> Vec<(usize, f64, f64, f64)> {
    let il = |m: &str, l: usize| {
        let v: Vec<f64> = run
            .results
            .metrics
            .iter()
            .filter(|r| r.method == m && r.layer == l && r.budget == budget)
            .map(|r| r.info_loss)
            .collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    run.manifest
        .layers
        .iter()
        .filter_map(|&l| {
            let (p, i) = (il("phsa", l)?, il("infllm-v2", l)?);
            Some((l, p, i, relative_il_reduction(p, i)))
        })
        .collect()
}

fn headline(s: &[MethodSummary]) -> Option<(f64, f64, f64)> {
    let p = s.iter().find(|m| m.name == "phsa")?;
    let i = s.iter().find(|m| m.name == "infllm-v2")?;
    Some((
        p.info_loss,
        i.info_loss,
        relative_il_reduction(p.info_loss, i.info_loss),
    ))
}

/// Prints the tables of a run (text or one JSON object).
pub fn print_table(run: &Run, as_json: bool) -> Result<()> {
    let all = summarize(&run.results.metrics);
    let names: Vec<String> = run
        .manifest
        .methods
        .iter()
        .map(|m| m.name.clone())
        .collect();
    let mut budgets_json = Vec::new();
    for (bi, label) in run.manifest.budgets.iter().enumerate() {
        let s: Vec<MethodSummary> = all.iter().filter(|m| m.budget == bi).cloned().collect();
        let iou: Vec<Vec<Option<f64>>> = names
            .iter()
            .map(|x| {
                names
                    .iter()
                    .map(|y| {
                        if x == y {
                            Some(1.0)
                        } else {
                            mean_iou(run, bi, x, y)
                        }
                    })
                    .collect()
            })
            .collect();
        let head = headline(&s);
        if as_json {
            budgets_json.push(json!({
                "budget": label,
                "methods": s.iter().map(|m| json!({
                    "name": m.name, "sparsity": m.sparsity, "target_sparsity": m.target_sparsity,
                    "recall": m.recall, "info_loss": m.info_loss, "kl": m.kl,
                    "out_rel_err": m.out_rel_err, "cosine": m.cosine,
                    "needle_recall": m.needle_recall, "reached": m.reached,
                })).collect::<Vec<_>>(),
                "iou": { "methods": names, "matrix": iou },
                "phsa_vs_infllm_v2": head.map(|(p, i, r)| json!({
                    "info_loss_phsa": p, "info_loss_infllm_v2": i, "relative_il_reduction": r,
                    "per_layer": per_layer(run, bi).iter().map(|(l, p, i, r)| json!({
                        "layer": l, "info_loss_phsa": p, "info_loss_infllm_v2": i, "relative_il_reduction": r
                    })).collect::<Vec<_>>(),
                })),
            }));
            continue;
        }
        println!(
            "{} | {} tokens | {} | budget {label}",
            run.manifest.model, run.manifest.n_tokens, run.manifest.input
        );
        println!(
            "{:<16} {:>9} {:>9} {:>9} {:>10} {:>9} {:>9} {:>8} {:>8}",
            "method",
            "target",
            "sparsity",
            "recall",
            "info_loss",
            "KL",
            "out_err",
            "needle",
            "reached"
        );
        for m in &s {
            println!(
                "{:<16} {:>9.4} {:>9.4} {:>9.4} {:>10.4} {:>9.4} {:>9.4} {:>8} {:>7.0}%",
                m.name,
                m.target_sparsity,
                m.sparsity,
                m.recall,
                m.info_loss,
                m.kl,
                m.out_rel_err,
                m.needle_recall
                    .map_or("-".to_string(), |v| format!("{v:.4}")),
                m.reached * 100.0
            );
        }
        let missed: Vec<&str> = s
            .iter()
            .filter(|m| m.reached < 1.0)
            .map(|m| m.name.as_str())
            .collect();
        if !missed.is_empty() {
            println!(
                "note: {} did not reach the target everywhere (forced keys above the budget, or a \
                 knob too coarse); compare them at the sparsity they reached",
                missed.join(", ")
            );
        }
        if let Some((p, i, r)) = head {
            println!(
                "PHSA vs InfLLM v2: information loss {p:.4} vs {i:.4}, relative reduction {:+.1}%",
                r * 100.0
            );
            let layers: Vec<String> = per_layer(run, bi)
                .iter()
                .map(|(l, _, _, r)| format!("L{l} {:+.1}%", r * 100.0))
                .collect();
            println!("  per layer: {}", layers.join(", "));
        }
        println!();
    }
    if as_json {
        // The first budget's table at the top level, every budget under "budgets".
        let mut top = budgets_json.first().cloned().unwrap_or_else(|| json!({}));
        if let Some(o) = top.as_object_mut() {
            o.insert("run".into(), json!(run.dir));
            o.insert("model".into(), json!(run.manifest.model));
            o.insert("n_tokens".into(), json!(run.manifest.n_tokens));
            o.insert("budgets".into(), json!(budgets_json));
        }
        println!("{}", serde_json::to_string_pretty(&top)?);
    }
    Ok(())
}
