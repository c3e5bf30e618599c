//! `h2o`: Heavy-Hitter Oracle (Zhang et al., H2O: Heavy-Hitter Oracle for Efficient Generative
//! Inference of Large Language Models, NeurIPS 2023, arXiv:2306.14048), replayed step by step.
//!
//! Tokens arrive one at a time. Query `t` attends to the cache `S_t` = heavy set `H_t` plus the
//! recent window `[t - r + 1, t]` (its own token included); `|S_t| <= C`, the knob, split into
//! `r = max(1, round(C * recent_frac))` recent and `h = C - r` heavy slots (paper default: 10% heavy
//! and 10% recent of the sequence length, i.e. `recent_frac` 0.5; the knob default 1638 is 20% of
//! 8192 tokens). Each step adds to the accumulated score of every cached key its probability
//! under query `t`'s dense attention, `exp(q_t . k_j / sqrt d - LSE_t)` (the LSE of the exact
//! attention over every causal key): the rule of H2O's reference mask simulation, which
//! accumulates each step's full softmax and zeroes the scores of evicted tokens (`scores` 0, the
//! default). `scores` 1 accumulates the softmax over the cached set `S_t` alone instead (the
//! attention a deployed cache computes; the rule of earlier versions). When token `t - r` leaves the window it
//! joins `H`; if `|H| > h` the heavy token of least accumulated score is evicted (ties: the older
//! one), greedily, before query `t` attends. This is H2O's "attend, accumulate, then evict" loop
//! with a stored budget of `C - 1` plus the arriving token, so the keys a query attends to and the
//! selection it is scored on are the same set of `min(C, t + 1)` keys. `C >= n` never evicts
//! (dense).
//!
//! GQA: by default each q-head replays its own cache from its own attention (H2O is per head);
//! `group_shared` = 1 sums the group's probabilities into one score and shares one cache.
//!
//! Cost per knob value: `O(n * C)` for the replay; the causal logits `q . k` are the group's
//! shared ones ([`GroupInput::logits`]), computed once. When only some queries are scored
//! (`--queries last:N`) the replay still runs over every query (the cache at a scored query
//! depends on all earlier ones), and the logits of the cached keys are computed as it goes, one
//! matrix product per block of 64 steps against the keys the block can read (`O(n * C * d)`,
//! `O(64 * C)` stored; the same bits as the shared logits, so the same selections as when every
//! query is scored); the selection holds the scored queries' rows.

use rayon::prelude::*;

use crate::method::{GroupInput, Knob, Prepared, Selector};
use crate::method::{MethodInfo, MethodKind, ParamSpec, Params};
use crate::selection::Selection;

pub const INFO: MethodInfo = MethodInfo {
    name: "h2o",
    kind: MethodKind::Published,
    paper: "Zhang et al., H2O: Heavy-Hitter Oracle for Efficient Generative Inference of Large Language Models, NeurIPS 2023 (arXiv:2306.14048)",
    rule: "cache of C keys = heavy hitters by attention accumulated over past steps (greedy eviction, replayed step by step) + recent window",
    params: &[
        ParamSpec { name: "recent_frac", default: 0.5, min: 0.0, max: 1.0, integer: false, help: "share of the cache kept for recent tokens (paper: 10% heavy + 10% recent)" },
        ParamSpec { name: "group_shared", default: 0.0, min: 0.0, max: 1.0, integer: true, help: "one cache per KV group from group-summed scores (default: per q-head)" },
        ParamSpec { name: "cache_mb", default: 1024.0, min: 0.0, max: 1e7, integer: false, help: "unused (earlier versions kept logits up to this size; the group's shared logits are read now)" },
        ParamSpec { name: "scores", default: 0.0, min: 0.0, max: 1.0, integer: true, help: "accumulated per step: 0 the dense attention's probabilities of the cached keys (the reference mask simulation), 1 the softmax over the cached keys alone" },
        ParamSpec { name: "cache", default: 1638.0, min: 1.0, max: 1e9, integer: true, help: "keys per query C, own token included (paper: 20% of the length; 1638 = 20% of 8192)" },
    ],
    build,
};

fn build(p: &Params) -> Box<dyn Selector> {
    Box::new(H2o {
        recent_frac: p.get("recent_frac").clamp(0.0, 1.0),
        shared: p.flag("group_shared"),
        cache_mb: p.get("cache_mb").max(0.0),
        cached_softmax: p.flag("scores"),
    })
}

#[derive(Debug)]
struct H2o {
    recent_frac: f64,
    shared: bool,
    cache_mb: f64,
    /// Accumulate the softmax over the cached keys (`scores` 1) instead of the dense one.
    cached_softmax: bool,
}

