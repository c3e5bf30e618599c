//! `flexprefill`: FlexPrefill's context-aware block selection (block B = 128), per q-head.
//!
//! Lai et al., FlexPrefill: A Context-Aware Sparse Attention Mechanism for Efficient
//! Long-Sequence Inference, ICLR 2025 (arXiv:2502.20766); replayed from the public
//! `get_active_blocks`:
//! 1. The exact causal attention of the last B queries gives token-level vertical (column mean)
//!    and slash (diagonal mean) distributions, each summing to 1.
//! 2. Pattern choice: `a` = softmax over key blocks of `mean(last B queries) . mean(K_b) / sqrt d`,
//!    `b` = the vertical distribution summed per key block; a head is query-aware when
//!    `sqrt(JSD(a, b)) < tau` (0 ln 0 = 0), else vertical-slash.
//! 3. Vertical-slash budget: `K` = fewest top tokens whose vertical (slash) mass reaches gamma;
//!    keep `K / B + 1` column blocks (diagonal blocks), clamped to `[ceil(min_budget / B), n_blocks]`,
//!    ranked by block-summed mass with block 0 (diagonal block 0) first. Query block `r` keeps
//!    column blocks `c <= r` and key blocks `r - delta`. Query-aware heads keep vertical-slash at the
//!    minimum budget plus the fewest entries of the block-level map
//!    `softmax_{b <= r}(mean(Q_r) . mean(K_b) / sqrt d)`, flattened over all rows, whose mass
//!    reaches `gamma * n_blocks`.
//! 4. Dense when `n <= max(2B, ceil(min_budget / B) B)` (as the public code).
//!
//! Interpretations (explicit): diagonal blocks pool token offsets `[delta B, (delta + 1) B)` (the
//! public code pools the slash vector from its far end, which misaligns when `n % B != 0`); the
//! query-aware cover includes the entry that crosses the threshold (the code stops just before
//! it); `min_budget` defaults to the function default (1 token = one block) since the paper's
//! 1024 (README: 512) is < 1% of its 128k inputs; `gamma >= 1` means dense. The knob is gamma.

use ndarray::{s, Array1};
use rayon::prelude::*;

use super::common::{block_means, last_queries_vertical_slash, rank_desc, softmax_inplace};
use crate::method::{GroupInput, Knob, Prepared, Selector};
use crate::method::{MethodInfo, MethodKind, ParamSpec, Params};
use crate::selection::Selection;

pub const INFO: MethodInfo = MethodInfo {
    name: "flexprefill",
    kind: MethodKind::Published,
    paper: "Lai et al., FlexPrefill: A Context-Aware Sparse Attention Mechanism for Efficient Long-Sequence Inference, ICLR 2025 (arXiv:2502.20766)",
    rule: "per q-head, JS divergence picks query-aware or vertical-slash blocks (block 128); keep blocks until the estimated mass reaches gamma; first block + diagonal always",
    params: &[
        ParamSpec { name: "block", default: 128.0, min: 1.0, max: 65536.0, integer: true, help: "block size (queries and keys)" },
        ParamSpec { name: "tau", default: 0.1, min: 0.0, max: 1.0, integer: false, help: "query-aware when sqrt(JSD) < tau" },
        ParamSpec { name: "min_budget", default: 1.0, min: 0.0, max: 1e9, integer: true, help: "least tokens of vertical and of slash lines, rounded up to blocks (paper runs: 1024)" },
        ParamSpec { name: "gamma", default: 0.9, min: 0.0, max: 1.0, integer: false, help: "estimated attention mass to cover (1 = dense)" },
    ],
    build,
};

fn build(p: &Params) -> Box<dyn Selector> {
    Box::new(FlexPrefill {
        block: p.count("block").max(1),
        tau: p.get("tau"),
        min_budget: p.count("min_budget"),
    })
}

#[derive(Debug)]
struct FlexPrefill {
    block: usize,
    tau: f64,
    min_budget: usize,
}

