//! Reading a [`RopeScaling`] from a Hugging Face `config.json` (v4 `rope_scaling` or v5
//! `rope_parameters`, type under `rope_type` or `type`) or from GGUF metadata (llama.cpp's
//! `<arch>.rope.scaling.*` keys and the `rope_freqs.weight` tensor of Llama 3 conversions).

use std::path::Path;

use serde_json::{Map, Value};

use super::{llama3_divisors, yarn_get_mscale, RopeScaling};
use crate::error::{CoreError, Result};
use crate::gguf::GgufFile;

/// Types transformers knows that are not implemented here (named in the error).
const KNOWN_UNSUPPORTED: &[&str] = &["longrope", "proportional", "su", "mrope"];

fn unknown(path: &Path, key: &str, kind: &str) -> CoreError {
    let why = if KNOWN_UNSUPPORTED.contains(&kind) {
        "is not implemented"
    } else {
        "is unknown"
    };
    CoreError::unsupported(
        path,
        format!("{key} '{kind}' {why} (implemented: default, linear, dynamic, llama3, yarn)"),
    )
}

/// The scaling of a `config.json`. `rope_scaling` wins over `rope_parameters` (as in
/// transformers); `max_pos` is `max_position_embeddings` and `top_original` a top-level
/// `original_max_position_embeddings` (which, as in transformers, overrides the dict's).
pub(crate) fn from_hf_json(
    path: &Path,
    rope_scaling: Option<&Value>,
    rope_parameters: Option<&Value>,
    max_pos: usize,
    top_original: Option<usize>,
) -> Result<RopeScaling> {
    let (section, obj) = match (rope_scaling, rope_parameters) {
        (Some(Value::Object(o)), _) => ("rope_scaling", o),
        (_, Some(Value::Object(o))) => ("rope_parameters", o),
        _ => return Ok(RopeScaling::Default),
    };
    let key = |k: &str| format!("{section}.{k}");
    let kind_key = if obj.contains_key("rope_type") {
        "rope_type"
    } else {
        "type"
    };
    let kind = match obj.get(kind_key) {
        None | Some(Value::Null) => "default",
        Some(Value::String(s)) => s.as_str(),
        Some(v) => {
            return Err(CoreError::format(
                path,
                format!("{} is {v}, not a string", key(kind_key)),
            ))
        }
    };
    let num = |k: &str| -> Result<Option<f64>> { number(path, obj, k, &key) };
    let need = |k: &str| -> Result<f64> {
        num(k)?
            .ok_or_else(|| CoreError::format(path, format!("{kind} RoPE scaling needs {}", key(k))))
    };
    let original = || -> Result<usize> {
        if let Some(o) = top_original {
            return Ok(o);
        }
        match num("original_max_position_embeddings")? {
            Some(v) if v >= 1.0 && v.fract() == 0.0 && v <= crate::config::MAX_DIM as f64 => {
                Ok(v as usize)
            }
            Some(v) => Err(CoreError::bad_value(
                path,
                key("original_max_position_embeddings"),
                v,
                "must be a whole number of positions of at least 1",
            )),
            None => Ok(max_pos),
        }
    };
    let scaling = match kind {
        "default" | "none" => RopeScaling::Default,
        "linear" => RopeScaling::Linear {
            factor: need("factor")?,
        },
        "dynamic" => RopeScaling::Dynamic {
            factor: need("factor")?,
            original_max: max_pos,
        },
        "llama3" => RopeScaling::Llama3 {
            factor: need("factor")?,
            low_freq_factor: need("low_freq_factor")?,
            high_freq_factor: need("high_freq_factor")?,
            original_max: original()?,
        },
        "yarn" => {
            let original_max = original()?;
            let factor = need("factor")?;
            let attention_factor = match num("attention_factor")? {
                Some(a) => a,
                None => match (num("mscale")?, num("mscale_all_dim")?) {
                    (Some(m), Some(a)) if m != 0.0 && a != 0.0 => {
                        yarn_get_mscale(factor, m) / yarn_get_mscale(factor, a)
                    }
                    _ => yarn_get_mscale(factor, 1.0),
                },
            };
            let truncate = match obj.get("truncate") {
                None | Some(Value::Null) => true,
                Some(Value::Bool(b)) => *b,
                Some(v) => {
                    return Err(CoreError::format(
                        path,
                        format!("{} is {v}, not true or false", key("truncate")),
                    ))
                }
            };
            // transformers: `get("beta_fast") or 32` (0 means the default too).
            let or = |v: Option<f64>, d: f64| v.filter(|&x| x != 0.0).unwrap_or(d);
            RopeScaling::Yarn {
                factor,
                original_max,
                beta_fast: or(num("beta_fast")?, 32.0),
                beta_slow: or(num("beta_slow")?, 1.0),
                attention_factor,
                truncate,
            }
        }
        other => return Err(unknown(path, &key(kind_key), other)),
    };
    Ok(scaling)
}

