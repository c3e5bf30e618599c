//! Mistral: the Llama layer (no biases). Every layer attends within `sliding_window` keys when
//! the config sets one (Mistral 7B v0.1: 4,096; later versions: none); the window lives in the
//! config's [`crate::config::AttentionConfig`], not in the layer's tensors.

use super::layer::{LayerSpec, Presence};

/// Mistral layers: Llama's, without Q/K/V biases.
pub(crate) const SPEC: LayerSpec = LayerSpec {
    qkv_bias: Presence::Absent,
    ..super::llama::SPEC
};
