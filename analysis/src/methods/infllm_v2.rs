//! `infllm-v2`: InfLLM v2's block selection. Compressed keys `K1_j = mean K[16j, 16j + 32)`;
//! stage-1 scores `s_ij = sum over group heads of exp(q_i . K1_j / sqrt d - LSE_i)` with the exact
//! log-sum-exp over query `i`'s visible compressed keys (or, as a variant, the LSE over coarse keys
//! `K2_j = mean K[64j, 64j + 128)`); chunk `j` is visible iff `16j + 31 <= i`; block score
//! `r_ib = max over j in [4b - 1, 4b + 3] of s_ij`; keep block 0 + local blocks + top-k.
//! One selection shared by the group.

use ndarray::Array2;

use super::common::{block_k_for_tokens, block_knob, rank_blocks_per_query, RankedHeads};
use crate::method::{DeviceScoring, HeadKeys, RepTransform, RepresentativeRule, Representatives};
use crate::method::{GroupInput, Knob, Prepared, Selector};
use crate::method::{MethodInfo, MethodKind, ParamSpec, Params};
use attnscope_core::attention::BlockPool;

pub const INFO: MethodInfo = MethodInfo {
    name: "infllm-v2",
    kind: MethodKind::Published,
    paper: "Zhao et al., InfLLM-V2: Dense-Sparse Switchable Attention for Seamless Short-to-Long Adaptation (arXiv:2509.24663), MiniCPM4",
    rule: "block 0 + local blocks + top-k blocks by max-pooled group-summed softmax over mean-pooled 32-token chunks (stride 16)",
    params: &[
        ParamSpec { name: "block", default: 64.0, min: 16.0, max: 65536.0, integer: true, help: "selection block size (a multiple of the 16-token stride)" },
        ParamSpec { name: "init_blocks", default: 1.0, min: 0.0, max: 1e6, integer: true, help: "forced blocks at the start" },
        ParamSpec { name: "local_blocks", default: 2.0, min: 0.0, max: 1e6, integer: true, help: "forced blocks before the query's own (paper: 32 = 2048 tokens at 32k; 2 here to match phsa)" },
        ParamSpec { name: "coarse_lse", default: 0.0, min: 0.0, max: 1.0, integer: true, help: "take LSE from coarse keys mean K[64j, 64j+128) instead of the exact one" },
        ParamSpec { name: "dense_below", default: 0.0, min: 0.0, max: 1e9, integer: true, help: "dense attention below this many tokens (paper: 8192; 0 = always sparse)" },
        ParamSpec { name: "top_k", default: 64.0, min: 0.0, max: 1e9, integer: true, help: "selected blocks beyond the forced ones" },
    ],
    build,
};

const STRIDE: usize = 16;
const WINDOW: usize = 32;
/// Coarse keys of the LSE variant: `K2_j = mean K[64j, 64j + 128)`, whatever the block size.
const COARSE_STRIDE: usize = 64;
const COARSE_WINDOW: usize = 128;

fn build(p: &Params) -> Box<dyn Selector> {
    Box::new(InfLlmV2 {
        block: p.count("block").max(STRIDE) / STRIDE * STRIDE,
        n_init: p.count("init_blocks"),
        local: p.count("local_blocks"),
        coarse: p.flag("coarse_lse"),
        dense_below: p.count("dense_below"),
    })
}

#[derive(Debug)]
struct InfLlmV2 {
    block: usize,
    n_init: usize,
    local: usize,
    coarse: bool,
    dense_below: usize,
}

fn lse(xs: impl Iterator<Item = f32> + Clone) -> f32 {
    let m = xs.clone().fold(f32::NEG_INFINITY, f32::max);
    if m == f32::NEG_INFINITY {
        return m;
    }
    m + xs.map(|x| (x - m).exp()).sum::<f32>().ln()
}

impl Selector for InfLlmV2 {
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
        let n = g.n();
        let block = self.block;
        let per_block = block / STRIDE;
        if n < self.dense_below {
            // Dense fallback: every visible block is forced.
            let rows = rank_blocks_per_query(g.scored, block, n.div_ceil(block), 0, |_| Vec::new());
            return Box::new(RankedHeads {
                heads: vec![rows],
                group_size: g.group_size(),
            });
        }
        let scale = g.scale();
        let k1 = super::common::window_means(g.k, WINDOW, STRIDE);
        let k2 = super::common::window_means(g.k, COARSE_WINDOW, COARSE_STRIDE);
        let first = g.scored.first;
        let l1: Vec<Array2<f32>> =
            g.q.iter()
                .map(|q| g.scored.rows_of(*q).dot(&k1.t()) * scale)
                .collect();
        let l2: Vec<Array2<f32>> = if self.coarse {
            g.q.iter()
                .map(|q| g.scored.rows_of(*q).dot(&k2.t()) * scale)
                .collect()
        } else {
            Vec::new()
        };
        let coarse = self.coarse;
        let rows = rank_blocks_per_query(g.scored, block, self.n_init, self.local, |i| {
            // Chunks visible to query i: 16j + 31 <= i.
            let vis = if i + 1 >= WINDOW {
                ((i + 1 - WINDOW) / STRIDE + 1).min(k1.nrows())
            } else {
                0
            };
            let mut s = vec![0f32; vis];
            for (h, l) in l1.iter().enumerate() {
                let row = l.row(i - first);
                let z = if coarse {
                    let cvis = if i + 1 >= COARSE_WINDOW {
                        ((i + 1 - COARSE_WINDOW) / COARSE_STRIDE + 1).min(k2.nrows())
                    } else {
                        0
                    };
                    lse(l2[h].row(i - first).iter().take(cvis).copied())
                } else {
                    lse(row.iter().take(vis).copied())
                };
                if z.is_finite() {
                    s.iter_mut()
                        .zip(row.iter())
                        .for_each(|(sj, &x)| *sj += (x - z).exp());
                }
            }
            let own = i / block;
            (0..=own)
                .map(|b| {
                    let lo = (per_block * b).saturating_sub(1);
                    let hi = (per_block * b + per_block - 1).min(vis.saturating_sub(1));
                    (vis > 0 && lo <= hi && lo < vis)
                        .then(|| s[lo..=hi].iter().copied().fold(f32::NEG_INFINITY, f32::max))
                })
                .collect()
        });
        Box::new(RankedHeads {
            heads: vec![rows],
            group_size: g.group_size(),
        })
    }

    /// Stage-1 scores with the exact LSE over the compressed keys, max-pooled to blocks; the
    /// coarse-LSE variant and the dense fallback stay on the host.
    fn device_scoring(&self, n: usize) -> Option<DeviceScoring> {
        (!self.coarse && n >= self.dense_below).then_some(DeviceScoring::Representatives(
            RepresentativeRule {
                block: self.block,
                n_init: self.n_init,
                local: self.local,
                vis_window: WINDOW,
                vis_stride: STRIDE,
                transform: RepTransform::Softmax,
                scaled: true,
                pool: BlockPool::Max(self.block / STRIDE),
                group_shared: true,
                force_own: true,
            },
        ))
    }

    fn representatives(&self, keys: &HeadKeys<'_>) -> Option<Representatives> {
        Some(Representatives {
            reps: super::common::window_means(keys.k, WINDOW, STRIDE),
            minima: None,
        })
    }
}
