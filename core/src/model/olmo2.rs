//! OLMo-2: RMSNorms only after attention (`post_attention_layernorm`) and after the MLP
//! (`post_feedforward_layernorm`), none before; an RMSNorm over the whole Q projection
//! (`[heads * head_dim]`) and the whole K projection before RoPE.

use super::layer::{LayerSpec, NormLayout, Presence};

/// OLMo-2 layers: post norms, whole-projection q/k norms, no biases.
pub(crate) const SPEC: LayerSpec = LayerSpec {
    qkv_bias: Presence::Absent,
    qk_norm: Presence::Required,
    qk_norm_whole: true,
    norms: NormLayout::Post,
    ..super::llama::SPEC
};
