//! Every fidelity metric, computed in one place and identically for all methods
//! (definitions: shared/METHODS.md, "Metrics").
//!
//! With `A_ij = exp(logit(q_i . k_j) - LSE_i)` the exact dense attention under the layer's
//! [`ScoreRule`] (`logit(x) = x / sqrt(d)` on a plain layer; the layer's scale, then its
//! soft-capping, elsewhere; `A_ij = 0` for keys outside a sliding window) and `S_i` the kept keys
//! that query `i` sees: recall `R_i = sum_{j in S_i} A_ij`; information loss `1 - R_i`;
//! `KL(sparse || dense) = -ln R_i`; output error `||o_sparse - o_dense|| / ||o_dense||` and cosine,
//! with `o_sparse` the renormalized attention over `S_i`; sparsity `1 - kept / visible pairs`; IoU
//! `|S_a n S_b| / |S_a u S_b|`. A method's keys outside the window are not in `S_i`
//! ([`Selection::keys_of`]). Every per-query metric covers the selection's scored queries
//! ([`crate::selection::Scored`]), in query order.

use attnscope_core::attention::ScoreRule;
use ndarray::ArrayView2;
use rayon::prelude::*;

use crate::selection::Selection;

mod overlap;
mod probs;
pub use overlap::{iou, iou_pairs};
pub use probs::{dot_exact, TrueProbs};

/// Per-query metrics of one (layer, q-head, method).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueryMetrics {
    pub recall: Vec<f32>,
    pub out_rel_err: Vec<f32>,
    pub cosine: Vec<f32>,
    pub kept: Vec<u32>,
}

/// One q-head's exact dense quantities needed to score a selection.
#[derive(Debug, Clone, Copy)]
pub struct DenseHead<'a> {
    /// `[n, d]` post-RoPE queries of the head.
    pub q: ArrayView2<'a, f32>,
    /// `[n, d]` keys and values of its KV head.
    pub k: ArrayView2<'a, f32>,
    pub v: ArrayView2<'a, f32>,
    /// Per-query log-sum-exp of the layer's logits.
    pub lse: &'a [f32],
    /// `[n, d]` exact dense attention output of the head.
    pub dense_out: ArrayView2<'a, f32>,
    /// The layer's logit scale, soft-capping and window.
    pub rule: ScoreRule,
}

impl DenseHead<'_> {
    /// The exact probability `A_ij` of a visible pair, from one dot product.
    fn prob(&self, i: usize, j: usize) -> f32 {
        (self.rule.logit(self.q.row(i).dot(&self.k.row(j))) - self.lse[i]).exp()
    }
}

impl QueryMetrics {
    /// Columns from per-query `(recall, relative output error, cosine, kept keys)`.
    fn from_rows(rows: Vec<(f32, f32, f32, u32)>) -> Self {
        let mut m = Self::default();
        for (r, e, c, k) in rows {
            m.recall.push(r);
            m.out_rel_err.push(e);
            m.cosine.push(c);
            m.kept.push(k);
        }
        m
    }
}

/// Scores one selection against the exact dense attention of one head.
pub fn evaluate(head: &DenseHead<'_>, sel: &Selection) -> QueryMetrics {
    let d = head.q.ncols();
    let rows: Vec<(f32, f32, f32, u32)> = sel
        .scored()
        .range()
        .into_par_iter()
        .map(|i| {
            let mut o = vec![0f32; d];
            let (mut mass, mut kept) = (0f32, 0u32);
            for (s, e) in sel.keys_of(i) {
                for j in s as usize..e as usize {
                    let p = head.prob(i, j);
                    mass += p;
                    kept += 1;
                    for (oc, &vc) in o.iter_mut().zip(head.v.row(j)) {
                        *oc += p * vc;
                    }
                }
            }
            let (rel, cos) = output_error(&o, mass, head.dense_out.row(i));
            (mass.min(1.0), rel, cos, kept)
        })
        .collect();
    QueryMetrics::from_rows(rows)
}

/// Exponentials that match the platform's `f32::exp` / `f64::exp` results bit for bit while
/// running in vectorized loops (in the core crate, for the capture pass too).
pub use attnscope_core::exact_exp;

