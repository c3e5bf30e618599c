//! Launchers of causal GQA attention and of the capture pass. Two kernels compute each:
//! [`AttnKernel::Flash`] (`cu/flash.cu`: tensor cores, bf16, head dim 64 or 128, capture block a
//! multiple of 64, sink <= 64 tokens, sm_80+) and [`AttnKernel::Rowwise`] (`cu/attention_rowwise.cu`:
//! one warp per query, f32 or bf16, any head dim <= 128, any block). [`AttnKernel::auto`] picks the
//! fast one when it applies.

use std::sync::atomic::{AtomicU32, Ordering};

use half::bf16;

use super::buffer::{DBuf, GpuFloat};
use super::device::{Arg, GpuDevice, GpuError, Result, FLASH, ROWWISE};

/// Shape of one layer's attention: `n` tokens, `heads` q-heads, `kv_heads` KV heads, `head_dim`.
/// q is `[heads, n, head_dim]`, k and v `[kv_heads, n, head_dim]` (head-major).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttnShape {
    pub n: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl AttnShape {
    pub(crate) fn check<T: GpuFloat>(&self, q: &DBuf<T>, k: &DBuf<T>) -> Result<()> {
        let s = self;
        if s.kv_heads == 0
            || !s.heads.is_multiple_of(s.kv_heads)
            || s.head_dim == 0
            || s.head_dim > 128
        {
            return Err(GpuError::Invalid(format!(
                "attention: {} heads over {} KV heads of dim {} (need heads % kv_heads == 0, dim <= 128)",
                s.heads, s.kv_heads, s.head_dim
            )));
        }
        if q.len() < s.heads * s.n * s.head_dim || k.len() < s.kv_heads * s.n * s.head_dim {
            return Err(GpuError::Invalid(
                "attention: q or k buffer too small".into(),
            ));
        }
        if s.n > i32::MAX as usize / 2 {
            return Err(GpuError::Invalid("attention: too many tokens".into()));
        }
        Ok(())
    }

    pub(crate) fn scale(&self) -> f32 {
        1.0 / (self.head_dim as f32).sqrt()
    }
}

/// Which kernel computes attention and capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttnKernel {
    /// Tensor-core flash kernel (bf16 only).
    Flash,
    /// One warp per (head, query): exact f32 arithmetic on f32 or bf16 storage.
    Rowwise,
}

const LOG2E: f32 = std::f32::consts::LOG2_E;

impl AttnKernel {
    /// The flash kernel when it applies to storage `T`, head dim, capture block and sink size.
    pub fn auto<T: GpuFloat>(dev: &GpuDevice, head_dim: usize, block: usize, sink: usize) -> Self {
        let (ma, mi) = dev.compute_capability();
        let ok = T::NAME == "bf16"
            && ma * 10 + mi >= 80
            && (head_dim == 64 || head_dim == 128)
            && block.is_multiple_of(64)
            && block > 0
            && sink <= 64;
        if ok {
            Self::Flash
        } else {
            Self::Rowwise
        }
    }
}

/// Shapes of the flash kernels (compiled variants in `cu/flash.cu`): warps per block of the
/// forward kernel (4 or 8) and m-tiles of 16 query rows per warp of the capture kernel (1 or 2;
/// head dim 128 takes 1). The forward kernel uses 2 m-tiles per warp at head dim 64, 1 at 128.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlashTuning {
    pub fwd_warps: u32,
    pub capture_mtiles: u32,
    /// Head dim 128: 2 m-tiles per warp with the queries in shared memory and 32-key sub-tiles.
    pub fwd_q_smem: bool,
}

static TUNING: AtomicU32 = AtomicU32::new(0);

