//! Exact attention statistics, captured at the attention call site without ever holding an
//! `n x n` map: per (layer, head) the per-query log-sum-exp, the query-by-key-block mass
//! `P[i, b]` (sum of query `i`'s attention probabilities over the keys of block `b`), the sink mass
//! (mass on the first tokens) per query, and a pooled block x block map for viewing.
//! The capture pass also yields the exact dense attention output, so the layer need not recompute it.
//!
//! [`CaptureHook`] records them layer by layer; the statistics themselves and their host
//! computation live in [`crate::capture_stats`] (re-exported here).

pub use crate::capture_stats::{capture_layer, CaptureOptions, HeadCapture};

use ndarray::Array2;

use crate::attention::{AttentionHook, DeviceLayer, HookAction, LayerQkv, ScoreRule};
use crate::error::Result;

/// Owned copies of one layer's post-RoPE Q, K, V (token-major, as in [`LayerQkv`]).
#[derive(Debug, Clone)]
pub struct CapturedQkv {
    pub q: Array2<f32>,
    pub k: Array2<f32>,
    pub v: Array2<f32>,
}

/// Everything captured for one layer.
#[derive(Debug, Clone)]
pub struct LayerCapture {
    pub layer: usize,
    /// The layer's logit scale, soft-capping and sliding window (what the captured
    /// probabilities were computed under).
    pub rule: ScoreRule,
    pub heads: Vec<HeadCapture>,
    /// Exact dense attention output `[n, n_heads * head_dim]` (before the output projection).
    pub dense_out: Array2<f32>,
    pub qkv: Option<CapturedQkv>,
}

/// A hook that captures the layers named in its options and keeps the results in memory.
#[derive(Debug, Default)]
pub struct CaptureHook {
    pub opts: CaptureOptions,
    pub layers: Vec<LayerCapture>,
}

impl CaptureHook {
    /// A hook capturing with `opts`.
    pub fn new(opts: CaptureOptions) -> Self {
        Self {
            opts,
            layers: Vec::new(),
        }
    }

    /// True when layer `l` is to be captured.
    pub fn wants(&self, l: usize) -> bool {
        self.opts.layers.as_ref().is_none_or(|ls| ls.contains(&l))
    }
}

impl CaptureHook {
    fn record(
        &mut self,
        qkv: &LayerQkv<'_>,
        heads: Vec<HeadCapture>,
        out: Array2<f32>,
    ) -> HookAction {
        let kept = self.opts.keep_qkv.then(|| CapturedQkv {
            q: qkv.q.to_owned(),
            k: qkv.k.to_owned(),
            v: qkv.v.to_owned(),
        });
        self.layers.push(LayerCapture {
            layer: qkv.layer,
            rule: qkv.rule,
            heads,
            dense_out: out.clone(),
            qkv: kept,
        });
        HookAction::DenseOutput(out)
    }
}

impl AttentionHook for CaptureHook {
    fn on_layer_device(
        &mut self,
        qkv: &LayerQkv<'_>,
        device: &mut dyn DeviceLayer,
    ) -> Result<HookAction> {
        if !self.wants(qkv.layer) {
            return Ok(HookAction::Dense);
        }
        let (heads, out) = device.capture(&self.opts)?;
        Ok(self.record(qkv, heads, out))
    }

    fn inspects(&self, layer: usize) -> bool {
        self.wants(layer)
    }

    fn on_layer(&mut self, qkv: &LayerQkv<'_>) -> Result<HookAction> {
        if !self.wants(qkv.layer) {
            return Ok(HookAction::Dense);
        }
        let (heads, out) = capture_layer(qkv, &self.opts);
        Ok(self.record(qkv, heads, out))
    }
}