/// One q-head's estimates, from which the selection at any gamma is a few prefixes.
#[derive(Debug, Default)]
struct HeadPlan {
    /// Cumulative sorted token masses of the vertical and slash distributions.
    v_cum: Vec<f64>,
    s_cum: Vec<f64>,
    /// Column blocks and diagonal blocks, best first (block 0 / diagonal 0 first).
    v_rank: Vec<u32>,
    s_rank: Vec<u32>,
    query_aware: bool,
    /// Query-aware entries `(row, key block)` best first, with cumulative mass / n_blocks.
    qa: Vec<(u32, u32)>,
    qa_cum: Vec<f64>,
}

struct Prep {
    n: usize,
    block: usize,
    min_blocks: usize,
    dense: bool,
    heads: Vec<HeadPlan>,
}

/// Entries of `cum` (non-decreasing) needed to reach `x`: the crossing entry included.
fn cover(cum: &[f64], x: f64) -> usize {
    (cum.partition_point(|&c| c < x) + 1).min(cum.len())
}

/// Cumulative sums of `xs` sorted descending, normalized by `total`.
fn sorted_cum(xs: &[f64], total: f64) -> Vec<f64> {
    let mut v = xs.to_vec();
    v.sort_unstable_by(|a, b| b.total_cmp(a));
    let mut acc = 0.0;
    v.into_iter()
        .map(|x| {
            acc += x / total;
            acc
        })
        .collect()
}

/// `sqrt(JSD(p, q))` with natural logs and `0 ln 0 = 0`.
fn sqrt_js(p: &[f64], q: &[f64]) -> f64 {
    let kl = |a: f64, m: f64| if a > 0.0 { a * (a / m).ln() } else { 0.0 };
    let js: f64 = p
        .iter()
        .zip(q)
        .map(|(&a, &b)| {
            let m = 0.5 * (a + b);
            0.5 * kl(a, m) + 0.5 * kl(b, m)
        })
        .sum();
    js.max(0.0).sqrt()
}

/// Ranks `scores` with index 0 first, then by score (ties by index).
fn rank_first_forced(scores: &[f64]) -> Vec<u32> {
    let s: Vec<f32> = scores
        .iter()
        .enumerate()
        .map(|(j, &x)| if j == 0 { f32::INFINITY } else { x as f32 })
        .collect();
    rank_desc(&s)
}

impl FlexPrefill {
    fn plan(&self, q: ndarray::ArrayView2<f32>, g: &GroupInput<'_>) -> HeadPlan {
        let (n, bs, scale) = (g.n(), self.block, g.scale());
        let nb = n.div_ceil(bs);
        let last = bs.min(n);
        let (vertical, slash) = last_queries_vertical_slash(q, g.k, scale, last);
        let pool = |xs: &[f64]| -> Vec<f64> { xs.chunks(bs).map(|c| c.iter().sum()).collect() };
        let (v_blocks, s_blocks) = (pool(&vertical), pool(&slash));
        let mean_k = block_means(g.k, bs);
        // Pattern choice: pooled-query block distribution vs the vertical block estimate.
        let mean_q: Array1<f32> = q
            .slice(s![n - last..n, ..])
            .mean_axis(ndarray::Axis(0))
            .unwrap_or_else(|| Array1::zeros(q.ncols()));
        let mut est: Vec<f32> = mean_k.dot(&mean_q).iter().map(|&x| x * scale).collect();
        softmax_inplace(&mut est);
        let est: Vec<f64> = est.into_iter().map(f64::from).collect();
        let total_v: f64 = v_blocks.iter().sum::<f64>().max(f64::MIN_POSITIVE);
        let b: Vec<f64> = v_blocks.iter().map(|x| x / total_v).collect();
        let query_aware = sqrt_js(&est, &b) < self.tau;
        let mut plan = HeadPlan {
            v_cum: sorted_cum(
                &vertical,
                vertical.iter().sum::<f64>().max(f64::MIN_POSITIVE),
            ),
            s_cum: sorted_cum(&slash, slash.iter().sum::<f64>().max(f64::MIN_POSITIVE)),
            v_rank: rank_first_forced(&v_blocks),
            s_rank: rank_first_forced(&s_blocks),
            query_aware,
            ..HeadPlan::default()
        };
        if query_aware {
            let mean_qb = block_means(q, bs);
            let logits = mean_qb.dot(&mean_k.t());
            let mut entries: Vec<((u32, u32), f32)> = Vec::with_capacity(nb * (nb + 1) / 2);
            for r in 0..nb {
                let mut row: Vec<f32> = logits
                    .row(r)
                    .iter()
                    .take(r + 1)
                    .map(|&x| x * scale)
                    .collect();
                softmax_inplace(&mut row);
                entries.extend(
                    row.into_iter()
                        .enumerate()
                        .map(|(c, p)| ((r as u32, c as u32), p)),
                );
            }
            let probs: Vec<f32> = entries.iter().map(|e| e.1).collect();
            let order = rank_desc(&probs);
            let mut acc = 0.0;
            for &e in &order {
                acc += probs[e as usize] as f64 / nb as f64;
                plan.qa.push(entries[e as usize].0);
                plan.qa_cum.push(acc);
            }
        }
        plan
    }
}

