//! Launchers of sparse attention over a hook's selected keys: `sparse_rows`
//! (`cu/attention_rowwise.cu`, one warp per query, f32 or bf16) and `flash_sparse`
//! (`cu/flash_sparse.cu`, tensor cores, bf16): the renormalized softmax over each query's keys,
//! on the device.

use super::attention::AttnShape;
use super::buffer::{DBuf, GpuFloat};
use super::device::{i, need, Arg, GpuDevice, GpuError, Result, FLASH_SPARSE, ROWWISE};
use half::bf16;

impl GpuDevice {
    /// `out [n, heads * d]` (token-major) = for every q-head `h` and query `i`, the softmax of
    /// `q_i . k_j / sqrt(d)` over the keys `keys[offsets[h n + i] .. offsets[h n + i + 1]]`,
    /// times their values; q is `[heads, n, d]`, k and v `[kv_heads, n, d]`. A query without keys
    /// gets zeros; keys must be below `n` (the caller checks causality).
    #[allow(clippy::too_many_arguments)]
    pub fn sparse_attention<T: GpuFloat>(
        &self,
        q: &DBuf<T>,
        k: &DBuf<T>,
        v: &DBuf<T>,
        offsets: &DBuf<u64>,
        keys: &DBuf<u32>,
        s: AttnShape,
        out: &mut DBuf<T>,
    ) -> Result<()> {
        s.check(q, k)?;
        need(v, s.kv_heads * s.n * s.head_dim, "sparse attention v")?;
        need(offsets, s.heads * s.n + 1, "sparse attention offsets")?;
        need(out, s.n * s.heads * s.head_dim, "sparse attention output")?;
        if !s.head_dim.is_multiple_of(2) {
            return Err(GpuError::Invalid(format!(
                "sparse attention: head dim {} (even)",
                s.head_dim
            )));
        }
        if s.n == 0 {
            return Ok(());
        }
        let warps = 4usize;
        self.launch(
            &ROWWISE,
            &format!("sparse_rows_{}", T::NAME),
            (s.n.div_ceil(warps) as u32, s.heads as u32, 1),
            (32 * warps) as u32,
            (warps * (s.head_dim + 32 * (s.head_dim + 1)) * 4) as u32,
            &[
                Arg::P(q.ptr()),
                Arg::P(k.ptr()),
                Arg::P(v.ptr()),
                Arg::P(offsets.ptr()),
                Arg::P(keys.ptr()),
                i(s.heads),
                i(s.kv_heads),
                i(s.n),
                i(s.head_dim),
                Arg::F(s.scale()),
                Arg::P(out.ptr()),
            ],
        )
    }

    /// As [`GpuDevice::sparse_attention`] on the tensor cores (`flash_sparse_d{64,128}`, bf16,
    /// sm_80+): the selection as per-(q-head, tile of 64 queries) key lists and keep masks
    /// (`offsets [heads * ceil(n / 64) + 1]`, multiples of 64, into `keys` and `mask`; layout in
    /// `cu/flash_sparse.cu`). Scores and probabilities stay in registers; `P` is rounded to bf16
    /// for `P V`, as in the dense flash kernel.
    #[allow(clippy::too_many_arguments)]
    pub fn flash_sparse_attention<T: GpuFloat>(
        &self,
        q: &DBuf<T>,
        k: &DBuf<T>,
        v: &DBuf<T>,
        offsets: &DBuf<u64>,
        keys: &DBuf<u32>,
        mask: &DBuf<u64>,
        s: AttnShape,
        out: &mut DBuf<T>,
    ) -> Result<()> {
        s.check(q, k)?;
        if T::NAME != <bf16 as GpuFloat>::NAME {
            return Err(GpuError::Invalid(
                "the block-sparse flash kernel takes bf16 only".into(),
            ));
        }
        let d = s.head_dim;
        if d != 64 && d != 128 {
            return Err(GpuError::Invalid(format!(
                "the block-sparse flash kernel takes head dim 64 or 128, not {d}"
            )));
        }
        let tiles = s.n.div_ceil(64);
        need(v, s.kv_heads * s.n * d, "sparse attention v")?;
        need(offsets, s.heads * tiles + 1, "tile list offsets")?;
        need(out, s.n * s.heads * d, "sparse attention output")?;
        if mask.len() != keys.len() || !keys.len().is_multiple_of(64) {
            return Err(GpuError::Invalid(format!(
                "tile lists: {} keys and {} mask words (equal, a multiple of 64)",
                keys.len(),
                mask.len()
            )));
        }
        if s.n == 0 {
            return Ok(());
        }
        let tile_bytes = 64 * (d + 8) * 2;
        self.launch(
            &FLASH_SPARSE,
            &format!("flash_sparse_d{d}"),
            (tiles as u32, s.heads as u32, 1),
            128,
            (4 * tile_bytes) as u32,
            &[
                Arg::P(q.ptr()),
                Arg::P(k.ptr()),
                Arg::P(v.ptr()),
                Arg::P(out.ptr()),
                Arg::P(offsets.ptr()),
                Arg::P(keys.ptr()),
                Arg::P(mask.ptr()),
                i(s.n),
                i(s.heads),
                i(s.kv_heads),
                Arg::F(s.scale() * std::f32::consts::LOG2_E),
            ],
        )
    }
}
