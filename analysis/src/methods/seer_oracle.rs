//! `seer-oracle`: the ground truth that SeerAttention's gate is trained to predict (Gao et al.,
//! SeerAttention: Learning Intrinsic Sparse Attention in Your LLMs, arXiv:2410.13276), used as an
//! upper-bound oracle instead of the trained AttnGate (whose weights do not exist here).
//!
//! Per q-head (no GQA sharing), the true attention `A_ij = exp(q_i . k_j / sqrt d - LSE_i)` (exact
//! LSE from the capture) is 2-D max-pooled over (query block x key block) of `B = 64`:
//! `G[r, c] = max over i in block r, j in block c, j <= i of A_ij`, and each row is normalized to
//! sum 1 (the gate's softmax target). Rows are query blocks; each keeps the blocks of largest `G`,
//! either the top `k` (`mode = 0`, knob `top_k`) or those with normalized `G >= threshold`
//! (`mode = 1`, knob `threshold`; the best block is always kept). Nothing is forced: the oracle
//! alone decides, and any kept block gives every query of the row at least one causal key.

use rayon::prelude::*;

use crate::method::DeviceScoring;
use crate::method::{GroupInput, Knob, Prepared, Selector};
use crate::method::{MethodInfo, MethodKind, ParamSpec, Params};
use crate::selection::Selection;

pub const INFO: MethodInfo = MethodInfo {
    name: "seer-oracle",
    kind: MethodKind::Oracle,
    paper: "Gao et al., SeerAttention: Learning Intrinsic Sparse Attention in Your LLMs (arXiv:2410.13276); oracle = the gate's max-pooled ground truth, not the trained gate",
    rule: "per q-head and 64-query block: the key blocks of largest 2-D max-pooled true attention (top-k, or row-normalized score >= threshold)",
    params: &[
        ParamSpec { name: "block", default: 64.0, min: 1.0, max: 65536.0, integer: true, help: "query and key block size" },
        ParamSpec { name: "mode", default: 0.0, min: 0.0, max: 1.0, integer: true, help: "0: top-k blocks (knob top_k); 1: threshold on the row-normalized pooled map (knob threshold)" },
        ParamSpec { name: "top_k", default: 16.0, min: 1.0, max: 1e9, integer: true, help: "key blocks per query block (open)" },
        ParamSpec { name: "threshold", default: 5e-4, min: 0.0, max: 1.0, integer: false, help: "keep blocks whose normalized pooled score reaches this (open; 0 = dense)" },
    ],
    build,
};

fn build(p: &Params) -> Box<dyn Selector> {
    Box::new(SeerOracle {
        block: p.count("block").max(1),
        threshold_mode: p.flag("mode"),
    })
}

#[derive(Debug)]
struct SeerOracle {
    block: usize,
    threshold_mode: bool,
}

/// Row-normalized 2-D max-pooled true attention of one q-head: row `r` has `r + 1` key blocks.
/// The exact probabilities are the group's shared ones ([`GroupInput::true_probs`]): the maximum
/// of `exp(s * scale - lse)` over a block is that of its largest score, bit for bit (each step is
/// monotone), so this is the pooling of the scores' maxima as first written.
fn pooled_truth(g: &GroupInput<'_>, h: usize, block: usize) -> Vec<Vec<f32>> {
    let n = g.n();
    let probs = &g.true_probs()[h];
    (0..n.div_ceil(block))
        .into_par_iter()
        .map(|r| {
            let (lo, hi) = (r * block, ((r + 1) * block).min(n));
            let mut pooled = vec![0f32; r + 1];
            let mut maxes = Vec::with_capacity(r + 1);
            // A query block partly before the first scored query pools its scored queries.
            for i in lo.max(probs.scored().first)..hi {
                // Key blocks 0..=r, each clipped causally to j <= i (block r starts at lo <= i).
                super::common::block_maxes(probs.row(i), block, 1.0, &mut maxes);
                for (p, &m) in pooled.iter_mut().zip(&maxes) {
                    *p = p.max(m);
                }
            }
            let total: f32 = pooled.iter().sum();
            if total > 0.0 {
                pooled.iter_mut().for_each(|x| *x /= total);
            }
            pooled
        })
        .collect()
}

