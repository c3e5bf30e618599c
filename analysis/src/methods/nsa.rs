//! `nsa`: the selection branch of Native Sparse Attention (Yuan et al., DeepSeek, arXiv:2502.11089).
//!
//! Compressed keys are windows of `l = 32` tokens with stride `d = 16`; NSA compresses each window
//! with a trained MLP, which does not exist here, so the window's mean key stands in for it
//! (`K_cmp_t = mean K[16t, 16t + 32)`). A window is visible to query `i` when it ends at or before
//! `i` (`16t + 31 <= i`). Per q-head `p_cmp = softmax_t(q_i . K_cmp_t / sqrt d)` over the visible
//! windows; the importance of selection block `b` (`l' = 64` tokens) is the sum of `p_cmp` over the
//! windows that overlap it (`t in [4b - 1, 4b + 3]` for the default sizes), each weighted by its
//! overlap with the block in strides (1, 2, 2, 2, 1: the first and last windows cover half of
//! theirs inside the block; NSA eq. 9, as the reference kernels sum over the window and stride
//! offsets), summed over the q-heads of the group (NSA eq. 10): one selection is shared by the
//! whole GQA group.
//!
//! Kept: the initial block, the local blocks and the top-k other blocks. The paper's "n = 16
//! selected blocks including 1 initial and 2 local blocks" is read as: the query's own block and
//! the one before it are the 2 local blocks (`local_blocks = 1` counts blocks *before* the own
//! block, as everywhere in this crate), and `top_k = 13` more, 16 blocks = 1024 keys in all.

use ndarray::Array2;

use super::common::{block_k_for_tokens, block_knob, rank_blocks_per_query, RankedHeads};
use crate::method::{DeviceScoring, HeadKeys, RepTransform, RepresentativeRule, Representatives};
use crate::method::{GroupInput, Knob, Prepared, Selector};
use crate::method::{MethodInfo, MethodKind, ParamSpec, Params};
use attnscope_core::attention::BlockPool;

pub const INFO: MethodInfo = MethodInfo {
    name: "nsa",
    kind: MethodKind::Published,
    paper: "Yuan et al., Native Sparse Attention: Hardware-Aligned and Natively Trainable Sparse Attention, ACL 2025 (arXiv:2502.11089)",
    rule: "selection branch: 1 init + local blocks + top-k 64-token blocks by group-summed p_cmp of overlapping 32-token windows (stride 16), weighted by their overlap (1, 2, 2, 2, 1); mean pooling stands in for the trained compression MLP",
    params: &[
        ParamSpec { name: "block", default: 64.0, min: 16.0, max: 65536.0, integer: true, help: "selection block size l' (a multiple of the 16-token stride)" },
        ParamSpec { name: "init_blocks", default: 1.0, min: 0.0, max: 1e6, integer: true, help: "forced blocks at the start" },
        ParamSpec { name: "local_blocks", default: 1.0, min: 0.0, max: 1e6, integer: true, help: "forced blocks before the query's own (paper: 2 local blocks = own + 1 before)" },
        ParamSpec { name: "top_k", default: 13.0, min: 0.0, max: 1e9, integer: true, help: "selected blocks beyond the forced ones (paper: n = 16 blocks including 1 init + 2 local)" },
    ],
    build,
};

/// Compression stride `d` and window length `l`.
const STRIDE: usize = 16;
const WINDOW: usize = 32;

fn build(p: &Params) -> Box<dyn Selector> {
    Box::new(Nsa {
        block: p.count("block").max(STRIDE) / STRIDE * STRIDE,
        n_init: p.count("init_blocks"),
        local: p.count("local_blocks"),
    })
}

#[derive(Debug)]
struct Nsa {
    block: usize,
    n_init: usize,
    local: usize,
}

/// Windows visible to query `i` (those ending at or before it), at most `m`.
fn visible_windows(i: usize, m: usize) -> usize {
    if i + 1 >= WINDOW {
        ((i + 1 - WINDOW) / STRIDE + 1).min(m)
    } else {
        0
    }
}

/// Importance of blocks `0..n_blocks`: the sum of `p_cmp` over the windows overlapping each block,
/// `t in [per_block * b - 1, per_block * (b + 1) - 1]` (`per_block = block / STRIDE`), each times
/// its overlap with the block in strides ([`overlap_weight`]), where `p_cmp` holds the visible
/// windows only. Added in window order (as the device kernel adds them).
fn block_importance(p_cmp: &[f32], n_blocks: usize, per_block: usize) -> Vec<f32> {
    (0..n_blocks)
        .map(|b| {
            let lo = (per_block * b).saturating_sub(1);
            let hi = (per_block * (b + 1)).min(p_cmp.len());
            let mut v = 0f32;
            for (t, &p) in p_cmp.iter().enumerate().take(hi).skip(lo) {
                v += overlap_weight(t, b, per_block) * p;
            }
            v
        })
        .collect()
}

/// Strides of window `t` (`[16 t, 16 t + 32)`) inside block `b` of `per_block` strides: 1 for
/// the windows reaching over either edge, 2 for those inside.
fn overlap_weight(t: usize, b: usize, per_block: usize) -> f32 {
    let (lo, hi) = (t, t + WINDOW / STRIDE); // the window in strides
    let (blo, bhi) = (per_block * b, per_block * (b + 1));
    (hi.min(bhi).saturating_sub(lo.max(blo))) as f32
}

