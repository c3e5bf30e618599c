//! Model weights on the device: uploaded from a loaded [`Model`] (converted to the storage type
//! `T` on the host) or generated on the device from a seed. Q, K, V are fused into one `[q + 2kv,
//! hidden]` matrix and gate/up into one `[2 * intermediate, hidden]` matrix (one GEMM each).

use attnscope_kernels::cuda::{DBuf, GpuDevice, GpuFloat};
use ndarray::{Array1, Array2};

use crate::config::ModelConfig;
use crate::error::{CoreError, Result};
use crate::model::Model;
use crate::ops::Linear;

/// One layer on the device. Norm weights and biases stay f32.
pub(crate) struct GpuLayer<T> {
    pub attn_norm: DBuf<f32>,
    /// `[q_dim + 2 * kv_dim, hidden]`: q, k, v rows stacked.
    pub wqkv: DBuf<T>,
    /// `[q_dim + 2 * kv_dim]` when the architecture has Q/K/V biases.
    pub bqkv: Option<DBuf<f32>>,
    pub q_norm: Option<DBuf<f32>>,
    pub k_norm: Option<DBuf<f32>>,
    pub wo: DBuf<T>,
    pub mlp_norm: DBuf<f32>,
    /// `[2 * intermediate, hidden]`: gate rows then up rows.
    pub wgu: DBuf<T>,
    pub wdown: DBuf<T>,
}

pub(crate) struct GpuWeights<T> {
    pub embed: DBuf<T>,
    pub layers: Vec<GpuLayer<T>>,
    pub norm: DBuf<f32>,
    /// RoPE tables `[positions, head_dim / 2]`, as [`crate::ops::Rope`] computes them.
    pub cos: DBuf<f32>,
    pub sin: DBuf<f32>,
}

/// Bytes of the weights of `cfg` stored as `T` (norms and biases as f32), RoPE tables included.
pub(crate) fn weight_bytes<T: GpuFloat>(cfg: &ModelConfig) -> u64 {
    let t = std::mem::size_of::<T>() as u64;
    let (h, d, f) = (
        cfg.hidden as u64,
        cfg.head_dim as u64,
        cfg.intermediate as u64,
    );
    let (qd, kvd) = (cfg.n_heads as u64 * d, cfg.n_kv_heads as u64 * d);
    let per_layer =
        t * ((qd + 2 * kvd) * h + h * qd + 3 * f * h) + 4 * (2 * h + qd + 2 * kvd + 2 * d);
    t * cfg.vocab as u64 * h
        + cfg.n_layers as u64 * per_layer
        + 4 * h
        + 4 * cfg.max_context as u64 * d
}

/// Plain RoPE tables `cos`, `sin` of `[positions, head_dim / 2]` for the GPU kernels, with the
/// same arithmetic as [`crate::ops::Rope::new`] (HF: position (f32) * inv_freq (f32)).
pub fn rope_tables(head_dim: usize, theta: f32, positions: usize) -> (Vec<f32>, Vec<f32>) {
    let freqs = crate::rope::RopeScaling::Default.frequencies(head_dim, theta, 0);
    crate::rope::tables(&freqs, positions)
}

/// RoPE tables of `cfg` (its scaling included) for `cfg.max_context` positions, from the same
/// [`crate::rope::RopeScaling::frequencies`] as the CPU tables. A `dynamic` scaling gives the
/// tables of passes up to its original length (longer passes are refused on the GPU).
pub fn model_rope_tables(cfg: &ModelConfig) -> (Vec<f32>, Vec<f32>) {
    let freqs = cfg
        .rope_scaling
        .frequencies(cfg.head_dim, cfg.rope_theta, 0);
    crate::rope::tables(&freqs, cfg.max_context)
}

fn up_t<T: GpuFloat>(dev: &GpuDevice, data: &[f32], what: &str) -> Result<DBuf<T>> {
    let v: Vec<T> = data.iter().map(|&x| T::from_f32(x)).collect();
    dev.upload(&v, what).map_err(CoreError::from)
}

fn up_f32(dev: &GpuDevice, data: &[f32], what: &str) -> Result<DBuf<f32>> {
    dev.upload(data, what).map_err(CoreError::from)
}

fn slice2(a: &Array2<f32>) -> std::borrow::Cow<'_, [f32]> {
    match a.as_slice() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(a.iter().copied().collect()),
    }
}

fn stacked<T: GpuFloat>(dev: &GpuDevice, parts: &[&Linear], what: &str) -> Result<DBuf<T>> {
    let mut v: Vec<T> = Vec::with_capacity(parts.iter().map(|l| l.weight.len()).sum());
    for l in parts {
        v.extend(slice2(&l.weight).iter().map(|&x| T::from_f32(x)));
    }
    dev.upload(&v, what).map_err(CoreError::from)
}

/// A pre-norm the device layer needs (every architecture the device path takes has them).
fn pre_norm(v: &Option<Array1<f32>>, layer: usize) -> Result<&Array1<f32>> {
    v.as_ref().ok_or_else(|| {
        crate::error::CoreError::Device(format!(
            "layer {layer} has no pre-norm; the CUDA forward pass needs one"
        ))
    })
}

