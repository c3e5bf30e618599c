//! The exact dense attention of one q-head over every causal pair ([`TrueProbs`]), with scores
//! and exponentials that match the platform's `f32` results bit for bit.

use ndarray::ArrayView2;
use rayon::prelude::*;

use attnscope_core::attention::ScoreRule;

use super::exact_exp;
use crate::selection::Scored;

/// `x . y` computed exactly as ndarray's 1-D `dot` does for contiguous `f32` slices (eight
/// interleaved partial sums, then `((p0 + p4) + (p1 + p5)) + ...`, then up to 7 remaining
/// products), so that every score matches `q.row(i).dot(&k.row(j))` bit for bit.
#[inline(always)]
pub fn dot_exact(x: &[f32], y: &[f32]) -> f32 {
    let len = x.len().min(y.len());
    let (x, y) = (&x[..len], &y[..len]);
    let mut p = [0f32; 8];
    let (xc, yc) = (x.chunks_exact(8), y.chunks_exact(8));
    let (xr, yr) = (xc.remainder(), yc.remainder());
    for (a, b) in xc.zip(yc) {
        for l in 0..8 {
            p[l] += a[l] * b[l];
        }
    }
    let mut sum = 0f32;
    sum += p[0] + p[4];
    sum += p[1] + p[5];
    sum += p[2] + p[6];
    sum += p[3] + p[7];
    for (i, (&a, &b)) in xr.iter().zip(yr).enumerate() {
        if i >= 7 {
            break;
        }
        sum += a * b;
    }
    sum
}

attnscope_core::simd_fn! {
    /// `out[j] = exp(args[j] * scale - lse)` with the platform's `f32::exp` results
    /// ([`exact_exp::expf_into`]); `args` is overwritten.
    fn exp_row(args: &mut [f32], scale: f32, lse: f32, out: &mut [f32]) => exp_row_generic
}

#[inline(always)]
fn exp_row_generic(args: &mut [f32], scale: f32, lse: f32, out: &mut [f32]) {
    for a in args.iter_mut() {
        *a = *a * scale - lse;
    }
    exact_exp::expf_into(args, out);
}

/// The exact dense attention `A_ij = exp(logit(q_i . k_j) - LSE_i)` of one q-head over every
/// causal pair, row `i` holding keys `0..=i` (packed lower triangle, `n (n + 1) / 2` floats),
/// `logit` being the layer's [`ScoreRule::logit`] (scale, then soft-capping where the layer caps)
/// and keys outside a sliding window getting 0 (the capture's log-sum-exp leaves them out too).
/// The scores come from matrix products of [`crate::logits::ROW_CHUNK`] queries against their
/// causal keys (the products the capture pass computes the LSE from), the exponentials are the
/// platform's `f32::exp`. [`super::evaluate`] computes each score as a separate dot product
/// instead: the two agree to within the rounding of the score (a few `1e-7`, relative).
#[derive(Debug, Clone, Default)]
pub struct TrueProbs {
    rows: crate::logits::PackedRows,
}

impl std::ops::Deref for TrueProbs {
    type Target = crate::logits::PackedRows;
    /// `row(i)`: `A_ij` for `j <= i`.
    fn deref(&self) -> &crate::logits::PackedRows {
        &self.rows
    }
}

impl TrueProbs {
    /// Computes every causal probability of a head (`q` `[n, d]`, `kt` the keys transposed
    /// `[d, n]`, `lse` per query) under the layer's `rule`, without keeping the raw scores.
    pub fn compute(
        q: ArrayView2<f32>,
        kt: ArrayView2<f32>,
        lse: &[f32],
        scored: Scored,
        rule: &ScoreRule,
    ) -> Self {
        let mut rows = crate::logits::PackedRows::zeroed(scored);
        fill_from_products(q, kt, (lse, rule), &mut rows, None);
        Self { rows }
    }