impl FlashTuning {
    /// The tuning in use for head dim `d` at `n` tokens: the one set with [`FlashTuning::set`],
    /// else the environment (`ATTNSCOPE_FLASH_FWD_WARPS`, `ATTNSCOPE_FLASH_CAPTURE_MTILES`,
    /// `ATTNSCOPE_FLASH_FWD_Q_SMEM`), else the defaults measured on an H100 (BENCHMARKS.md):
    /// 4 warps everywhere, except head dim 128 from 24k tokens on (8 warps, queries in shared
    /// memory); the capture kernel with 2 m-tiles per warp at head dim 64.
    pub fn for_shape(d: usize, n: usize) -> Self {
        let packed = TUNING.load(Ordering::Relaxed);
        let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u32>().ok());
        let long128 = d == 128 && n >= 24 * 1024;
        let (mut w, mut m, qsm) = if packed != 0 {
            ((packed >> 8) & 0xff, packed & 0xff, packed >> 16 == 1)
        } else {
            (
                env("ATTNSCOPE_FLASH_FWD_WARPS").unwrap_or(if long128 { 8 } else { 4 }),
                env("ATTNSCOPE_FLASH_CAPTURE_MTILES").unwrap_or(if d == 64 { 2 } else { 1 }),
                env("ATTNSCOPE_FLASH_FWD_Q_SMEM").map_or(long128, |v| v == 1),
            )
        };
        if w != 8 {
            w = 4;
        }
        if d != 64 || m != 1 {
            m = if d == 64 { 2 } else { 1 };
        }
        Self {
            fwd_warps: w,
            capture_mtiles: m,
            fwd_q_smem: qsm && d == 128,
        }
    }

    /// [`FlashTuning::for_shape`] at a short length.
    pub fn current(d: usize) -> Self {
        Self::for_shape(d, 0)
    }

    /// Sets the tuning for this process (`None` returns to the environment and defaults).
    pub fn set(t: Option<Self>) {
        TUNING.store(
            t.map_or(0, |t| {
                (u32::from(t.fwd_q_smem) << 16)
                    | ((t.fwd_warps & 0xff) << 8)
                    | (t.capture_mtiles & 0xff)
            }),
            Ordering::Relaxed,
        );
    }
}

fn check_flash_dim(d: usize) -> Result<()> {
    match d {
        64 | 128 => Ok(()),
        _ => Err(GpuError::Invalid(format!(
            "the flash kernel takes head dim 64 or 128, not {d}"
        ))),
    }
}

fn flash_tile_bytes(d: usize) -> u32 {
    (64 * (d + 8) * 2) as u32
}

fn as_bf16<T: GpuFloat>(b: &DBuf<T>) -> u64 {
    b.ptr()
}

impl GpuDevice {
    /// Causal attention: `out [n, heads * head_dim]` (token-major, the output projection's input)
    /// and the per-query log-sum-exp `lse [heads, n]` of the scaled scores.
    pub fn attention<T: GpuFloat>(
        &self,
        q: &DBuf<T>,
        k: &DBuf<T>,
        v: &DBuf<T>,
        out: &mut DBuf<T>,
        lse: &mut DBuf<f32>,
        s: AttnShape,
        kernel: AttnKernel,
    ) -> Result<()> {
        s.check(q, k)?;
        if v.len() < k.len().min(s.kv_heads * s.n * s.head_dim)
            || out.len() < s.n * s.heads * s.head_dim
            || lse.len() < s.heads * s.n
        {
            return Err(GpuError::Invalid(
                "attention: v, out or lse buffer too small".into(),
            ));
        }
        if s.n == 0 {
            return Ok(());
        }
        match kernel {
            AttnKernel::Flash => {
                if T::NAME != <bf16 as GpuFloat>::NAME {
                    return Err(GpuError::Invalid("the flash kernel takes bf16 only".into()));
                }
                let d = s.head_dim;
                check_flash_dim(d)?;
                let tu = FlashTuning::for_shape(d, s.n);
                let (name, bm, threads, smem) = if tu.fwd_q_smem {
                    let w = tu.fwd_warps;
                    let bm = 32 * w as usize;
                    let q_bytes = (bm * (d + 8) * 2) as u32;
                    (
                        format!("flash_fwd_d{d}_q{w}"),
                        bm,
                        32 * w,
                        q_bytes + 4 * flash_tile_bytes(d),
                    )
                } else {
                    let w = tu.fwd_warps;
                    let bm = 16 * w as usize * if d == 64 { 2 } else { 1 };
                    (
                        format!("flash_fwd_d{d}_w{w}"),
                        bm,
                        32 * w,
                        4 * flash_tile_bytes(d),
                    )
                };
                self.launch(
                    &FLASH,
                    &name,
                    (s.n.div_ceil(bm) as u32, s.heads as u32, 1),
                    threads,
                    smem,
                    &[
                        Arg::P(as_bf16(q)),
                        Arg::P(as_bf16(k)),
                        Arg::P(as_bf16(v)),
                        Arg::P(out.ptr()),
                        Arg::P(lse.ptr()),
                        Arg::I(s.n as i32),
                        Arg::I(s.heads as i32),
                        Arg::I(s.kv_heads as i32),
                        Arg::F(s.scale() * LOG2E),
                    ],
                )
            }
            AttnKernel::Rowwise => {
                self.rowwise(q, k, v.ptr(), out.ptr(), lse.ptr(), 0, 0, 0, s, 1, 0, 0)
            }
        }
    }

