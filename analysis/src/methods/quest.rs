//! `quest`: query-aware page selection (Tang et al., Quest, ICML 2024, arXiv:2406.10774).
//!
//! Keys are split into pages of 16 tokens; each page keeps the element-wise minimum `m_p` and
//! maximum `M_p` of its keys. The upper bound of `q . k` over page `p` is
//! `U_ip = sum_d max(q_d * M_pd, q_d * m_pd) = q+ . M_p + q- . m_p` (`q+ = max(q, 0)`,
//! `q- = min(q, 0)`), two matrix products. Every query (rows of one query; Quest is a decode-time
//! method, replayed here for each query of the prefill) keeps its current page (causal inside) and
//! the complete earlier pages of largest `U`. Each q-head selects for itself (no GQA sharing).
//!
//! The knob `top_k` counts pages beyond the current one, as for every block method of this crate.
//! Quest's budget is in tokens, `token_budget / 16` pages with the current page among them: the
//! paper's 1024-4096 tokens are `top_k = 63-255` here (default 63).
//! Quest leaves its first two layers dense; that is a run-level choice, not applied here.

use ndarray::{Array2, ArrayView2};
use rayon::prelude::*;

use super::common::{block_k_for_tokens, block_knob, rank_blocks_per_query, RankedHeads};
use crate::method::{DeviceScoring, HeadKeys, RepTransform, RepresentativeRule, Representatives};
use crate::method::{GroupInput, Knob, Prepared, Selector};
use crate::method::{MethodInfo, MethodKind, ParamSpec, Params};
use attnscope_core::attention::BlockPool;

pub const INFO: MethodInfo = MethodInfo {
    name: "quest",
    kind: MethodKind::Published,
    paper: "Tang et al., Quest: Query-Aware Sparsity for Efficient Long-Context LLM Inference, ICML 2024 (arXiv:2406.10774)",
    rule: "per q-head and query: the current page + the pages of largest upper bound sum_d max(q_d Max_pd, q_d min_pd) from element-wise key min/max per 16-token page",
    params: &[
        ParamSpec { name: "page", default: 16.0, min: 1.0, max: 65536.0, integer: true, help: "page size in tokens" },
        ParamSpec { name: "top_k", default: 63.0, min: 0.0, max: 1e9, integer: true, help: "pages beyond the current one (paper token budgets 1024-4096 = 64-256 pages including the current: 63-255 here)" },
    ],
    build,
};

fn build(p: &Params) -> Box<dyn Selector> {
    Box::new(Quest {
        page: p.count("page").max(1),
    })
}

#[derive(Debug)]
struct Quest {
    page: usize,
}

/// Element-wise key minimum and maximum of each page: `([pages, d], [pages, d])`.
pub(crate) fn page_min_max(k: ArrayView2<f32>, page: usize) -> (Array2<f32>, Array2<f32>) {
    let pages = k.nrows().div_ceil(page);
    let mut lo = Array2::from_elem((pages, k.ncols()), f32::INFINITY);
    let mut hi = Array2::from_elem((pages, k.ncols()), f32::NEG_INFINITY);
    for (j, row) in k.outer_iter().enumerate() {
        let p = j / page;
        for (c, &x) in row.iter().enumerate() {
            lo[[p, c]] = lo[[p, c]].min(x);
            hi[[p, c]] = hi[[p, c]].max(x);
        }
    }
    (lo, hi)
}

/// Quest's page criticality `U[i, p] = sum_d max(q_id * hi_pd, q_id * lo_pd)`: `[n, pages]`.
fn page_scores(q: ArrayView2<f32>, lo: &Array2<f32>, hi: &Array2<f32>) -> Array2<f32> {
    let pos = q.mapv(|x| x.max(0.0));
    let neg = q.mapv(|x| x.min(0.0));
    pos.dot(&hi.t()) + neg.dot(&lo.t())
}

impl Selector for Quest {
    fn knob(&self) -> Knob {
        block_knob(self.page)
    }

    fn knob_for_tokens(&self, tokens: usize) -> Option<f64> {
        Some(block_k_for_tokens(tokens, self.page, 0, 0))
    }