    /// The head's raw scores ([`crate::logits::Logits::compute`]) and its exact attention in one
    /// pass: each chunk's products are copied out as scores and turned into probabilities while
    /// they are in cache, instead of being read back from memory. The same bits as
    /// [`crate::logits::Logits::compute`] followed by [`TrueProbs::from_logits`].
    pub fn compute_with_logits(
        q: ArrayView2<f32>,
        kt: ArrayView2<f32>,
        lse: &[f32],
        scored: Scored,
        rule: &ScoreRule,
    ) -> (crate::logits::Logits, Self) {
        let mut scores = crate::logits::PackedRows::zeroed(scored);
        let mut rows = crate::logits::PackedRows::zeroed(scored);
        fill_from_products(q, kt, (lse, rule), &mut rows, Some(&mut scores));
        (crate::logits::Logits::from_rows(scores), Self { rows })
    }

    /// [`TrueProbs::compute`] from the head's raw scores, computed once for the group
    /// ([`crate::logits::Logits`]): the same products, so the same bits.
    pub fn from_logits(logits: &crate::logits::Logits, rule: &ScoreRule, lse: &[f32]) -> Self {
        let mut rows = crate::logits::PackedRows::zeroed(logits.scored());
        rows.chunks_mut()
            .into_par_iter()
            .for_each(|(lo, hi, part)| {
                let mut args = vec![0f32; hi];
                let mut at = 0;
                for i in lo..hi {
                    let args = &mut args[..=i];
                    args.copy_from_slice(logits.row(i));
                    probs_row(args, rule, i, lse[i], &mut part[at..at + i + 1]);
                    at += i + 1;
                }
            });
        Self { rows }
    }
}

/// Query `i`'s probabilities `out[j] = exp(logit(args[j]) - lse)` from its raw scores `args`
/// (keys `0..=i`, overwritten): 0 before the rule's first visible key; without soft-capping the
/// scale is applied inside [`exp_row`] (the bits of a plain causal layer), with it the capped
/// logits are formed first, as the capture forms them.
#[inline]
fn probs_row(args: &mut [f32], rule: &ScoreRule, i: usize, lse: f32, out: &mut [f32]) {
    let lo = rule.first_visible(i);
    out[..lo].fill(0.0);
    let (args, out) = (&mut args[lo..], &mut out[lo..]);
    let scale = match rule.softcap {
        Some(c) => {
            args.iter_mut()
                .for_each(|x| *x = c * (*x * rule.scale / c).tanh());
            1.0
        }
        None => rule.scale,
    };
    exp_row(args, scale, lse, out);
}

/// Probabilities `exp(logit(q_i . k_j) - LSE_i)` of every causal pair into `probs` (and the raw
/// scores into `raw`, when given), from matrix products of [`crate::logits::ROW_CHUNK`] queries
/// against their causal keys.
fn fill_from_products(
    q: ArrayView2<f32>,
    kt: ArrayView2<f32>,
    (lse, rule): (&[f32], &ScoreRule),
    probs: &mut crate::logits::PackedRows,
    raw: Option<&mut crate::logits::PackedRows>,
) {
    let raw_parts: Vec<Option<&mut [f32]>> = match raw {
        Some(r) => r
            .chunks_mut()
            .into_iter()
            .map(|(_, _, p)| Some(p))
            .collect(),
        None => (0..probs.scored().len().div_ceil(crate::logits::ROW_CHUNK))
            .map(|_| None)
            .collect(),
    };
    probs
        .chunks_mut()
        .into_par_iter()
        .zip(raw_parts)
        .for_each(|((lo, hi, part), mut raw)| {
            let mut s = q
                .slice(ndarray::s![lo..hi, ..])
                .dot(&kt.slice(ndarray::s![.., ..hi]));
            let mut at = 0;
            for i in lo..hi {
                let args = &mut s
                    .row_mut(i - lo)
                    .into_slice()
                    .expect("fresh arrays are contiguous")[..=i];
                if let Some(r) = raw.as_deref_mut() {
                    r[at..at + i + 1].copy_from_slice(args);
                }
                probs_row(args, rule, i, lse[i], &mut part[at..at + i + 1]);
                at += i + 1;
            }
        });
}
