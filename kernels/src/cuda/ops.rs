//! Launchers of the element-wise and row-wise kernels (`cu/elementwise.cu`). Each checks the
//! buffer sizes it is given, so a wrong shape is an error and never an out-of-bounds access.

use super::buffer::{DBuf, GpuFloat};
use super::device::{grid_for, i, need, Arg, GpuDevice, Result, ELEMENTWISE};

/// Grid of a row kernel: x blocks of 256 threads over `cols`, y over rows.
fn rows_grid(rows: usize, cols: usize) -> (u32, u32, u32) {
    (
        cols.div_ceil(256).clamp(1, 1024) as u32,
        rows.clamp(1, 65535) as u32,
        1,
    )
}

/// A strided view of logical rows inside wider rows: row `r` of `cols` values starts at
/// `(r / per_row) * ld + col_off + (r % per_row) * cols`.
#[derive(Debug, Clone, Copy)]
pub struct RowLayout {
    pub rows: usize,
    pub cols: usize,
    pub per_row: usize,
    pub ld: usize,
    pub col_off: usize,
}

impl RowLayout {
    /// Plain `[rows, cols]`.
    pub fn dense(rows: usize, cols: usize) -> Self {
        Self {
            rows,
            cols,
            per_row: 1,
            ld: cols,
            col_off: 0,
        }
    }

    fn extent(&self) -> usize {
        if self.rows == 0 {
            return 0;
        }
        let last = self.rows - 1;
        (last / self.per_row) * self.ld
            + self.col_off
            + (last % self.per_row) * self.cols
            + self.cols
    }
}

impl GpuDevice {
    /// `out[r, :] = table[ids[r], :]` (f32 out); ids must be < the table's rows (checked on host).
    pub fn embed_gather<T: GpuFloat>(
        &self,
        table: &DBuf<T>,
        ids: &DBuf<u32>,
        out: &mut DBuf<f32>,
        n: usize,
        h: usize,
    ) -> Result<()> {
        need(ids, n, "embed_gather ids")?;
        need(out, n * h, "embed_gather out")?;
        self.launch(
            &ELEMENTWISE,
            &format!("embed_gather_{}", T::NAME),
            rows_grid(n, h),
            256,
            0,
            &[
                Arg::P(table.ptr()),
                Arg::P(ids.ptr()),
                Arg::P(out.ptr()),
                i(n),
                i(h),
            ],
        )
    }

    /// `y = x * w / sqrt(mean(x^2) + eps)` per row of a dense `[rows, cols]` f32 `x`.
    pub fn rms_norm<TO: GpuFloat>(
        &self,
        x: &DBuf<f32>,
        y: &mut DBuf<TO>,
        w: &DBuf<f32>,
        rows: usize,
        cols: usize,
        eps: f32,
    ) -> Result<()> {
        need(x, rows * cols, "rms_norm x")?;
        need(y, rows * cols, "rms_norm y")?;
        need(w, cols, "rms_norm weight")?;
        let l = RowLayout::dense(rows, cols);
        self.rms_launch(
            &format!("rms_norm_f32_{}", TO::NAME),
            x.ptr(),
            y.ptr(),
            w,
            l,
            eps,
        )
    }

    /// In-place RMSNorm of strided logical rows (per-head q/k norm inside a fused QKV row).
    pub fn rms_norm_inplace<T: GpuFloat>(
        &self,
        x: &mut DBuf<T>,
        w: &DBuf<f32>,
        layout: RowLayout,
        eps: f32,
    ) -> Result<()> {
        need(x, layout.extent(), "rms_norm_inplace x")?;
        need(w, layout.cols, "rms_norm_inplace weight")?;
        let name = format!("rms_norm_{}_{}", T::NAME, T::NAME);
        self.rms_launch(&name, x.ptr(), x.ptr(), w, layout, eps)
    }

    fn rms_launch(
        &self,
        name: &str,
        x: u64,
        y: u64,
        w: &DBuf<f32>,
        l: RowLayout,
        eps: f32,
    ) -> Result<()> {
        if l.rows == 0 {
            return Ok(());
        }
        self.launch(
            &ELEMENTWISE,
            name,
            (l.rows.div_ceil(4) as u32, 1, 1),
            128,
            0,
            &[
                Arg::P(x),
                Arg::P(y),
                Arg::P(w.ptr()),
                i(l.rows),
                i(l.cols),
                i(l.per_row),
                i(l.ld),
                i(l.col_off),
                Arg::F(eps),
            ],
        )
    }

    /// Rotate-half RoPE in place on `heads` heads of `d` starting at `col_off` of each row
    /// (row r at position r); `cos`/`sin` are `[max_pos, d / 2]` with max_pos >= n.
    #[allow(clippy::too_many_arguments)]
    pub fn rope<T: GpuFloat>(
        &self,
        x: &mut DBuf<T>,
        cos: &DBuf<f32>,
        sin: &DBuf<f32>,
        n: usize,
        heads: usize,
        d: usize,
        ld: usize,
        col_off: usize,
    ) -> Result<()> {
        need(x, (n.max(1) - 1) * ld + col_off + heads * d, "rope x")?;
        need(cos, n * d / 2, "rope cos table")?;
        need(sin, n * d / 2, "rope sin table")?;
        self.launch(
            &ELEMENTWISE,
            &format!("rope_{}", T::NAME),
            rows_grid(n, heads * d / 2),
            256,
            0,
            &[
                Arg::P(x.ptr()),
                Arg::P(cos.ptr()),
                Arg::P(sin.ptr()),
                i(n),
                i(heads),
                i(d),
                i(ld),
                i(col_off),
            ],
        )
    }