struct Prep<'a> {
    g: &'a GroupInput<'a>,
    recent_frac: f64,
    shared: bool,
    cached_softmax: bool,
}

/// Queries whose logits one product computes when the replay computes them as it goes.
const STEP_BLOCK: usize = 64;

/// Where the replay reads `q_t . k_j`: the group's shared logits (every query scored), or
/// products computed as it goes, one per block of [`STEP_BLOCK`] steps.
enum Scores<'a> {
    Shared(Vec<&'a crate::logits::Logits>),
    OnTheFly(StepBlock<'a>),
}

/// The logits of the steps `t0..t0 + STEP_BLOCK` against every key those steps can read: the
/// heavy set at `t0` and the keys from the first one that joins it (`t0 - r`) on. One matrix
/// product per block gives the same bits as the shared logits (a product's entries do not depend
/// on the rows and columns around them, [`crate::logits::Logits::compute`]).
struct StepBlock<'a> {
    q: Vec<ndarray::ArrayView2<'a, f32>>,
    k: ndarray::ArrayView2<'a, f32>,
    t0: usize,
    /// Column of key `j` in the block's products (valid for the block's keys).
    col: Vec<u32>,
    /// Per q-head of the replay: `[steps, keys]`.
    logits: Vec<ndarray::Array2<f32>>,
}

impl StepBlock<'_> {
    /// Computes the block starting at step `t0`, with `heavy` the heavy set before that step.
    fn start(&mut self, t0: usize, heavy: &[u32], r: usize) {
        let t1 = (t0 + STEP_BLOCK).min(self.k.nrows());
        let keys: Vec<u32> = heavy
            .iter()
            .copied()
            .chain(t0.saturating_sub(r) as u32..t1 as u32)
            .collect();
        let mut kb = ndarray::Array2::<f32>::zeros((keys.len(), self.k.ncols()));
        for (c, (&j, mut row)) in keys.iter().zip(kb.outer_iter_mut()).enumerate() {
            self.col[j as usize] = c as u32;
            row.assign(&self.k.row(j as usize));
        }
        let (q, kt) = (&self.q, kb.t());
        self.logits = q
            .iter()
            .map(|q| q.slice(ndarray::s![t0..t1, ..]).dot(&kt))
            .collect();
        self.t0 = t0;
    }
}

impl Scores<'_> {
    /// `w` extended with the layer's logits `rule.logit(q_t . k_j)` (as `f64`) of the keys
    /// `heavy` then `w_lo..=t`, for q-head `hh` of the replay.
    fn extend(
        &self,
        hh: usize,
        t: usize,
        heavy: &[u32],
        w_lo: usize,
        rule: &attnscope_core::attention::ScoreRule,
        w: &mut Vec<f64>,
    ) {
        match self {
            Scores::Shared(logits) => {
                let row = logits[hh].row(t);
                w.extend(heavy.iter().map(|&j| rule.logit(row[j as usize]) as f64));
                w.extend(row[w_lo..=t].iter().map(|&x| rule.logit(x) as f64));
            }
            Scores::OnTheFly(b) => {
                let row = b.logits[hh].row(t - b.t0);
                let at = |j: usize| row[b.col[j] as usize];
                w.extend(heavy.iter().map(|&j| rule.logit(at(j as usize)) as f64));
                // The window's keys are consecutive columns.
                let c0 = b.col[w_lo] as usize;
                w.extend((c0..c0 + t + 1 - w_lo).map(|c| rule.logit(row[c]) as f64));
            }
        }
    }
}