/// `o += p * v` and `mass += p` over the keys of `ranges` in `lo..lim` (in order), the
/// accumulation of [`evaluate`] with fused multiply-adds; `d` is `o.len()`, `o` starts at zero.
#[inline(always)]
fn accumulate_generic(
    probs: &[f32],
    v: &[f32],
    ranges: &[crate::selection::Range],
    (lo, lim): (u32, u32),
    o: &mut [f32],
) -> (f32, u32) {
    let d = o.len();
    let (mut mass, mut kept) = (0f32, 0u32);
    if d == 64 {
        // A fixed width keeps the accumulators in registers; two of them (pairs of keys within
        // each range, the odd one last), so that consecutive keys' multiply-adds do not wait on
        // each other.
        let (mut a0, mut a1) = ([0f32; 64], [0f32; 64]);
        let (mut m0, mut m1) = (0f32, 0f32);
        let row =
            |j: usize| -> &[f32; 64] { v[j * 64..(j + 1) * 64].try_into().expect("rows of 64") };
        for &(s, e) in ranges {
            if s >= lim {
                break;
            }
            if e <= lo {
                continue;
            }
            let (s, e) = (s.max(lo) as usize, e.min(lim) as usize);
            kept += (e - s) as u32;
            let mut j = s;
            while j + 1 < e {
                let (p, q) = (probs[j], probs[j + 1]);
                let (vp, vq) = (row(j), row(j + 1));
                m0 += p;
                m1 += q;
                for c in 0..64 {
                    a0[c] = p.mul_add(vp[c], a0[c]);
                    a1[c] = q.mul_add(vq[c], a1[c]);
                }
                j += 2;
            }
            if j < e {
                let (p, vp) = (probs[j], row(j));
                m0 += p;
                for c in 0..64 {
                    a0[c] = p.mul_add(vp[c], a0[c]);
                }
            }
        }
        mass = m0 + m1;
        for (oc, (x, y)) in o.iter_mut().zip(a0.iter().zip(&a1)) {
            *oc = x + y;
        }
    } else {
        for &(s, e) in ranges {
            if s >= lim {
                break;
            }
            if e <= lo {
                continue;
            }
            let (s, e) = (s.max(lo) as usize, e.min(lim) as usize);
            kept += (e - s) as u32;
            for j in s..e {
                let p = probs[j];
                mass += p;
                for (oc, &vc) in o.iter_mut().zip(&v[j * d..(j + 1) * d]) {
                    *oc = p.mul_add(vc, *oc);
                }
            }
        }
    }
    (mass, kept)
}

attnscope_core::simd_fn! {
    fn accumulate(
        probs: &[f32],
        v: &[f32],
        ranges: &[crate::selection::Range],
        bounds: (u32, u32),
        o: &mut [f32],
    ) -> (f32, u32) => accumulate_generic
}

/// Relative output error and cosine of the renormalized sparse output `o / mass` against the
/// dense output.
fn output_error(o: &[f32], mass: f32, dense: ndarray::ArrayView1<f32>) -> (f32, f32) {
    let (mut diff2, mut dn2, mut sn2, mut dot) = (0f32, 0f32, 0f32, 0f32);
    for (c, &od) in dense.iter().enumerate() {
        let os = if mass > 0.0 { o[c] / mass } else { 0.0 };
        diff2 += (os - od) * (os - od);
        dn2 += od * od;
        sn2 += os * os;
        dot += os * od;
    }
    let rel = diff2.sqrt() / dn2.sqrt().max(f32::MIN_POSITIVE);
    let cos = dot / (sn2.sqrt() * dn2.sqrt()).max(f32::MIN_POSITIVE);
    (rel, cos)
}

/// [`evaluate`] from precomputed exact probabilities of the head (same values, same
/// accumulation order, so the same bits), without recomputing any score.
pub fn evaluate_with(head: &DenseHead<'_>, probs: &TrueProbs, sel: &Selection) -> QueryMetrics {
    evaluate_many(head, probs, &[sel])
        .pop()
        .expect("one selection, one result")
}

/// [`evaluate_with`] of several selections of one head (each result has the same bits as that
/// selection evaluated alone), query by query: every selection reads the query's row of exact
/// probabilities while it is in cache, instead of each one streaming all rows from memory.
pub fn evaluate_many(
    head: &DenseHead<'_>,
    probs: &TrueProbs,
    sels: &[&Selection],
) -> Vec<QueryMetrics> {
    let scored = probs.scored();
    let d = head.q.ncols();
    let m = sels.len();
    if m == 0 {
        return Vec::new();
    }
    debug_assert!(sels.iter().all(|s| s.scored() == scored));
    let v: std::borrow::Cow<'_, [f32]> = match head.v.as_slice() {
        Some(v) => v.into(),
        None => head.v.iter().copied().collect::<Vec<_>>().into(),
    };
    // Query-major cells: entry `i * m + s` is selection `s` on query `i`.
    let mut cells = vec![(0f32, 0f32, 0f32, 0u32); scored.len() * m];
    cells
        .par_chunks_mut(m)
        .enumerate()
        .with_min_len(16)
        .for_each_init(
            || vec![0f32; d],
            |o, (at, cell)| {
                let i = scored.first + at;
                let row = probs.row(i);
                let dense = head.dense_out.row(i);
                for (c, sel) in cell.iter_mut().zip(sels) {
                    o.iter_mut().for_each(|x| *x = 0.0);
                    let ranges = sel.row_ranges(i / sel.query_block());
                    let lo = scored.first_visible(i) as u32;
                    let (mass, kept) = accumulate(row, &v, ranges, (lo, i as u32 + 1), o);
                    let (rel, cos) = output_error(o, mass, dense);
                    *c = (mass.min(1.0), rel, cos, kept);
                }
            },
        );
    (0..m)
        .map(|s| QueryMetrics::from_rows(cells.iter().skip(s).step_by(m).copied().collect()))
        .collect()
}

