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
    /// Llama 2/3, SmolLM2: decoders without QKV bias.
    Llama,
    /// Mistral: the Llama layer, every layer with the config's sliding window (when set).
    Mistral,
    /// Qwen2 / Qwen2.5: Llama with a bias on the Q, K and V projections.
    Qwen2,
    /// Qwen3: Llama with RMSNorm on each head of Q and K before RoPE.
    Qwen3,
    /// Gemma 2: scaled embeddings, (1 + w) norms before and after attention and MLP, logit
    /// soft-capping, alternating local (sliding-window) and global layers, GELU-tanh MLP.
    Gemma2,
    /// Gemma 3 (text): Gemma 2's layer with per-head q/k norms instead of soft-capping, five
    /// local layers (own RoPE base) per global one.
    Gemma3,
    /// Phi-3: the Llama layer with fused QKV and gate|up projections, optional sliding window.
    Phi3,
    /// OLMo-2: norms after attention and MLP only, q/k RMSNorm over the whole projection.
    Olmo2,
}

impl Arch {
    /// Parses the architecture name used by HF `model_type` and GGUF `general.architecture`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "llama" | "smollm" => Some(Self::Llama),
            "mistral" => Some(Self::Mistral),
            "qwen2" => Some(Self::Qwen2),
            "qwen3" => Some(Self::Qwen3),
            "gemma2" => Some(Self::Gemma2),
            "gemma3" | "gemma3_text" => Some(Self::Gemma3),
            "phi3" => Some(Self::Phi3),
            "olmo2" => Some(Self::Olmo2),
            _ => None,
        }
    }

    /// The lower-case name, as in `config.json`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Mistral => "mistral",
            Self::Qwen2 => "qwen2",
            Self::Qwen3 => "qwen3",
            Self::Gemma2 => "gemma2",
            Self::Gemma3 => "gemma3",
            Self::Phi3 => "phi3",
            Self::Olmo2 => "olmo2",
        }
    }

    /// True for the Gemma families (scaled embeddings, (1 + w) norms, GELU-tanh MLP).
    pub fn is_gemma(self) -> bool {
        matches!(self, Self::Gemma2 | Self::Gemma3)
    }
}

