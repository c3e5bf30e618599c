//! `rtpurbo-proxy`: RTPurbo's low-rank token indexer with dynamic top-p (Zhou et al., Full
//! Attention Strikes Back: RTPurbo, arXiv:2605.16928). RTPurbo trains a 16-dimensional indexer
//! (about 600 steps); none exists here, so the proxy takes the subspace from the data: the top
//! `rank` (16) right singular vectors `V_r` of the group's post-RoPE keys `K` (`[n, d]`), i.e. the
//! leading eigenvectors of `K^T K` (`d x d`, cyclic Jacobi, no LAPACK). Queries and keys are
//! projected, `q' = q V_r`, `k' = k V_r`, and each query keeps the smallest set of causal keys
//! whose mass under `softmax_j(q'_i . k'_j / sqrt d)` reaches `p` (knob, default 0.9), best first
//! (ties by lower index). The `1 / sqrt d` of the full head is kept, since `q' . k'` approximates
//! `q . k`. The basis uses all `n` keys of the sequence (a global statistic standing in for the
//! offline-trained projection; no key after the query is ever selected).
//!
//! GQA: each q-head selects (its own projected queries, the group's shared key basis).
//! `p >= 1` keeps every causal key. The scores are stored per causal pair; each query keeps a
//! histogram of its keys by mass ([`super::top_p`]), so `cap` (kept for compatibility) no longer
//! bounds anything and results never depended on it.

use ndarray::{s, Array2, ArrayView2};
use rayon::prelude::*;

use super::top_p::{TopPHeads, TopPRows, TopPSource};
use crate::method::packed_pair_bytes;
use crate::method::{GroupInput, Knob, Prepared, Selector};
use crate::method::{MethodInfo, MethodKind, ParamSpec, Params};
use crate::metrics::{dot_exact, exact_exp};

pub const INFO: MethodInfo = MethodInfo {
    name: "rtpurbo-proxy",
    kind: MethodKind::Proxy,
    paper: "Zhou et al., Full Attention Strikes Back: RTPurbo (arXiv:2605.16928); proxy: SVD subspace of the keys instead of the trained 16-d indexer",
    rule: "stands in for RTPurbo's trained 16-d indexer: per q-head, smallest set with mass >= p of softmax(q V_r . k V_r / sqrt d), V_r = top-16 right singular vectors of the keys",
    params: &[
        ParamSpec { name: "rank", default: 16.0, min: 1.0, max: 4096.0, integer: true, help: "indexer dimension (top right singular vectors of K; clipped to d)" },
        ParamSpec { name: "cap", default: 2048.0, min: 1.0, max: 1e9, integer: true, help: "ranked keys stored per query (memory bound; results are exact regardless)" },
        ParamSpec { name: "p", default: 0.9, min: 0.0, max: 1.0, integer: false, help: "indexer probability mass to keep" },
    ],
    build,
};

fn build(p: &Params) -> Box<dyn Selector> {
    Box::new(RtpurboProxy {
        rank: p.count("rank").max(1),
        cap: p.count("cap").max(1),
    })
}

#[derive(Debug)]
struct RtpurboProxy {
    rank: usize,
    cap: usize,
}

/// Eigenvalues (descending) and eigenvectors (columns, same order) of a symmetric matrix,
/// by cyclic Jacobi rotations.
pub fn symmetric_eigen(mut a: Array2<f64>) -> (Vec<f64>, Array2<f64>) {
    let d = a.nrows();
    let mut v = Array2::<f64>::eye(d);
    let norm: f64 = a.iter().map(|x| x * x).sum();
    for _sweep in 0..100 {
        let off: f64 = (0..d)
            .flat_map(|p| (p + 1..d).map(move |q| (p, q)))
            .map(|(p, q)| a[[p, q]] * a[[p, q]])
            .sum();
        if off <= 1e-30 * norm.max(f64::MIN_POSITIVE) {
            break;
        }
        for p in 0..d {
            for q in p + 1..d {
                let apq = a[[p, q]];
                if apq.abs() <= 1e-300 {
                    continue;
                }
                let theta = (a[[q, q]] - a[[p, p]]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for r in 0..d {
                    let (x, y) = (a[[r, p]], a[[r, q]]);
                    a[[r, p]] = c * x - s * y;
                    a[[r, q]] = s * x + c * y;
                }
                for r in 0..d {
                    let (x, y) = (a[[p, r]], a[[q, r]]);
                    a[[p, r]] = c * x - s * y;
                    a[[q, r]] = s * x + c * y;
                }
                for r in 0..d {
                    let (x, y) = (v[[r, p]], v[[r, q]]);
                    v[[r, p]] = c * x - s * y;
                    v[[r, q]] = s * x + c * y;
                }
            }
        }
    }
    let vals: Vec<f64> = (0..d).map(|i| a[[i, i]]).collect();
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&x, &y| vals[y].total_cmp(&vals[x]).then(x.cmp(&y)));
    let vecs = Array2::from_shape_fn((d, d), |(r, c)| v[[r, order[c]]]);
    (order.iter().map(|&i| vals[i]).collect(), vecs)
}