/// Per head, per query block: key blocks best first with their normalized pooled scores.
struct Prep {
    n: usize,
    /// The first scored query.
    first: usize,
    block: usize,
    threshold_mode: bool,
    heads: Vec<Vec<Vec<(u32, f32)>>>,
}

impl Prep {
    /// Blocks kept by a row at knob `x` (at least one).
    fn keep(&self, ranked: &[(u32, f32)], x: f64) -> usize {
        let keep = if self.threshold_mode {
            ranked.iter().take_while(|e| e.1 as f64 >= x).count()
        } else {
            x.round().max(0.0) as usize
        };
        keep.max(1)
    }
}

impl Prepared for Prep {
    fn select(&self, x: f64) -> Vec<Selection> {
        self.heads
            .iter()
            .map(|rows| {
                let mut b = Selection::builder(self.n, self.block);
                for ranked in rows {
                    let blocks = ranked
                        .iter()
                        .take(self.keep(ranked, x))
                        .map(|e| e.0 as usize);
                    b.push_blocks(blocks, self.block);
                }
                b.finish()
            })
            .collect()
    }

    /// Over the scored queries of each row ([`row_kept_pairs`]).
    fn kept_pairs_at(&self, x: f64) -> Option<(u64, usize)> {
        let kept = self
            .heads
            .iter()
            .flat_map(|rows| rows.iter().enumerate())
            .map(|(r, ranked)| {
                let blocks = ranked.iter().take(self.keep(ranked, x)).map(|e| e.0);
                row_kept_pairs(r, (self.first, self.n), self.block, blocks)
            })
            .sum();
        Some((kept, self.heads.len()))
    }
}

/// Key blocks of one pooled row best first, with their scores (ties to the lower block).
fn rank_row(row: Vec<f32>) -> Vec<(u32, f32)> {
    let mut ranked: Vec<(u32, f32)> = row
        .into_iter()
        .enumerate()
        .map(|(c, s)| (c as u32, s))
        .collect();
    ranked.sort_unstable_by_key(|&(c, s)| super::common::token_key(s, c));
    ranked
}

/// Kept causal pairs of the scored queries of row `r` keeping key blocks `blocks`
/// ([`super::common::block_row_pairs`]).
fn row_kept_pairs(
    r: usize,
    (first, n): (usize, usize),
    block: usize,
    blocks: impl Iterator<Item = u32>,
) -> u64 {
    let (full, diag) = super::common::block_row_pairs(r, block, (first, n));
    blocks
        .map(|c| if c as usize == r { diag } else { full })
        .sum()
}

/// The ranked rows of one q-head from its tile-max map `[nb, nb]` (row `r` holds key blocks
/// `0..=r`), normalized per row as the host's pooled truth is: key blocks best first.
pub fn ranked_tile_rows(map: &[f32], nb: usize) -> Vec<Vec<u32>> {
    (0..nb)
        .map(|r| {
            let mut row = map[r * nb..r * nb + r + 1].to_vec();
            let total: f32 = row.iter().sum();
            if total > 0.0 {
                row.iter_mut().for_each(|x| *x /= total);
            }
            rank_row(row).into_iter().map(|e| e.0).collect()
        })
        .collect()
}

/// Kept causal pairs of one q-head's ranked rows at top-`k` (at least one block per row).
pub fn tile_topk_kept(ranked: &[Vec<u32>], n: usize, block: usize, k: usize) -> u64 {
    ranked
        .iter()
        .enumerate()
        .map(|(r, row)| row_kept_pairs(r, (0, n), block, row.iter().take(k.max(1)).copied()))
        .sum()
}

impl Selector for SeerOracle {
    fn knob(&self) -> Knob {
        if self.threshold_mode {
            Knob {
                name: "threshold",
                min: 0.0,
                max: 1.0,
                integer: false,
                denser_when_larger: false,
                tokens_per_unit: 0,
            }
        } else {
            Knob::count("top_k", 1.0, self.block)
        }
    }

    fn knob_for_tokens(&self, tokens: usize) -> Option<f64> {
        (!self.threshold_mode).then(|| (tokens / self.block).max(1) as f64)
    }

