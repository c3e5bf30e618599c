//! Per-method aggregates of metric rows (the report's method table).

use serde::{Deserialize, Serialize};

use super::MetricRow;

/// Mean of `xs`, NaN when empty (the per-head and per-method aggregates of every table).
pub fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let (s, c) = xs.fold((0.0, 0usize), |(s, c), x| (s + x, c + 1));
    if c == 0 {
        f64::NAN
    } else {
        s / c as f64
    }
}

/// Per-method overall means over every (layer, q-head) of one budget (each head has the same
/// number of queries, so this weighs every (layer, q-head, query) equally).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodSummary {
    pub name: String,
    pub budget: usize,
    pub target_sparsity: f64,
    pub sparsity: f64,
    pub recall: f64,
    pub info_loss: f64,
    pub kl: f64,
    pub out_rel_err: f64,
    pub cosine: f64,
    pub needle_recall: Option<f64>,
    /// Fraction of (layer, KV group) calibrations that reached the target within tolerance.
    pub reached: f64,
}

/// Aggregates metric rows per (method, budget), in first-seen method order.
pub fn summarize(rows: &[MetricRow]) -> Vec<MethodSummary> {
    let mut keys: Vec<(String, usize)> = Vec::new();
    for r in rows {
        if !keys.iter().any(|(m, b)| *m == r.method && *b == r.budget) {
            keys.push((r.method.clone(), r.budget));
        }
    }
    keys.sort_by_key(|k| k.1);
    keys.into_iter()
        .map(|(name, budget)| {
            let rs: Vec<&MetricRow> = rows
                .iter()
                .filter(|r| r.method == name && r.budget == budget)
                .collect();
            let needle = mean(rs.iter().filter_map(|r| r.needle_recall));
            MethodSummary {
                target_sparsity: mean(rs.iter().map(|r| r.target_sparsity)),
                sparsity: mean(rs.iter().map(|r| r.sparsity)),
                recall: mean(rs.iter().map(|r| r.recall)),
                info_loss: mean(rs.iter().map(|r| r.info_loss)),
                kl: mean(rs.iter().map(|r| r.kl)),
                out_rel_err: mean(rs.iter().map(|r| r.out_rel_err)),
                cosine: mean(rs.iter().map(|r| r.cosine)),
                needle_recall: (!needle.is_nan()).then_some(needle),
                reached: mean(rs.iter().map(|r| if r.reached { 1.0 } else { 0.0 })),
                name,
                budget,
            }
        })
        .collect()
}