/// What differs between layers and from plain `softmax(q . k / sqrt(d))` causal attention:
/// sliding windows, logit soft-capping, the query scale and a second RoPE base. Empty
/// (the default) for Llama, Qwen2 and Qwen3.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AttentionConfig {
    /// Keys a query sees on a local layer: `(i - window, i]` (`sliding_window`).
    pub sliding_window: Option<usize>,
    /// Which layers are local (sliding-window); empty means every layer when
    /// `sliding_window` is set (Mistral, Phi-3). From `layer_types` / the Gemma pattern.
    pub local_layers: Vec<bool>,
    /// `q . k` is scaled by `query_pre_attn_scalar^-1/2` (Gemma) instead of `head_dim^-1/2`.
    pub query_pre_attn_scalar: Option<f32>,
    /// Attention logit soft-capping `c * tanh(x / c)` (`attn_logit_softcapping`, Gemma 2).
    pub attn_softcap: Option<f32>,
    /// Output logit soft-capping (`final_logit_softcapping`, Gemma 2).
    pub final_softcap: Option<f32>,
    /// RoPE base of the local layers (Gemma 3: `rope_local_base_freq`, 10,000), unscaled.
    pub local_rope_theta: Option<f32>,
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
    /// Sliding windows, soft-capping, query scale and local RoPE base (see [`AttentionConfig`]).
    #[serde(default)]
    pub attention: AttentionConfig,
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
    sliding_window: Option<usize>,
    layer_types: Option<Vec<String>>,
    sliding_window_pattern: Option<usize>,
    query_pre_attn_scalar: Option<f64>,
    attn_logit_softcapping: Option<f64>,
    final_logit_softcapping: Option<f64>,
    rope_local_base_freq: Option<f64>,
    partial_rotary_factor: Option<f64>,
    use_sliding_window: Option<bool>,
    max_window_layers: Option<usize>,
    hidden_act: Option<String>,
    hidden_activation: Option<String>,
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
    /// Floating-point operations of one forward pass over `n` tokens, a multiply and an add
    /// counted as two: `(matrix products, attention)`. The products are every layer's Q, K, V,
    /// output and MLP projections (no LM head: the forward pass ends at the final norm); the
    /// attention is `Q K^T` and `A V` over every causal pair of every q-head (sliding windows
    /// not subtracted: an upper count for windowed layers).
    pub fn forward_flops(&self, n: usize) -> (f64, f64) {
        let (h, d) = (self.hidden as f64, self.head_dim as f64);
        let (qh, kvh) = (self.n_heads as f64, self.n_kv_heads as f64);
        let per_token = 2.0 * h * (qh * d + 2.0 * kvh * d)
            + 2.0 * qh * d * h
            + 2.0 * 3.0 * h * self.intermediate as f64;
        let layers = self.n_layers as f64;
        let pairs = n as f64 * (n as f64 + 1.0) / 2.0;
        (layers * n as f64 * per_token, layers * qh * pairs * 4.0 * d)
    }

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
        // Gemma 3 in transformers 5: `rope_parameters` per layer type; the global layers'
        // entry is the model's RoPE, the local layers' entry gives their base.
        let per_type = hf
            .rope_parameters
            .as_ref()
            .filter(|p| p.get("full_attention").is_some());
        let global_params = per_type
            .and_then(|p| p.get("full_attention"))
            .or(hf.rope_parameters.as_ref());
        let rope_theta = hf
            .rope_theta
            .or_else(|| {
                global_params
                    .and_then(|p| p.get("rope_theta"))
                    .and_then(|t| t.as_f64())
            })
            .unwrap_or(10_000.0);
        let local_theta = hf.rope_local_base_freq.or_else(|| {
            per_type
                .and_then(|p| p.get("sliding_attention"))
                .and_then(|p| p.get("rope_theta"))
                .and_then(|t| t.as_f64())
        });
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
            global_params,
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
            attention: hf_attention(path, arch, &hf, local_theta)?,
        };
        cfg.validate_as(path, style)?;
        Ok(cfg)
    }

    /// The sliding window of layer `l`, `None` for a global layer.
    pub fn window_of(&self, l: usize) -> Option<usize> {
        let a = &self.attention;
        let local = a.local_layers.is_empty() || a.local_layers.get(l).copied().unwrap_or(false);
        a.sliding_window.filter(|_| local)
    }

    /// How layer `l` turns `q . k` into logits (scale, soft-capping, window).
    pub fn score_rule(&self, l: usize) -> crate::attention::ScoreRule {
        let a = &self.attention;
        let denom = a.query_pre_attn_scalar.unwrap_or(self.head_dim as f32);
        crate::attention::ScoreRule {
            scale: 1.0 / denom.sqrt(),
            softcap: a.attn_softcap,
            window: self.window_of(l),
        }
    }

    /// True when layer `l` uses the local RoPE base ([`AttentionConfig::local_rope_theta`]).
    pub fn uses_local_rope(&self, l: usize) -> bool {
        self.attention.local_rope_theta.is_some() && self.window_of(l).is_some()
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
        match self.arch {
            Arch::Qwen3 | Arch::Gemma3 => attn += 2 * d,
            Arch::Olmo2 => attn += (nh + nkv) * d,
            _ => {}
        }
        let norms = match self.arch {
            Arch::Gemma2 | Arch::Gemma3 => 4,
            _ => 2,
        };
        let layer = attn + 3 * h * f + norms * h;
        let emb = self.vocab as u128 * h;
        let head = if self.tie_embeddings { 0 } else { emb };
        let total = (self.n_layers as u128)
            .saturating_mul(layer)
            .saturating_add(emb + head + h);
        u64::try_from(total).unwrap_or(u64::MAX)
    }
}