impl Prep<'_> {
    /// The H2O replay with cache `c`, scores summed over `heads`.
    fn replay(&self, heads: &[usize], c: usize) -> Selection {
        let n = self.g.n();
        let r = ((c as f64 * self.recent_frac).round() as usize).clamp(1, c);
        let hv = c - r;
        // Accumulated scores: of the heavy tokens in `heavy_acc` (beside `heavy`, so that the
        // eviction scans contiguous values), of the others in `acc`.
        let mut acc = vec![0f64; n];
        let mut heavy: Vec<u32> = Vec::new();
        let mut heavy_acc: Vec<f64> = Vec::new();
        let mut w: Vec<f64> = Vec::new();
        let mut b = self.g.selection_builder(1);
        let rule = self.g.rule;
        let first = self.g.scored.first;
        let mut scores = if self.g.scored.is_all() {
            Scores::Shared(heads.iter().map(|&h| &self.g.logits()[h]).collect())
        } else {
            Scores::OnTheFly(StepBlock {
                q: heads.iter().map(|&h| self.g.q[h]).collect(),
                k: self.g.k,
                t0: 0,
                col: vec![0; n],
                logits: Vec::new(),
            })
        };
        for t in 0..n {
            if let Scores::OnTheFly(b) = &mut scores {
                if t.is_multiple_of(STEP_BLOCK) {
                    b.start(t, &heavy, r);
                }
            }
            let w_lo = (t + 1).saturating_sub(r);
            if t >= r {
                heavy.push((t - r) as u32);
                heavy_acc.push(acc[t - r]);
            }
            if heavy.len() > hv {
                // Least accumulated score; ties evict the older token.
                let worst = first_min(&heavy_acc);
                heavy.remove(worst);
                heavy_acc.remove(worst);
            }
            let nh = heavy.len();
            for (hh, &h) in heads.iter().enumerate() {
                // The layer's logits (`q_t . k_j / sqrt d` on a plain layer) of the cached keys,
                // as probabilities of the dense attention (over its LSE) or of the cached set's
                // softmax.
                w.clear();
                scores.extend(hh, t, &heavy, w_lo, &rule, &mut w);
                let m = if self.cached_softmax {
                    w.iter().copied().fold(f64::NEG_INFINITY, f64::max)
                } else {
                    self.g.truth[h].lse[t] as f64
                };
                w.iter_mut().for_each(|x| *x -= m);
                attnscope_core::exact_exp::exp_f64_slice(&mut w);
                let z: f64 = if self.cached_softmax {
                    w.iter().sum()
                } else {
                    1.0
                };
                for (a, &e) in heavy_acc.iter_mut().zip(&w[..nh]) {
                    *a += e / z;
                }
                for (a, &e) in acc[w_lo..=t].iter_mut().zip(&w[nh..]) {
                    *a += e / z;
                }
            }
            if t >= first {
                b.push_ranges(
                    heavy
                        .iter()
                        .map(|&j| (j, j + 1))
                        .chain([(w_lo as u32, t as u32 + 1)]),
                );
            }
        }
        b.finish()
    }
}

/// The first position of the least value.
fn first_min(xs: &[f64]) -> usize {
    let m = xs.iter().copied().fold(f64::INFINITY, f64::min);
    xs.iter().position(|&x| x == m).unwrap_or(0)
}

impl Prepared for Prep<'_> {
    fn select(&self, x: f64) -> Vec<Selection> {
        let c = x.max(1.0).round() as usize;
        let heads: Vec<usize> = (0..self.g.group_size()).collect();
        if self.shared {
            vec![self.replay(&heads, c); heads.len()]
        } else {
            heads.par_iter().map(|&h| self.replay(&[h], c)).collect()
        }
    }

    /// Every query keeps `min(C, t + 1)` keys (the cache never holds more): no replay needed.
    fn kept_pairs_at(&self, x: f64) -> Option<(u64, usize)> {
        let c = x.max(1.0).round() as usize;
        let gs = self.g.group_size();
        Some((
            super::common::top_k_pairs_scored(self.g.scored, c) * gs as u64,
            gs,
        ))
    }
}

impl Selector for H2o {
    fn knob(&self) -> Knob {
        Knob::count("cache", 1.0, 1)
    }

    fn knob_for_tokens(&self, tokens: usize) -> Option<f64> {
        Some(tokens.max(1) as f64)
    }

