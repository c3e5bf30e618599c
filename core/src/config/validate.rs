//! Range and consistency checks of a [`ModelConfig`]: every number read from a `config.json` or
//! GGUF metadata must be finite and in range before a model is built, so a bad file fails at load
//! with the key, the value and the file named, instead of running to NaN or all-1.0 results.

use std::path::Path;

use super::ModelConfig;
use crate::error::{CoreError, Result};

/// Largest count accepted for any single dimension (layers, heads, widths, vocabulary, context).
/// Far above any real model; it keeps products of two dimensions inside `u64`/`usize` and RoPE
/// tables (`max_context x head_dim / 2`) allocatable.
pub const MAX_DIM: usize = 1 << 24;

/// Largest RMSNorm epsilon accepted (real models use 1e-6 .. 1e-5).
pub const MAX_RMS_EPS: f32 = 1.0;

/// How the fields of a [`ModelConfig`] are spelled in the file they came from, so errors name the
/// key the user can find in that file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStyle<'a> {
    /// The [`ModelConfig`] field names (`n_heads`, `rope_theta`, ...).
    Field,
    /// Hugging Face `config.json` keys (`num_attention_heads`, `rope_theta`, ...).
    HfJson,
    /// GGUF metadata keys under the architecture prefix (`llama.attention.head_count`, ...).
    Gguf { arch: &'a str },
}

impl KeyStyle<'_> {
    /// The key of [`ModelConfig`] field `field` in this style.
    pub fn key(self, field: &str) -> String {
        match self {
            Self::Field => field.to_string(),
            Self::HfJson => match field {
                "n_layers" => "num_hidden_layers",
                "n_heads" => "num_attention_heads",
                "n_kv_heads" => "num_key_value_heads",
                "hidden" => "hidden_size",
                "intermediate" => "intermediate_size",
                "vocab" => "vocab_size",
                "rms_eps" => "rms_norm_eps",
                "max_context" => "max_position_embeddings",
                other => other,
            }
            .to_string(),
            Self::Gguf { arch } => match field {
                "vocab" => "rows of tensor 'token_embd.weight'".to_string(),
                f => {
                    let k = match f {
                        "n_layers" => "block_count",
                        "n_heads" => "attention.head_count",
                        "n_kv_heads" => "attention.head_count_kv",
                        "head_dim" => "attention.key_length",
                        "hidden" => "embedding_length",
                        "intermediate" => "feed_forward_length",
                        "rms_eps" => "attention.layer_norm_rms_epsilon",
                        "rope_theta" => "rope.freq_base",
                        "max_context" => "context_length",
                        other => other,
                    };
                    format!("{arch}.{k}")
                }
            },
        }
    }
}

/// The key of an [`super::AttentionConfig`] field (`config.json` spelling) in `style`.
fn attention_key(style: KeyStyle<'_>, k: &str) -> String {
    match style {
        KeyStyle::Gguf { arch } => match k {
            "sliding_window" => format!("{arch}.attention.sliding_window"),
            "attn_logit_softcapping" => format!("{arch}.attn_logit_softcapping"),
            "final_logit_softcapping" => format!("{arch}.final_logit_softcapping"),
            other => other.to_string(),
        },
        _ => k.to_string(),
    }
}

/// The head dimension when the file does not give one: `hidden / n_heads`, which must divide
/// exactly (the architecture then requires `hidden == n_heads * head_dim`).
pub(crate) fn derived_head_dim(
    path: &Path,
    style: KeyStyle<'_>,
    explicit: Option<usize>,
    hidden: usize,
    n_heads: usize,
) -> Result<usize> {
    if let Some(d) = explicit {
        return Ok(d);
    }
    if n_heads == 0 {
        return Err(CoreError::bad_value(
            path,
            style.key("n_heads"),
            0,
            "must be at least 1",
        ));
    }
    if !hidden.is_multiple_of(n_heads) {
        return Err(CoreError::bad_value(
            path,
            style.key("hidden"),
            hidden,
            format!(
                "not a multiple of {} = {n_heads}, and no {} is given to say the head size",
                style.key("n_heads"),
                style.key("head_dim")
            ),
        ));
    }
    Ok(hidden / n_heads)
}

impl ModelConfig {
    /// Checks the numbers for range and consistency; `path` names the file they came from and
    /// errors use the [`ModelConfig`] field names. See [`ModelConfig::validate_as`].
    pub fn validate(&self, path: &Path) -> Result<()> {
        self.validate_as(path, KeyStyle::Field)
    }

