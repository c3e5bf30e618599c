//! Every fidelity metric, computed in one place and identically for all methods
//! (definitions: shared/METHODS.md, "Metrics").
//!
//! With `A_ij = exp(q_i . k_j / sqrt(d) - LSE_i)` the exact dense attention and `S_i` the kept keys:
//! recall `R_i = sum_{j in S_i} A_ij`; information loss `1 - R_i`; `KL(sparse || dense) = -ln R_i`;
//! output error `||o_sparse - o_dense|| / ||o_dense||` and cosine, with `o_sparse` the renormalized
//! attention over `S_i`; sparsity `1 - kept / causal pairs`; IoU `|S_a n S_b| / |S_a u S_b|`.

use ndarray::ArrayView2;
use rayon::prelude::*;

use crate::selection::{causal_pairs, intersect_len, Selection};

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
    /// Per-query log-sum-exp of the scaled scores.
    pub lse: &'a [f32],
    /// `[n, d]` exact dense attention output of the head.
    pub dense_out: ArrayView2<'a, f32>,
}

/// Scores one selection against the exact dense attention of one head.
pub fn evaluate(head: &DenseHead<'_>, sel: &Selection) -> QueryMetrics {
    let n = head.q.nrows();
    let d = head.q.ncols();
    let scale = 1.0 / (d as f32).sqrt();
    let rows: Vec<(f32, f32, f32, u32)> = (0..n)
        .into_par_iter()
        .map(|i| {
            let q = head.q.row(i);
            let mut o = vec![0f32; d];
            let (mut mass, mut kept) = (0f32, 0u32);
            for (s, e) in sel.keys_of(i) {
                for j in s as usize..e as usize {
                    let p = (q.dot(&head.k.row(j)) * scale - head.lse[i]).exp();
                    mass += p;
                    kept += 1;
                    for (oc, &vc) in o.iter_mut().zip(head.v.row(j)) {
                        *oc += p * vc;
                    }
                }
            }
            let dense = head.dense_out.row(i);
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
            (mass.min(1.0), rel, cos, kept)
        })
        .collect();
    let mut m = QueryMetrics::default();
    for (r, e, c, k) in rows {
        m.recall.push(r);
        m.out_rel_err.push(e);
        m.cosine.push(c);
        m.kept.push(k);
    }
    m
}

/// Recall `R_i` alone (no values or outputs needed): the true attention mass of each query's kept
/// keys, from post-RoPE `q`, `k` (`[n, d]`) and the per-query log-sum-exp.
pub fn recall_only(
    q: ArrayView2<f32>,
    k: ArrayView2<f32>,
    lse: &[f32],
    sel: &Selection,
) -> Vec<f32> {
    let scale = 1.0 / (q.ncols() as f32).sqrt();
    (0..q.nrows())
        .into_par_iter()
        .map(|i| {
            let qi = q.row(i);
            let mut mass = 0f32;
            for (s, e) in sel.keys_of(i) {
                for j in s as usize..e as usize {
                    mass += (qi.dot(&k.row(j)) * scale - lse[i]).exp();
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

/// Sparsity reached by one selection over `n` tokens.
pub fn sparsity(sel: &Selection) -> f64 {
    1.0 - sel.kept_pairs() as f64 / causal_pairs(sel.len()) as f64
}

/// Mean over queries of `|S_a n S_b| / |S_a u S_b|` at token granularity.
pub fn iou(a: &Selection, b: &Selection) -> f64 {
    let n = a.len().min(b.len());
    if n == 0 {
        return 1.0;
    }
    let total: f64 = (0..n)
        .into_par_iter()
        .map(|i| {
            let inter = intersect_len(a.keys_of(i), b.keys_of(i));
            let union = a.kept_of(i) as u64 + b.kept_of(i) as u64 - inter;
            if union == 0 {
                1.0
            } else {
                inter as f64 / union as f64
            }
        })
        .sum();
    total / n as f64
}

/// Attention mass query `i` keeps on `span` (token range) relative to the mass the dense
/// attention puts there: the needle recall of one query. `None` when the dense mass is zero.
pub fn needle_recall(
    head: &DenseHead<'_>,
    sel: &Selection,
    i: usize,
    span: (usize, usize),
) -> Option<f64> {
    let scale = 1.0 / (head.q.ncols() as f32).sqrt();
    let (s, e) = (span.0, span.1.min(i + 1));
    if s >= e {
        return None;
    }
    let (mut dense, mut kept) = (0f64, 0f64);
    for j in s..e {
        let p = (head.q.row(i).dot(&head.k.row(j)) * scale - head.lse[i]).exp() as f64;
        dense += p;
        if sel.contains(i, j) {
            kept += p;
        }
    }
    (dense > 0.0).then(|| kept / dense)
}
