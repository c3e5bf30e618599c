//! Qwen2 / Qwen2.5: the Llama layer with a bias on the Q, K and V projections.

use super::layer::{LayerSpec, Presence};

/// Qwen2 layers: Q/K/V biases required, no q/k norm.
pub(crate) const SPEC: LayerSpec = LayerSpec {
    qkv_bias: Presence::Required,
    ..super::llama::SPEC
};
