//! `snapkv`: SnapKV's observation-window voting, replayed causally for every query, per q-head.
//!
//! Li et al., SnapKV: LLM Knows What You are Looking for Before Generation, NeurIPS 2024
//! (arXiv:2404.14469). At the end of a prompt of length `t`, the last `w` queries (the observation
//! window) vote: `votes[j] = sum over window queries of softmax(q . k / sqrt d)[j]` for the prefix
//! keys `j < t - w`; votes are average-pooled (kernel 7, zero padding, divided by the kernel as
//! `avg_pool1d`), the top `C - w` prefix keys plus the window's own `w` keys form the compressed
//! cache of `C` keys, and tokens generated afterwards attend to that cache plus themselves.
//!
//! Causal replay (explicit choice): SnapKV compresses once, for the tokens after the prompt; here
//! every query must see only keys `<= i`. The sequence is cut into strides of `stride` tokens
//! (default 64). For the stride starting at `t`, the cache is what SnapKV keeps for the prompt
//! `0..t` (observation window = queries `t - w .. t`, all strictly before the stride, so no query
//! votes for itself), and query `i` of the stride keeps that cache plus the new keys `t..=i`, as a
//! decoded token would: `C + (i - t + 1)` keys. `stride = 1` is exact per-query SnapKV (query `i`
//! as the first token after the prompt `0..i`). When `t <= C` nothing is compressed (the public
//! code skips prompts shorter than C), so early strides are dense. The knob is C (total kept
//! cache tokens, default 2048 as the public code); C = n keeps everything. Each q-head votes on its
//! own (the public code repeats KV heads before voting).

use ndarray::s;
use rayon::prelude::*;

use super::common::{softmax_inplace, token_runs, top_token_set};
use crate::method::{GroupInput, Knob, Prepared, Selector};
use crate::method::{MethodInfo, MethodKind, ParamSpec, Params};
use crate::selection::{Range, Selection};

pub const INFO: MethodInfo = MethodInfo {
    name: "snapkv",
    kind: MethodKind::Published,
    paper: "Li et al., SnapKV: LLM Knows What You are Looking for Before Generation, NeurIPS 2024 (arXiv:2404.14469)",
    rule: "per q-head, the last w queries before the query's stride vote (avg-pooled, kernel 7); keep the window + top C-w voted keys + the stride's own keys",
    params: &[
        ParamSpec { name: "window", default: 32.0, min: 1.0, max: 1e6, integer: true, help: "observation window w (queries that vote; their keys are kept)" },
        ParamSpec { name: "kernel", default: 7.0, min: 1.0, max: 1e4, integer: true, help: "average-pooling kernel over the votes" },
        ParamSpec { name: "stride", default: 64.0, min: 1.0, max: 1e6, integer: true, help: "recompress every stride tokens (1 = exact per query)" },
        ParamSpec { name: "capacity", default: 2048.0, min: 1.0, max: 1e9, integer: true, help: "C, tokens kept in the compressed cache (window included)" },
    ],
    build,
};

fn build(p: &Params) -> Box<dyn Selector> {
    Box::new(SnapKv {
        window: p.count("window").max(1),
        kernel: p.count("kernel").max(1),
        stride: p.count("stride").max(1),
    })
}

#[derive(Debug)]
struct SnapKv {
    window: usize,
    kernel: usize,
    stride: usize,
}

/// Per q-head, per stride: the pooled votes of prefix keys `0..t - w` (empty: no prefix); keys
/// rank by pooled vote, ties by lower index, and a capacity keeps the best `C - w` of them.
struct Prep {
    n: usize,
    /// The first scored query.
    first: usize,
    window: usize,
    stride: usize,
    heads: Vec<Vec<Vec<f32>>>,
}