impl Prepared for Prep {
    fn select(&self, gamma: f64) -> Vec<Selection> {
        let (n, bs) = (self.n, self.block);
        let nb = n.div_ceil(bs);
        self.heads
            .iter()
            .map(|h| {
                let mut rows: Vec<Vec<u32>> = vec![Vec::new(); nb];
                if self.dense || gamma >= 1.0 {
                    for (r, row) in rows.iter_mut().enumerate() {
                        row.extend(0..=r as u32);
                    }
                } else {
                    let count = |cum: &[f64]| {
                        if h.query_aware {
                            self.min_blocks
                        } else {
                            (cover(cum, gamma) / bs + 1).clamp(self.min_blocks, nb)
                        }
                    };
                    let (nv, ns) = (count(&h.v_cum), count(&h.s_cum));
                    for (r, row) in rows.iter_mut().enumerate() {
                        let r32 = r as u32;
                        row.extend(h.v_rank[..nv].iter().filter(|&&c| c <= r32));
                        row.extend(
                            h.s_rank[..ns]
                                .iter()
                                .filter(|&&d| d <= r32)
                                .map(|d| r32 - d),
                        );
                    }
                    if h.query_aware {
                        for &(r, c) in &h.qa[..cover(&h.qa_cum, gamma)] {
                            rows[r as usize].push(c);
                        }
                    }
                }
                let mut b = Selection::builder(n, bs);
                for row in rows {
                    b.push_blocks(row.into_iter().map(|c| c as usize), bs);
                }
                b.finish()
            })
            .collect()
    }
}

impl Selector for FlexPrefill {
    fn knob(&self) -> Knob {
        Knob {
            name: "gamma",
            min: 0.0,
            max: 1.0,
            integer: false,
            denser_when_larger: true,
            tokens_per_unit: 0,
        }
    }