    fn prepare<'a>(&'a self, g: &'a GroupInput<'a>) -> Box<dyn Prepared + 'a> {
        let heads = (0..g.group_size())
            .map(|h| {
                pooled_truth(g, h, self.block)
                    .into_iter()
                    .map(rank_row)
                    .collect()
            })
            .collect();
        Box::new(Prep {
            n: g.n(),
            first: g.scored.first,
            block: self.block,
            threshold_mode: self.threshold_mode,
            heads,
        })
    }

    /// The top-k mode at blocks of at most 64 tokens (the device's tile map); the threshold
    /// mode stays on the host.
    fn device_scoring(&self, _n: usize) -> Option<DeviceScoring> {
        (!self.threshold_mode && self.block <= 64).then_some(DeviceScoring::TileMaxTopK {
            block: self.block,
            rank: ranked_tile_rows,
            kept: tile_topk_kept,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::GroupData;

    fn seer(overrides: &[(&str, f64)]) -> Box<dyn Selector> {
        let o: Vec<(String, f64)> = overrides.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        (INFO.build)(&INFO.params(&o).unwrap_or_default())
    }

    #[test]
    fn pooled_map_is_the_max_of_true_attention_per_tile() {
        let data = GroupData::random(40, 4, 2, 9);
        let g = data.input();
        let (b, scale) = (8, g.scale());
        for h in 0..2 {
            let pooled = pooled_truth(&g, h, b);
            for (r, row) in pooled.iter().enumerate() {
                let mut brute = vec![0f32; r + 1];
                for i in r * b..((r + 1) * b).min(40) {
                    for j in 0..=i {
                        let a = (g.q[h].row(i).dot(&g.k.row(j)) * scale - g.truth[h].lse[i]).exp();
                        brute[j / b] = brute[j / b].max(a);
                    }
                }
                let total: f32 = brute.iter().sum();
                for (x, y) in row.iter().zip(&brute) {
                    assert!(
                        (x - y / total).abs() < 1e-5,
                        "row {r}: {x} vs {}",
                        y / total
                    );
                }
            }
        }
    }

    #[test]
    fn keeps_the_block_holding_the_largest_attention() {
        // 4 tokens, blocks of 2; query 3 attends almost only to key 0 (its row picks block 0);
        // query 2 too, so row 1 keeps block 0 at top-1 (no forced diagonal).
        let k = ndarray::arr2(&[[5.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]);
        let q = ndarray::arr2(&[[1.0, 0.0], [1.0, 0.0], [2.0, 0.0], [2.0, 0.0]]);
        let v = ndarray::Array2::zeros((4, 2));
        let data = GroupData::from_qkv(q, k, v, vec![false; 4], vec![false; 4], 1, 2);
        let g = data.input();
        let m = seer(&[("block", 2.0)]);
        let sel = m.prepare(&g).select(1.0).remove(0);
        assert_eq!(sel.row_ranges(1), &[(0, 2)]);
        assert_eq!(sel.row_ranges(0), &[(0, 2)]);
        // Threshold mode: 0 keeps everything, 1 keeps only the best block.
        let m = seer(&[("block", 2.0), ("mode", 1.0)]);
        assert!(!m.knob().denser_when_larger);
        let prep = m.prepare(&g);
        assert_eq!(prep.select(0.0)[0].row_ranges(1), &[(0, 4)]);
        assert_eq!(prep.select(1.0)[0].row_ranges(1), &[(0, 2)]);
    }

    #[test]
    fn dense_at_full_budget_in_both_modes() {
        let data = GroupData::random(150, 8, 3, 2);
        for (mode, dense) in [(0.0, 1e9), (1.0, 0.0)] {
            let g = data.input();
            let m = seer(&[("block", 16.0), ("mode", mode)]);
            let prep = m.prepare(&g);
            let x = if mode == 0.0 {
                m.knob().max_for(150)
            } else {
                dense
            };
            for s in prep.select(x) {
                assert!((0..150).all(|i| s.kept_of(i) == i + 1));
            }
            for s in prep.select(if mode == 0.0 { 1.0 } else { 0.5 }) {
                assert!((0..150).all(|i| s.kept_of(i) >= 1));
                for r in 0..s.rows() {
                    assert!(s
                        .row_max_key(r)
                        .is_some_and(|j| j < ((r + 1) * 16).min(150)));
                }
            }
        }
    }
}
