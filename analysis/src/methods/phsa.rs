//! `phsa`: punctuation-aware hybrid sparse attention. Block selection (InfLLM-v2 style: init
//! block + local blocks + top-k) whose block representative fuses the block's mean key with the
//! mean key of its punctuation tokens:
//! `M(B) = lambda * mean(K_B) + (1 - lambda) * mean(K_B over punctuation)`, `M = mean(K_B)` when
//! the block has no punctuation. Score `s_ib = sum over group heads of softmax_b(q_i . M_b / sqrt d)`
//! over query `i`'s complete visible blocks; one selection shared by the group.
//!
//! Which blocks the softmax normalizes over is not stated in the paper, and it changes the
//! ranking when the group's heads are summed (each head's softmax is scaled by its own
//! normalizer): `softmax_over` 0 (the default) takes every complete visible block, forced init
//! and local blocks included, as the paper's score is written over the visible blocks; 1 takes
//! the candidate blocks alone (the blocks top-k chooses from). Only the first runs on the device.

use ndarray::{Array2, Axis};

use super::common::{
    block_k_for_tokens, block_knob, block_means, rank_blocks_per_query, softmax_inplace,
    RankedHeads,
};
use crate::method::{DeviceScoring, HeadKeys, RepTransform, RepresentativeRule, Representatives};
use crate::method::{GroupInput, Knob, Prepared, Selector};
use crate::method::{MethodInfo, MethodKind, ParamSpec, Params};
use attnscope_core::attention::BlockPool;

pub const INFO: MethodInfo = MethodInfo {
    name: "phsa",
    kind: MethodKind::Published,
    paper: "PHSA: Punctuation-aware Hybrid Sparse Attention (no public code; block representative from the paper, selection as InfLLM v2)",
    rule: "init + local blocks + top-k blocks by group-summed softmax of q . (lambda mean K + (1 - lambda) mean K_punct)",
    params: &[
        ParamSpec { name: "lambda", default: 0.5, min: 0.0, max: 1.0, integer: false, help: "weight of the block mean key (1 - lambda: punctuation mean key)" },
        ParamSpec { name: "block", default: 64.0, min: 1.0, max: 65536.0, integer: true, help: "block size in tokens" },
        ParamSpec { name: "init_blocks", default: 1.0, min: 0.0, max: 1e6, integer: true, help: "forced blocks at the start" },
        ParamSpec { name: "local_blocks", default: 2.0, min: 0.0, max: 1e6, integer: true, help: "forced blocks before the query's own block" },
        ParamSpec { name: "newline_punct", default: 1.0, min: 0.0, max: 1.0, integer: true, help: "count newline-only tokens as punctuation" },
        ParamSpec { name: "dense_below", default: 0.0, min: 0.0, max: 1e9, integer: true, help: "ours: dense attention below this many tokens (0 = always sparse)" },
        ParamSpec { name: "softmax_over", default: 0.0, min: 0.0, max: 1.0, integer: true, help: "blocks the block softmax normalizes over: 0 every complete visible block (forced ones included), 1 the candidate blocks alone (the paper leaves it open)" },
        ParamSpec { name: "top_k", default: 16.0, min: 0.0, max: 1e9, integer: true, help: "selected blocks beyond the forced ones" },
    ],
    build,
};

fn build(p: &Params) -> Box<dyn Selector> {
    Box::new(Phsa {
        lambda: p.get("lambda") as f32,
        block: p.count("block").max(1),
        n_init: p.count("init_blocks"),
        local: p.count("local_blocks"),
        newline: p.flag("newline_punct"),
        dense_below: p.count("dense_below"),
        candidates_only: p.flag("softmax_over"),
    })
}

/// PHSA with explicit settings (also used by the lambda sweep and fit).
#[derive(Debug, Clone)]
pub struct Phsa {
    pub lambda: f32,
    pub block: usize,
    pub n_init: usize,
    pub local: usize,
    pub newline: bool,
    /// The block softmax over the candidate blocks alone (`softmax_over` 1).
    pub candidates_only: bool,
    /// Dense fallback (ours): inputs shorter than this keep every visible block.
    pub dense_below: usize,
}