    /// The capture pass, given the exact `lse` from [`GpuDevice::attention`]: the key-block mass
    /// `p [heads, n, nb]` (nb = ceil(n / block); zero for blocks after the query) and the sink mass
    /// `sink [heads, n]` (first `sink_tokens` keys).
    #[allow(clippy::too_many_arguments)]
    pub fn capture<T: GpuFloat>(
        &self,
        q: &DBuf<T>,
        k: &DBuf<T>,
        lse: &DBuf<f32>,
        p: &mut DBuf<f32>,
        sink: &mut DBuf<f32>,
        s: AttnShape,
        block: usize,
        sink_tokens: usize,
        kernel: AttnKernel,
    ) -> Result<()> {
        s.check(q, k)?;
        let block = block.max(1);
        let nb = s.n.div_ceil(block);
        if lse.len() < s.heads * s.n || p.len() < s.heads * s.n * nb || sink.len() < s.heads * s.n {
            return Err(GpuError::Invalid(
                "capture: lse, P or sink buffer too small".into(),
            ));
        }
        if s.n == 0 {
            return Ok(());
        }
        match kernel {
            AttnKernel::Flash => {
                if T::NAME != <bf16 as GpuFloat>::NAME
                    || !block.is_multiple_of(64)
                    || sink_tokens > 64
                {
                    return Err(GpuError::Invalid(format!(
                        "the flash capture takes bf16, a block multiple of 64 and at most 64 sink \
                         tokens (got {}, block {block}, sink {sink_tokens})",
                        T::NAME
                    )));
                }
                let d = s.head_dim;
                check_flash_dim(d)?;
                let mt = FlashTuning::for_shape(d, s.n).capture_mtiles;
                let bm = 64 * mt as usize;
                self.launch(
                    &FLASH,
                    &format!("flash_capture_d{d}_m{mt}"),
                    (s.n.div_ceil(bm) as u32, s.heads as u32, 1),
                    128,
                    2 * flash_tile_bytes(d),
                    &[
                        Arg::P(q.ptr()),
                        Arg::P(k.ptr()),
                        Arg::P(lse.ptr()),
                        Arg::P(p.ptr()),
                        Arg::P(sink.ptr()),
                        Arg::I(s.n as i32),
                        Arg::I(s.heads as i32),
                        Arg::I(s.kv_heads as i32),
                        Arg::I(block as i32),
                        Arg::I(nb as i32),
                        Arg::I(sink_tokens as i32),
                        Arg::F(s.scale() * LOG2E),
                    ],
                )
            }
            AttnKernel::Rowwise => self.rowwise(
                q,
                k,
                0,
                0,
                0,
                lse.ptr(),
                p.ptr(),
                sink.ptr(),
                s,
                block,
                nb,
                sink_tokens,
            ),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn rowwise<T: GpuFloat>(
        &self,
        q: &DBuf<T>,
        k: &DBuf<T>,
        v: u64,
        out: u64,
        lse_out: u64,
        lse_in: u64,
        p: u64,
        sink: u64,
        s: AttnShape,
        block: usize,
        nb: usize,
        sink_tokens: usize,
    ) -> Result<()> {
        // Per warp: the query (head_dim floats) and one row of nb floats (nb = 0 without P);
        // the kernel lays warps out with the same stride.
        let nb = if p != 0 { nb } else { 0 };
        let per_warp = s.head_dim + nb;
        let smem = (4 * per_warp * 4) as u32;
        if smem > 200 * 1024 {
            return Err(GpuError::Invalid(format!(
                "capture with {nb} key blocks per query needs {smem} bytes of shared memory per \
                 block; use a larger capture block"
            )));
        }
        let warps = s.n * s.heads;
        self.launch(
            &ROWWISE,
            &format!("attn_rowwise_{}", T::NAME),
            (warps.div_ceil(4) as u32, 1, 1),
            128,
            smem,
            &[
                Arg::P(q.ptr()),
                Arg::P(k.ptr()),
                Arg::P(v),
                Arg::P(out),
                Arg::P(lse_out),
                Arg::P(lse_in),
                Arg::P(p),
                Arg::P(sink),
                Arg::I(s.n as i32),
                Arg::I(s.heads as i32),
                Arg::I(s.kv_heads as i32),
                Arg::I(s.head_dim as i32),
                Arg::I(block as i32),
                Arg::I(nb as i32),
                Arg::I(sink_tokens as i32),
                Arg::F(s.scale()),
            ],
        )
    }
}
