//! Gemma 2: embeddings scaled by `sqrt(hidden)`; RMSNorms applied as `1 + w` before and after
//! both attention and the MLP; GELU-tanh gated MLP; `q . k` scaled by
//! `query_pre_attn_scalar^-1/2` and soft-capped (`attn_logit_softcapping`); local
//! (sliding-window) and global layers alternating, local first; output logits soft-capped
//! (`final_logit_softcapping`). Scale, caps and windows come from the config.

use super::layer::{Activation, LayerSpec, NormLayout, Presence};

/// Gemma 2 layers: four norms, no biases, no q/k norm.
pub(crate) const SPEC: LayerSpec = LayerSpec {
    qkv_bias: Presence::Absent,
    qk_norm: Presence::Absent,
    qk_norm_whole: false,
    norms: NormLayout::Sandwich,
    norm_plus_one: true,
    fused: false,
    act: Activation::GeluTanh,
    embed_scale: true,
};