/// The top `rank` right singular vectors of `k` as a `[d, rank]` projection.
pub fn key_basis(k: ArrayView2<f32>, rank: usize) -> Array2<f32> {
    let k64 = k.mapv(f64::from);
    let (_, vecs) = symmetric_eigen(k64.t().dot(&k64));
    let r = rank.min(k.ncols());
    vecs.slice(s![.., ..r]).mapv(|x| x as f32)
}

/// The indexer's LSE as first written (the reference of [`exact_exp::log_sum_exp`]).
#[cfg(test)]
fn log_sum_exp(xs: &[f32]) -> f32 {
    let m = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    m + xs.iter().map(|&x| ((x - m) as f64).exp()).sum::<f64>().ln() as f32
}

/// One q-head's indexer: each scored query's indexer scores over its causal keys (packed rows
/// from the first scored query's on) and their log-sum-exp (`lse[i]`, for scored `i`).
struct Head {
    first: usize,
    scores: crate::bigbuf::PooledF32,
    lse: Vec<f32>,
}

impl Head {
    fn row(&self, i: usize) -> &[f32] {
        let start = i * (i + 1) / 2 - self.first * (self.first + 1) / 2;
        &self.scores[start..start + i + 1]
    }
}

/// A head's indexer as the ranking of a [`TopPRows`]: the score of a key is `q' . k'` exactly
/// as ndarray's `dot` computes it, its mass `exp(score - lse)`.
impl TopPSource for Head {
    fn chunk(&self, lo: usize, hi: usize, f: &mut dyn FnMut(usize, &[f32])) {
        for i in lo..hi {
            f(i, self.row(i));
        }
    }

    fn mass(&self, i: usize, _j: usize, s: f32) -> f64 {
        ((s - self.lse[i]) as f64).exp()
    }

    /// The same `f32` argument, with a vectorizable `exp` within a few ulp.
    fn approx_masses(&self, i: usize, s: &[f32], keys: &[u32], out: &mut [f64]) {
        let lse = self.lse[i];
        for (o, &j) in out.iter_mut().zip(keys) {
            *o = (s[j as usize] - lse) as f64;
        }
        exact_exp::exp_f64_slice(out);
    }

    fn approx_masses_row(&self, i: usize, s: &[f32], out: &mut [f64]) {
        let lse = self.lse[i];
        for (o, &x) in out.iter_mut().zip(s) {
            *o = (x - lse) as f64;
        }
        exact_exp::exp_f64_slice(out);
    }

    fn approx_error(&self) -> f64 {
        1e-15
    }

    /// Quarter octaves of `exp(s - lse)` below 1 (monotone in the score).
    fn buckets(&self, i: usize, s: &[f32], out: &mut [u8]) {
        quarter_octaves(self.lse[i], s, out);
    }
}

#[inline(always)]
fn quarter_octaves_generic(lse: f32, s: &[f32], out: &mut [u8]) {
    for (o, &x) in out.iter_mut().zip(s) {
        // Rounded to an integer by adding 2^23 (its low byte is then the value: 16 lanes at a
        // time, where a float-to-integer `as` is converted lane by lane).
        let v = ((lse - x) * (4.0 / std::f32::consts::LN_2)).clamp(0.0, 255.0);
        *o = (v + 8_388_608.0).to_bits() as u8;
    }
}

attnscope_core::simd_fn! {
    /// Quarter octaves of `exp(s - lse)` below 1, capped at 255.
    fn quarter_octaves(lse: f32, s: &[f32], out: &mut [u8]) => quarter_octaves_generic
}

/// `q . k_j` for keys `0..out.len()`, `q` of 16 dimensions and the keys laid out by dimension
/// (`kt[c * n + j]`): [`dot_exact`]'s arithmetic per key, sixteen keys per vector.
#[inline(always)]
fn scores_row16_generic(q: &[f32], kt: &[f32], out: &mut [f32]) {
    const W: usize = 16;
    let n = kt.len() / 16;
    for (jb, a) in out.chunks_mut(W).enumerate() {
        let j0 = jb * W;
        let w = a.len();
        let mut p = [[0f32; W]; 8];
        for (l, pl) in p.iter_mut().enumerate() {
            let (k1, k2) = (
                &kt[l * n + j0..l * n + j0 + w],
                &kt[(8 + l) * n + j0..(8 + l) * n + j0 + w],
            );
            for t in 0..w {
                pl[t] = (0.0 + q[l] * k1[t]) + q[8 + l] * k2[t];
            }
        }
        for t in 0..w {
            let mut sum = 0f32;
            sum += p[0][t] + p[4][t];
            sum += p[1][t] + p[5][t];
            sum += p[2][t] + p[6][t];
            sum += p[3][t] + p[7][t];
            a[t] = sum;
        }
    }
}

