//! `hisa-proxy`: HISA's hierarchical indexer (Xu et al., HISA: Efficient Hierarchical Indexing for
//! Fine-Grained Sparse Attention, arXiv:2603.28458) on top of the [`dsa-proxy`](super::dsa_proxy)
//! score (no trained indexer exists here). Two stages per query `i`:
//! 1. block filter: blocks of `B = 128` keys are scored with their mean key under the dsa-proxy
//!    score, `s_ib = sum_h ReLU(q_ih . mean(K_b))`, and the top `m` blocks are kept;
//! 2. token refinement: the exact dsa-proxy top-`k` tokens among the kept blocks' causal keys.
//!
//! The paper ties neither `m` to `k` nor fixes it here (open); we set
//! `m = ceil(block_mult * k / B)` (default `block_mult` 4: a candidate pool of about 4k tokens),
//! so `k` is the one knob; when the `m` blocks hold fewer than `k` causal keys (a partial own
//! block, small `k`), further blocks are taken in rank order until they do, so every query keeps
//! exactly `min(k, i + 1)` keys. With `force_ends` (default on, ours) the first block and the query's own
//! block are always candidates and count within `m`. The query's own block is partial in prefill:
//! its representative (used when it is not forced) is the mean of its keys up to `i`, exactly what
//! a decode step at position `i` would see. Full budget: `k > i` keeps every causal key, and since
//! `m * B >= k` whenever `block_mult >= 1`, the filter can never starve a query.
//!
//! GQA: one selection shared by the group (as dsa-proxy). Report IoU against `dsa-proxy`
//! (paper: > 0.99 mean IoU with the real indexer).

use ndarray::{s, Array2};
use rayon::prelude::*;

use super::common::{
    block_means, rank_desc, token_runs, top_k_pairs_scored, top_token_set, SCORE_CHUNK,
};
use super::dsa_proxy::dsa_scores;
use crate::method::{GroupInput, Knob, Prepared, Selector};
use crate::method::{MethodInfo, MethodKind, ParamSpec, Params};
use crate::selection::{Range, Selection};

pub const INFO: MethodInfo = MethodInfo {
    name: "hisa-proxy",
    kind: MethodKind::Proxy,
    paper: "Xu et al., HISA: Efficient Hierarchical Indexing for Fine-Grained Sparse Attention (arXiv:2603.28458); proxy: dsa-proxy score instead of the trained DSA indexer",
    rule: "stands in for HISA over DSA's trained indexer: top-m blocks of 128 by dsa-proxy score of the block-mean key, then dsa-proxy top-k tokens inside them (m = ceil(block_mult * k / B))",
    params: &[
        ParamSpec { name: "block", default: 128.0, min: 1.0, max: 65536.0, integer: true, help: "block size of the coarse filter" },
        ParamSpec { name: "block_mult", default: 4.0, min: 1.0, max: 1e6, integer: false, help: "candidate blocks m = ceil(block_mult * k / block) (open; ours)" },
        ParamSpec { name: "force_ends", default: 1.0, min: 0.0, max: 1.0, integer: true, help: "always keep the first block and the query's own block as candidates (ours)" },
        ParamSpec { name: "cap", default: 2048.0, min: 1.0, max: 1e9, integer: true, help: "ranked keys stored per query (memory bound; results are exact regardless)" },
        ParamSpec { name: "k", default: 2048.0, min: 1.0, max: 1e9, integer: true, help: "keys kept per query" },
    ],
    build,
};

fn build(p: &Params) -> Box<dyn Selector> {
    Box::new(HisaProxy {
        block: p.count("block").max(1),
        mult: p.get("block_mult").max(1.0),
        force_ends: p.flag("force_ends"),
        cap: p.count("cap").max(1),
    })
}

#[derive(Debug)]
struct HisaProxy {
    block: usize,
    mult: f64,
    force_ends: bool,
    cap: usize,
}

struct Prep<'a> {
    g: &'a GroupInput<'a>,
    block: usize,
    mult: f64,
    /// Forced candidate blocks of each query.
    forced: Vec<Vec<u32>>,
    /// Other visible blocks of each query, best first.
    blocks: Vec<Vec<u32>>,
}