/// Recall `R_i` alone (no values or outputs needed): the true attention mass of each query's kept
/// keys, summed from the head's exact probabilities (as [`evaluate_with`] sums them, up to the
/// order of the additions).
pub fn recall_with(probs: &TrueProbs, sel: &Selection) -> Vec<f32> {
    let qb = sel.query_block();
    probs
        .scored()
        .range()
        .into_par_iter()
        .with_min_len(64)
        .map(|i| {
            let row = probs.row(i);
            let lim = i as u32 + 1;
            let mut mass = 0f32;
            for &(s, e) in sel.row_ranges(i / qb) {
                if s >= lim {
                    break;
                }
                mass += row[s as usize..e.min(lim) as usize].iter().sum::<f32>();
            }
            mass.min(1.0)
        })
        .collect()
}

/// Recall `R_i` of a selection that keeps whole key blocks of `block` tokens (each kept range
/// starts on a block boundary and ends on one or at the query's causal limit), summed from the
/// capture's per-block masses `P[i, b]` (query `i`'s exact probabilities summed over
/// block `b`'s visible keys, [`attnscope_core::capture::HeadCapture::block_mass`]) instead of from
/// every probability: the same sum, added in another order. `None` when a kept range cuts a block
/// or the capture lacks a scored query's row (the caller then sums the probabilities with
/// [`recall_with`]).
pub fn recall_from_block_mass(
    capture: &attnscope_core::capture::HeadCapture,
    block: usize,
    sel: &Selection,
) -> Option<Vec<f32>> {
    let n = sel.len();
    let from = capture.block_mass_from;
    let block_mass = capture.block_mass.view();
    if block == 0
        || from > sel.scored().first
        || from + block_mass.nrows() != n
        || block_mass.ncols() != n.div_ceil(block)
    {
        return None;
    }
    let qb = sel.query_block();
    let b = block as u32;
    sel.scored()
        .range()
        .into_par_iter()
        .with_min_len(64)
        .map(|i| {
            let lim = i as u32 + 1;
            let masses = block_mass.row(i - from);
            let mut mass = 0f32;
            for &(s, e) in sel.row_ranges(i / qb) {
                if s >= lim {
                    break;
                }
                let e = e.min(lim);
                if s % b != 0 || (e % b != 0 && e != lim) {
                    return None;
                }
                let (lo, hi) = ((s / b) as usize, e.div_ceil(b) as usize);
                mass += masses.slice(ndarray::s![lo..hi]).sum();
            }
            Some(mass.min(1.0))
        })
        .collect()
}

/// Recall `R_i` from post-RoPE `q`, `k` (`[n, d]`), the per-query log-sum-exp and the layer's
/// rule, one kept visible pair at a time (no per-pair buffer: the viewer's live re-selection).
pub fn recall_only(
    q: ArrayView2<f32>,
    k: ArrayView2<f32>,
    (lse, rule): (&[f32], &ScoreRule),
    sel: &Selection,
) -> Vec<f32> {
    sel.scored()
        .range()
        .into_par_iter()
        .map(|i| {
            let qi = q.row(i);
            let mut mass = 0f32;
            for (s, e) in sel.keys_of(i) {
                for j in s as usize..e as usize {
                    mass += (rule.logit(qi.dot(&k.row(j))) - lse[i]).exp();
                }
            }
            mass.min(1.0)
        })
        .collect()
}

/// Information loss `1 - R_i`.
pub fn info_loss(recall: f32) -> f64 {
    1.0 - recall as f64
}

/// `KL(sparse || dense) = -ln R_i` (infinite when nothing of the true attention is kept).
pub fn kl(recall: f32) -> f64 {
    -(recall as f64).ln()
}

/// Relative information-loss reduction of method `a` over method `b`: `(IL_b - IL_a) / IL_b`.
pub fn relative_il_reduction(il_a: f64, il_b: f64) -> f64 {
    (il_b - il_a) / il_b
}

/// Sparsity reached by one selection over its scored queries: [`crate::budget::sparsity_of`]
/// (kept visible pairs over visible pairs).
pub fn sparsity(sel: &Selection) -> f64 {
    crate::budget::sparsity_of(std::slice::from_ref(sel))
}

/// Attention mass query `i` keeps on `span` (token range) relative to the mass the dense
/// attention puts there: the needle recall of one query (keys outside the layer's window have no
/// mass). `None` when the dense mass is zero or `i` is not a scored query.
pub fn needle_recall(
    head: &DenseHead<'_>,
    sel: &Selection,
    i: usize,
    span: (usize, usize),
) -> Option<f64> {
    let s = span.0.max(head.rule.first_visible(i));
    let e = span.1.min(i + 1);
    if s >= e || !sel.scored().range().contains(&i) {
        return None;
    }
    let (mut dense, mut kept) = (0f64, 0f64);
    for j in s..e {
        let p = head.prob(i, j) as f64;
        dense += p;
        if sel.contains(i, j) {
            kept += p;
        }
    }
    (dense > 0.0).then(|| kept / dense)
}

#[cfg(test)]
mod tests;
