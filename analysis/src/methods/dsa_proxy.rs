//! `dsa-proxy`: DeepSeek Sparse Attention's token selection (DeepSeek-V3.2, arXiv:2512.02556)
//! with a stand-in indexer. DSA's lightning indexer scores `I_ts = sum_j w_tj ReLU(q^I_tj . k^I_s)`
//! with trained indexer heads and weights, then keeps the top-k tokens (k = 2048). No trained
//! indexer exists for the models here, so the proxy uses the model's own post-RoPE q/k:
//! `I_ij = sum over the group's q-heads h of ReLU(q_ih . k_j)` (uniform weights; scaling does not
//! change the ranking), and keeps the top `k` causal keys of each query (ties by lower index, so
//! when fewer than k keys score above zero the earliest zero-score keys fill the budget).
//!
//! GQA: one selection shared by the q-heads of the KV group (DSA shares one selection across
//! all heads in MLA's MQA mode). No forced keys: `k` counts every kept key; a query with `i < k`
//! keeps all of its `i + 1` keys.
//!
//! Memory: rankings keep the best `cap` keys per query; a query that needs more is re-scored
//! exactly on demand, so selections do not depend on `cap` (only memory and time do).

use ndarray::Array2;

use super::common::{top_k_pairs_scored, top_k_selection};
use crate::method::{DeviceScoring, HeadKeys, RepTransform, Representatives};
use crate::method::{GroupInput, Knob, Prepared, Selector};
use crate::method::{MethodInfo, MethodKind, ParamSpec, Params};
use crate::selection::Selection;

pub const INFO: MethodInfo = MethodInfo {
    name: "dsa-proxy",
    kind: MethodKind::Proxy,
    paper: "DeepSeek-AI, DeepSeek-V3.2 (DeepSeek Sparse Attention, lightning indexer + top-k) (arXiv:2512.02556); proxy: no trained indexer here",
    rule: "stands in for DSA's trained lightning indexer: top-k tokens by sum over the group's q-heads of ReLU(q . k), shared by the group",
    params: &[
        ParamSpec { name: "cap", default: 2048.0, min: 1.0, max: 1e9, integer: true, help: "ranked keys stored per query (memory bound; larger budgets re-score exactly)" },
        ParamSpec { name: "k", default: 2048.0, min: 1.0, max: 1e9, integer: true, help: "keys kept per query" },
    ],
    build,
};

fn build(p: &Params) -> Box<dyn Selector> {
    Box::new(DsaProxy {
        cap: p.count("cap").max(1),
    })
}

#[derive(Debug)]
struct DsaProxy {
    cap: usize,
}

/// The proxy index scores `sum_h ReLU(q_ih . k_j)` (heads in order, from zero) of queries
/// `lo..hi` against their causal keys `0..=i` (zero beyond), from the group's shared logits.
pub(crate) fn dsa_scores(g: &GroupInput<'_>, lo: usize, hi: usize) -> Array2<f32> {
    let logits = g.logits();
    let mut out = Array2::<f32>::zeros((hi - lo, hi));
    for (r, mut row) in out.outer_iter_mut().enumerate() {
        let i = lo + r;
        let row = &mut row.as_slice_mut().expect("fresh arrays are contiguous")[..=i];
        for l in logits {
            relu_add(row, l.row(i));
        }
    }
    out
}

#[inline(always)]
fn relu_add_generic(acc: &mut [f32], x: &[f32]) {
    for (o, &v) in acc.iter_mut().zip(x) {
        *o += v.max(0.0);
    }
}

attnscope_core::simd_fn! {
    /// `acc += max(x, 0)` element by element.
    fn relu_add(acc: &mut [f32], x: &[f32]) => relu_add_generic
}

/// Nothing is stored: `select(k)` scores the group chunk by chunk and keeps each query's top `k`
/// (the same set as a stored ranking's first `k`, so results do not depend on `cap`).
struct Prep<'a> {
    g: &'a GroupInput<'a>,
}

impl Prepared for Prep<'_> {
    fn select(&self, x: f64) -> Vec<Selection> {
        let k = x.max(1.0).round() as usize;
        let sel = top_k_selection(self.g.scored, k, &|lo, hi| dsa_scores(self.g, lo, hi));
        vec![sel; self.g.group_size()]
    }

    fn kept_pairs_at(&self, x: f64) -> Option<(u64, usize)> {
        let k = x.max(1.0).round() as usize;
        let gs = self.g.group_size();
        Some((top_k_pairs_scored(self.g.scored, k) * gs as u64, gs))
    }
}

impl Selector for DsaProxy {
    fn knob(&self) -> Knob {
        Knob::count("k", 1.0, 1)
    }

    fn knob_for_tokens(&self, tokens: usize) -> Option<f64> {
        Some(tokens.max(1) as f64)
    }

    /// Token-level top-k of `sum_h ReLU(q_ih . k_j)` (unscaled), shared by the KV group.
    fn device_scoring(&self, _n: usize) -> Option<DeviceScoring> {
        Some(DeviceScoring::Representatives(
            super::oracle_topk::token_rule(RepTransform::Relu, false, true),
        ))
    }