impl Prep<'_> {
    /// The kept tokens of query `i` at budget `k` with `m` candidate blocks, from the dsa-proxy
    /// scores `s` of keys `0..=i`.
    fn row(&self, i: usize, k: usize, m: usize, s: &[f32]) -> Vec<Range> {
        if k > i {
            return vec![(0, i as u32 + 1)];
        }
        let n_vis = i / self.block + 1;
        let forced = &self.forced[i];
        let mut allowed = vec![false; n_vis];
        let (mut used, mut pool) = (0, 0);
        for (r, &b) in forced.iter().chain(&self.blocks[i]).enumerate() {
            if r >= forced.len() && used >= m && pool >= k {
                break;
            }
            allowed[b as usize] = true;
            used += 1;
            pool += self.block.min(i + 1 - b as usize * self.block);
        }
        // Candidates in ascending order: ties by lower index map back monotonically.
        let mut cand: Vec<u32> = Vec::with_capacity(pool);
        let mut sc: Vec<f32> = Vec::with_capacity(pool);
        for (b, _) in allowed.iter().enumerate().filter(|(_, &a)| a) {
            let (lo, hi) = (b * self.block, ((b + 1) * self.block).min(i + 1));
            cand.extend(lo as u32..hi as u32);
            sc.extend_from_slice(&s[lo..hi]);
        }
        let top: Vec<u32> = top_token_set(&sc, k)
            .into_iter()
            .map(|c| cand[c as usize])
            .collect();
        token_runs(&top)
    }
}