impl Selector for Nsa {
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
        let block = self.block;
        let per_block = block / STRIDE;
        let kc = super::common::window_means(g.k, WINDOW, STRIDE);
        let m = kc.nrows();
        let scale = g.scale();
        let logits: Vec<Array2<f32>> =
            g.q.iter()
                .map(|q| g.scored.rows_of(*q).dot(&kc.t()) * scale)
                .collect();
        let first = g.scored.first;
        let rows = rank_blocks_per_query(g.scored, block, self.n_init, self.local, |i| {
            let vis = visible_windows(i, m);
            let mut p = vec![0f32; vis];
            for l in &logits {
                let mut row: Vec<f32> = l.row(i - first).iter().take(vis).copied().collect();
                super::common::softmax_inplace(&mut row);
                p.iter_mut().zip(&row).for_each(|(a, r)| *a += r);
            }
            // Complete blocks before the query's own block are the candidates.
            block_importance(&p, i / block, per_block)
                .into_iter()
                .map(Some)
                .collect()
        });
        Box::new(RankedHeads {
            heads: vec![rows],
            group_size: g.group_size(),
        })
    }

    fn device_scoring(&self, _n: usize) -> Option<DeviceScoring> {
        Some(DeviceScoring::Representatives(RepresentativeRule {
            block: self.block,
            n_init: self.n_init,
            local: self.local,
            vis_window: WINDOW,
            vis_stride: STRIDE,
            transform: RepTransform::Softmax,
            scaled: true,
            pool: BlockPool::Sum(self.block / STRIDE),
            group_shared: true,
            force_own: true,
        }))
    }

    fn representatives(&self, keys: &HeadKeys<'_>) -> Option<Representatives> {
        Some(Representatives {
            reps: super::common::window_means(keys.k, WINDOW, STRIDE),
            minima: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::GroupData;

    #[test]
    fn block_importance_sums_overlapping_windows() {
        // 64-token blocks, 16-token stride: block b overlaps windows 4b-1 ..= 4b+3, by 1, 2, 2,
        // 2 and 1 strides (window t covers tokens [16t, 16t + 32)).
        let p: Vec<f32> = (0..12).map(|t| (t + 1) as f32).collect();
        let s = block_importance(&p, 3, 4);
        assert_eq!(
            s,
            vec![
                2. * 1. + 2. * 2. + 2. * 3. + 4.,
                4. + 2. * 5. + 2. * 6. + 2. * 7. + 8.,
                8. + 2. * 9. + 2. * 10. + 2. * 11. + 12.
            ]
        );
        // Windows not yet visible do not count.
        assert_eq!(block_importance(&p[..5], 2, 4), vec![16.0, 4.0 + 2.0 * 5.0]);
        // 16-token blocks: windows b - 1 and b, half of each inside.
        assert_eq!(block_importance(&p, 3, 1), vec![1.0, 3.0, 5.0]);
        assert_eq!(visible_windows(30, 100), 0);
        assert_eq!(visible_windows(31, 100), 1);
        assert_eq!(visible_windows(47, 100), 2);
    }

    #[test]
    fn picks_the_block_whose_windows_match_the_query() {
        // 6 blocks of 64; only block 2's keys point along e0, and every query is e0.
        let (n, d) = (384, 4);
        let q = Array2::from_shape_fn((n, d), |(_, c)| if c == 0 { 1.0 } else { 0.0 });
        let k = Array2::from_shape_fn((n, d), |(j, c)| {
            if c == 0 && (128..192).contains(&j) {
                6.0
            } else {
                0.0
            }
        });
        let v = Array2::zeros((n, d));
        let data = GroupData::from_qkv(q, k, v, vec![false; n], vec![false; n], 1, 64);
        let g = data.input();
        let m = (INFO.build)(&INFO.params(&[]).unwrap_or_default());
        let sel = m.prepare(&g).select(1.0).remove(0);
        // Query 383 (block 5): forced 0, 4, 5 plus block 2.
        assert_eq!(
            sel.keys_of(383).collect::<Vec<_>>(),
            vec![(0, 64), (128, 192), (256, 384)]
        );
        // Top-0 keeps only the forced blocks; query 100 (block 1) keeps blocks 0 and 1.
        let sel0 = m.prepare(&g).select(0.0).remove(0);
        assert_eq!(
            sel0.keys_of(383).collect::<Vec<_>>(),
            vec![(0, 64), (256, 384)]
        );
        assert_eq!(sel0.keys_of(100).collect::<Vec<_>>(), vec![(0, 101)]);
    }

    #[test]
    fn causal_shared_and_dense_at_full_budget() {
        let data = GroupData::random(300, 8, 3, 7);
        let g = data.input();
        let m = (INFO.build)(&INFO.params(&[]).unwrap_or_default());
        let prep = m.prepare(&g);
        let sels = prep.select(m.knob().max_for(300));
        assert_eq!(sels.len(), 3);
        for i in 0..300 {
            assert_eq!(sels[0].kept_of(i), i + 1);
        }
        let sels = prep.select(1.0);
        assert!(sels.iter().all(|s| s == &sels[0]));
        for r in 0..sels[0].rows() {
            assert!(sels[0].row_max_key(r).is_some_and(|j| j <= r));
        }
    }
}