    fn prepare<'a>(&'a self, g: &'a GroupInput<'a>) -> Box<dyn Prepared + 'a> {
        let page = self.page;
        let (lo, hi) = page_min_max(g.k, page);
        let heads =
            g.q.par_iter()
                .map(|q| {
                    let u = page_scores(g.scored.rows_of(*q), &lo, &hi);
                    rank_blocks_per_query(g.scored, page, 0, 0, |i| {
                        let row = u.row(i - g.scored.first);
                        row.iter().take(i / page).map(|&s| Some(s)).collect()
                    })
                })
                .collect();
        Box::new(RankedHeads {
            heads,
            group_size: g.group_size(),
        })
    }

    /// The upper bound `q+ . max + q- . min` per q-head over the complete earlier pages.
    fn device_scoring(&self, _n: usize) -> Option<DeviceScoring> {
        Some(DeviceScoring::Representatives(RepresentativeRule {
            block: self.page,
            n_init: 0,
            local: 0,
            vis_window: self.page + 1,
            vis_stride: self.page,
            transform: RepTransform::Raw,
            scaled: false,
            pool: BlockPool::Identity,
            group_shared: false,
            force_own: true,
        }))
    }

    fn representatives(&self, keys: &HeadKeys<'_>) -> Option<Representatives> {
        let (lo, hi) = page_min_max(keys.k, self.page);
        Some(Representatives {
            reps: hi,
            minima: Some(lo),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::GroupData;

    fn quest(page: usize) -> Box<dyn Selector> {
        let p = INFO
            .params(&[("page".into(), page as f64)])
            .unwrap_or_default();
        (INFO.build)(&p)
    }

    #[test]
    fn upper_bound_uses_elementwise_min_max() {
        // Page 0: keys (1, -1), (3, 1) -> min (1, -1), max (3, 1).
        // Page 1: keys (-2, 4), (0, 0) -> min (-2, 0), max (0, 4).
        let k = ndarray::arr2(&[[1.0, -1.0], [3.0, 1.0], [-2.0, 4.0], [0.0, 0.0]]);
        let (lo, hi) = page_min_max(k.view(), 2);
        assert_eq!(lo, ndarray::arr2(&[[1.0, -1.0], [-2.0, 0.0]]));
        assert_eq!(hi, ndarray::arr2(&[[3.0, 1.0], [0.0, 4.0]]));
        let q = ndarray::arr2(&[[1.0, -2.0], [-1.0, 1.0]]);
        let u = page_scores(q.view(), &lo, &hi);
        // q = (1, -2): page 0: max(3, 1) + max(-2, 2) = 5; page 1: max(0, -2) + max(-8, 0) = 0.
        // q = (-1, 1): page 0: max(-3, -1) + max(1, -1) = 0; page 1: max(0, 2) + max(4, 0) = 6.
        assert_eq!(u, ndarray::arr2(&[[5.0, 0.0], [0.0, 6.0]]));
    }

    #[test]
    fn keeps_current_page_and_best_bounds_per_head() {
        // Pages of 2: page 1 holds a key along +e0, page 2 one along -e0; query 7 is in page 3.
        let mut k = Array2::zeros((8, 2));
        k[[2, 0]] = 3.0;
        k[[5, 0]] = -3.0;
        let mut q = Array2::zeros((8, 4));
        for i in 0..8 {
            q[[i, 0]] = 1.0; // head 0 looks along +e0
            q[[i, 2]] = -1.0; // head 1 along -e0
        }
        let v = Array2::zeros((8, 2));
        let data = GroupData::from_qkv(q, k, v, vec![false; 8], vec![false; 8], 2, 2);
        let g = data.input();
        let m = quest(2);
        let sels = m.prepare(&g).select(1.0);
        assert_eq!(sels[0].keys_of(7).collect::<Vec<_>>(), vec![(2, 4), (6, 8)]);
        assert_eq!(sels[1].keys_of(7).collect::<Vec<_>>(), vec![(4, 8)]);
        let sels = m.prepare(&g).select(0.0);
        assert_eq!(sels[0].keys_of(6).collect::<Vec<_>>(), vec![(6, 7)]);
    }

    #[test]
    fn causal_and_dense_at_full_budget() {
        let data = GroupData::random(200, 8, 3, 5);
        let g = data.input();
        let m = quest(16);
        let prep = m.prepare(&g);
        for s in prep.select(m.knob().max_for(200)) {
            assert!((0..200).all(|i| s.kept_of(i) == i + 1));
        }
        for s in prep.select(2.0) {
            for i in 0..200 {
                assert!(s.row_max_key(i).is_some_and(|j| j <= i));
                assert!((1..=48).contains(&s.kept_of(i)));
            }
        }
    }
}
