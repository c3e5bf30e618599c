//! A whole model from one GGUF file: [`ModelConfig`] from the metadata and f32 [`Weights`]
//! under Hugging Face names, dequantized in parallel.

use std::path::Path;

use rayon::prelude::*;

use super::reader::{GgufFile, GgufTensorInfo};
use crate::config::{derived_head_dim, Arch, KeyStyle, ModelConfig};
use crate::error::{CoreError, Result};
use crate::tensor::{HostTensor, Weights};

/// Loads config, weights and the opened file (kept for its tokenizer metadata).
///
/// RoPE scaling comes from `<arch>.rope.scaling.*` and the `rope_freqs.weight` tensor (see
/// [`crate::rope`]). For `llama` and `mistral` files the Q/K row permutation applied by llama.cpp's
/// `convert_hf_to_gguf.py` is undone, so the weights are in HF order (rotate-half RoPE).
pub fn load_gguf_model(path: &Path) -> Result<(ModelConfig, Weights, GgufFile)> {
    let file = GgufFile::open(path)?;
    let cfg = config_from_metadata(&file)?;
    let jobs: Vec<(&GgufTensorInfo, String)> = file
        .tensors
        .iter()
        .filter_map(|t| hf_name_for(cfg.arch, &t.name).map(|n| (t, n)))
        .collect();
    let loaded: Vec<(String, HostTensor, &'static str)> = jobs
        .par_iter()
        .map(|(info, hf)| {
            let mut t = file.tensor_f32(info)?;
            if matches!(cfg.arch, Arch::Llama | Arch::Mistral) {
                let n_head = if hf.contains(".self_attn.q_proj.") {
                    Some(cfg.n_heads)
                } else if hf.contains(".self_attn.k_proj.") {
                    Some(cfg.n_kv_heads)
                } else {
                    None
                };
                if let Some(n_head) = n_head {
                    // Check the shape first: the permutation walks every row, and a tensor with
                    // no elements may still claim 2^40 rows.
                    let want = [n_head * cfg.head_dim, cfg.hidden];
                    if t.shape != want {
                        return Err(CoreError::format(
                            path,
                            format!(
                                "tensor '{}' has shape {:?}; the config needs {want:?} \
                                 ({n_head} heads x head dim {} by hidden {})",
                                info.name, t.shape, cfg.head_dim, cfg.hidden
                            ),
                        ));
                    }
                    unpermute_rows(&mut t, n_head).map_err(|m| {
                        CoreError::format(path, format!("tensor '{}': {m}", info.name))
                    })?;
                }
            }
            Ok((hf.clone(), t, info.ggml_type.name()))
        })
        .collect::<Result<_>>()?;
    let mut weights = Weights::new(path);
    // llama.cpp's converter stores Gemma's norm weights as `1 + w`.
    weights.norms_plus_one = cfg.arch.is_gemma();
    for (name, t, ty) in loaded {
        *weights.dtypes.entry(ty.to_string()).or_insert(0) += 1;
        weights.tensors.insert(name, t);
    }
    Ok((cfg, weights, file))
}

/// The Hugging Face name of a GGUF tensor of a Llama-layout file, `None` for tensors the
/// models do not use.
pub fn hf_name(gguf: &str) -> Option<String> {
    hf_name_for(Arch::Llama, gguf)
}

/// The Hugging Face name of a GGUF tensor of architecture `arch` (llama.cpp names the norm
/// before the MLP `ffn_norm` in every family, while transformers calls it
/// `post_attention_layernorm` in Llama-style layers and `pre_feedforward_layernorm` in Gemma;
/// Phi-3 keeps its fused `attn_qkv` and gate|up `ffn_up`).
pub fn hf_name_for(arch: Arch, gguf: &str) -> Option<String> {
    let fixed = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(n) = fixed {
        return Some(n.to_string());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (part, suffix) = rest.rsplit_once('.')?;
    if suffix != "weight" && suffix != "bias" {
        return None;
    }
    let hf = match part {
        "attn_norm" => "input_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "attn_q_norm" => "self_attn.q_norm",
        "attn_k_norm" => "self_attn.k_norm",
        "ffn_norm" if arch.is_gemma() => "pre_feedforward_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "post_attention_norm" => "post_attention_layernorm",
        "post_ffw_norm" => "post_feedforward_layernorm",
        "attn_qkv" if arch == Arch::Phi3 => "self_attn.qkv_proj",
        "ffn_up" if arch == Arch::Phi3 => "mlp.gate_up_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{suffix}"))
}

/// Inverts `w.reshape(n_head, 2, rows / n_head / 2, ...).swapaxes(1, 2).reshape(w.shape)`
/// over the rows (dimension 0) of `t`.
pub fn unpermute_rows(t: &mut HostTensor, n_head: usize) -> std::result::Result<(), String> {
    let rows = t.shape.first().copied().unwrap_or(0);
    if n_head == 0 || rows % (2 * n_head) != 0 {
        return Err(format!(
            "{rows} rows cannot be split into {n_head} heads of rotary pairs"
        ));
    }
    let cols = t.data.len() / rows.max(1);
    let (hd, half) = (rows / n_head, rows / n_head / 2);
    let mut out = vec![0f32; t.data.len()];
    for h in 0..n_head {
        for i in 0..half {
            for j in 0..2 {
                // GGUF row h*hd + 2i + j holds HF row h*hd + j*half + i.
                let src = (h * hd + 2 * i + j) * cols;
                let dst = (h * hd + j * half + i) * cols;
                out[dst..dst + cols].copy_from_slice(&t.data[src..src + cols]);
            }
        }
    }
    t.data = out;
    Ok(())
}

fn config_from_metadata(f: &GgufFile) -> Result<ModelConfig> {
    let path = f.path.as_path();
    let arch_name = f
        .get("general.architecture")
        .and_then(|v| v.as_str())
        .ok_or_else(|| CoreError::format(path, "metadata has no general.architecture string"))?;
    let arch = Arch::parse(arch_name)
        .ok_or_else(|| CoreError::unsupported(path, format!("architecture '{arch_name}'")))?;
    // Phi-3's long-context RoPE (`longrope`, per-pair factor tensors) is not implemented.
    if f.tensor_info("rope_factors_long.weight").is_some() {
        return Err(CoreError::unsupported(
            path,
            "RoPE scaling 'longrope' (tensors rope_factors_long/short; implemented: default, \
             linear, dynamic, llama3, yarn)",
        ));
    }
    let key = |k: &str| format!("{arch_name}.{k}");
    let uint = |k: &str| -> Result<Option<usize>> {
        match f.get(&key(k)) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(|x| Some(usize::try_from(x).unwrap_or(usize::MAX)))
                .ok_or_else(|| {
                    CoreError::format(
                        path,
                        format!("metadata '{}' is {v:?}, not an integer", key(k)),
                    )
                }),
        }
    };
    let float = |k: &str| -> Result<Option<f64>> {
        match f.get(&key(k)) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| {
                CoreError::format(
                    path,
                    format!("metadata '{}' is {v:?}, not a number", key(k)),
                )
            }),
        }
    };
    let need = |k: &str| -> Result<usize> {
        uint(k)?.ok_or_else(|| CoreError::format(path, format!("metadata lacks '{}'", key(k))))
    };
    let style = KeyStyle::Gguf { arch: arch_name };
    let hidden = need("embedding_length")?;
    let n_heads = need("attention.head_count")?;
    let head_dim = derived_head_dim(path, style, uint("attention.key_length")?, hidden, n_heads)?;
    if let Some(v) = uint("attention.value_length")? {
        if v != head_dim {
            return Err(CoreError::bad_value(
                path,
                key("attention.value_length"),
                v,
                format!(
                    "differs from the key length {head_dim}; only equal key and value head \
                     sizes are implemented"
                ),
            ));
        }
    }
    let embd = f
        .tensor_info("token_embd.weight")
        .ok_or_else(|| CoreError::format(path, "missing tensor 'token_embd.weight'"))?;
    let vocab = match embd.dims.as_slice() {
        [_, rows] => usize::try_from(*rows).unwrap_or(usize::MAX),
        d => {
            return Err(CoreError::format(
                path,
                format!("token_embd.weight has dims {d:?}, expected 2"),
            ))
        }
    };
    let token = |k: &str| {
        f.get(&format!("tokenizer.ggml.{k}"))
            .and_then(|v| v.as_u64())
            .and_then(|x| u32::try_from(x).ok())
    };
    let rope_theta = float("rope.freq_base")?.unwrap_or(10_000.0) as f32;
    let max_context = uint("context_length")?.unwrap_or(2048);
    let rope_scaling = crate::rope::from_gguf(f, arch_name, head_dim, rope_theta, max_context)?;
    let cfg = ModelConfig {
        arch,
        n_layers: need("block_count")?,
        n_heads,
        n_kv_heads: uint("attention.head_count_kv")?.unwrap_or(n_heads),
        head_dim,
        hidden,
        intermediate: need("feed_forward_length")?,
        vocab,
        rms_eps: float("attention.layer_norm_rms_epsilon")?.unwrap_or(1e-6) as f32,
        rope_theta,
        rope_scaling,
        max_context,
        tie_embeddings: f.tensor_info("output.weight").is_none(),
        bos_token_id: token("bos_token_id"),
        eos_token_id: token("eos_token_id"),
        attention: Default::default(),
    };
    let pattern = f.get(&key("attention.sliding_window_pattern"));
    let attention = gguf_attention(path, &cfg, &uint, &float, pattern)?;
    let cfg = ModelConfig { attention, ..cfg };
    cfg.validate_as(path, style)?;
    Ok(cfg)
}

