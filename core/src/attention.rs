//! The one attention call site of every model. Each layer hands its post-RoPE Q, K, V to an
//! [`AttentionHook`]; the hook may record them (capture), return a per-query key selection that the
//! layer then attends to instead of all keys (sparse simulation), or return the exact dense output
//! it already computed while capturing. Nothing here ever materializes an `n x n` map: scores are
//! computed one query tile at a time.
//!
//! This module holds the hook contract; the exact attention it falls back to lives in
//! [`crate::exact_attention`] and the device side of the hook in [`crate::device_layer`], both
//! re-exported here.

pub use crate::device_layer::{
    BlockLists, BlockPool, BlockScoring, DeviceLayer, DeviceTensor, RepTransform, SparseMeasure,
};
pub use crate::exact_attention::{
    assemble_heads, dense_attention, head_tiles, prob_tile, prob_tile_rule, sparse_attention,
    LayerQkv, ScoreRule, TokenSelection, TILE,
};

use ndarray::Array2;

use crate::error::Result;

/// What a hook tells the layer to do with its attention.
#[derive(Debug)]
pub enum HookAction {
    /// Exact dense causal attention, computed by the layer.
    Dense,
    /// Attend only to the selected keys (renormalized softmax over them).
    Sparse(TokenSelection),
    /// The hook already computed the exact dense output (`[n, n_heads * head_dim]`).
    DenseOutput(Array2<f32>),
}

/// Receives every layer's post-RoPE Q, K, V at the attention call site.
pub trait AttentionHook {
    /// Called once per layer, in order, before the layer's attention.
    fn on_layer(&mut self, qkv: &LayerQkv<'_>) -> Result<HookAction>;

    /// Called instead of [`AttentionHook::on_layer`] by device (GPU) forward passes, with the same
    /// host copy of Q, K, V and a handle that computes the layer's exact capture on the device.
    /// The default ignores the handle; capturing hooks override it (see [`DeviceLayer`]).
    fn on_layer_device(
        &mut self,
        qkv: &LayerQkv<'_>,
        device: &mut dyn DeviceLayer,
    ) -> Result<HookAction> {
        let _ = device;
        self.on_layer(qkv)
    }

    /// False when the hook would answer [`HookAction::Dense`] for `layer` without reading Q, K, V:
    /// device passes then skip copying them to the host. The default is true.
    fn inspects(&self, layer: usize) -> bool {
        let _ = layer;
        true
    }
}

/// A hook that does nothing: plain dense attention.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoHook;

impl AttentionHook for NoHook {
    fn on_layer(&mut self, _qkv: &LayerQkv<'_>) -> Result<HookAction> {
        Ok(HookAction::Dense)
    }

    fn inspects(&self, _layer: usize) -> bool {
        false
    }
}
