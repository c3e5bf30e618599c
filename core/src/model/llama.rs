//! Llama family (Llama 2/3, SmolLM2): pre-norm decoder, RMSNorm, rotate-half RoPE,
//! grouped-query attention, SiLU-gated MLP. Q/K/V biases only with `attention_bias`.

use super::layer::{Activation, LayerSpec, NormLayout, Presence};

/// Llama layers: no q/k norm; Q/K/V biases are allowed but not required.
pub(crate) const SPEC: LayerSpec = LayerSpec {
    qkv_bias: Presence::Optional,
    qk_norm: Presence::Absent,
    qk_norm_whole: false,
    norms: NormLayout::Pre,
    norm_plus_one: false,
    fused: false,
    act: Activation::Silu,
    embed_scale: false,
};
