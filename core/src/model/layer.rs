//! One decoder layer's weights ([`Layer`]), which optional parts an architecture's layers have
//! ([`LayerSpec`]), and loading a layer from weights under Hugging Face names ([`load_layer`]).

use ndarray::{s, Array1};

use crate::config::ModelConfig;
use crate::error::{CoreError, Result};
use crate::ops::Linear;
use crate::tensor::Weights;

/// One decoder layer's weights. Parts an architecture lacks are `None`. Norm weights are the
/// multipliers the forward pass applies (Gemma's `1 + w` already added).
#[derive(Debug, Clone)]
pub struct Layer {
    /// RMSNorm before attention (`input_layernorm`; absent in OLMo-2).
    pub attn_norm: Option<Array1<f32>>,
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    /// RMSNorm of queries and keys before RoPE: per head (Qwen3, Gemma 3) or over the whole
    /// projection (OLMo-2), see `LayerSpec::qk_norm_whole`.
    pub q_norm: Option<Array1<f32>>,
    pub k_norm: Option<Array1<f32>>,
    /// RMSNorm of the attention output before the residual (Gemma, OLMo-2).
    pub post_attn_norm: Option<Array1<f32>>,
    /// RMSNorm before the MLP (Llama's `post_attention_layernorm`, Gemma's
    /// `pre_feedforward_layernorm`; absent in OLMo-2).
    pub mlp_norm: Option<Array1<f32>>,
    pub gate: Linear,
    pub up: Linear,
    pub down: Linear,
    /// RMSNorm of the MLP output before the residual (Gemma, OLMo-2).
    pub post_mlp_norm: Option<Array1<f32>>,
}

/// Where a layer's RMSNorms sit.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum NormLayout {
    /// Before attention and before the MLP (Llama: `input_layernorm`,
    /// `post_attention_layernorm`).
    Pre,
    /// Before and after attention and the MLP (Gemma: `input_layernorm`,
    /// `post_attention_layernorm`, `pre_feedforward_layernorm`, `post_feedforward_layernorm`).
    Sandwich,
    /// After attention and after the MLP only (OLMo-2: `post_attention_layernorm`,
    /// `post_feedforward_layernorm`).
    Post,
}

/// The MLP's gate activation.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Activation {
    Silu,
    /// `gelu_pytorch_tanh` (Gemma).
    GeluTanh,
}