    /// Checks every number: counts in `1..=`[`MAX_DIM`], `n_heads` a multiple of `n_kv_heads`,
    /// `head_dim` even (RoPE rotates pairs), `rms_eps` finite in `(0, `[`MAX_RMS_EPS`]`)`,
    /// `rope_theta` finite and > 0, and the weight matrices' element counts representable.
    /// Errors are [`CoreError::BadValue`] naming `path` and the key as spelled in `style`.
    pub fn validate_as(&self, path: &Path, style: KeyStyle<'_>) -> Result<()> {
        let bad = |field: &str, value: &dyn std::fmt::Display, why: String| {
            Err(CoreError::bad_value(path, style.key(field), value, why))
        };
        let counts = [
            ("n_layers", self.n_layers),
            ("n_heads", self.n_heads),
            ("n_kv_heads", self.n_kv_heads),
            ("head_dim", self.head_dim),
            ("hidden", self.hidden),
            ("intermediate", self.intermediate),
            ("vocab", self.vocab),
            ("max_context", self.max_context),
        ];
        for (field, v) in counts {
            if v == 0 {
                return bad(field, &v, "must be at least 1".into());
            }
            if v > MAX_DIM {
                return bad(
                    field,
                    &v,
                    format!("absurdly large (more than {MAX_DIM}); corrupt file?"),
                );
            }
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return bad(
                "n_heads",
                &self.n_heads,
                format!(
                    "not a multiple of {} = {} (grouped-query attention needs whole groups)",
                    style.key("n_kv_heads"),
                    self.n_kv_heads
                ),
            );
        }
        if !self.head_dim.is_multiple_of(2) {
            return bad(
                "head_dim",
                &self.head_dim,
                "odd; RoPE rotates pairs of dimensions".into(),
            );
        }
        let eps = self.rms_eps;
        if !(eps.is_finite() && eps > 0.0 && eps < MAX_RMS_EPS) {
            return bad(
                "rms_eps",
                &eps,
                format!("the RMSNorm epsilon must be a finite number in (0, {MAX_RMS_EPS})"),
            );
        }
        let theta = self.rope_theta;
        if !(theta.is_finite() && theta > 0.0) {
            return bad(
                "rope_theta",
                &theta,
                "the RoPE base must be a finite number > 0".into(),
            );
        }
        let a = &self.attention;
        if let Some(w) = a.sliding_window {
            if w == 0 || w > MAX_DIM {
                return Err(CoreError::bad_value(
                    path,
                    attention_key(style, "sliding_window"),
                    w,
                    format!("the sliding window must be 1..={MAX_DIM} keys"),
                ));
            }
        }
        if !a.local_layers.is_empty() && a.local_layers.len() != self.n_layers {
            return Err(CoreError::bad_value(
                path,
                attention_key(style, "layer_types"),
                format!("{} entries", a.local_layers.len()),
                format!("the model has {} layers", self.n_layers),
            ));
        }
        let positive = [
            ("query_pre_attn_scalar", a.query_pre_attn_scalar),
            ("attn_logit_softcapping", a.attn_softcap),
            ("final_logit_softcapping", a.final_softcap),
            ("rope_local_base_freq", a.local_rope_theta),
        ];
        for (k, v) in positive {
            if let Some(v) = v.filter(|v| !(v.is_finite() && *v > 0.0)) {
                return Err(CoreError::bad_value(
                    path,
                    attention_key(style, k),
                    v,
                    "must be a finite number > 0",
                ));
            }
        }
        let scaling_key = |k: &str| match style {
            KeyStyle::Gguf { arch } => format!("{arch}.rope.scaling.{k}"),
            _ => format!("rope_scaling.{k}"),
        };
        self.rope_scaling
            .validate(path, self.head_dim, &scaling_key)?;
        // The largest weight matrices must have a representable element count.
        let (h, d) = (self.hidden as u64, self.head_dim as u64);
        let mats = [
            ("n_heads", self.n_heads as u64 * d * h),
            ("intermediate", self.intermediate as u64 * h),
            ("vocab", self.vocab as u64 * h),
        ];
        for (field, elems) in mats {
            if elems > (isize::MAX as u64) / 4 {
                let v = match field {
                    "n_heads" => self.n_heads,
                    "intermediate" => self.intermediate,
                    _ => self.vocab,
                };
                return bad(
                    field,
                    &v,
                    format!(
                        "with {} = {} it implies a weight of {elems} elements",
                        style.key("hidden"),
                        self.hidden
                    ),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Arch;

    fn cfg() -> ModelConfig {
        ModelConfig {
            arch: Arch::Llama,
            n_layers: 2,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 16,
            hidden: 64,
            intermediate: 128,
            vocab: 100,
            rms_eps: 1e-5,
            rope_theta: 10_000.0,
            rope_scaling: Default::default(),
            max_context: 256,
            tie_embeddings: true,
            bos_token_id: None,
            eos_token_id: None,
            attention: Default::default(),
        }
    }

    fn err(c: &ModelConfig, style: KeyStyle<'_>) -> String {
        c.validate_as(Path::new("m/config.json"), style)
            .expect_err("must fail")
            .to_string()
    }

    #[test]
    fn good_config_passes() {
        cfg().validate(Path::new("x")).expect("valid");
    }

    #[test]
    fn every_bad_number_names_key_value_and_file() {
        type Edit = Box<dyn Fn(&mut ModelConfig)>;
        let cases: Vec<(Edit, &str, &str)> = vec![
            (
                Box::new(|c| c.rope_theta = f32::NAN),
                "rope_theta = NaN",
                "RoPE",
            ),
            (Box::new(|c| c.rope_theta = 0.0), "rope_theta = 0", "> 0"),
            (Box::new(|c| c.rope_theta = -1.0), "rope_theta = -1", "> 0"),
            (
                Box::new(|c| c.rope_theta = f32::INFINITY),
                "rope_theta = inf",
                "finite",
            ),
            (Box::new(|c| c.rms_eps = 0.0), "rms_norm_eps = 0", "epsilon"),
            (
                Box::new(|c| c.rms_eps = -1e-6),
                "rms_norm_eps = -0.000001",
                "epsilon",
            ),
            (
                Box::new(|c| c.rms_eps = f32::NAN),
                "rms_norm_eps = NaN",
                "epsilon",
            ),
            (Box::new(|c| c.rms_eps = 5.0), "rms_norm_eps = 5", "epsilon"),
            (
                Box::new(|c| c.n_heads = 0),
                "num_attention_heads = 0",
                "at least 1",
            ),
            (
                Box::new(|c| c.n_kv_heads = 0),
                "num_key_value_heads = 0",
                "at least 1",
            ),
            (
                Box::new(|c| c.n_kv_heads = 3),
                "num_attention_heads = 4",
                "multiple",
            ),
            (Box::new(|c| c.head_dim = 15), "head_dim = 15", "pairs"),
            (Box::new(|c| c.vocab = 0), "vocab_size = 0", "at least 1"),
            (
                Box::new(|c| c.n_layers = 0),
                "num_hidden_layers = 0",
                "at least 1",
            ),
            (
                Box::new(|c| c.max_context = 0),
                "max_position_embeddings = 0",
                "at least 1",
            ),
            (
                Box::new(|c| c.max_context = usize::MAX),
                "max_position_embeddings",
                "absurd",
            ),
            (
                Box::new(|c| c.intermediate = 0),
                "intermediate_size = 0",
                "at least 1",
            ),
            (
                Box::new(|c| c.attention.sliding_window = Some(0)),
                "sliding_window = 0",
                "window",
            ),
            (
                Box::new(|c| c.attention.local_layers = vec![true]),
                "layer_types = 1 entries",
                "2 layers",
            ),
            (
                Box::new(|c| c.attention.attn_softcap = Some(f32::NAN)),
                "attn_logit_softcapping = NaN",
                "> 0",
            ),
            (
                Box::new(|c| c.attention.query_pre_attn_scalar = Some(0.0)),
                "query_pre_attn_scalar = 0",
                "> 0",
            ),
        ];
        for (edit, key_value, why) in cases {
            let mut c = cfg();
            edit(&mut c);
            let e = err(&c, KeyStyle::HfJson);
            assert!(
                e.starts_with("m/config.json: ") && e.contains(key_value) && e.contains(why),
                "{e}"
            );
        }
    }

    #[test]
    fn gguf_keys_carry_the_architecture_prefix() {
        let mut c = cfg();
        c.rope_theta = 0.0;
        let e = err(&c, KeyStyle::Gguf { arch: "qwen2" });
        assert!(e.contains("qwen2.rope.freq_base = 0"), "{e}");
        c = cfg();
        c.vocab = 0;
        assert!(err(&c, KeyStyle::Gguf { arch: "llama" }).contains("token_embd.weight"));
    }

    #[test]
    fn head_dim_derivation_needs_exact_division() {
        let p = Path::new("c.json");
        assert_eq!(
            derived_head_dim(p, KeyStyle::HfJson, None, 64, 4).ok(),
            Some(16)
        );
        assert_eq!(
            derived_head_dim(p, KeyStyle::HfJson, Some(8), 65, 4).ok(),
            Some(8)
        );
        let e = derived_head_dim(p, KeyStyle::HfJson, None, 65, 4)
            .expect_err("65 / 4")
            .to_string();
        assert!(
            e.contains("hidden_size = 65") && e.contains("head_dim"),
            "{e}"
        );
        assert!(derived_head_dim(p, KeyStyle::HfJson, None, 64, 0).is_err());
    }
}
