//! What a run's output does at the scored positions: the NLL of each target token, whether it is
//! the argmax (greedy decoding), and KL(sparse || dense) of the next-token distributions. Only
//! the scored rows go through the output head, [`CHUNK`] rows at a time.

use attnscope_core::model::decoder::token_nll;
use attnscope_core::ops::log_sum_exp;
use attnscope_core::Model;
use ndarray::{s, ArrayView2};

use crate::error::Result;

/// Hidden rows per output-head product (memory `CHUNK x vocab` per run scored).
pub const CHUNK: usize = 256;

/// Per scored position: the target's NLL, whether greedy decoding picks it, and the KL of the
/// run's next-token distribution from the dense one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scores {
    /// NLL (nats) of each target ([`token_nll`]).
    pub nll: Vec<f64>,
    /// The target is the argmax of its logits (the first index among equal maxima).
    pub hit: Vec<bool>,
    /// KL(run || dense) of the next-token distributions, nats ([`kl_of_logits`]); 0 for the
    /// dense run itself.
    pub kl: Vec<f64>,
}

/// Scores `targets` under the final hidden states `hidden` (row `r` predicts `targets[r]`),
/// with `dense` the dense run's hidden states at the same positions (`None`: this is the dense
/// run).
pub fn score(
    model: &Model,
    hidden: ArrayView2<f32>,
    dense: Option<ArrayView2<f32>>,
    targets: &[u32],
) -> Result<Scores> {
    let n = targets.len();
    let mut out = Scores::default();
    for r0 in (0..n).step_by(CHUNK) {
        let r1 = (r0 + CHUNK).min(n);
        let logits = model.checked_logits(hidden.slice(s![r0..r1, ..]), r0)?;
        let dense_logits = match dense {
            Some(d) => Some(model.checked_logits(d.slice(s![r0..r1, ..]), r0)?),
            None => None,
        };
        for (r, row) in logits.outer_iter().enumerate() {
            let row = row.as_slice().expect("fresh arrays are contiguous");
            let t = targets[r0 + r] as usize;
            out.nll.push(token_nll(row, t));
            out.hit.push(argmax(row) == t);
            out.kl.push(match &dense_logits {
                Some(d) => kl_of_logits(row, d.row(r).as_slice().expect("contiguous")),
                None => 0.0,
            });
        }
    }
    Ok(out)
}

/// The index of the largest value, the first among equals (greedy decoding's choice).
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best
}

/// KL(p || q) in nats of `p = softmax(a)` and `q = softmax(b)`:
/// `sum_v p_v (a_v - lse(a) - b_v + lse(b))`, summed in f64; negative rounding is clamped to 0.
pub fn kl_of_logits(a: &[f32], b: &[f32]) -> f64 {
    let (la, lb) = (log_sum_exp(a) as f64, log_sum_exp(b) as f64);
    let kl: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| {
            let lp = x as f64 - la;
            lp.exp() * (lp - (y as f64 - lb))
        })
        .sum();
    kl.max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kl_is_zero_for_equal_logits_and_matches_a_hand_value() {
        let a = [1.0f32, 2.0, 0.5];
        assert_eq!(kl_of_logits(&a, &a), 0.0);
        // p = (0.5, 0.5), q = (0.25, 0.75): KL = 0.5 ln 2 + 0.5 ln(2/3).
        let (p, q) = ([0.0f32, 0.0], [0.0f32, 3f32.ln()]);
        let want = 0.5 * 2f64.ln() + 0.5 * (2.0f64 / 3.0).ln();
        assert!((kl_of_logits(&p, &q) - want).abs() < 1e-7);
    }

    #[test]
    fn argmax_takes_the_first_of_equal_maxima() {
        assert_eq!(argmax(&[0.0, 3.0, 3.0, 1.0]), 1);
        assert_eq!(argmax(&[5.0]), 0);
    }
}