type Meta<'a, T> = &'a dyn Fn(&str) -> Result<Option<T>>;

/// Sliding windows, soft-capping and the query scale as llama.cpp reads them:
/// `<arch>.attention.sliding_window` (Gemma 2/3, Mistral, Phi-3, OLMo-2) with
/// `attention.sliding_window_pattern` where given, Gemma 2's `attn_logit_softcapping` and
/// `final_logit_softcapping`, the Gemma layer patterns (Gemma 2: even layers local; Gemma 3:
/// five local per global), Gemma 3's local RoPE base of 10,000, and the query scale
/// `head_dim^-1/2` (`(hidden / heads)^-1/2` for the 27B models, as llama.cpp does).
fn gguf_attention(
    path: &Path,
    cfg: &ModelConfig,
    uint: Meta<'_, usize>,
    float: Meta<'_, f64>,
    pattern_value: Option<&super::GgufValue>,
) -> Result<crate::config::AttentionConfig> {
    let mut a = crate::config::AttentionConfig::default();
    let n = cfg.n_layers;
    let pattern = |every: usize| (0..n).map(|i| (i + 1) % every != 0).collect::<Vec<_>>();
    let every = match cfg.arch {
        Arch::Gemma2 => 2,
        Arch::Gemma3 => 6,
        // Mistral, Phi-3: every layer; OLMo-2 (OLMo 3 converted as olmo2) names its layers.
        _ => 1,
    };
    if !matches!(
        cfg.arch,
        Arch::Gemma2 | Arch::Gemma3 | Arch::Mistral | Arch::Phi3 | Arch::Olmo2
    ) {
        return Ok(a);
    }
    if cfg.arch.is_gemma() {
        let big = (cfg.arch == Arch::Gemma2 && n == 46) || (cfg.arch == Arch::Gemma3 && n == 62);
        a.query_pre_attn_scalar = Some(if big {
            (cfg.hidden / cfg.n_heads) as f32
        } else {
            cfg.head_dim as f32
        });
        a.attn_softcap = float("attn_logit_softcapping")?.map(|x| x as f32);
        a.final_softcap = float("final_logit_softcapping")?.map(|x| x as f32);
    }
    if cfg.arch == Arch::Gemma3 {
        a.local_rope_theta = Some(10_000.0);
    }
    a.sliding_window = uint("attention.sliding_window")?;
    if a.sliding_window.is_none() {
        return Ok(a);
    }
    a.local_layers = match pattern_value {
        None if every == 1 => Vec::new(),
        None => pattern(every),
        // `sliding_window_pattern`: a period, or one flag per layer (true = local).
        Some(v) => match (v.as_u64(), v.as_array()) {
            (Some(p), _) => pattern(usize::try_from(p).unwrap_or(usize::MAX).max(1)),
            (_, Some(flags)) => flags
                .iter()
                .map(|x| matches!(x, super::GgufValue::Bool(true)))
                .collect(),
            _ => {
                return Err(CoreError::format(
                    path,
                    "metadata 'attention.sliding_window_pattern' is neither a number nor an \
                     array of flags",
                ))
            }
        },
    };
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_hf() {
        assert_eq!(
            hf_name("blk.12.attn_k.bias").as_deref(),
            Some("model.layers.12.self_attn.k_proj.bias")
        );
        assert_eq!(
            hf_name("blk.0.ffn_norm.weight").as_deref(),
            Some("model.layers.0.post_attention_layernorm.weight")
        );
        assert_eq!(hf_name("rope_freqs.weight"), None);
        assert_eq!(hf_name("blk.x.attn_q.weight"), None);
        assert_eq!(hf_name("blk.0.attn_q.scale"), None);
    }

    #[test]
    fn unpermute_inverts_the_convert_permutation() {
        // 2 heads of head dim 4, 1 column: HF rows 0..8.
        let hf: Vec<f32> = (0..8).map(|x| x as f32).collect();
        // permute: reshape(2, 2, 2).swapaxes(1, 2) -> per head [0, 2, 1, 3].
        let gguf = vec![0., 2., 1., 3., 4., 6., 5., 7.];
        let mut t = HostTensor::new(vec![8, 1], gguf).expect("shape");
        unpermute_rows(&mut t, 2).expect("unpermute");
        assert_eq!(t.data, hf);
        assert!(unpermute_rows(&mut t, 3).is_err());
    }
}