/// The [`AttentionConfig`] of a `config.json`, by architecture: which keys each family reads
/// (as transformers does), the Gemma layer pattern when `layer_types` is absent, and checks of
/// the activation and of Phi-3's partial rotary factor.
fn hf_attention(
    path: &Path,
    arch: Arch,
    hf: &HfConfig,
    local_theta: Option<f64>,
) -> Result<AttentionConfig> {
    let act = hf.hidden_activation.as_deref().or(hf.hidden_act.as_deref());
    let want = if arch.is_gemma() {
        ["gelu_pytorch_tanh", "gelu_tanh"].as_slice()
    } else {
        ["silu", "swish"].as_slice()
    };
    if let Some(a) = act.filter(|a| !want.contains(a)) {
        return Err(CoreError::unsupported(
            path,
            format!(
                "activation '{a}' for {} (implemented: {})",
                arch.name(),
                want[0]
            ),
        ));
    }
    let prf = hf.partial_rotary_factor.or_else(|| {
        hf.rope_parameters
            .as_ref()
            .and_then(|p| p.get("partial_rotary_factor"))
            .and_then(|v| v.as_f64())
    });
    if let Some(f) = prf.filter(|&f| f != 1.0) {
        return Err(CoreError::unsupported(
            path,
            format!("partial_rotary_factor {f} (only full rotary embeddings are implemented)"),
        ));
    }
    let n = hf.num_hidden_layers;
    let pattern = |every: usize| (0..n).map(|i| (i + 1) % every != 0).collect::<Vec<_>>();
    // Qwen2/Qwen3: a window only with `use_sliding_window`, on the layers from
    // `max_window_layers` on (or as `layer_types` says), as transformers does.
    let qwen_window =
        matches!(arch, Arch::Qwen2 | Arch::Qwen3) && hf.use_sliding_window == Some(true);
    let local_layers = match (&hf.layer_types, arch) {
        (None, Arch::Qwen2 | Arch::Qwen3) if qwen_window => {
            let from = hf.max_window_layers.unwrap_or(28);
            (0..n).map(|i| i >= from).collect()
        }
        (_, Arch::Qwen2 | Arch::Qwen3) if !qwen_window => Vec::new(),
        (_, Arch::Llama | Arch::Olmo2) => Vec::new(),
        (Some(types), _) => {
            if types.len() != n {
                return Err(CoreError::bad_value(
                    path,
                    "layer_types",
                    format!("{} entries", types.len()),
                    format!("num_hidden_layers is {n}"),
                ));
            }
            types
                .iter()
                .map(|t| match t.as_str() {
                    "sliding_attention" => Ok(true),
                    "full_attention" => Ok(false),
                    other => Err(CoreError::unsupported(
                        path,
                        format!("layer type '{other}' in layer_types"),
                    )),
                })
                .collect::<Result<_>>()?
        }
        (None, Arch::Gemma2) => pattern(2),
        (None, Arch::Gemma3) => pattern(hf.sliding_window_pattern.unwrap_or(6)),
        (None, _) => Vec::new(),
    };
    let gemma = arch.is_gemma();
    let sliding_window = match arch {
        Arch::Mistral | Arch::Phi3 | Arch::Gemma2 | Arch::Gemma3 => hf.sliding_window,
        Arch::Qwen2 | Arch::Qwen3 if qwen_window => hf.sliding_window,
        _ => None,
    };
    Ok(AttentionConfig {
        sliding_window,
        local_layers,
        query_pre_attn_scalar: hf.query_pre_attn_scalar.filter(|_| gemma).map(|x| x as f32),
        attn_softcap: hf
            .attn_logit_softcapping
            .filter(|_| gemma)
            .map(|x| x as f32),
        final_softcap: hf
            .final_logit_softcapping
            .filter(|_| gemma)
            .map(|x| x as f32),
        local_rope_theta: local_theta
            .filter(|_| arch == Arch::Gemma3)
            .map(|x| x as f32),
    })
}