/// `avg_pool1d(x, kernel, stride 1, padding kernel / 2)` with zero padding, same length as `x`.
fn avg_pool(x: &[f32], kernel: usize) -> Vec<f32> {
    let half = kernel / 2;
    let mut prefix = vec![0f64; x.len() + 1];
    for (j, &v) in x.iter().enumerate() {
        prefix[j + 1] = prefix[j] + v as f64;
    }
    (0..x.len())
        .map(|j| {
            let lo = j.saturating_sub(half);
            let hi = (j + kernel - half).min(x.len());
            ((prefix[hi] - prefix[lo]) / kernel as f64) as f32
        })
        .collect()
}

impl SnapKv {
    /// Pooled votes of the prefix keys for the prompt `0..t`, from the window's logits
    /// (`[w, >= t]`: queries `t - w..t` against keys `0..`).
    fn votes_from(&self, logits: ndarray::ArrayView2<f32>, scale: f32, t: usize) -> Vec<f32> {
        let w = self.window;
        let mut votes = vec![0f32; t - w];
        for (a, row) in logits.outer_iter().enumerate() {
            let i = t - w + a;
            let mut p: Vec<f32> = row.iter().take(i + 1).map(|&x| x * scale).collect();
            softmax_inplace(&mut p);
            votes.iter_mut().zip(&p).for_each(|(v, &x)| *v += x);
        }
        avg_pool(&votes, self.kernel)
    }

    /// Pooled votes of every stride of one q-head that holds a scored query (the strides before
    /// them get none: no row of theirs is scored); the windows of several strides share one
    /// matrix product (its entries do not depend on which rows it holds).
    fn head_votes(&self, q: ndarray::ArrayView2<f32>, g: &GroupInput<'_>) -> Vec<Vec<f32>> {
        let (n, w, stride, scale) = (g.n(), self.window, self.stride, g.scale());
        let (strides, r0) = (n.div_ceil(stride), g.scored.first / stride);
        let per = (super::common::SCORE_CHUNK / w).max(1);
        let scored: Vec<usize> = (r0..strides).collect();
        let mut out = vec![Vec::new(); r0];
        out.par_extend(scored.par_chunks(per).flat_map_iter(|rs| {
            let rs = rs.to_vec();
            let voting: Vec<usize> = rs.iter().copied().filter(|&r| r * stride > w).collect();
            let t_max = voting.last().map_or(0, |&r| r * stride);
            let mut qw = ndarray::Array2::<f32>::zeros((voting.len() * w, q.ncols()));
            for (x, &r) in voting.iter().enumerate() {
                let t = r * stride;
                qw.slice_mut(s![x * w..(x + 1) * w, ..])
                    .assign(&q.slice(s![t - w..t, ..]));
            }
            let logits = qw.dot(&g.kt().slice(s![.., ..t_max]));
            rs.into_iter()
                .map(|r| {
                    let t = r * stride;
                    match voting.iter().position(|&v| v == r) {
                        Some(x) => {
                            self.votes_from(logits.slice(s![x * w..(x + 1) * w, ..t]), scale, t)
                        }
                        None => Vec::new(),
                    }
                })
                .collect::<Vec<_>>()
        }));
        out
    }
}

impl Prepared for Prep {
    /// Scored query `i` of the stride starting at `t` keeps the voted prefix keys (all before
    /// `t - w`) plus `t - w ..= i`.
    fn kept_pairs_at(&self, capacity: f64) -> Option<(u64, usize)> {
        let top = (capacity.max(0.0).round() as usize).saturating_sub(self.window);
        let kept = self
            .heads
            .iter()
            .flat_map(|strides| strides.iter().enumerate())
            .map(|(r, ranked)| {
                let t = r * self.stride;
                let end = ((r + 1) * self.stride).min(self.n);
                let recent = t.saturating_sub(self.window);
                let voted = top.min(ranked.len());
                (t.max(self.first)..end)
                    .map(|i| (voted + i + 1 - recent) as u64)
                    .sum::<u64>()
            })
            .sum();
        Some((kept, self.heads.len()))
    }

