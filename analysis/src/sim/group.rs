//! One KV group of a captured layer as the methods see it.

use attnscope_core::attention::LayerQkv;
use attnscope_core::capture::HeadCapture;
use ndarray::Array2;

use crate::method::GroupInput;

/// Contiguous copies of one KV group's Q (per q-head), K and V: matrix products pack them
/// faster than strided views of the layer, and the values are the same. With the layer's
/// score rule.
pub(crate) struct GroupTensors {
    pub q: Vec<Array2<f32>>,
    pub k: Array2<f32>,
    pub v: Array2<f32>,
    pub rule: attnscope_core::attention::ScoreRule,
}

impl GroupTensors {
    pub(crate) fn new(qkv: &LayerQkv<'_>, g: usize) -> Self {
        let gs = qkv.n_heads / qkv.n_kv_heads;
        Self {
            q: (g * gs..(g + 1) * gs)
                .map(|h| qkv.q_head(h).as_standard_layout().into_owned())
                .collect(),
            k: qkv.k_head(g).as_standard_layout().into_owned(),
            v: qkv.v_head(g).as_standard_layout().into_owned(),
            rule: qkv.rule,
        }
    }
}

/// The method input of KV group `g` of a captured layer: the layer's rule, and the `scored`
/// queries seen through its window ([`GroupInput::scored_for`]).
pub(crate) fn group_input<'a>(
    layer: usize,
    t: &'a GroupTensors,
    heads: &'a [HeadCapture],
    g: usize,
    punct: &'a [bool],
    newline: &'a [bool],
    capture_block: usize,
    scored: crate::selection::Scored,
) -> GroupInput<'a> {
    let gs = t.q.len();
    GroupInput {
        layer,
        kv_head: g,
        q: t.q.iter().map(|q| q.view()).collect(),
        k: t.k.view(),
        v: t.v.view(),
        punct,
        newline,
        truth: heads[g * gs..(g + 1) * gs].iter().collect(),
        capture_block,
        scored: GroupInput::scored_for(scored, &t.rule),
        rule: t.rule,
        cache: Default::default(),
    }
}

/// A layer captured for replaying methods outside the simulation's layer jobs (the calibration
/// pass, the sparse prefill of an evaluation): its exact capture and dense output, and each KV
/// group's tensors.
pub(crate) struct CapturedLayer {
    pub layer: usize,
    pub heads: Vec<HeadCapture>,
    /// Exact dense attention output `[n, n_heads * head_dim]`.
    pub dense: Array2<f32>,
    pub groups: Vec<GroupTensors>,
    pub capture_block: usize,
}

impl CapturedLayer {
    /// Captures `qkv` with key blocks of `capture_block` tokens, keeping the block masses of
    /// the `scored` queries.
    pub(crate) fn new(
        qkv: &LayerQkv<'_>,
        capture_block: usize,
        scored: crate::selection::Scored,
    ) -> Self {
        let opts = attnscope_core::capture::CaptureOptions {
            block: capture_block,
            block_mass_from: scored.first,
            ..Default::default()
        };
        let (heads, dense) = attnscope_core::capture::capture_layer(qkv, &opts);
        Self {
            layer: qkv.layer,
            heads,
            dense,
            groups: (0..qkv.n_kv_heads)
                .map(|g| GroupTensors::new(qkv, g))
                .collect(),
            capture_block,
        }
    }

    /// The method input of KV group `g`.
    pub(crate) fn input<'a>(
        &'a self,
        g: usize,
        (punct, newline): (&'a [bool], &'a [bool]),
        scored: crate::selection::Scored,
    ) -> GroupInput<'a> {
        group_input(
            self.layer,
            &self.groups[g],
            &self.heads,
            g,
            punct,
            newline,
            self.capture_block,
            scored,
        )
    }
}
