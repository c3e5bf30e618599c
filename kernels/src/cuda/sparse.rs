//! Launcher of `sparse_rows` (`cu/attention_rowwise.cu`): attention over a hook's selected keys
//! (the renormalized softmax over each query's keys), on the device.

use super::attention::AttnShape;
use super::buffer::{DBuf, GpuFloat};
use super::device::{i, need, Arg, GpuDevice, GpuError, Result, ROWWISE};

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
}