    fn prepare<'a>(&'a self, g: &'a GroupInput<'a>) -> Box<dyn Prepared + 'a> {
        let (n, bs) = (g.n(), self.block);
        let min_blocks = self.min_budget.div_ceil(bs).max(1);
        let dense = n <= (2 * bs).max(min_blocks * bs);
        let heads = if dense {
            (0..g.group_size()).map(|_| HeadPlan::default()).collect()
        } else {
            g.q.par_iter().map(|q| self.plan(*q, g)).collect()
        };
        Box::new(Prep {
            n,
            block: bs,
            min_blocks,
            dense,
            heads,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selection::causal_pairs;
    use crate::testing::GroupData;

    #[test]
    fn cover_and_js() {
        let cum = sorted_cum(&[0.1, 0.6, 0.3], 1.0);
        assert_eq!(cum.len(), 3);
        assert_eq!(cover(&cum, 0.5), 1);
        assert_eq!(cover(&cum, 0.6), 1);
        assert_eq!(cover(&cum, 0.85), 2);
        assert_eq!(cover(&cum, 1.5), 3);
        assert!(sqrt_js(&[0.5, 0.5], &[0.5, 0.5]).abs() < 1e-12);
        // Disjoint supports: JSD = ln 2.
        assert!((sqrt_js(&[1.0, 0.0], &[0.0, 1.0]) - 2f64.ln().sqrt()).abs() < 1e-12);
    }

    #[test]
    fn vertical_slash_rows_from_ranked_blocks() {
        // 4 query blocks of 2 tokens, a vertical-slash head keeping columns {0, 2} and diagonals
        // {0, 1}: row 3 keeps blocks 0, 2, 3 (and 2 = 3 - 1); row 1 keeps 0, 1.
        let head = HeadPlan {
            v_cum: vec![0.5, 1.0],
            s_cum: vec![0.5, 1.0],
            v_rank: vec![0, 2, 1, 3],
            s_rank: vec![0, 1, 3, 2],
            ..HeadPlan::default()
        };
        // gamma 0.6 covers 2 tokens -> 2 / 2 + 1 = 2 blocks of each kind.
        let prep = Prep {
            n: 8,
            block: 2,
            min_blocks: 1,
            dense: false,
            heads: vec![head],
        };
        let s = &prep.select(0.6)[0];
        assert_eq!(s.row_ranges(3), &[(0, 2), (4, 8)]);
        assert_eq!(s.row_ranges(1), &[(0, 4)]);
        assert_eq!(s.row_ranges(0), &[(0, 2)]);
        // gamma 0.4 covers 1 token -> 1 block each: block 0 and the diagonal block.
        let s = &prep.select(0.4)[0];
        assert_eq!(s.row_ranges(3), &[(0, 2), (6, 8)]);
    }

    #[test]
    fn query_aware_head_adds_block_map_entries() {
        let head = HeadPlan {
            v_cum: vec![1.0],
            s_cum: vec![1.0],
            v_rank: vec![0, 1, 2],
            s_rank: vec![0, 1, 2],
            query_aware: true,
            qa: vec![(2, 1), (1, 0), (2, 2)],
            qa_cum: vec![0.4, 0.7, 0.9],
        };
        let prep = Prep {
            n: 6,
            block: 2,
            min_blocks: 1,
            dense: false,
            heads: vec![head],
        };
        let s = &prep.select(0.5)[0];
        // Row 2: block 0 (vertical), 2 (diagonal) and 1 (query-aware).
        assert_eq!(s.row_ranges(2), &[(0, 6)]);
        let s = &prep.select(0.3)[0];
        assert_eq!(s.row_ranges(2), &[(0, 6)]);
        assert_eq!(s.row_ranges(1), &[(0, 4)]);
    }

    #[test]
    fn monotone_in_gamma_and_dense_at_one() {
        let data = GroupData::random(700, 16, 2, 5);
        let g = data.input();
        let m = FlexPrefill {
            block: 32,
            tau: 0.1,
            min_budget: 1,
        };
        let prep = m.prepare(&g);
        let mut last = 0;
        for x in [0.0, 0.3, 0.6, 0.9, 0.99] {
            let kept: u64 = prep.select(x).iter().map(Selection::kept_pairs).sum();
            assert!(kept >= last);
            last = kept;
        }
        for s in prep.select(1.0) {
            assert_eq!(s.kept_pairs(), causal_pairs(700));
        }
        for s in prep.select(0.0) {
            // First block and the diagonal block at least.
            assert!(s.contains(699, 0) && s.contains(699, 699) && s.contains(40, 33));
        }
    }
}
