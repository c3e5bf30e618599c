//! Rotary position embedding: the scaling types of transformers' `ROPE_INIT_FUNCTIONS`
//! (`default`, `linear`, `dynamic`, `llama3`, `yarn`) plus the per-pair frequency divisors of a
//! llama.cpp `rope_freqs` tensor. [`RopeScaling::frequencies`] is the one place that computes the
//! inverse frequencies and the attention factor; the CPU [`Rope`] tables and the GPU tables
//! ([`tables`]) are both built from its output.
//!
//! ```
//! use attnscope_core::rope::RopeScaling;
//! let s = RopeScaling::Linear { factor: 4.0 };
//! let f = s.frequencies(64, 10_000.0, 128);
//! assert_eq!(f.inv_freq.len(), 32);
//! assert!((f.inv_freq[0] - 0.25).abs() < 1e-7);
//! ```

mod parse;
mod table;

use std::f64::consts::PI;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{CoreError, Result};
pub(crate) use parse::{from_gguf, from_hf_json};
pub use table::Rope;

/// How the rotary frequencies are scaled (transformers' `rope_type`). Fields follow
/// transformers' `rope_parameters` names; `original_max` is `original_max_position_embeddings`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "rope_type", rename_all = "lowercase")]
pub enum RopeScaling {
    /// `inv_freq[j] = theta^(-2j/d)`.
    #[default]
    Default,
    /// Position interpolation: every inverse frequency divided by `factor`.
    Linear { factor: f64 },
    /// Dynamic NTK: for a forward pass of `n > original_max` tokens the base becomes
    /// `theta * (factor * n / original_max - (factor - 1))^(d / (d - 2))`; shorter passes use
    /// plain RoPE. `original_max` is the config's `max_position_embeddings`.
    Dynamic { factor: f64, original_max: usize },
    /// Llama 3.1: long wavelengths divided by `factor`, short ones kept, a smooth ramp between.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max: usize,
    },
    /// YaRN: NTK-by-parts interpolation between `beta_fast` and `beta_slow` rotations, with
    /// cos and sin multiplied by `attention_factor` (already resolved from the mscale rules).
    Yarn {
        factor: f64,
        original_max: usize,
        beta_fast: f64,
        beta_slow: f64,
        attention_factor: f64,
        truncate: bool,
    },
    /// llama.cpp's `rope_freqs.weight`: `inv_freq[j] = theta^(-2j/d) / divisors[j]`.
    Divisors { divisors: Vec<f32> },
}

/// Inverse frequencies (`head_dim / 2` of them) and the factor that multiplies cos and sin.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeFreqs {
    pub inv_freq: Vec<f32>,
    pub attention_factor: f32,
}

/// Plain RoPE inverse frequencies `theta^(-2j/d)` in f64.
fn default_inv(head_dim: usize, theta: f64) -> Vec<f64> {
    (0..head_dim / 2)
        .map(|j| 1.0 / theta.powf((2 * j) as f64 / head_dim as f64))
        .collect()
}

/// transformers' `yarn_get_mscale`: `0.1 * mscale * ln(scale) + 1` for `scale > 1`, else 1.
pub fn yarn_get_mscale(scale: f64, mscale: f64) -> f64 {
    if scale <= 1.0 {
        1.0
    } else {
        0.1 * mscale * scale.ln() + 1.0
    }
}

