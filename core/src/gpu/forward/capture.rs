//! The per-forward buffers ([`Bufs`], one layer's worth, reused by every layer), a layer's capture
//! buffers ([`CapBufs`]), and the capture of one layer on the device.

use attnscope_kernels::cuda::{AttnShape, DBuf, GpuFloat};

use super::model::GpuModel;
use crate::capture_stats::CaptureOptions;
use crate::error::{CoreError, Result};

/// Per-forward activation buffers (one layer's worth, reused by every layer).
pub(super) struct Bufs<T> {
    pub(super) x: DBuf<f32>,
    pub(super) xn: DBuf<T>,
    pub(super) qkv: DBuf<T>,
    pub(super) qh: DBuf<T>,
    pub(super) kh: DBuf<T>,
    pub(super) vh: DBuf<T>,
    pub(super) attn: DBuf<T>,
    pub(super) lse: DBuf<f32>,
    pub(super) gu: DBuf<T>,
    pub(super) act: DBuf<T>,
}

/// One layer's capture buffers.
pub(super) struct CapBufs {
    pub(super) block: usize,
    pub(super) p: DBuf<f32>,
    pub(super) sink: DBuf<f32>,
    pub(super) pooled: DBuf<f32>,
}

impl GpuModel {
    pub(super) fn bufs<T: GpuFloat>(&self, n: usize) -> Result<Bufs<T>> {
        let c = &self.config;
        let (h, d) = (c.hidden, c.head_dim);
        let (qd, kvd) = (c.n_heads * d, c.n_kv_heads * d);
        Ok(Bufs {
            x: self.alloc(n * h, "residual stream")?,
            xn: self.alloc(n * h, "normed input")?,
            qkv: self.alloc(n * (qd + 2 * kvd), "fused qkv")?,
            qh: self.alloc(n * qd, "head-major q")?,
            kh: self.alloc(n * kvd, "head-major k")?,
            vh: self.alloc(n * kvd, "head-major v")?,
            attn: self.alloc(n * qd, "attention output")?,
            lse: self.alloc(c.n_heads * n, "log-sum-exp")?,
            gu: self.alloc(n * 2 * c.intermediate, "gate|up")?,
            act: self.alloc(n * c.intermediate, "mlp activation")?,
        })
    }

    pub(super) fn cap_bufs(&self, n: usize, block: usize) -> Result<CapBufs> {
        let heads = self.config.n_heads;
        let block = block.max(1);
        let nb = n.div_ceil(block);
        let need = 4 * heads as u64 * (n as u64 * nb as u64 + n as u64 + (nb * nb) as u64);
        let free = self.dev.available_memory()?;
        if need + (64 << 20) > free {
            return Err(self
                .dev
                .oom(
                    &format!("capturing a layer at {n} tokens with block {block}"),
                    need,
                    "use a larger capture block, a shorter input (--len), or --device cpu",
                )
                .into());
        }
        Ok(CapBufs {
            block,
            p: self.alloc(heads * n * nb, "block mass P")?,
            sink: self.alloc(heads * n, "sink mass")?,
            pooled: self.alloc(heads * nb * nb, "pooled map")?,
        })
    }

    pub(super) fn shape(&self, n: usize) -> AttnShape {
        AttnShape {
            n,
            heads: self.config.n_heads,
            kv_heads: self.config.n_kv_heads,
            head_dim: self.config.head_dim,
        }
    }

    /// Attention (output + LSE), then the capture pass and the pooled map, all on the device.
    pub(super) fn capture_layer<T: GpuFloat>(
        &self,
        b: &mut Bufs<T>,
        cb: &mut CapBufs,
        opts: &CaptureOptions,
    ) -> Result<()> {
        let dev = &*self.dev;
        let s = self.shape(b.lse.len() / self.config.n_heads);
        let kernel = self.attention_kernel(opts);
        let block = opts.block.max(1);
        dev.attention(&b.qh, &b.kh, &b.vh, &mut b.attn, &mut b.lse, s, kernel)?;
        dev.capture(
            &b.qh,
            &b.kh,
            &b.lse,
            &mut cb.p,
            &mut cb.sink,
            s,
            block,
            opts.sink_tokens,
            kernel,
        )?;
        dev.pool_rows(
            &cb.p,
            &mut cb.pooled,
            s.heads,
            s.n,
            s.n.div_ceil(block),
            block,
        )
        .map_err(CoreError::from)
    }
}