/// Which tensors of a layer an architecture has and how the forward pass treats them (its
/// file's one decision).
#[derive(Debug)]
pub(crate) struct LayerSpec {
    /// Q/K/V biases: required (Qwen2), optional (Llama `attention_bias`), or absent.
    pub qkv_bias: Presence,
    pub qk_norm: Presence,
    /// q/k norm over the whole `[heads * head_dim]` projection (OLMo-2) instead of per head.
    pub qk_norm_whole: bool,
    pub norms: NormLayout,
    /// Norm weights are stored as `w` and applied as `1 + w` (Gemma in safetensors; Gemma
    /// GGUF files already hold `1 + w`).
    pub norm_plus_one: bool,
    /// `self_attn.qkv_proj` and `mlp.gate_up_proj` (Phi-3) instead of separate projections.
    pub fused: bool,
    pub act: Activation,
    /// Embeddings multiplied by `sqrt(hidden)` (Gemma).
    pub embed_scale: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
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

/// Splits a fused `[sum(rows), inp]` projection into consecutive row blocks.
fn split_rows(w: &mut Weights, name: &str, rows: &[usize], inp: usize) -> Result<Vec<Linear>> {
    let total: usize = rows.iter().sum();
    let t = w.take(&format!("{name}.weight"), &[total, inp])?;
    let a = crate::ops::to_array2(t, total, inp);
    let mut out = Vec::with_capacity(rows.len());
    let mut r0 = 0;
    for &r in rows {
        out.push(Linear {
            weight: a.slice(s![r0..r0 + r, ..]).to_owned(),
            bias: None,
        });
        r0 += r;
    }
    Ok(out)
}

fn vector(
    w: &mut Weights,
    name: &str,
    len: usize,
    p: Presence,
    plus_one: bool,
) -> Result<Option<Array1<f32>>> {
    let t = match p {
        Presence::Required => Some(w.take(name, &[len])?),
        Presence::Optional => w.take_opt(name, &[len])?,
        Presence::Absent => None,
    };
    Ok(t.map(|t| {
        let mut a = Array1::from_vec(t.data);
        if plus_one {
            a.mapv_inplace(|x| 1.0 + x);
        }
        a
    }))
}

/// Takes layer `i`'s tensors out of `w`, checking every shape against the config.
/// `plus_one` adds 1 to every norm weight (Gemma from safetensors).
pub(crate) fn load_layer(
    w: &mut Weights,
    cfg: &ModelConfig,
    spec: &LayerSpec,
    i: usize,
    plus_one: bool,
) -> Result<Layer> {
    let p = format!("model.layers.{i}");
    let (h, d, f) = (cfg.hidden, cfg.head_dim, cfg.intermediate);
    let (qd, kvd) = (cfg.n_heads * d, cfg.n_kv_heads * d);
    let norm = |w: &mut Weights, name: &str, len, presence| {
        vector(w, &format!("{p}.{name}.weight"), len, presence, plus_one)
    };
    let (req, no) = (Presence::Required, Presence::Absent);
    let (pre, post_attn, pre_mlp, post_mlp) = match spec.norms {
        NormLayout::Pre => (req, no, req, no),
        NormLayout::Sandwich => (req, req, req, req),
        NormLayout::Post => (no, req, no, req),
    };
    let mlp_norm_name = match spec.norms {
        NormLayout::Sandwich => "pre_feedforward_layernorm",
        _ => "post_attention_layernorm",
    };
    let (q, k, v) = if spec.fused {
        let mut parts = split_rows(w, &format!("{p}.self_attn.qkv_proj"), &[qd, kvd, kvd], h)?;
        let v = parts.pop();
        let k = parts.pop();
        let q = parts.pop();
        match (q, k, v) {
            (Some(q), Some(k), Some(v)) => (q, k, v),
            _ => return Err(CoreError::format(&w.source, "qkv_proj split failed")),
        }
    } else {
        (
            linear(w, &format!("{p}.self_attn.q_proj"), qd, h, spec.qkv_bias)?,
            linear(w, &format!("{p}.self_attn.k_proj"), kvd, h, spec.qkv_bias)?,
            linear(w, &format!("{p}.self_attn.v_proj"), kvd, h, spec.qkv_bias)?,
        )
    };
    let (gate, up) = if spec.fused {
        let mut parts = split_rows(w, &format!("{p}.mlp.gate_up_proj"), &[f, f], h)?;
        match (parts.pop(), parts.pop()) {
            (Some(up), Some(gate)) => (gate, up),
            _ => return Err(CoreError::format(&w.source, "gate_up_proj split failed")),
        }
    } else {
        (
            linear(w, &format!("{p}.mlp.gate_proj"), f, h, Presence::Absent)?,
            linear(w, &format!("{p}.mlp.up_proj"), f, h, Presence::Absent)?,
        )
    };
    let (qn, kn) = if spec.qk_norm_whole {
        (qd, kvd)
    } else {
        (d, d)
    };
    Ok(Layer {
        attn_norm: norm(w, "input_layernorm", h, pre)?,
        q,
        k,
        v,
        o: linear(w, &format!("{p}.self_attn.o_proj"), h, qd, Presence::Absent)?,
        q_norm: norm(w, "self_attn.q_norm", qn, spec.qk_norm)?,
        k_norm: norm(w, "self_attn.k_norm", kn, spec.qk_norm)?,
        post_attn_norm: norm(w, "post_attention_layernorm", h, post_attn)?,
        mlp_norm: norm(w, mlp_norm_name, h, pre_mlp)?,
        gate,
        up,
        down: linear(w, &format!("{p}.mlp.down_proj"), h, f, Presence::Absent)?,
        post_mlp_norm: norm(w, "post_feedforward_layernorm", h, post_mlp)?,
    })
}