attnscope_core::simd_fn! {
    fn scores_row16(q: &[f32], kt: &[f32], out: &mut [f32]) => scores_row16_generic
}

/// The indexer scores `dot_exact(q, k_j)` of keys `0..out.len()` (`kp`: `[_, r]` row-major,
/// `kt`: the same keys laid out by dimension).
fn scores_row(q: &[f32], kp: &[f32], kt: &[f32], out: &mut [f32]) {
    if q.len() == 16 {
        scores_row16(q, kt, out);
        return;
    }
    let r = q.len();
    for (j, o) in out.iter_mut().enumerate() {
        *o = dot_exact(q, &kp[j * r..(j + 1) * r]);
    }
}

impl Selector for RtpurboProxy {
    fn knob(&self) -> Knob {
        Knob {
            name: "p",
            min: 0.0,
            max: 1.0,
            integer: false,
            denser_when_larger: true,
            tokens_per_unit: 0,
        }
    }

    fn prepare<'a>(&'a self, g: &'a GroupInput<'a>) -> Box<dyn Prepared + 'a> {
        // `cap` bounded the stored rankings of earlier versions; selections are exact either way.
        let _ = self.cap;
        let basis = key_basis(g.k, self.rank);
        let kp = g.k.dot(&basis);
        let kt: Vec<f32> = kp.t().iter().copied().collect();
        let kc: Vec<f32> = kp.iter().copied().collect();
        let (first, n) = (g.scored.first, g.n());
        let heads =
            g.q.par_iter()
                .map(|q| {
                    let qp = q.dot(&basis) * g.scale();
                    let qc: Vec<f32> = qp.iter().copied().collect();
                    let r = qp.ncols();
                    // Every scored query's indexer scores, row by row, and their LSE.
                    let pairs = g.scored.causal_pairs() as usize;
                    let mut scores = crate::bigbuf::PooledF32::new(pairs);
                    let mut rows: Vec<(usize, &mut [f32])> = Vec::with_capacity(n - first);
                    let mut rest = &mut scores[..];
                    for i in first..n {
                        let (row, tail) = rest.split_at_mut(i + 1);
                        rows.push((i, row));
                        rest = tail;
                    }
                    // Longest rows first keeps the parallel split balanced.
                    rows.reverse();
                    let lse: Vec<(usize, f32)> = rows
                        .into_par_iter()
                        .with_min_len(8)
                        .map(|(i, row)| {
                            scores_row(&qc[i * r..(i + 1) * r], &kc, &kt, row);
                            (i, exact_exp::log_sum_exp(row))
                        })
                        .collect();
                    let mut by_query = vec![0f32; n];
                    for (i, x) in lse {
                        by_query[i] = x;
                    }
                    let head = Head {
                        first,
                        scores,
                        lse: by_query,
                    };
                    (head, TopPRows::new(g.scored))
                })
                .collect();
        Box::new(TopPHeads { heads })
    }

    /// Per-pair scores and per-query histograms (at most 257 counts and sums each).
    fn pair_bytes(&self, scored: crate::selection::Scored, group_size: usize) -> u64 {
        (packed_pair_bytes(scored) + scored.len() as u64 * 257 * 12) * group_size as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selection::Selection;
    use crate::testing::GroupData;
    use ndarray::array;

    fn run(data: &GroupData, rank: usize, cap: usize, p: f64) -> Vec<Selection> {
        let m = RtpurboProxy { rank, cap };
        let g = data.input();
        let prep = m.prepare(&g);
        prep.select(p)
    }

    #[test]
    fn jacobi_recovers_eigenpairs() {
        let a = array![[4.0, 1.0, 0.5], [1.0, 3.0, 0.2], [0.5, 0.2, 1.0]];
        let (vals, vecs) = symmetric_eigen(a.clone());
        assert!(vals.windows(2).all(|w| w[0] >= w[1]));
        for c in 0..3 {
            let v = vecs.column(c);
            let av = a.dot(&v);
            for r in 0..3 {
                assert!((av[r] - vals[c] * v[r]).abs() < 1e-10);
            }
        }
        assert!((vals.iter().sum::<f64>() - 8.0).abs() < 1e-10);
    }

    #[test]
    fn rank_one_keys_give_the_hand_computed_top_p() {
        // Keys along e0 only: the basis' first vector is +-e0, so q' . k' = q0 k0 exactly.
        // d = 4 (scale 1/2). Query 3, q0 = 2: logits k0 * 2 / 2 = k0 = [ln 6, ln 3, 0, 0]:
        // probabilities [.6, .3, .1, 0]... with exp(0) = 1 twice: [6, 3, 1, 1] / 11.
        // p = 0.8 -> {0, 1} (9/11 = .818); p = 0.5 -> {0}; p = 0.9 -> {0, 1, 2} (10/11).
        let mut k = Array2::<f32>::zeros((4, 4));
        for (j, v) in [6f32.ln(), 3f32.ln(), 0.0, 0.0].into_iter().enumerate() {
            k[[j, 0]] = v;
        }
        let mut q = Array2::<f32>::zeros((4, 4));
        q.column_mut(0).fill(2.0);
        q[[3, 1]] = 5.0; // invisible to the rank-1 indexer
        let data = GroupData::from_qkv(q, k.clone(), k, vec![false; 4], vec![false; 4], 1, 2);
        let keys = |p: f64| run(&data, 1, 8, p)[0].keys_of(3).collect::<Vec<_>>();
        assert_eq!(keys(0.5), vec![(0, 1)]);
        assert_eq!(keys(0.8), vec![(0, 2)]);
        assert_eq!(keys(0.9), vec![(0, 3)]);
        assert_eq!(keys(0.0), vec![(0, 1)]);
        assert_eq!(keys(1.0), vec![(0, 4)]);
    }

    #[test]
    fn invariants_cap_independence_and_full_rank() {
        let n = 200;
        let data = GroupData::random(n, 8, 2, 3);
        let mut last = 0;
        for p in [0.0, 0.3, 0.9, 0.999, 1.0] {
            let a = run(&data, 4, 1000, p);
            assert_eq!(
                a,
                run(&data, 4, 3, p),
                "cap changed the selection at p = {p}"
            );
            let kept: u64 = a.iter().map(Selection::kept_pairs).sum();
            assert!(kept >= last, "not monotone in p");
            last = kept;
            for s in &a {
                for r in 0..n {
                    assert!(s.row_max_key(r).is_some_and(|m| m <= r));
                }
            }
        }
        // Full rank reproduces the exact attention: top-p over the true probabilities.
        let full = run(&data, 8, 1000, 0.9);
        let g = data.input();
        for (h, sel) in full.iter().enumerate() {
            for i in (0..n).step_by(17) {
                let lse = g.truth[h].lse[i];
                let mass: f64 = sel
                    .keys_of(i)
                    .flat_map(|(a, b)| a..b)
                    .map(|j| {
                        ((g.q[h].row(i).dot(&g.k.row(j as usize)) * g.scale() - lse) as f64).exp()
                    })
                    .sum();
                assert!(mass >= 0.9 - 1e-4, "q-head {h} query {i}: mass {mass}");
            }
        }
    }
}