    /// `x[r, col_off + c] += bias[c]` for `c < width`.
    pub fn add_bias<T: GpuFloat>(
        &self,
        x: &mut DBuf<T>,
        bias: &DBuf<f32>,
        n: usize,
        width: usize,
        ld: usize,
        col_off: usize,
    ) -> Result<()> {
        need(x, (n.max(1) - 1) * ld + col_off + width, "add_bias x")?;
        need(bias, width, "add_bias bias")?;
        self.launch(
            &ELEMENTWISE,
            &format!("add_bias_{}", T::NAME),
            rows_grid(n, width),
            256,
            0,
            &[
                Arg::P(x.ptr()),
                Arg::P(bias.ptr()),
                i(n),
                i(width),
                i(ld),
                i(col_off),
            ],
        )
    }

    /// `dst[h, r, c] = src[r, col_off + h * d + c]`: token-major columns to head-major.
    #[allow(clippy::too_many_arguments)]
    pub fn to_head_major<T: GpuFloat>(
        &self,
        src: &DBuf<T>,
        dst: &mut DBuf<T>,
        n: usize,
        heads: usize,
        d: usize,
        ld: usize,
        col_off: usize,
    ) -> Result<()> {
        need(
            src,
            (n.max(1) - 1) * ld + col_off + heads * d,
            "to_head_major src",
        )?;
        need(dst, n * heads * d, "to_head_major dst")?;
        self.launch(
            &ELEMENTWISE,
            &format!("to_head_major_{}", T::NAME),
            rows_grid(n, heads * d),
            256,
            0,
            &[
                Arg::P(src.ptr()),
                Arg::P(dst.ptr()),
                i(n),
                i(heads),
                i(d),
                i(ld),
                i(col_off),
            ],
        )
    }

    /// `out[r, c] = silu(gu[r, c]) * gu[r, f + c]` (gate and up fused as `[n, 2f]`).
    pub fn silu_mul<T: GpuFloat>(
        &self,
        gu: &DBuf<T>,
        out: &mut DBuf<T>,
        n: usize,
        f: usize,
    ) -> Result<()> {
        need(gu, n * 2 * f, "silu_mul gate|up")?;
        need(out, n * f, "silu_mul out")?;
        self.launch(
            &ELEMENTWISE,
            &format!("silu_mul_{}", T::NAME),
            rows_grid(n, if f.is_multiple_of(2) { f / 2 } else { f }),
            256,
            0,
            &[Arg::P(gu.ptr()), Arg::P(out.ptr()), i(n), i(f)],
        )
    }

    /// `x += y` over the first `len` elements (the residual add; x is f32).
    pub fn add_into<T: GpuFloat>(&self, x: &mut DBuf<f32>, y: &DBuf<T>, len: usize) -> Result<()> {
        need(x, len, "add_into x")?;
        need(y, len, "add_into y")?;
        self.launch(
            &ELEMENTWISE,
            &format!("add_into_{}", T::NAME),
            (grid_for(len as u64), 1, 1),
            256,
            0,
            &[Arg::P(x.ptr()), Arg::P(y.ptr()), Arg::L(len as i64)],
        )
    }

    /// `dst = src` converted to `T` (first `len` elements).
    pub fn cast_from_f32<T: GpuFloat>(
        &self,
        src: &DBuf<f32>,
        dst: &mut DBuf<T>,
        len: usize,
    ) -> Result<()> {
        need(src, len, "cast src")?;
        need(dst, len, "cast dst")?;
        self.launch(
            &ELEMENTWISE,
            &format!("cast_from_f32_{}", T::NAME),
            (grid_for(len as u64), 1, 1),
            256,
            0,
            &[Arg::P(src.ptr()), Arg::P(dst.ptr()), Arg::L(len as i64)],
        )
    }

    /// Fills `dst` with `offset + scale * u`, u uniform in [-1, 1) from a hash of (seed, index).
    pub fn fill_uniform<T: GpuFloat>(
        &self,
        dst: &mut DBuf<T>,
        seed: u64,
        scale: f32,
        offset: f32,
    ) -> Result<()> {
        let len = dst.len();
        self.launch(
            &ELEMENTWISE,
            &format!("fill_uniform_{}", T::NAME),
            (grid_for(len as u64), 1, 1),
            256,
            0,
            &[
                Arg::P(dst.ptr()),
                Arg::L(len as i64),
                Arg::P(seed),
                Arg::F(scale),
                Arg::F(offset),
            ],
        )
    }

    /// `pooled[h, qb, b]` = mean over the rows of query block `qb` of `P[h, r, b]`
    /// (`P` is `[heads, n, nb]`, `pooled` is `[heads, ceil(n / block), nb]`).
    pub fn pool_rows(
        &self,
        p: &DBuf<f32>,
        pooled: &mut DBuf<f32>,
        heads: usize,
        n: usize,
        nb: usize,
        block: usize,
    ) -> Result<()> {
        let nqb = n.div_ceil(block);
        need(p, heads * n * nb, "pool_rows P")?;
        need(pooled, heads * nqb * nb, "pool_rows pooled")?;
        self.launch(
            &ELEMENTWISE,
            "pool_rows",
            (nqb as u32, heads as u32, 1),
            256,
            0,
            &[Arg::P(p.ptr()), Arg::P(pooled.ptr()), i(n), i(nb), i(block)],
        )
    }
}