impl Phsa {
    /// Ranks every query's candidate blocks (one ranking shared by the group).
    pub fn rank(&self, g: &GroupInput<'_>) -> RankedHeads {
        if g.n() < self.dense_below {
            let all = g.n().div_ceil(self.block);
            let rows = rank_blocks_per_query(g.scored, self.block, all, 0, |_| Vec::new());
            return RankedHeads {
                heads: vec![rows],
                group_size: g.group_size(),
            };
        }
        let reps = self.representatives(g);
        let scale = g.scale();
        let logits: Vec<Array2<f32>> =
            g.q.iter()
                .map(|q| g.scored.rows_of(*q).dot(&reps.t()) * scale)
                .collect();
        let (block, first) = (self.block, g.scored.first);
        let rows = rank_blocks_per_query(g.scored, block, self.n_init, self.local, |i| {
            let complete = i / block; // blocks 0..complete end at or before the query's block
                                      // The blocks the softmax runs over: every complete one, or the candidates alone.
            let own = i / block;
            let forced = |b: usize| b < self.n_init || b + self.local >= own;
            let over: Vec<usize> = (0..complete)
                .filter(|&b| !(self.candidates_only && forced(b)))
                .collect();
            let mut total = vec![None; complete];
            let mut sum = vec![0f32; over.len()];
            for l in &logits {
                let l = l.row(i - first);
                let mut row: Vec<f32> = over.iter().map(|&b| l[b]).collect();
                softmax_inplace(&mut row);
                sum.iter_mut().zip(&row).for_each(|(t, r)| *t += r);
            }
            for (&b, &s) in over.iter().zip(&sum) {
                total[b] = Some(s);
            }
            total
        });
        RankedHeads {
            heads: vec![rows],
            group_size: g.group_size(),
        }
    }

    /// The block representatives `M(B_b)`: `[n_blocks, d]`.
    pub fn representatives(&self, g: &GroupInput<'_>) -> Array2<f32> {
        self.representatives_of(&HeadKeys {
            k: g.k,
            punct: g.punct,
            newline: g.newline,
        })
    }

    /// `M(B_b) = lambda mean(K_B) + (1 - lambda) mean(K_B over punctuation)` of one KV head's
    /// keys (the block mean when the block has no punctuation).
    fn representatives_of(&self, keys: &HeadKeys<'_>) -> Array2<f32> {
        let n = keys.k.nrows();
        let mut reps = block_means(keys.k, self.block);
        for (b, mut rep) in reps.axis_iter_mut(Axis(0)).enumerate() {
            let lo = b * self.block;
            let hi = (lo + self.block).min(n);
            let punct: Vec<usize> = (lo..hi)
                .filter(|&j| keys.punct[j] || (self.newline && keys.newline[j]))
                .collect();
            if punct.is_empty() {
                continue;
            }
            let mut pm = ndarray::Array1::<f32>::zeros(keys.k.ncols());
            for &j in &punct {
                pm += &keys.k.row(j);
            }
            pm /= punct.len() as f32;
            rep.zip_mut_with(&pm, |m, &p| *m = self.lambda * *m + (1.0 - self.lambda) * p);
        }
        reps
    }
}

impl Selector for Phsa {
    fn knob(&self) -> Knob {
        block_knob(self.block)
    }

    fn knob_for_tokens(&self, tokens: usize) -> Option<f64> {
        Some(block_k_for_tokens(
            tokens,
            self.block,
            self.n_init,
            self.local,
        ))
    }