fn number(
    path: &Path,
    obj: &Map<String, Value>,
    k: &str,
    key: &dyn Fn(&str) -> String,
) -> Result<Option<f64>> {
    match obj.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| CoreError::format(path, format!("{} is {v}, not a number", key(k)))),
    }
}

/// The scaling of a GGUF file: `<arch>.rope.scaling.type` (`none`, `linear`, `yarn`, and
/// `llama3` as some converters write it) with its `.factor`, `.original_context_length`,
/// `.attn_factor`, `.yarn_beta_fast`, `.yarn_beta_slow` keys, and the `rope_freqs.weight`
/// tensor (per-pair frequency divisors; checked against the llama3 formula when the metadata
/// gives the llama3 parameters).
pub(crate) fn from_gguf(
    f: &GgufFile,
    arch: &str,
    head_dim: usize,
    theta: f32,
    context: usize,
) -> Result<RopeScaling> {
    let path = f.path.as_path();
    let key = |k: &str| format!("{arch}.rope.scaling.{k}");
    let num = |k: &str| -> Result<Option<f64>> {
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
    let kind = match f.get(&key("type")) {
        None => "none",
        Some(v) => v.as_str().ok_or_else(|| {
            CoreError::format(
                path,
                format!("metadata '{}' is {v:?}, not a string", key("type")),
            )
        })?,
    };
    let need = |k: &str| -> Result<f64> {
        num(k)?.ok_or_else(|| {
            CoreError::format(
                path,
                format!("{kind} RoPE scaling needs metadata '{}'", key(k)),
            )
        })
    };
    let original = || -> Result<usize> {
        Ok(match num("original_context_length")? {
            Some(v) if v >= 1.0 && v.fract() == 0.0 && v <= crate::config::MAX_DIM as f64 => {
                v as usize
            }
            Some(v) => {
                return Err(CoreError::bad_value(
                    path,
                    key("original_context_length"),
                    v,
                    "must be a whole number of positions of at least 1",
                ))
            }
            None => context,
        })
    };
    let freqs = match f.tensor_info("rope_freqs.weight") {
        Some(info) => Some(f.tensor_f32(info)?.data),
        None => None,
    };
    let from_meta = match kind {
        "none" | "default" => RopeScaling::Default,
        "linear" => RopeScaling::Linear {
            factor: need("factor")?,
        },
        "llama3" => RopeScaling::Llama3 {
            factor: need("factor")?,
            low_freq_factor: num("low_freq_factor")?.unwrap_or(1.0),
            high_freq_factor: num("high_freq_factor")?.unwrap_or(4.0),
            original_max: original()?,
        },
        "yarn" => {
            let factor = need("factor")?;
            RopeScaling::Yarn {
                factor,
                original_max: original()?,
                beta_fast: num("yarn_beta_fast")?.unwrap_or(32.0),
                beta_slow: num("yarn_beta_slow")?.unwrap_or(1.0),
                attention_factor: num("attn_factor")?.unwrap_or(1.0) * yarn_get_mscale(factor, 1.0),
                truncate: true,
            }
        }
        other => return Err(unknown(path, &key("type"), other)),
    };
    let Some(divisors) = freqs else {
        return Ok(from_meta);
    };
    match &from_meta {
        RopeScaling::Default => {}
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max,
        } => {
            from_meta.validate(path, head_dim, &key)?;
            let want = llama3_divisors(
                head_dim,
                theta as f64,
                *factor,
                *low_freq_factor,
                *high_freq_factor,
                *original_max,
            );
            if let Some((i, (&got, w))) = divisors
                .iter()
                .zip(&want)
                .enumerate()
                .find(|(_, (&g, &w))| ((g as f64) - w).abs() > 1e-4 * w.abs())
            {
                return Err(CoreError::format(
                    path,
                    format!(
                        "tensor 'rope_freqs.weight' value {i} is {got}, but the llama3 \
                         parameters in the metadata give {w}"
                    ),
                ));
            }
        }
        other => {
            return Err(CoreError::unsupported(
                path,
                format!(
                    "a 'rope_freqs' tensor together with {} RoPE scaling",
                    other.name()
                ),
            ))
        }
    }
    // An all-ones tensor is plain RoPE.
    if divisors.iter().all(|&q| q == 1.0) && from_meta == RopeScaling::Default {
        return Ok(RopeScaling::Default);
    }
    Ok(RopeScaling::Divisors { divisors })
}
