//! Aggregates of a bundle used by reports and figures: per-layer information loss, mean IoU,
//! and the relative information-loss reduction of one method over another with a bootstrap 95%
//! interval.
//!
//! Bootstrap: the resampling unit is a (input, layer, q-head) by default — every head's
//! information loss averages all its queries, and heads are the independent-ish units a claim
//! about "the model" generalizes over — or a (input, layer, q-head, query block) with
//! `Unit::QueryBlock` (tighter, but query blocks of one head are correlated). Units are paired:
//! both methods' values of one unit are resampled together. The statistic is
//! `(sum IL_b - sum IL_a) / sum IL_b` (query blocks weighted by their query count), and the
//! interval is the 2.5 / 97.5 percentiles of `resamples` resamples (percentile bootstrap,
//! deterministic seed).

use std::collections::HashMap;

use attnscope_core::rng::Rng;

use crate::results::{IouRow, MetricRow};

/// Resampling unit of the bootstrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Head,
    QueryBlock,
}

impl std::str::FromStr for Unit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "head" => Ok(Unit::Head),
            "query-block" | "query_block" => Ok(Unit::QueryBlock),
            _ => Err(format!(
                "unknown bootstrap unit '{s}': expected head or query-block"
            )),
        }
    }
}

impl Unit {
    /// Name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Unit::Head => "head",
            Unit::QueryBlock => "query-block",
        }
    }
}

/// Relative information-loss reduction of method `a` over method `b`.
#[derive(Debug, Clone, PartialEq)]
pub struct Reduction {
    pub il_a: f64,
    pub il_b: f64,
    /// `(IL_b - IL_a) / IL_b`.
    pub reduction: f64,
    /// Bootstrap 95% interval of `reduction`, when resampled.
    pub ci95: Option<(f64, f64)>,
    pub unit: Unit,
    pub n_units: usize,
    pub resamples: usize,
}

/// Paired units `(weight, IL_a, IL_b)` of two methods at one budget.
pub fn paired_units(
    rows: &[MetricRow],
    budget: usize,
    a: &str,
    b: &str,
    unit: Unit,
    n_tokens: usize,
    block: usize,
) -> Vec<(f64, f64, f64)> {
    let mut of_b: HashMap<(usize, usize, usize), &MetricRow> = HashMap::new();
    for r in rows.iter().filter(|r| r.budget == budget && r.method == b) {
        of_b.insert((r.input, r.layer, r.head), r);
    }
    let mut out = Vec::new();
    for ra in rows.iter().filter(|r| r.budget == budget && r.method == a) {
        let Some(rb) = of_b.get(&(ra.input, ra.layer, ra.head)) else {
            continue;
        };
        match unit {
            Unit::Head => out.push((1.0, ra.info_loss, rb.info_loss)),
            Unit::QueryBlock => {
                let (qa, qb) = (&ra.recall_by_query_block, &rb.recall_by_query_block);
                if qa.len() != qb.len() || qa.is_empty() {
                    out.push((1.0, ra.info_loss, rb.info_loss));
                    continue;
                }
                for (q, (&x, &y)) in qa.iter().zip(qb).enumerate() {
                    let w = if n_tokens > 0 && block > 0 {
                        n_tokens.saturating_sub(q * block).min(block).max(1) as f64
                    } else {
                        1.0
                    };
                    out.push((w, 1.0 - f64::from(x), 1.0 - f64::from(y)));
                }
            }
        }
    }
    out
}

fn reduction_of(units: &[(f64, f64, f64)], pick: impl Iterator<Item = usize>) -> (f64, f64, f64) {
    let (mut w, mut sa, mut sb) = (0.0, 0.0, 0.0);
    for i in pick {
        let (wi, a, b) = units[i];
        w += wi;
        sa += wi * a;
        sb += wi * b;
    }
    let (ila, ilb) = (sa / w, sb / w);
    (ila, ilb, crate::metrics::relative_il_reduction(ila, ilb))
}

/// Percentile `q` (0..1) of sorted values, linearly interpolated.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let x = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (x.floor() as usize, x.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (x - lo as f64)
}