    /// The keys themselves.
    fn representatives(&self, keys: &HeadKeys<'_>) -> Option<Representatives> {
        Some(Representatives {
            reps: keys.k.to_owned(),
            minima: None,
        })
    }

    fn prepare<'a>(&'a self, g: &'a GroupInput<'a>) -> Box<dyn Prepared + 'a> {
        // `cap` bounded the stored rankings of earlier versions; selections are exact either way.
        let _ = self.cap;
        Box::new(Prep { g })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::GroupData;
    use ndarray::array;

    fn run(data: &GroupData, cap: usize, k: f64) -> Vec<Selection> {
        let m = DsaProxy { cap };
        let g = data.input();
        let p = m.prepare(&g);
        p.select(k)
    }

    #[test]
    fn relu_sum_over_heads_picks_the_top_k() {
        // d = 1, two q-heads. Query 3: head 0 has q = 1, head 1 has q = -1.
        // keys k = [2, -3, 1, 0.5]: ReLU(q0 k) = [2, 0, 1, .5], ReLU(q1 k) = [0, 3, 0, 0]
        // sum = [2, 3, 1, .5] -> top-2 = {1, 0}; a plain sum q.k would give [0, 0, 0, 0].
        let q = array![[1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [1.0, -1.0]];
        let k = array![[2.0], [-3.0], [1.0], [0.5]];
        let v = k.clone();
        let data = GroupData::from_qkv(q, k, v, vec![false; 4], vec![false; 4], 2, 2);
        let sels = run(&data, 8, 2.0);
        assert_eq!(sels.len(), 2);
        assert_eq!(sels[0], sels[1]);
        assert_eq!(sels[0].keys_of(3).collect::<Vec<_>>(), vec![(0, 2)]);
        // Query 2 (both heads q = 1): scores [2, 0, 1] -> {0, 2}.
        assert_eq!(sels[0].keys_of(2).collect::<Vec<_>>(), vec![(0, 1), (2, 3)]);
        // Queries with i < k keep everything.
        assert_eq!(sels[0].kept_of(1), 2);
    }

    #[test]
    fn top_tokens_follow_rank_desc() {
        use super::super::common::{rank_desc, top_tokens};
        let xs = [0.5, -1.0, 0.0, -0.0, 0.5, 3.0, -1.0, f32::NEG_INFINITY, 2.0];
        let all = rank_desc(&xs);
        for k in 0..=xs.len() + 1 {
            assert_eq!(
                top_tokens(&xs, k),
                all[..k.min(xs.len())].to_vec(),
                "k = {k}"
            );
        }
    }

    #[test]
    fn invariants_and_cap_independence() {
        let data = GroupData::random(300, 16, 3, 7);
        let n = 300;
        for k in [1.0, 5.0, 40.0, 299.0] {
            let a = run(&data, 1000, k);
            let b = run(&data, 7, k);
            assert_eq!(a, b, "cap changed the selection at k = {k}");
            for (r, _) in (0..n).enumerate() {
                assert!(a[0].row_max_key(r).is_some_and(|m| m <= r));
                assert_eq!(a[0].kept_of(r), (k as usize).min(r + 1));
            }
            assert_eq!(a, run(&data, 1000, k), "not deterministic");
        }
        let full = run(&data, 16, n as f64);
        assert_eq!(full[0].kept_pairs(), crate::selection::causal_pairs(n));
    }
}

/// Timing of the token methods at 8k tokens (run with `--ignored --nocapture`).
#[cfg(test)]
mod bench {
    use crate::budget::{resolve, Budget};
    use crate::testing::GroupData;
    use std::time::Instant;

    #[test]
    #[ignore]
    fn token_methods_at_8k() {
        let n: usize = std::env::var("BENCH_N")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(8192);
        let data = GroupData::random(n, 64, 3, 1);
        for name in ["dsa-proxy", "hisa-proxy", "h2o", "rtpurbo-proxy", "fasa"] {
            let info = crate::registry::find(name).expect("registered");
            let m = info.build_with(&[]).expect("defaults");
            let g = data.input(); // ndarray views are invariant: borrow after the method
            let t = Instant::now();
            let p = m.prepare(&g);
            let prep = t.elapsed().as_secs_f64();
            for target in [0.95, 0.5] {
                let t = Instant::now();
                let c = resolve(
                    m.as_ref(),
                    p.as_ref(),
                    Budget::Sparsity(target),
                    crate::selection::Scored::all(n),
                    None,
                );
                eprintln!(
                    "{name}: prepare {prep:.2}s, calibrate to {target}: {:.2}s (knob {}, sparsity {:.4})",
                    t.elapsed().as_secs_f64(),
                    c.knob,
                    c.sparsity
                );
            }
            let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
            let hwm = status
                .lines()
                .find(|l| l.starts_with("VmHWM"))
                .unwrap_or("");
            eprintln!("{name}: {hwm}");
        }
    }
}
