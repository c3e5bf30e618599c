//! Phi-3: the Llama layer with the Q, K, V projections fused into `self_attn.qkv_proj` (rows
//! `[q | k | v]`) and gate and up into `mlp.gate_up_proj` (rows `[gate | up]`), split at load;
//! a sliding window on every layer where the config sets `sliding_window`.

use super::layer::{LayerSpec, Presence};

/// Phi-3 layers: fused projections, no biases.
pub(crate) const SPEC: LayerSpec = LayerSpec {
    qkv_bias: Presence::Absent,
    fused: true,
    ..super::llama::SPEC
};