    fn select(&self, capacity: f64) -> Vec<Selection> {
        let top = (capacity.max(0.0).round() as usize).saturating_sub(self.window);
        self.heads
            .iter()
            .map(|strides| {
                let rows: Vec<Vec<Range>> = strides
                    .par_iter()
                    .enumerate()
                    .map(|(r, pooled)| {
                        let t = r * self.stride;
                        let end = ((r + 1) * self.stride).min(self.n) as u32;
                        let recent = t.saturating_sub(self.window) as u32;
                        // The best `top` keys in rank_desc order (as a set).
                        let mut ranges = token_runs(&top_token_set(pooled, top));
                        ranges.push((recent, end));
                        ranges
                    })
                    .collect();
                Selection::from_rows(self.n, self.stride, rows)
            })
            .collect()
    }
}

impl Selector for SnapKv {
    fn knob(&self) -> Knob {
        Knob {
            name: "capacity",
            min: self.window as f64,
            max: 1e9,
            integer: true,
            denser_when_larger: true,
            tokens_per_unit: 1,
        }
    }

    fn prepare<'a>(&'a self, g: &'a GroupInput<'a>) -> Box<dyn Prepared + 'a> {
        let n = g.n();
        let heads = g.q.iter().map(|q| self.head_votes(*q, g)).collect();
        Box::new(Prep {
            n,
            first: g.scored.first,
            window: self.window,
            stride: self.stride,
            heads,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selection::causal_pairs;
    use crate::testing::GroupData;
    use ndarray::Array2;

    #[test]
    fn pooling_matches_avg_pool1d() {
        // avg_pool1d([0, 0, 3, 0, 0], kernel 3, padding 1) = [0, 1, 1, 1, 0].
        assert_eq!(
            avg_pool(&[0.0, 0.0, 3.0, 0.0, 0.0], 3),
            vec![0.0, 1.0, 1.0, 1.0, 0.0]
        );
        // Zero padding counts: the edge divides by the kernel too.
        assert_eq!(avg_pool(&[3.0, 0.0], 3), vec![1.0, 1.0]);
    }

    #[test]
    fn window_votes_pick_the_heavy_key() {
        // 12 tokens, w = 2, kernel 1, stride 4: queries attend (almost) only to key 1.
        let q = Array2::from_shape_fn((12, 2), |(_, c)| if c == 0 { 1.0 } else { 0.0 });
        let k = Array2::from_shape_fn((12, 2), |(j, c)| if j == 1 && c == 0 { 40.0 } else { 0.0 });
        let v = Array2::zeros((12, 2));
        let data = GroupData::from_qkv(q, k, v, vec![false; 12], vec![false; 12], 1, 4);
        let g = data.input();
        let m = SnapKv {
            window: 2,
            kernel: 1,
            stride: 4,
        };
        let prep = m.prepare(&g);
        // C = 3: window (2 keys) + the best voted prefix key (key 1).
        let s = &prep.select(3.0)[0];
        // Stride 2 (queries 8..12): prefix 0..6 voted by queries 6, 7; keeps 1, 6..=i.
        assert_eq!(s.keys_of(9).collect::<Vec<_>>(), vec![(1, 2), (6, 10)]);
        assert_eq!(s.kept_of(9), 3 + 2);
        // Stride 1 (queries 4..8): prefix 0..2 voted by queries 2, 3.
        assert_eq!(s.keys_of(5).collect::<Vec<_>>(), vec![(1, 6)]);
        // Stride 0 has no prefix: dense.
        assert_eq!(s.keys_of(3).collect::<Vec<_>>(), vec![(0, 4)]);
        assert_eq!(s.row_max_key(2), Some(11));
    }

    #[test]
    fn monotone_and_dense_at_n() {
        let data = GroupData::random(300, 16, 2, 11);
        let g = data.input();
        let m = SnapKv {
            window: 32,
            kernel: 7,
            stride: 64,
        };
        let prep = m.prepare(&g);
        let mut last = 0;
        for c in [32.0, 40.0, 100.0, 200.0] {
            let kept: u64 = prep.select(c).iter().map(Selection::kept_pairs).sum();
            assert!(kept >= last);
            last = kept;
        }
        for s in prep.select(m.knob().max_for(300)) {
            assert_eq!(s.kept_pairs(), causal_pairs(300));
        }
    }
}