fn opt_vec(dev: &GpuDevice, v: &Option<Array1<f32>>, what: &str) -> Result<Option<DBuf<f32>>> {
    v.as_ref()
        .map(|a| up_f32(dev, &a.to_vec(), what))
        .transpose()
}

impl<T: GpuFloat> GpuWeights<T> {
    /// Uploads `model`'s weights.
    pub fn upload(dev: &GpuDevice, model: &Model) -> Result<Self> {
        let cfg = &model.config;
        let mut layers = Vec::with_capacity(model.layers.len());
        for (i, l) in model.layers.iter().enumerate() {
            let bqkv = match (&l.q.bias, &l.k.bias, &l.v.bias) {
                (Some(a), Some(b), Some(c)) => {
                    let v: Vec<f32> = a.iter().chain(b.iter()).chain(c.iter()).copied().collect();
                    Some(up_f32(dev, &v, &format!("layer {i} qkv bias"))?)
                }
                _ => None,
            };
            layers.push(GpuLayer {
                attn_norm: up_f32(dev, &pre_norm(&l.attn_norm, i)?.to_vec(), "attn norm")?,
                wqkv: stacked(dev, &[&l.q, &l.k, &l.v], &format!("layer {i} qkv weights"))?,
                bqkv,
                q_norm: opt_vec(dev, &l.q_norm, "q norm")?,
                k_norm: opt_vec(dev, &l.k_norm, "k norm")?,
                wo: stacked(dev, &[&l.o], &format!("layer {i} o weights"))?,
                mlp_norm: up_f32(dev, &pre_norm(&l.mlp_norm, i)?.to_vec(), "mlp norm")?,
                wgu: stacked(
                    dev,
                    &[&l.gate, &l.up],
                    &format!("layer {i} gate|up weights"),
                )?,
                wdown: stacked(dev, &[&l.down], &format!("layer {i} down weights"))?,
            });
        }
        let (cos, sin) = model_rope_tables(cfg);
        Ok(Self {
            embed: up_t(dev, &slice2(&model.embed), "embeddings")?,
            layers,
            norm: up_f32(dev, &model.norm.to_vec(), "final norm")?,
            cos: up_f32(dev, &cos, "rope cos")?,
            sin: up_f32(dev, &sin, "rope sin")?,
        })
    }

    /// Random weights for `cfg`, generated on the device: matrices uniform in
    /// `[-1, 1) / sqrt(fan_in)`, embeddings in `[-1, 1)`, biases small, norm weights 1.
    pub fn random(dev: &GpuDevice, cfg: &ModelConfig, seed: u64) -> Result<Self> {
        let (h, d, f) = (cfg.hidden, cfg.head_dim, cfg.intermediate);
        let (qd, kvd) = (cfg.n_heads * d, cfg.n_kv_heads * d);
        let mut s = seed.wrapping_mul(1000);
        let mut next = || {
            s += 1;
            s
        };
        let mut mat = |rows: usize, cols: usize, what: &str| -> Result<DBuf<T>> {
            let mut b = dev.alloc::<T>(rows * cols, what)?;
            let sc = 1.0 / (cols as f32).sqrt();
            dev.fill_uniform(&mut b, next(), sc, 0.0)?;
            Ok(b)
        };
        let ones =
            |len: usize| -> Result<DBuf<f32>> { up_f32(dev, &vec![1.0; len], "norm weights") };
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for _ in 0..cfg.n_layers {
            let bqkv = if cfg.arch == crate::config::Arch::Qwen2 {
                let mut b = dev.alloc::<f32>(qd + 2 * kvd, "qkv bias")?;
                dev.fill_uniform(&mut b, seed ^ 0xb1a5 ^ layers.len() as u64, 0.1, 0.0)?;
                Some(b)
            } else {
                None
            };
            let qk = cfg.arch == crate::config::Arch::Qwen3;
            layers.push(GpuLayer {
                attn_norm: ones(h)?,
                wqkv: mat(qd + 2 * kvd, h, "qkv weights")?,
                bqkv,
                q_norm: if qk { Some(ones(d)?) } else { None },
                k_norm: if qk { Some(ones(d)?) } else { None },
                wo: mat(h, qd, "o weights")?,
                mlp_norm: ones(h)?,
                wgu: mat(2 * f, h, "gate|up weights")?,
                wdown: mat(h, f, "down weights")?,
            });
        }
        let mut embed = dev.alloc::<T>(cfg.vocab * h, "embeddings")?;
        dev.fill_uniform(&mut embed, next(), 1.0, 0.0)?;
        let (cos, sin) = model_rope_tables(cfg);
        Ok(Self {
            embed,
            layers,
            norm: ones(h)?,
            cos: up_f32(dev, &cos, "rope cos")?,
            sin: up_f32(dev, &sin, "rope sin")?,
        })
    }
}