impl Prepared for Prep<'_> {
    fn select(&self, x: f64) -> Vec<Selection> {
        let k = x.max(1.0).round() as usize;
        let m = (self.mult * k as f64 / self.block as f64).ceil() as usize;
        let g = self.g;
        let (first, n) = (g.scored.first, g.n());
        let rows: Vec<Vec<Range>> = (0..g.scored.len().div_ceil(SCORE_CHUNK))
            .into_par_iter()
            .flat_map(|c| {
                let (lo, hi) = (
                    first + c * SCORE_CHUNK,
                    (first + (c + 1) * SCORE_CHUNK).min(n),
                );
                let s = (lo..hi).any(|i| k <= i).then(|| dsa_scores(g, lo, hi));
                (lo..hi)
                    .into_par_iter()
                    .map(|i| match &s {
                        Some(s) => {
                            let r = s.row(i - lo);
                            let r = r.as_slice().expect("fresh arrays are contiguous");
                            self.row(i, k, m, &r[..=i])
                        }
                        None => vec![(0, i as u32 + 1)],
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        vec![Selection::from_rows_scored(g.scored, 1, rows); g.group_size()]
    }

    fn kept_pairs_at(&self, x: f64) -> Option<(u64, usize)> {
        // Every query keeps exactly min(k, i + 1) keys (see the module docs).
        let k = x.max(1.0).round() as usize;
        let gs = self.g.group_size();
        Some((top_k_pairs_scored(self.g.scored, k) * gs as u64, gs))
    }
}

impl Selector for HisaProxy {
    fn knob(&self) -> Knob {
        Knob::count("k", 1.0, 1)
    }

    fn knob_for_tokens(&self, tokens: usize) -> Option<f64> {
        Some(tokens.max(1) as f64)
    }

    fn prepare<'a>(&'a self, g: &'a GroupInput<'a>) -> Box<dyn Prepared + 'a> {
        let (n, b) = (g.n(), self.block);
        let means = block_means(g.k, b);
        // Scores of complete blocks: [n, n_blocks] summed over heads.
        let mut bs = Array2::<f32>::zeros((n, means.nrows()));
        for q in &g.q {
            bs.zip_mut_with(&q.dot(&means.t()), |o, &x| *o += x.max(0.0));
        }
        let force = self.force_ends;
        // `cap` bounded the stored rankings of earlier versions; selections are exact either way.
        let _ = self.cap;
        let rows: Vec<(Vec<u32>, Vec<u32>)> = (0..n)
            .into_par_iter()
            .map(|i| {
                let own = i / b;
                let forced: Vec<u32> = if force {
                    let mut f = vec![0, own as u32];
                    f.dedup();
                    f
                } else {
                    Vec::new()
                };
                // Own block: mean of its keys up to i (what decode at position i sees).
                let partial = g.k.slice(s![own * b..=i, ..]).mean_axis(ndarray::Axis(0));
                let own_score: f32 = partial.map_or(0.0, |pm| {
                    g.q.iter().map(|q| q.row(i).dot(&pm).max(0.0)).sum()
                });
                let scores: Vec<f32> = (0..=own)
                    .map(|c| if c == own { own_score } else { bs[[i, c]] })
                    .collect();
                let ranked = rank_desc(&scores)
                    .into_iter()
                    .filter(|c| !forced.contains(c))
                    .collect();
                (forced, ranked)
            })
            .collect();
        let (forced, blocks) = rows.into_iter().unzip();
        Box::new(Prep {
            g,
            block: b,
            mult: self.mult,
            forced,
            blocks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::GroupData;
    use ndarray::Array2;

    fn run(data: &GroupData, m: &HisaProxy, k: f64) -> Vec<Selection> {
        let g = data.input();
        let p = m.prepare(&g);
        p.select(k)
    }

    fn hisa(block: usize, mult: f64, force_ends: bool, cap: usize) -> HisaProxy {
        HisaProxy {
            block,
            mult,
            force_ends,
            cap,
        }
    }

    #[test]
    fn block_filter_hides_a_strong_key_in_a_weak_block() {
        // d = 1, one head, q = 1 everywhere, blocks of 2 tokens (0,1) (2,3) (4,5) (6,7).
        // Keys: block 1 = (5, -4): mean 0.5 though key 2 scores 5; block 2 = (1, 1): mean 1.
        // Query 7, k = 2, block_mult 2 -> m = 2 blocks: forced {0, 3} only (force_ends on),
        // so the candidates are tokens {0, 1, 6, 7}: scores [.5, .5, 0, .2] -> {0, 1}.
        // Without forcing: block scores b0 .5, b1 .5, b2 1, b3 (mean of 0, .2) .1 -> {2, 0}
        // -> candidates {4, 5, 0, 1}: scores [1, 1, .5, .5] -> {4, 5}. dsa-proxy alone: {2, 4}.
        let k = Array2::from_shape_vec((8, 1), vec![0.5, 0.5, 5.0, -4.0, 1.0, 1.0, 0.0, 0.2])
            .expect("test data");
        let q = Array2::ones((8, 1));
        let data = GroupData::from_qkv(q, k.clone(), k, vec![false; 8], vec![false; 8], 1, 2);
        let s = run(&data, &hisa(2, 2.0, true, 8), 2.0);
        assert_eq!(s[0].keys_of(7).collect::<Vec<_>>(), vec![(0, 2)]);
        let s = run(&data, &hisa(2, 2.0, false, 8), 2.0);
        assert_eq!(s[0].keys_of(7).collect::<Vec<_>>(), vec![(4, 6)]);
        // A pool covering every block reduces to dsa-proxy's top-k.
        let s = run(&data, &hisa(2, 8.0, false, 8), 2.0);
        assert_eq!(s[0].keys_of(7).collect::<Vec<_>>(), vec![(2, 3), (4, 5)]);
    }

    #[test]
    fn invariants_cap_independence_and_dsa_limit() {
        let n = 400;
        let data = GroupData::random(n, 16, 2, 11);
        for k in [1.0, 9.0, 70.0, 399.0] {
            for force in [false, true] {
                let a = run(&data, &hisa(32, 2.0, force, 1000), k);
                let b = run(&data, &hisa(32, 2.0, force, 5), k);
                assert_eq!(a, b, "cap changed the selection at k = {k}");
                assert_eq!(a[0], a[1]);
                for r in 0..n {
                    assert!(a[0].row_max_key(r).is_some_and(|m| m <= r));
                    assert_eq!(a[0].kept_of(r), (k as usize).min(r + 1));
                }
            }
        }
        let full = run(&data, &hisa(32, 1.0, true, 16), n as f64);
        assert_eq!(full[0].kept_pairs(), crate::selection::causal_pairs(n));
        // A huge multiplier keeps every block: identical to dsa-proxy.
        let dsa = (super::super::dsa_proxy::INFO.build)(
            &super::super::dsa_proxy::INFO
                .params(&[])
                .expect("test data"),
        );
        let g = data.input();
        let d = dsa.prepare(&g).select(20.0);
        assert_eq!(run(&data, &hisa(32, 1e4, false, 64), 20.0), d);
    }
}