    fn prepare<'a>(&'a self, g: &'a GroupInput<'a>) -> Box<dyn Prepared + 'a> {
        // `cache_mb` bounded the logits earlier versions kept; the group's shared ones are read.
        let _ = self.cache_mb;
        Box::new(Prep {
            g,
            recent_frac: self.recent_frac,
            shared: self.shared,
            cached_softmax: self.cached_softmax,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::GroupData;
    use ndarray::Array2;
    use std::collections::BTreeSet;

    fn h2o(frac: f64, shared: bool, cache_mb: f64, cached_softmax: bool) -> H2o {
        H2o {
            recent_frac: frac,
            shared,
            cache_mb,
            cached_softmax,
        }
    }

    fn run(data: &GroupData, m: &H2o, c: f64) -> Vec<Selection> {
        let g = data.input();
        let p = m.prepare(&g);
        p.select(c)
    }

    /// A literal, slow H2O replay with sets, for comparison: each step adds the dense
    /// attention's probabilities of the cached keys, or (`cached`) their softmax over the cache.
    fn reference(
        data: &GroupData,
        heads: &[usize],
        c: usize,
        frac: f64,
        cached: bool,
    ) -> Vec<BTreeSet<usize>> {
        let n = data.k.nrows();
        let r = ((c as f64 * frac).round() as usize).clamp(1, c);
        let scale = 1.0 / (data.head_dim() as f64).sqrt();
        let mut acc = vec![0f64; n];
        let mut cache: BTreeSet<usize> = BTreeSet::new();
        let mut out = Vec::new();
        for t in 0..n {
            cache.insert(t);
            if cache.len() > c {
                let old: Vec<usize> = cache.iter().copied().filter(|&j| j + r <= t).collect();
                let mut worst = old[0];
                for &j in &old {
                    if acc[j] < acc[worst] {
                        worst = j;
                    }
                }
                cache.remove(&worst);
            }
            for &h in heads {
                let q = data.q_head(h);
                let l: Vec<f64> = cache
                    .iter()
                    .map(|&j| q.row(t).dot(&data.k.row(j)) as f64 * scale)
                    .collect();
                let (m, z) = if cached {
                    let m = l.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    (m, l.iter().map(|x| (x - m).exp()).sum())
                } else {
                    (data.truth[h].lse[t] as f64, 1.0)
                };
                for (&j, x) in cache.iter().zip(&l) {
                    acc[j] += (x - m).exp() / z;
                }
            }
            out.push(cache.clone());
        }
        out
    }

    fn keys(s: &Selection, i: usize) -> BTreeSet<usize> {
        s.keys_of(i)
            .flat_map(|(a, b)| a as usize..b as usize)
            .collect()
    }

    #[test]
    fn heavy_hitter_survives_and_new_tokens_are_evicted() {
        // d = 1, q = 1: token 1 (k = 8) draws nearly all attention once visible.
        // C = 3 with recent_frac 0.3 -> r = 1 recent slot, h = 2 heavy slots.
        // Step 3: token 2 joins H = {0, 1, 2}; acc = [~1, ~2, ~0] -> evict 2 -> S_3 = {0, 1, 3}.
        let k =
            Array2::from_shape_vec((6, 1), vec![0.0, 8.0, 0.0, 0.0, 0.0, 0.0]).expect("test data");
        let q = Array2::ones((6, 1));
        let data = GroupData::from_qkv(q, k.clone(), k, vec![false; 6], vec![false; 6], 1, 2);
        let s = &run(&data, &h2o(0.3, false, 64.0, false), 3.0)[0];
        let want: [&[usize]; 6] = [
            &[0],
            &[0, 1],
            &[0, 1, 2],
            &[0, 1, 3],
            &[0, 1, 4],
            &[0, 1, 5],
        ];
        for (i, w) in want.iter().enumerate() {
            assert_eq!(keys(s, i), w.iter().copied().collect(), "query {i}");
        }
    }

    #[test]
    fn matches_a_literal_replay_and_invariants_hold() {
        let n = 150;
        let data = GroupData::random(n, 8, 2, 5);
        for (c, frac) in [(1, 0.5), (7, 0.5), (20, 0.2), (33, 0.9), (60, 0.0)] {
            for (shared, cached) in [(false, false), (true, false), (false, true), (true, true)] {
                let a = run(&data, &h2o(frac, shared, 64.0, cached), c as f64);
                let b = run(&data, &h2o(frac, shared, 0.0, cached), c as f64);
                assert_eq!(a, b, "logit cache changed the result");
                for h in 0..2 {
                    let heads: Vec<usize> = if shared { vec![0, 1] } else { vec![h] };
                    let want = reference(&data, &heads, c, frac, cached);
                    for i in 0..n {
                        let at = format!("c {c} shared {shared} cached {cached} q {i}");
                        assert_eq!(keys(&a[h], i), want[i], "{at}");
                        assert!(a[h].row_max_key(i).is_some_and(|m| m <= i));
                        assert_eq!(a[h].kept_of(i), c.min(i + 1));
                    }
                }
            }
        }
        // The two accumulation rules evict differently on this input.
        let dense = run(&data, &h2o(0.2, false, 0.0, false), 20.0);
        assert_ne!(dense, run(&data, &h2o(0.2, false, 0.0, true), 20.0));
        // Scoring the last 40 queries: the same replay, the scored rows only.
        for (c, shared) in [(7, false), (20, true)] {
            let m = h2o(0.5, shared, 0.0, false);
            let tail = crate::selection::Scored::last(40, n);
            let g = data.input_scored(tail);
            let sub = m.prepare(&g).select(c as f64);
            for h in 0..2 {
                let heads: Vec<usize> = if shared { vec![0, 1] } else { vec![h] };
                let want = reference(&data, &heads, c, 0.5, false);
                assert_eq!(sub[h].scored(), tail);
                for i in 0..n {
                    let expect = if i < 110 {
                        BTreeSet::new()
                    } else {
                        want[i].clone()
                    };
                    assert_eq!(keys(&sub[h], i), expect, "last 40, c {c} q {i}");
                }
            }
        }
        let full = run(&data, &h2o(0.5, false, 64.0, false), n as f64);
        for s in &full {
            assert_eq!(s.kept_pairs(), crate::selection::causal_pairs(n));
        }
    }
}
