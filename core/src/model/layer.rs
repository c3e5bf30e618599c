//! One decoder layer's weights ([`Layer`]), which optional parts an architecture's layers have
//! ([`LayerSpec`]), and loading a layer from weights under Hugging Face names ([`load_layer`]).

use ndarray::Array1;

use crate::config::ModelConfig;
use crate::error::{CoreError, Result};
use crate::ops::Linear;
use crate::tensor::Weights;

/// One decoder layer's weights. Parts an architecture lacks are `None`.
#[derive(Debug, Clone)]
pub struct Layer {
    pub attn_norm: Array1<f32>,
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    /// Per-head RMSNorm of queries and keys before RoPE (Qwen3).
    pub q_norm: Option<Array1<f32>>,
    pub k_norm: Option<Array1<f32>>,
    pub mlp_norm: Array1<f32>,
    pub gate: Linear,
    pub up: Linear,
    pub down: Linear,
}

/// Which tensors of a layer an architecture has (its file's one decision).
pub(crate) struct LayerSpec {
    /// Q/K/V biases: required (Qwen2), optional (Llama `attention_bias`), or absent.
    pub qkv_bias: Presence,
    pub qk_norm: Presence,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Presence {
    Required,
    Optional,
    Absent,
}

fn linear(w: &mut Weights, name: &str, out: usize, inp: usize, bias: Presence) -> Result<Linear> {
    let weight = w.take(&format!("{name}.weight"), &[out, inp])?;
    let b = match bias {
        Presence::Required => Some(w.take(&format!("{name}.bias"), &[out])?),
        Presence::Optional => w.take_opt(&format!("{name}.bias"), &[out])?,
        Presence::Absent => None,
    };
    Ok(Linear::new(weight, b))
}

fn vector(w: &mut Weights, name: &str, len: usize, p: Presence) -> Result<Option<Array1<f32>>> {
    let t = match p {
        Presence::Required => Some(w.take(name, &[len])?),
        Presence::Optional => w.take_opt(name, &[len])?,
        Presence::Absent => None,
    };
    Ok(t.map(|t| Array1::from_vec(t.data)))
}

/// Takes layer `i`'s tensors out of `w`, checking every shape against the config.
pub(crate) fn load_layer(
    w: &mut Weights,
    cfg: &ModelConfig,
    spec: &LayerSpec,
    i: usize,
) -> Result<Layer> {
    let p = format!("model.layers.{i}");
    let (h, d, f) = (cfg.hidden, cfg.head_dim, cfg.intermediate);
    let (qd, kvd) = (cfg.n_heads * d, cfg.n_kv_heads * d);
    let req = |w: &mut Weights, name: &str, len| {
        vector(w, name, len, Presence::Required)?
            .ok_or_else(|| CoreError::format(cfg_path(w), format!("missing tensor '{name}'")))
    };
    Ok(Layer {
        attn_norm: req(w, &format!("{p}.input_layernorm.weight"), h)?,
        q: linear(w, &format!("{p}.self_attn.q_proj"), qd, h, spec.qkv_bias)?,
        k: linear(w, &format!("{p}.self_attn.k_proj"), kvd, h, spec.qkv_bias)?,
        v: linear(w, &format!("{p}.self_attn.v_proj"), kvd, h, spec.qkv_bias)?,
        o: linear(w, &format!("{p}.self_attn.o_proj"), h, qd, Presence::Absent)?,
        q_norm: vector(w, &format!("{p}.self_attn.q_norm.weight"), d, spec.qk_norm)?,
        k_norm: vector(w, &format!("{p}.self_attn.k_norm.weight"), d, spec.qk_norm)?,
        mlp_norm: req(w, &format!("{p}.post_attention_layernorm.weight"), h)?,
        gate: linear(w, &format!("{p}.mlp.gate_proj"), f, h, Presence::Absent)?,
        up: linear(w, &format!("{p}.mlp.up_proj"), f, h, Presence::Absent)?,
        down: linear(w, &format!("{p}.mlp.down_proj"), h, f, Presence::Absent)?,
    })
}

fn cfg_path(w: &Weights) -> std::path::PathBuf {
    w.source.clone()
}
