//! Qwen3: the Llama layer with an RMSNorm over each head of Q and of K before RoPE, no biases.

use super::layer::{LayerSpec, Presence};

/// Qwen3 layers: per-head q/k RMSNorm required, no Q/K/V biases.
pub(crate) const SPEC: LayerSpec = LayerSpec {
    qkv_bias: Presence::Absent,
    qk_norm: Presence::Required,
    ..super::llama::SPEC
};