#[cfg(test)]
mod reference_tests {
    use super::*;
    use crate::methods::common::top_tokens;
    use crate::selection::Selection;
    use crate::testing::GroupData;

    /// The proxy written plainly: every row's indexer scores from ndarray's dot, fully ranked,
    /// their exact masses summed along that order.
    fn reference(data: &GroupData, rank: usize, p: f64) -> Vec<Selection> {
        let g = data.input();
        let n = g.n();
        let basis = key_basis(g.k, rank);
        let kp = g.k.dot(&basis);
        g.q.iter()
            .map(|q| {
                let qp = q.dot(&basis) * g.scale();
                let mut b = Selection::builder(n, 1);
                for i in 0..n {
                    if p >= 1.0 {
                        b.push_ranges([(0, i as u32 + 1)]);
                        continue;
                    }
                    let row: Vec<f32> = (0..=i).map(|j| qp.row(i).dot(&kp.row(j))).collect();
                    let lse = log_sum_exp(&row);
                    let mut mass = 0f64;
                    let mut kept = Vec::new();
                    for j in top_tokens(&row, i + 1) {
                        if mass >= p && !kept.is_empty() {
                            break;
                        }
                        mass += ((row[j as usize] - lse) as f64).exp();
                        kept.push(j as usize);
                    }
                    b.push_tokens(kept);
                }
                b.finish()
            })
            .collect()
    }

    #[test]
    fn same_selections_as_fully_ranked_rows() {
        // Rank 4 (generic paths) and the default rank 16 (the vectorized one).
        for (n, d, rank) in [(170, 16, 4), (150, 32, 16)] {
            let data = GroupData::random(n, d, 2, 8);
            let m = RtpurboProxy { rank, cap: 1 };
            let g = data.input();
            let prep = m.prepare(&g);
            for p in [0.5, 0.95, 0.2, 0.9999, 0.0, 1.0, 0.8] {
                assert_eq!(
                    prep.select(p),
                    reference(&data, rank, p),
                    "rank {rank} p {p}"
                );
            }
        }
    }
}