/// The relative IL reduction of `a` over `b` at `budget`, with a bootstrap 95% interval when
/// `resamples > 0` and there are at least two units. `None` when either method is missing.
pub fn relative_reduction(
    rows: &[MetricRow],
    budget: usize,
    a: &str,
    b: &str,
    unit: Unit,
    resamples: usize,
    seed: u64,
    n_tokens: usize,
    block: usize,
) -> Option<Reduction> {
    let units = paired_units(rows, budget, a, b, unit, n_tokens, block);
    if units.is_empty() {
        return None;
    }
    let n = units.len();
    let (il_a, il_b, reduction) = reduction_of(&units, 0..n);
    let ci95 = (resamples > 0 && n > 1).then(|| {
        // One draw per pick (multiply-high, no rejection): the intervals are pinned to this.
        let mut rng = Rng::from_state(seed ^ 0x5EED_A77E);
        let mut stats: Vec<f64> = (0..resamples)
            .map(|_| {
                let pick: Vec<usize> = (0..n).map(|_| rng.below_fast(n as u64) as usize).collect();
                reduction_of(&units, pick.into_iter()).2
            })
            .filter(|x| x.is_finite())
            .collect();
        stats.sort_by(f64::total_cmp);
        (percentile(&stats, 0.025), percentile(&stats, 0.975))
    });
    Some(Reduction {
        il_a,
        il_b,
        reduction,
        ci95,
        unit,
        n_units: n,
        resamples: if ci95.is_some() { resamples } else { 0 },
    })
}

/// Mean information loss of `method` at `budget` per layer, in layer order.
pub fn il_by_layer(rows: &[MetricRow], budget: usize, method: &str) -> Vec<(usize, f64)> {
    let mut acc: std::collections::BTreeMap<usize, (f64, usize)> = Default::default();
    for r in rows
        .iter()
        .filter(|r| r.budget == budget && r.method == method)
    {
        let e = acc.entry(r.layer).or_default();
        e.0 += r.info_loss;
        e.1 += 1;
    }
    acc.into_iter()
        .map(|(l, (s, c))| (l, s / c as f64))
        .collect()
}

/// Mean IoU of two methods at `budget` over layers, KV heads and inputs (1 for x == y).
pub fn mean_iou(rows: &[IouRow], budget: usize, x: &str, y: &str) -> Option<f64> {
    if x == y {
        return Some(1.0);
    }
    let v: Vec<f64> = rows
        .iter()
        .filter(|r| {
            r.budget == budget
                && ((r.method_a == x && r.method_b == y) || (r.method_a == y && r.method_b == x))
        })
        .map(|r| r.iou)
        .collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_interpolates() {
        let v = [0.0, 1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 0.5), 2.0);
        assert!((percentile(&v, 0.025) - 0.1).abs() < 1e-12);
    }

    /// The bootstrap interval is pinned: same rows and seed, same interval, bit for bit.
    #[test]
    fn bootstrap_interval_is_pinned() {
        let row = |head: usize, method: &str, info_loss: f64| MetricRow {
            input: 0,
            layer: head / 4,
            head,
            kv_head: head / 2,
            method: method.to_string(),
            budget: 0,
            knob: 0.0,
            target_sparsity: 0.9,
            sparsity: 0.9,
            recall: 1.0 - info_loss,
            info_loss,
            kl: 0.0,
            out_rel_err: 0.0,
            cosine: 1.0,
            needle_recall: None,
            reached: true,
            recall_by_query_block: Vec::new(),
        };
        let rows: Vec<MetricRow> = (0..12)
            .flat_map(|h| {
                // Plain arithmetic (no libm) so the rows are the same on every platform.
                let (x, y) = (((h * 7) % 5) as f64, ((h * 5) % 7) as f64);
                [row(h, "a", 0.05 + 0.004 * x), row(h, "b", 0.07 + 0.006 * y)]
            })
            .collect();
        let r = relative_reduction(&rows, 0, "a", "b", Unit::Head, 500, 11, 256, 64)
            .expect("both methods");
        let (lo, hi) = r.ci95.expect("resampled");
        // Rng::from_state(seed ^ 0x5EED_A77E), one below_fast draw per pick.
        assert_eq!(
            [r.reduction.to_bits(), lo.to_bits(), hi.to_bits()],
            [
                0x3fd6_4d93_64d9_364c,
                0x3fd2_0ed4_3a5e_289a,
                0x3fd9_e5e0_f584_3005
            ]
        );
        assert!(lo <= r.reduction && r.reduction <= hi);
        assert_eq!((r.n_units, r.resamples), (12, 500));
    }
}
