//! Model configuration: the numbers a forward pass needs, read from a Hugging Face
//! `config.json` or from GGUF metadata (see [`crate::gguf`]).

mod validate;

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{CoreError, Result};
use crate::rope::RopeScaling;
pub(crate) use validate::derived_head_dim;
pub use validate::{KeyStyle, MAX_DIM, MAX_RMS_EPS};

/// Architecture families with a forward pass in [`crate::model`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// Llama 2/3, SmolLM2, Mistral-style decoders without QKV bias.
    Llama,
    /// Qwen2 / Qwen2.5: Llama with a bias on the Q, K and V projections.
    Qwen2,
    /// Qwen3: Llama with RMSNorm on each head of Q and K before RoPE.
    Qwen3,
}

impl Arch {
    /// Parses the architecture name used by HF `model_type` and GGUF `general.architecture`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "llama" | "mistral" | "smollm" => Some(Self::Llama),
            "qwen2" => Some(Self::Qwen2),
            "qwen3" => Some(Self::Qwen3),
            _ => None,
        }
    }

    /// The lower-case name, as in `config.json`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Qwen2 => "qwen2",
            Self::Qwen3 => "qwen3",
        }
    }
}

/// Everything the forward pass needs to know about a decoder-only transformer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub arch: Arch,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub hidden: usize,
    pub intermediate: usize,
    pub vocab: usize,
    pub rms_eps: f32,
    pub rope_theta: f32,
    /// RoPE frequency scaling (`rope_scaling` / `rope_parameters`, GGUF `rope.scaling.*` and
    /// `rope_freqs`); see [`crate::rope`].
    #[serde(default)]
    pub rope_scaling: RopeScaling,
    /// Longest input the model was trained for (`max_position_embeddings`, `context_length`).
    pub max_context: usize,
    pub tie_embeddings: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
}

#[derive(Deserialize)]
struct HfConfig {
    model_type: Option<String>,
    architectures: Option<Vec<String>>,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    hidden_size: usize,
    intermediate_size: usize,
    vocab_size: usize,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_parameters: Option<serde_json::Value>,
    rope_scaling: Option<serde_json::Value>,
    max_position_embeddings: Option<usize>,
    original_max_position_embeddings: Option<usize>,
    tie_word_embeddings: Option<bool>,
    bos_token_id: Option<serde_json::Value>,
    eos_token_id: Option<serde_json::Value>,
}

fn first_id(v: &Option<serde_json::Value>) -> Option<u32> {
    match v {
        Some(serde_json::Value::Number(n)) => n.as_u64().and_then(|x| u32::try_from(x).ok()),
        Some(serde_json::Value::Array(a)) => a
            .first()
            .and_then(|x| x.as_u64())
            .and_then(|x| u32::try_from(x).ok()),
        _ => None,
    }
}

impl ModelConfig {
    /// Reads a Hugging Face `config.json`.
    pub fn from_hf_json(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| CoreError::io(path, e))?;
        let hf: HfConfig = serde_json::from_str(&text)
            .map_err(|e| CoreError::format(path, format!("invalid config.json: {e}")))?;
        let name = hf
            .model_type
            .clone()
            .or_else(|| hf.architectures.as_ref().and_then(|a| a.first().cloned()))
            .unwrap_or_default();
        let arch = Arch::parse(&name)
            .ok_or_else(|| CoreError::unsupported(path, format!("architecture '{name}'")))?;
        let rope_theta = hf
            .rope_theta
            .or_else(|| {
                hf.rope_parameters
                    .as_ref()
                    .and_then(|p| p.get("rope_theta"))
                    .and_then(|t| t.as_f64())
            })
            .unwrap_or(10_000.0);
        let style = KeyStyle::HfJson;
        let n_kv_heads = hf.num_key_value_heads.unwrap_or(hf.num_attention_heads);
        let head_dim = derived_head_dim(
            path,
            style,
            hf.head_dim,
            hf.hidden_size,
            hf.num_attention_heads,
        )?;
        let max_pos = hf.max_position_embeddings.unwrap_or(2048);
        let rope_scaling = crate::rope::from_hf_json(
            path,
            hf.rope_scaling.as_ref(),
            hf.rope_parameters.as_ref(),
            max_pos,
            hf.original_max_position_embeddings,
        )?;
        let section = if hf.rope_scaling.as_ref().is_some_and(|v| v.is_object()) {
            "rope_scaling"
        } else {
            "rope_parameters"
        };
        rope_scaling.validate(path, head_dim, &|k| format!("{section}.{k}"))?;
        // Dynamic NTK exists to run past `max_position_embeddings`: accept `factor` times it.
        let max_context = match &rope_scaling {
            RopeScaling::Dynamic { factor, .. } if *factor > 1.0 => {
                ((max_pos as f64 * factor).floor() as usize).clamp(max_pos, MAX_DIM)
            }
            _ => max_pos,
        };
        let cfg = Self {
            arch,
            n_layers: hf.num_hidden_layers,
            n_heads: hf.num_attention_heads,
            n_kv_heads,
            head_dim,
            hidden: hf.hidden_size,
            intermediate: hf.intermediate_size,
            vocab: hf.vocab_size,
            rms_eps: hf.rms_norm_eps.unwrap_or(1e-6) as f32,
            rope_theta: rope_theta as f32,
            rope_scaling,
            max_context,
            tie_embeddings: hf.tie_word_embeddings.unwrap_or(false),
            bos_token_id: first_id(&hf.bos_token_id),
            eos_token_id: first_id(&hf.eos_token_id),
        };
        cfg.validate_as(path, style)?;
        Ok(cfg)
    }

    /// Query heads per key/value head (the GQA group size).
    pub fn group_size(&self) -> usize {
        self.n_heads / self.n_kv_heads
    }

    /// Parameter count implied by the config (embeddings counted once when tied; saturates at
    /// `u64::MAX` for configs that [`ModelConfig::validate`] would refuse).
    pub fn param_count(&self) -> u64 {
        let (h, d, f) = (
            self.hidden as u128,
            self.head_dim as u128,
            self.intermediate as u128,
        );
        let (nh, nkv) = (self.n_heads as u128, self.n_kv_heads as u128);
        let mut attn = h * nh * d * 2 + h * nkv * d * 2;
        if self.arch == Arch::Qwen2 {
            attn += nh * d + 2 * nkv * d;
        }
        if self.arch == Arch::Qwen3 {
            attn += 2 * d;
        }
        let layer = attn + 3 * h * f + 2 * h;
        let emb = self.vocab as u128 * h;
        let head = if self.tie_embeddings { 0 } else { emb };
        let total = (self.n_layers as u128)
            .saturating_mul(layer)
            .saturating_add(emb + head + h);
        u64::try_from(total).unwrap_or(u64::MAX)
    }
}
