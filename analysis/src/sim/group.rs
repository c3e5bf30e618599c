//! One KV group of a captured layer as the methods see it.

use attnscope_core::attention::LayerQkv;
use attnscope_core::capture::HeadCapture;
use ndarray::Array2;

use crate::method::GroupInput;

/// Contiguous copies of one KV group's Q (per q-head), K and V: matrix products pack them
/// faster than strided views of the layer, and the values are the same.
pub(super) struct GroupTensors {
    pub q: Vec<Array2<f32>>,
    pub k: Array2<f32>,
    pub v: Array2<f32>,
}

impl GroupTensors {
    pub(super) fn new(qkv: &LayerQkv<'_>, g: usize) -> Self {
        let gs = qkv.n_heads / qkv.n_kv_heads;
        Self {
            q: (g * gs..(g + 1) * gs)
                .map(|h| qkv.q_head(h).as_standard_layout().into_owned())
                .collect(),
            k: qkv.k_head(g).as_standard_layout().into_owned(),
            v: qkv.v_head(g).as_standard_layout().into_owned(),
        }
    }
}

/// The method input of KV group `g` of a captured layer.
pub(super) fn group_input<'a>(
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
        scored,
        cache: Default::default(),
    }
}
