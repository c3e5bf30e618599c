//! `oracle-topk`: exact top-k keys of the true attention, per q-head (an upper bound for any
//! method that keeps k keys per query).

use rayon::prelude::*;

use super::common::{token_runs, top_k_pairs_scored, top_token_set};
use crate::method::packed_pair_bytes;
use crate::method::{DeviceScoring, HeadKeys, RepTransform, RepresentativeRule, Representatives};
use crate::method::{GroupInput, Knob, Prepared, Selector};
use crate::method::{MethodInfo, MethodKind, ParamSpec, Params};
use crate::metrics::TrueProbs;
use crate::selection::{Range, Scored, Selection};

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

/// The exact probabilities of the group's q-heads ([`GroupInput::true_probs`], shared with the
/// runner's metrics); `select(k)` keeps each query's `k` most probable keys (ties by lower index).
struct Prep<'a> {
    scored: Scored,
    probs: &'a [TrueProbs],
}

/// Per query, the `k` keys of largest `row(i)` value ([`rank_desc`](super::common::rank_desc)
/// order), every causal key when `k > i`.
pub fn top_k_of_rows<'r>(
    scored: Scored,
    k: usize,
    row: impl Fn(usize) -> &'r [f32] + Sync,
) -> Selection {
    let rows: Vec<Vec<Range>> = scored
        .range()
        .into_par_iter()
        .with_min_len(16)
        .map(|i| {
            if k > i {
                vec![(0, i as u32 + 1)]
            } else {
                token_runs(&top_token_set(row(i), k))
            }
        })
        .collect();
    Selection::from_rows_scored(scored, 1, rows)
}

/// A token-level top-k as a device rule: one-token blocks, one representative per key (the keys,
/// visible to every later query), nothing forced.
pub fn token_rule(transform: RepTransform, scaled: bool, group_shared: bool) -> RepresentativeRule {
    RepresentativeRule {
        block: 1,
        n_init: 0,
        local: 0,
        force_own: false,
        vis_window: 1,
        vis_stride: 1,
        transform,
        scaled,
        pool: attnscope_core::attention::BlockPool::Identity,
        group_shared,
    }
}

impl Prepared for Prep<'_> {
    fn select(&self, x: f64) -> Vec<Selection> {
        let k = x.max(0.0).round() as usize;
        self.probs
            .iter()
            .map(|p| top_k_of_rows(self.scored, k, |i| p.row(i)))
            .collect()
    }

    fn kept_pairs_at(&self, x: f64) -> Option<(u64, usize)> {
        let k = x.max(0.0).round() as usize;
        let heads = self.probs.len();
        Some((top_k_pairs_scored(self.scored, k) * heads as u64, heads))
    }
}

impl Selector for OracleTopK {
    fn knob(&self) -> Knob {
        Knob::count("k", 1.0, 1)
    }

    fn knob_for_tokens(&self, tokens: usize) -> Option<f64> {
        Some(tokens as f64)
    }

    fn prepare<'a>(&'a self, g: &'a GroupInput<'a>) -> Box<dyn Prepared + 'a> {
        Box::new(Prep {
            scored: g.scored,
            probs: g.true_probs(),
        })
    }

    /// Token-level top-k of the scaled logits `q . k / sqrt d` (the same order as the
    /// probabilities of one query), nothing forced, one selection per q-head.
    fn device_scoring(&self, _n: usize) -> Option<DeviceScoring> {
        Some(DeviceScoring::Representatives(token_rule(
            RepTransform::Raw,
            true,
            false,
        )))
    }

    /// The keys themselves.
    fn representatives(&self, keys: &HeadKeys<'_>) -> Option<Representatives> {
        Some(Representatives {
            reps: keys.k.to_owned(),
            minima: None,
        })
    }

    /// The exact attention when it runs alone (the viewer's live re-selection).
    fn pair_bytes(&self, scored: crate::selection::Scored, group_size: usize) -> u64 {
        packed_pair_bytes(scored) * group_size as u64
    }
}
