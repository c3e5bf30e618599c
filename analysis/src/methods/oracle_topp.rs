//! `oracle-topp`: per q-head and query, the smallest set of keys whose true attention mass
//! reaches p (an upper bound for every method at the same sparsity).

use super::common::RankedRows;
use super::oracle_topk::true_rankings;
use crate::method::{GroupInput, Knob, Prepared, Selector};
use crate::registry::{MethodInfo, MethodKind, ParamSpec, Params};
use crate::selection::Selection;

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

struct Prep {
    heads: Vec<(RankedRows, Vec<Vec<f32>>)>,
}

impl Prepared for Prep {
    fn select(&self, p: f64) -> Vec<Selection> {
        self.heads
            .iter()
            .map(|(rows, probs)| {
                let mut b = Selection::builder(rows.n, 1);
                for (order, sorted) in rows.ranked.iter().zip(probs) {
                    let mut mass = 0f64;
                    let mut k = 0;
                    // p = 1 keeps every key (f32 masses may sum to just under 1).
                    while k < sorted.len() && (mass < p || k == 0 || p >= 1.0) {
                        mass += sorted[k] as f64;
                        k += 1;
                    }
                    b.push_tokens(order[..k].iter().map(|&j| j as usize));
                }
                b.finish()
            })
            .collect()
    }
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
        Box::new(Prep {
            heads: true_rankings(g),
        })
    }
}
