//! `moba`: Mixture of Block Attention (Lu et al., Moonshot AI, arXiv:2502.13189).
//!
//! Keys are split into blocks of `B` tokens. Each q-head selects for itself (no sharing across
//! the GQA group) with the gate `s_ib = q_i . mean(K_b)` (no scaling). The query's current block
//! is always selected and attended causally; the gate ranks the complete blocks before it and
//! `top_k` more are kept. As for every block method of this crate, `top_k` counts blocks beyond
//! the forced (current) one; MoBA's own `top_k` counts the current block (its code sets the
//! current block's gate to +inf before `topk`), so the paper's top-3 is `top_k = 2` here.
//!
//! The gate is evaluated per query token, as in the paper (eq. 5-6) and both of its reference
//! implementations (`moba_naive`, `moba_efficient`): rows hold one query each.
//! Defaults: B = 512 and `top_k = 2` (the paper's top-3 at 8k); at 1M it used B = 4096, top-12.

use ndarray::Array2;

use super::common::{
    block_k_for_tokens, block_knob, block_means, rank_blocks_per_query, RankedHeads,
};
use crate::method::{DeviceScoring, HeadKeys, RepTransform, RepresentativeRule, Representatives};
use crate::method::{GroupInput, Knob, Prepared, Selector};
use crate::method::{MethodInfo, MethodKind, ParamSpec, Params};
use attnscope_core::attention::BlockPool;

pub const INFO: MethodInfo = MethodInfo {
    name: "moba",
    kind: MethodKind::Published,
    paper: "Lu et al., MoBA: Mixture of Block Attention for Long-Context LLMs (arXiv:2502.13189)",
    rule: "per q-head and query: the current block (causal) + the top_k past blocks by q . mean(K_b) (no scaling)",
    params: &[
        ParamSpec { name: "block", default: 512.0, min: 1.0, max: 1e9, integer: true, help: "block size B (paper: 512 at 8k, 4096 at 1M)" },
        ParamSpec { name: "top_k", default: 2.0, min: 0.0, max: 1e9, integer: true, help: "past blocks beyond the current one (paper top-3 at 8k and top-12 at 1M count the current block: 2 and 11 here)" },
    ],
    build,
};

fn build(p: &Params) -> Box<dyn Selector> {
    Box::new(Moba {
        block: p.count("block").max(1),
    })
}

#[derive(Debug)]
struct Moba {
    block: usize,
}

impl Selector for Moba {
    fn knob(&self) -> Knob {
        block_knob(self.block)
    }

    fn knob_for_tokens(&self, tokens: usize) -> Option<f64> {
        Some(block_k_for_tokens(tokens, self.block, 0, 0))
    }

    fn prepare<'a>(&'a self, g: &'a GroupInput<'a>) -> Box<dyn Prepared + 'a> {
        let block = self.block;
        let means = block_means(g.k, block);
        let heads =
            g.q.iter()
                .map(|q| {
                    let gate: Array2<f32> = g.scored.rows_of(*q).dot(&means.t());
                    rank_blocks_per_query(g.scored, block, 0, 0, |i| {
                        gate.row(i - g.scored.first)
                            .iter()
                            .take(i / block)
                            .map(|&s| Some(s))
                            .collect()
                    })
                })
                .collect();
        Box::new(RankedHeads {
            heads,
            group_size: g.group_size(),
        })
    }

    /// The unscaled gate `q . mean(K_b)` per q-head over the complete earlier blocks.
    fn device_scoring(&self, _n: usize) -> Option<DeviceScoring> {
        Some(DeviceScoring::Representatives(RepresentativeRule {
            block: self.block,
            n_init: 0,
            local: 0,
            vis_window: self.block + 1,
            vis_stride: self.block,
            transform: RepTransform::Raw,
            scaled: false,
            pool: BlockPool::Identity,
            group_shared: false,
            force_own: true,
        }))
    }

    fn representatives(&self, keys: &HeadKeys<'_>) -> Option<Representatives> {
        Some(Representatives {
            reps: block_means(keys.k, self.block),
            minima: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::GroupData;

    fn moba(block: usize) -> Box<dyn Selector> {
        let p = INFO
            .params(&[("block".into(), block as f64)])
            .unwrap_or_default();
        (INFO.build)(&p)
    }

    #[test]
    fn gate_is_query_dot_block_mean_per_head() {
        // 4 blocks of 2 tokens, d = 2. Block means: b0 (0, 0), b1 (1, 0), b2 (-1, 0), b3 current.
        let k = ndarray::arr2(&[
            [0.0, 1.0],
            [0.0, -1.0],
            [2.0, 0.0],
            [0.0, 0.0],
            [-1.0, 0.5],
            [-1.0, -0.5],
            [0.0, 0.0],
            [0.0, 0.0],
        ]);
        // Head 0 asks along +e0, head 1 along -e0.
        let mut q = Array2::zeros((8, 4));
        for i in 0..8 {
            q[[i, 0]] = 1.0;
            q[[i, 2]] = -1.0;
        }
        let v = Array2::zeros((8, 2));
        let data = GroupData::from_qkv(q, k, v, vec![false; 8], vec![false; 8], 2, 2);
        let g = data.input();
        let m = moba(2);
        let sels = m.prepare(&g).select(1.0);
        assert_eq!(sels[0].keys_of(7).collect::<Vec<_>>(), vec![(2, 4), (6, 8)]);
        assert_eq!(sels[1].keys_of(7).collect::<Vec<_>>(), vec![(4, 8)]);
        // top_k = 0: the current block only, causal inside it.
        let sels = m.prepare(&g).select(0.0);
        assert_eq!(sels[0].keys_of(6).collect::<Vec<_>>(), vec![(6, 7)]);
        assert_eq!(m.knob_for_tokens(5), Some(1.0));
    }

    #[test]
    fn causal_and_dense_at_full_budget() {
        let data = GroupData::random(300, 8, 3, 11);
        let g = data.input();
        let m = moba(32);
        let prep = m.prepare(&g);
        for s in prep.select(m.knob().max_for(300)) {
            assert!((0..300).all(|i| s.kept_of(i) == i + 1));
        }
        for s in prep.select(1.0) {
            for i in 0..300 {
                assert!(s.row_max_key(i).is_some_and(|j| j <= i));
                assert!(s.kept_of(i) <= 64 && s.kept_of(i) >= 1);
            }
        }
    }
}
