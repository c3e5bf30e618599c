//! The eval table summarized for reports: per (method, budget) the means over inputs, and
//! per (method, budget, depth, length) the exact-match accuracy of tasks.

use crate::results::{mean, EvalRow};

/// One (method, budget) over every input of an evaluation.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EvalSummary {
    pub method: String,
    pub budget_label: String,
    pub inputs: usize,
    /// Mean sparsity reached.
    pub sparsity: f64,
    /// Mean recall of the sparse layers (`None` without fidelity metrics or for dense).
    pub recall: Option<f64>,
    pub ppl: f64,
    pub delta_ppl: f64,
    pub kl: f64,
    pub token_accuracy: f64,
    /// Share of inputs whose answer greedy decoding reproduces (tasks only).
    pub accuracy: Option<f64>,
    /// Share of inputs on which every layer reached the target.
    pub reached: f64,
}

/// Exact-match accuracy of one (method, budget) at one needle depth and length.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DepthAccuracy {
    pub method: String,
    pub budget_label: String,
    pub depth: f64,
    pub tokens: usize,
    pub inputs: usize,
    pub accuracy: f64,
}

/// Per (method, budget), in the order rows first name them: means over inputs.
pub fn summarize_eval(rows: &[EvalRow]) -> Vec<EvalSummary> {
    groups(rows, |r| (r.method.clone(), r.budget_label.clone()))
        .into_iter()
        .map(|((method, budget_label), g)| {
            let avg = |f: fn(&EvalRow) -> f64| mean(g.iter().map(|r| f(r)));
            let share = |f: fn(&EvalRow) -> Option<bool>| {
                let v: Vec<bool> = g.iter().filter_map(|r| f(r)).collect();
                (!v.is_empty()).then(|| mean(v.iter().map(|&b| f64::from(u8::from(b)))))
            };
            let recalls: Vec<f64> = g.iter().filter_map(|r| r.recall).collect();
            EvalSummary {
                method,
                budget_label,
                inputs: g.len(),
                sparsity: avg(|r| r.sparsity),
                recall: (!recalls.is_empty()).then(|| mean(recalls.into_iter())),
                ppl: avg(|r| r.ppl),
                delta_ppl: avg(|r| r.delta_ppl),
                kl: avg(|r| r.kl),
                token_accuracy: avg(|r| r.token_accuracy),
                accuracy: share(|r| r.exact_match),
                reached: mean(g.iter().map(|r| f64::from(u8::from(r.reached)))),
            }
        })
        .collect()
}

/// Exact-match accuracy per (method, budget, depth, length) over the task rows.
pub fn accuracy_by_depth(rows: &[EvalRow]) -> Vec<DepthAccuracy> {
    let tasks: Vec<EvalRow> = rows
        .iter()
        .filter(|r| r.exact_match.is_some() && r.depth.is_some())
        .cloned()
        .collect();
    let key = |r: &EvalRow| {
        let depth = r.depth.unwrap_or(0.0);
        (
            r.method.clone(),
            r.budget_label.clone(),
            depth.to_bits(),
            r.tokens,
        )
    };
    groups(&tasks, key)
        .into_iter()
        .map(|((method, budget_label, depth, tokens), g)| DepthAccuracy {
            method,
            budget_label,
            depth: f64::from_bits(depth),
            tokens,
            inputs: g.len(),
            accuracy: mean(
                g.iter()
                    .map(|r| f64::from(u8::from(r.exact_match == Some(true)))),
            ),
        })
        .collect()
}

/// Rows grouped by `key`, groups in the order of their first row.
fn groups<K: PartialEq>(rows: &[EvalRow], key: impl Fn(&EvalRow) -> K) -> Vec<(K, Vec<&EvalRow>)> {
    let mut out: Vec<(K, Vec<&EvalRow>)> = Vec::new();
    for r in rows {
        let k = key(r);
        match out.iter_mut().find(|(x, _)| *x == k) {
            Some((_, g)) => g.push(r),
            None => out.push((k, vec![r])),
        }
    }
    out
}
