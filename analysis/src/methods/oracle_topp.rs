//! `oracle-topp`: per q-head and query, the smallest set of keys whose true attention mass
//! reaches p (an upper bound for every method at the same sparsity).

use super::top_p::{TopPHeads, TopPRows, TopPSource};
use crate::method::packed_pair_bytes;
use crate::method::{GroupInput, Knob, Prepared, Selector};
use crate::method::{MethodInfo, MethodKind, ParamSpec, Params};
use crate::metrics::TrueProbs;

pub const INFO: MethodInfo = MethodInfo {
    name: "oracle-topp",
    kind: MethodKind::Oracle,
    paper: "upper bound: exact top-p of the true attention A (no paper)",
    rule: "per q-head and query, the fewest keys whose true attention mass reaches p",
    params: &[ParamSpec {
        name: "p",
        default: 0.9,
        min: 0.0,
        max: 1.0,
        integer: false,
        help: "attention mass to keep",
    }],
    build,
};

fn build(_p: &Params) -> Box<dyn Selector> {
    Box::new(OracleTopP)
}

#[derive(Debug)]
struct OracleTopP;

/// The exact probabilities of one q-head as the ranking of a [`TopPRows`].
struct Source<'a> {
    probs: &'a TrueProbs,
}

impl TopPSource for Source<'_> {
    fn chunk(&self, lo: usize, hi: usize, f: &mut dyn FnMut(usize, &[f32])) {
        for i in lo..hi {
            f(i, self.probs.row(i));
        }
    }

    fn mass(&self, _i: usize, _j: usize, s: f32) -> f64 {
        s as f64
    }

    fn approx_masses(&self, _i: usize, s: &[f32], keys: &[u32], out: &mut [f64]) {
        for (o, &j) in out.iter_mut().zip(keys) {
            *o = s[j as usize] as f64;
        }
    }

    fn approx_error(&self) -> f64 {
        0.0
    }

    /// About a quarter octave per bucket, from the float's bits (monotone in the probability).
    fn buckets(&self, _i: usize, s: &[f32], out: &mut [u8]) {
        probability_buckets(s, out);
    }
}

#[inline(always)]
fn probability_buckets_generic(s: &[f32], out: &mut [u8]) {
    const ONE: u32 = 0x3F80_0000; // 1.0f32
    for (o, &x) in out.iter_mut().zip(s) {
        // Branch-free: 0 from 1 up, 255 for zero (and NaN), the exponent and two mantissa bits
        // below 1 otherwise.
        let below = (ONE.wrapping_sub(x.to_bits()) >> 21).min(255);
        let b = if x >= 1.0 { 0 } else { below };
        *o = if x > 0.0 { b as u8 } else { 255 };
    }
}

attnscope_core::simd_fn! {
    fn probability_buckets(s: &[f32], out: &mut [u8]) => probability_buckets_generic
}

impl Selector for OracleTopP {
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
        Box::new(TopPHeads {
            heads: g
                .true_probs()
                .iter()
                .map(|probs| (Source { probs }, TopPRows::new(g.scored)))
                .collect(),
        })
    }

    /// Per-pair scores and per-query histograms (at most 257 counts and sums each).
    fn pair_bytes(&self, scored: crate::selection::Scored, group_size: usize) -> u64 {
        (packed_pair_bytes(scored) + scored.len() as u64 * 257 * 12) * group_size as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::methods::common::rank_desc;
    use crate::selection::Selection;
    use crate::testing::GroupData;

    /// The oracles written plainly: every row's true probabilities fully sorted and walked.
    fn reference(data: &GroupData, topk: Option<usize>, p: f64) -> Vec<Selection> {
        let g = data.input();
        let n = g.n();
        (0..g.group_size())
            .map(|h| {
                let mut b = Selection::builder(n, 1);
                for i in 0..n {
                    let probs = g.true_probs()[h].row(i).to_vec();
                    let order = rank_desc(&probs);
                    let k = match topk {
                        Some(k) => k.min(order.len()),
                        None => {
                            let (mut mass, mut k) = (0f64, 0);
                            while k < order.len() && (mass < p || k == 0 || p >= 1.0) {
                                mass += probs[order[k] as usize] as f64;
                                k += 1;
                            }
                            k
                        }
                    };
                    b.push_tokens(order[..k].iter().map(|&j| j as usize));
                }
                b.finish()
            })
            .collect()
    }

    #[test]
    fn same_selections_as_fully_sorted_rows() {
        let topk = (super::super::oracle_topk::INFO.build)(
            &super::super::oracle_topk::INFO
                .params(&[])
                .expect("defaults"),
        );
        let topp = OracleTopP;
        for (n, d) in [(180, 16), (97, 64)] {
            let data = GroupData::random(n, d, 2, n as u64);
            let g = data.input();
            let prep = topp.prepare(&g);
            // Ascending, descending and repeated p: rows grow and are reused.
            // Near-ties: p equal to a row's exact cumulative mass after a few keys.
            let probs = g.true_probs();
            let ties: Vec<f64> = [(n - 1, 1), (n / 2, 3), (n - 7, 9)]
                .into_iter()
                .map(|(i, k)| {
                    let row = probs[0].row(i);
                    let order = rank_desc(row);
                    order[..k].iter().map(|&j| row[j as usize] as f64).sum()
                })
                .collect();
            for p in [0.3, 0.9, 0.5, 0.999, 0.0, 1.0, 0.97, 0.9999999]
                .into_iter()
                .chain(ties)
            {
                assert_eq!(prep.select(p), reference(&data, None, p), "top-p {p}");
            }
            let prep = topk.prepare(&g);
            for k in [0, 1, 2, 7, 50, n - 1, n, n + 3] {
                assert_eq!(
                    prep.select(k as f64),
                    reference(&data, Some(k), 0.0),
                    "top-k {k}"
                );
            }
        }
    }
}
