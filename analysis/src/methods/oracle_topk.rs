//! `oracle-topk`: exact top-k keys of the true attention, per q-head (an upper bound for any
//! method that keeps k keys per query).

use rayon::prelude::*;

use super::common::{RankedHeads, RankedRows};
use crate::method::{GroupInput, Knob, Prepared, Selector};
use crate::registry::{MethodInfo, MethodKind, ParamSpec, Params};

pub const INFO: MethodInfo = MethodInfo {
    name: "oracle-topk",
    kind: MethodKind::Oracle,
    paper: "upper bound: exact top-k of the true attention A (no paper)",
    rule: "per q-head and query, the k keys of largest true attention probability",
    params: &[ParamSpec {
        name: "k",
        default: 2048.0,
        min: 1.0,
        max: 1e9,
        integer: true,
        help: "keys kept per query",
    }],
    build,
};

fn build(_p: &Params) -> Box<dyn Selector> {
    Box::new(OracleTopK)
}

#[derive(Debug)]
struct OracleTopK;

/// Per q-head, per query: keys sorted by descending true probability, with those probabilities.
pub(crate) fn true_rankings(g: &GroupInput<'_>) -> Vec<(RankedRows, Vec<Vec<f32>>)> {
    let n = g.n();
    let scale = g.scale();
    (0..g.group_size())
        .map(|h| {
            let lse = &g.truth[h].lse;
            let rows: Vec<(Vec<u32>, Vec<f32>)> = (0..n)
                .into_par_iter()
                .map(|i| {
                    let q = g.q[h].row(i);
                    let probs: Vec<f32> = (0..=i)
                        .map(|j| (q.dot(&g.k.row(j)) * scale - lse[i]).exp())
                        .collect();
                    let order = super::common::rank_desc(&probs);
                    let sorted = order.iter().map(|&j| probs[j as usize]).collect();
                    (order, sorted)
                })
                .collect();
            let (ranked, probs): (Vec<_>, Vec<_>) = rows.into_iter().unzip();
            (
                RankedRows {
                    n,
                    query_block: 1,
                    unit: 1,
                    forced: vec![Vec::new(); n],
                    ranked,
                },
                probs,
            )
        })
        .collect()
}

impl Selector for OracleTopK {
    fn knob(&self) -> Knob {
        Knob {
            name: "k",
            min: 1.0,
            max: 1e9,
            integer: true,
            denser_when_larger: true,
            tokens_per_unit: 1,
        }
    }

    fn knob_for_tokens(&self, tokens: usize) -> Option<f64> {
        Some(tokens as f64)
    }

    fn prepare<'a>(&'a self, g: &'a GroupInput<'a>) -> Box<dyn Prepared + 'a> {
        Box::new(RankedHeads {
            heads: true_rankings(g).into_iter().map(|(r, _)| r).collect(),
            group_size: g.group_size(),
        })
    }
}