/// The llama3 per-pair frequency divisors (`default / scaled`), as llama.cpp's converter writes
/// them into `rope_freqs.weight`.
pub fn llama3_divisors(
    head_dim: usize,
    theta: f64,
    factor: f64,
    low_freq_factor: f64,
    high_freq_factor: f64,
    original_max: usize,
) -> Vec<f64> {
    let old = original_max as f64;
    let (low_wl, high_wl) = (old / low_freq_factor, old / high_freq_factor);
    default_inv(head_dim, theta)
        .into_iter()
        .map(|f| {
            let wavelen = 2.0 * PI / f;
            if wavelen < high_wl {
                1.0
            } else if wavelen > low_wl {
                factor
            } else {
                let smooth =
                    (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                1.0 / ((1.0 - smooth) / factor + smooth)
            }
        })
        .collect()
}

impl RopeScaling {
    /// The name as in `rope_type`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::Linear { .. } => "linear",
            Self::Dynamic { .. } => "dynamic",
            Self::Llama3 { .. } => "llama3",
            Self::Yarn { .. } => "yarn",
            Self::Divisors { .. } => "rope_freqs",
        }
    }

    /// Whether a forward pass of `n` tokens needs other frequencies than a short one (dynamic
    /// NTK beyond its original length).
    pub fn depends_on_length(&self, n: usize) -> bool {
        matches!(self, Self::Dynamic { original_max, .. } if n > *original_max)
    }

    /// Inverse frequencies and attention factor for a forward pass of `seq_len` tokens (only
    /// `dynamic` looks at `seq_len`), computed in f64 and rounded to f32 once.
    pub fn frequencies(&self, head_dim: usize, theta: f32, seq_len: usize) -> RopeFreqs {
        let theta = theta as f64;
        let d = head_dim as f64;
        let mut attention_factor = 1.0;
        let inv: Vec<f64> = match self {
            Self::Default => default_inv(head_dim, theta),
            Self::Linear { factor } => default_inv(head_dim, theta)
                .into_iter()
                .map(|f| f / factor)
                .collect(),
            Self::Dynamic {
                factor,
                original_max,
            } => {
                let max = *original_max as f64;
                let n = (seq_len as f64).max(max);
                let base = theta * ((factor * n / max) - (factor - 1.0)).powf(d / (d - 2.0));
                default_inv(head_dim, base)
            }
            Self::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max,
            } => {
                let div = llama3_divisors(
                    head_dim,
                    theta,
                    *factor,
                    *low_freq_factor,
                    *high_freq_factor,
                    *original_max,
                );
                default_inv(head_dim, theta)
                    .into_iter()
                    .zip(div)
                    .map(|(f, q)| f / q)
                    .collect()
            }
            Self::Yarn {
                factor,
                original_max,
                beta_fast,
                beta_slow,
                attention_factor: af,
                truncate,
            } => {
                attention_factor = *af;
                let corr = |rot: f64| {
                    d * (*original_max as f64 / (rot * 2.0 * PI)).ln() / (2.0 * theta.ln())
                };
                let (mut low, mut high) = (corr(*beta_fast), corr(*beta_slow));
                if *truncate {
                    (low, high) = (low.floor(), high.ceil());
                }
                let (low, mut high) = (low.max(0.0), high.min(d - 1.0));
                if low == high {
                    high += 0.001;
                }
                default_inv(head_dim, theta)
                    .into_iter()
                    .enumerate()
                    .map(|(j, extra)| {
                        let ramp = ((j as f64 - low) / (high - low)).clamp(0.0, 1.0);
                        let extrapolation = 1.0 - ramp;
                        extra / factor * (1.0 - extrapolation) + extra * extrapolation
                    })
                    .collect()
            }
            Self::Divisors { divisors } => default_inv(head_dim, theta)
                .into_iter()
                .zip(divisors)
                .map(|(f, &q)| f / q as f64)
                .collect(),
        };
        RopeFreqs {
            inv_freq: inv.into_iter().map(|f| f as f32).collect(),
            attention_factor: attention_factor as f32,
        }
    }

    /// Checks every parameter (finite, in range); `key` spells a parameter's key as in `path`.
    pub fn validate(
        &self,
        path: &Path,
        head_dim: usize,
        key: &dyn Fn(&str) -> String,
    ) -> Result<()> {
        let positive = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(CoreError::bad_value(
                    path,
                    key(name),
                    v,
                    format!("{} RoPE scaling needs a finite number > 0", self.name()),
                ))
            }
        };
        let count = |name: &str, v: usize| {
            if v == 0 || v > crate::config::MAX_DIM {
                Err(CoreError::bad_value(
                    path,
                    key(name),
                    v,
                    format!("must be in 1..={}", crate::config::MAX_DIM),
                ))
            } else {
                Ok(())
            }
        };
        match self {
            Self::Default => Ok(()),
            Self::Linear { factor } => positive("factor", *factor),
            Self::Dynamic {
                factor,
                original_max,
            } => {
                positive("factor", *factor)?;
                if head_dim <= 2 {
                    return Err(CoreError::bad_value(
                        path,
                        "head_dim",
                        head_dim,
                        "dynamic NTK RoPE needs a head dimension above 2",
                    ));
                }
                count("original_max_position_embeddings", *original_max)
            }
            Self::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max,
            } => {
                positive("factor", *factor)?;
                positive("low_freq_factor", *low_freq_factor)?;
                positive("high_freq_factor", *high_freq_factor)?;
                if high_freq_factor <= low_freq_factor {
                    return Err(CoreError::bad_value(
                        path,
                        key("high_freq_factor"),
                        high_freq_factor,
                        format!(
                            "must be larger than {} = {low_freq_factor}",
                            key("low_freq_factor")
                        ),
                    ));
                }
                count("original_max_position_embeddings", *original_max)
            }
            Self::Yarn {
                factor,
                original_max,
                beta_fast,
                beta_slow,
                attention_factor,
                ..
            } => {
                positive("factor", *factor)?;
                positive("beta_fast", *beta_fast)?;
                positive("beta_slow", *beta_slow)?;
                positive("attention_factor", *attention_factor)?;
                count("original_max_position_embeddings", *original_max)
            }
            Self::Divisors { divisors } => {
                if divisors.len() != head_dim / 2 {
                    return Err(CoreError::format(
                        path,
                        format!(
                            "tensor 'rope_freqs.weight' has {} values; the head dimension {head_dim} \
                             needs {}",
                            divisors.len(),
                            head_dim / 2
                        ),
                    ));
                }
                match divisors.iter().position(|q| !(q.is_finite() && *q > 0.0)) {
                    Some(i) => Err(CoreError::format(
                        path,
                        format!(
                            "tensor 'rope_freqs.weight' value {i} is {}; frequency divisors must \
                             be finite and > 0",
                            divisors[i]
                        ),
                    )),
                    None => Ok(()),
                }
            }
        }
    }
}

/// `cos[p * half + j]`, `sin[p * half + j]` for positions `0..positions`, as transformers
/// computes them: the angle `p (f32) * inv_freq[j] (f32)` in f32, then `cos(angle) *
/// attention_factor`.
pub fn tables(freqs: &RopeFreqs, positions: usize) -> (Vec<f32>, Vec<f32>) {
    let half = freqs.inv_freq.len();
    let af = freqs.attention_factor;
    let mut cos = Vec::with_capacity(positions * half);
    let mut sin = Vec::with_capacity(positions * half);
    for p in 0..positions {
        for &f in &freqs.inv_freq {
            let ang = (p as f32) * f;
            if af == 1.0 {
                cos.push(ang.cos());
                sin.push(ang.sin());
            } else {
                cos.push(ang.cos() * af);
                sin.push(ang.sin() * af);
            }
        }
    }
    (cos, sin)
}
