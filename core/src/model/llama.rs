//! Llama family (Llama 2/3, SmolLM2, Mistral-style): pre-norm decoder, RMSNorm, rotate-half RoPE,
//! grouped-query attention, SiLU-gated MLP. Q/K/V biases only with `attention_bias`.

use super::layer::{LayerSpec, Presence};

/// Llama layers: no q/k norm; Q/K/V biases are allowed but not required.
pub(crate) const SPEC: LayerSpec = LayerSpec {
    qkv_bias: Presence::Optional,
    qk_norm: Presence::Absent,
};
