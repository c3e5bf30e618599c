//! The report of a bundle written by `attnscope eval`.

use attnscope_analysis::bundle::Bundle;
use attnscope_analysis::eval::{accuracy_by_depth, summarize_eval};

use super::table::Tab;

/// The end-to-end evaluation tables of a bundle written by `attnscope eval`: accuracy,
/// perplexity and fidelity side by side per (method, budget), then needle accuracy by depth.
pub(super) fn eval_tables(b: &Bundle) -> Vec<Tab> {
    let f = |x: f64| format!("{x:.4}");
    let opt = |x: Option<f64>| x.map_or_else(|| "-".to_string(), |v| format!("{v:.4}"));
    let rows = summarize_eval(&b.results.eval)
        .iter()
        .map(|m| {
            vec![
                m.method.clone(),
                m.budget_label.clone(),
                m.inputs.to_string(),
                f(m.sparsity),
                opt(m.recall),
                format!("{:.3}", m.ppl),
                format!("{:+.3}", m.delta_ppl),
                f(m.kl),
                f(m.token_accuracy),
                opt(m.accuracy),
                f(m.reached),
            ]
        })
        .collect();
    let head = [
        "method",
        "budget",
        "inputs",
        "sparsity",
        "recall",
        "ppl",
        "dppl",
        "KL",
        "tok acc",
        "exact match",
        "reached",
    ];
    let mut tabs = vec![Tab {
        caption: "end-to-end evaluation (sparse prefill): accuracy, perplexity and fidelity".into(),
        head: head.iter().map(|h| h.to_string()).collect(),
        rows,
    }];
    let depth = accuracy_by_depth(&b.results.eval);
    if !depth.is_empty() {
        tabs.push(Tab {
            caption: "needle accuracy (exact match) by depth and length".into(),
            head: ["method", "budget", "tokens", "depth", "inputs", "accuracy"]
                .iter()
                .map(|h| h.to_string())
                .collect(),
            rows: depth
                .iter()
                .map(|d| {
                    vec![
                        d.method.clone(),
                        d.budget_label.clone(),
                        d.tokens.to_string(),
                        format!("{:.2}", d.depth),
                        d.inputs.to_string(),
                        format!("{:.3}", d.accuracy),
                    ]
                })
                .collect(),
        });
    }
    tabs
}