    fn prepare<'a>(&'a self, g: &'a GroupInput<'a>) -> Box<dyn Prepared + 'a> {
        Box::new(self.rank(g))
    }

    /// The block softmax over the complete visible blocks (`i + 1 >= (j + 1) B`), summed over
    /// the group's q-heads; the dense fallback stays on the host.
    fn device_scoring(&self, n: usize) -> Option<DeviceScoring> {
        (n >= self.dense_below && !self.candidates_only).then_some(DeviceScoring::Representatives(
            RepresentativeRule {
                block: self.block,
                n_init: self.n_init,
                local: self.local,
                vis_window: self.block + 1,
                vis_stride: self.block,
                transform: RepTransform::Softmax,
                scaled: true,
                pool: BlockPool::Identity,
                group_shared: true,
                force_own: true,
            },
        ))
    }

    fn representatives(&self, keys: &HeadKeys<'_>) -> Option<Representatives> {
        Some(Representatives {
            reps: self.representatives_of(keys),
            minima: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::GroupData;

    fn phsa(lambda: f32, dense_below: usize) -> Phsa {
        Phsa {
            lambda,
            block: 64,
            n_init: 1,
            local: 2,
            newline: true,
            dense_below,
            candidates_only: false,
        }
    }

    #[test]
    fn representative_mixes_block_mean_and_punctuation_mean() {
        let data = GroupData::random(200, 8, 2, 5);
        let g = data.input();
        let reps = phsa(0.25, 0).representatives(&g);
        for b in 0..reps.nrows() {
            let (lo, hi) = (b * 64, ((b + 1) * 64).min(200));
            let idx: Vec<usize> = (lo..hi).filter(|&j| g.punct[j] || g.newline[j]).collect();
            for c in 0..8 {
                let mean = (lo..hi).map(|j| g.k[[j, c]]).sum::<f32>() / (hi - lo) as f32;
                let want = if idx.is_empty() {
                    mean
                } else {
                    let pm = idx.iter().map(|&j| g.k[[j, c]]).sum::<f32>() / idx.len() as f32;
                    0.25 * mean + 0.75 * pm
                };
                assert!((reps[[b, c]] - want).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn dense_fallback_below_the_threshold() {
        let data = GroupData::random(200, 8, 2, 5);
        let g = data.input();
        let dense = phsa(0.5, 201).rank(&g).select(0.0);
        assert_eq!(dense[0].kept_pairs(), 200 * 201 / 2);
        let sparse = Phsa {
            local: 0,
            ..phsa(0.5, 200)
        }
        .rank(&g)
        .select(0.0);
        assert!(sparse[0].kept_pairs() < 200 * 201 / 2);
    }

    /// `softmax_over` 1: each head's block softmax runs over the candidate blocks alone, and the
    /// ranking follows the group sum of those softmaxes (written out here for a few queries).
    #[test]
    fn softmax_over_the_candidates_alone() {
        let data = GroupData::random(700, 8, 2, 9);
        let g = data.input();
        let m = Phsa {
            block: 16,
            n_init: 2,
            local: 3,
            candidates_only: true,
            ..phsa(0.5, 0)
        };
        let reps = m.representatives(&g);
        let ranked = m.rank(&g);
        let rows = &ranked.heads[0];
        for i in [100usize, 351, 699] {
            let own = i / 16;
            let cand: Vec<usize> = (2..own.saturating_sub(3)).collect();
            let mut score = vec![0f32; cand.len()];
            for h in 0..2 {
                let mut l: Vec<f32> = cand
                    .iter()
                    .map(|&b| g.q[h].row(i).dot(&reps.row(b)) * g.scale())
                    .collect();
                softmax_inplace(&mut l);
                score.iter_mut().zip(&l).for_each(|(s, x)| *s += x);
            }
            let mut want: Vec<usize> = (0..cand.len()).collect();
            want.sort_by(|&a, &b| score[b].total_cmp(&score[a]).then(a.cmp(&b)));
            let want: Vec<u32> = want.iter().map(|&x| cand[x] as u32).collect();
            assert_eq!(rows.ranked[i], want, "query {i}");
        }
        // The default normalizes over every complete block: another ranking on this input.
        let all = phsa(0.5, 0);
        let all = Phsa {
            block: 16,
            n_init: 2,
            local: 3,
            ..all
        }
        .rank(&g);
        assert_ne!(all.heads[0].ranked[699], rows.ranked[699]);
    }
}
