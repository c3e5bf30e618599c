//! Launchers of `cu/blocksel.cu`: block scoring (representative logits through cuBLAS,
//! then one row kernel: softmax or raw, group sum, pooling, forced blocks, top-k) and the sparse
//! measurement kernel (recall, output error and cosine of kept key blocks per query).

use std::ffi::c_void;

use cudarc::cublas::result::gemm_ex;
use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType};

use super::buffer::{DBuf, GpuFloat};
use super::device::{grid_for, i, need, Arg, GpuDevice, GpuError, Result, BLOCKSEL};

/// How the row kernel turns representative scores into block scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowPool {
    /// Block `b`'s score is representative `b`'s.
    Identity,
    /// Max-pooling: the max over representatives `[per b - 1, per b + per - 1]`.
    Max(usize),
    /// Overlapping-sum pooling: the sum over representatives `[per b - 1, per (b + 1))`.
    Sum(usize),
}

/// How the row kernels turn each head's representative logits into scores before the head sum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowTransform {
    /// The scaled logit.
    Raw,
    /// Softmax over the row's visible representatives.
    Softmax,
    /// `max(scaled logit, 0)`.
    Relu,
}

impl RowTransform {
    /// The kernels' code.
    pub(crate) fn code(self) -> i32 {
        match self {
            Self::Raw => 0,
            Self::Softmax => 1,
            Self::Relu => 2,
        }
    }
}

/// The row kernels' rule (see `block_rows` in `cu/blocksel.cu`, `select_rows_radix` in
/// `cu/topk_rows.cu`).
#[derive(Debug, Clone, Copy)]
pub struct RowRule {
    /// Representatives.
    pub m: usize,
    /// Multiplies every logit.
    pub scale: f32,
    /// Representative `j` is visible to query `i` iff `i + 1 >= vis_window` and
    /// `j <= (i + 1 - vis_window) / vis_stride`.
    pub vis_window: usize,
    pub vis_stride: usize,
    /// Each head's scores before the sum over heads.
    pub transform: RowTransform,
    pub pool: RowPool,
    pub block: usize,
    pub n_init: usize,
    pub local: usize,
    /// The own block (and the `local` blocks before it) are forced; false: only the `n_init`
    /// first blocks are (then `local` must be 0), and the own block is a candidate.
    pub force_own: bool,
}

impl RowRule {
    /// Forced blocks a row can have at most.
    pub fn max_forced(&self) -> usize {
        if self.force_own {
            self.n_init + self.local + 1
        } else {
            self.n_init
        }
    }

    /// Shared memory per row of `block_rows`' in-memory sort over `n` tokens.
    pub fn sort_bytes(&self, n: usize) -> usize {
        let cand = self.m.max(n.div_ceil(self.block)).max(1);
        (self.m * 4).div_ceil(16) * 16 + cand.next_power_of_two() * 8
    }

    /// True when rows are selected by radix select (`select_rows_radix`): token-level rules
    /// (one-token blocks, identity pooling), and identity-pooled rules whose sort would not fit
    /// shared memory.
    pub fn by_radix(&self, n: usize) -> bool {
        self.pool == RowPool::Identity && (self.block == 1 || self.sort_bytes(n) > SORT_SMEM)
    }
}

/// Shared memory `block_rows` may use per row.
pub const SORT_SMEM: usize = 200 * 1024;

impl GpuDevice {
    /// `y = f(x)` as f32 over `len` elements: `mode` 0 copy, 1 `max(x, 0)`, 2 `min(x, 0)`.
    pub fn to_f32_mode<T: GpuFloat>(
        &self,
        x: &DBuf<T>,
        y: &mut DBuf<f32>,
        len: usize,
        mode: i32,
    ) -> Result<()> {
        need(x, len, "to_f32 x")?;
        need(y, len, "to_f32 y")?;
        self.launch(
            &BLOCKSEL,
            &format!("to_f32_mode_{}", T::NAME),
            (grid_for(len as u64), 1, 1),
            256,
            0,
            &[
                Arg::P(x.ptr()),
                Arg::P(y.ptr()),
                Arg::L(len as i64),
                Arg::I(mode),
            ],
        )
    }

    /// `y[rows, out] (+)= x[rows, inp] @ w[out, inp]^T` in f32 (no TF32) on raw device addresses
    /// (`beta` 0 or 1): the representative logits of a chunk of queries.
    #[allow(clippy::too_many_arguments)]
    pub fn sgemm_nt_raw(
        &self,
        x: u64,
        w: u64,
        y: u64,
        rows: usize,
        inp: usize,
        out: usize,
        beta: f32,
    ) -> Result<()> {
        if [rows, inp, out].iter().any(|&v| v > i32::MAX as usize) {
            return Err(GpuError::Invalid("sgemm: a dimension exceeds i32".into()));
        }
        if rows == 0 || out == 0 {
            return Ok(());
        }
        let alpha = 1.0f32;
        let blas = self.blas.lock().unwrap_or_else(|p| p.into_inner());
        unsafe {
            gemm_ex(
                *blas.handle(),
                cublasOperation_t::CUBLAS_OP_T,
                cublasOperation_t::CUBLAS_OP_N,
                out as i32,
                rows as i32,
                inp as i32,
                &alpha as *const f32 as *const c_void,
                w as *const c_void,
                cudaDataType::CUDA_R_32F,
                inp as i32,
                x as *const c_void,
                cudaDataType::CUDA_R_32F,
                inp as i32,
                &beta as *const f32 as *const c_void,
                y as *mut c_void,
                cudaDataType::CUDA_R_32F,
                out as i32,
                cublasComputeType_t::CUBLAS_COMPUTE_32F,
                cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| GpuError::Blas {
            what: format!("sgemm {rows}x{inp} @ ({out}x{inp})^T"),
            err: format!("{e:?}"),
        })
    }

    /// Scores and selects rows `i0 .. i0 + nq` of one selection head: `logits` holds
    /// `[heads, nq, m]` unscaled representative logits from element `logits_off` on; `out` from
    /// element `out_off` on (`[n, width]`) receives each row's forced blocks then its `k` best
    /// candidates, padded with `u32::MAX`.
    #[allow(clippy::too_many_arguments)]
    pub fn block_rows(
        &self,
        logits: &DBuf<f32>,
        logits_off: usize,
        heads: usize,
        nq: usize,
        i0: usize,
        rule: &RowRule,
        k: usize,
        width: usize,
        n: usize,
        out: &mut DBuf<u32>,
        out_off: usize,
    ) -> Result<()> {
        need(
            logits,
            logits_off + heads * nq * rule.m,
            "block_rows logits",
        )?;
        need(out, out_off + n * width, "block_rows out")?;
        if i0 + nq > n
            || rule.block == 0
            || rule.vis_stride == 0
            || (!rule.force_own && rule.local > 0)
        {
            return Err(GpuError::Invalid("block_rows: bad rows or rule".into()));
        }
        if nq == 0 {
            return Ok(());
        }
        let (pool, per) = match rule.pool {
            RowPool::Identity => (0, 1),
            RowPool::Max(p) => (1, p),
            RowPool::Sum(p) => (2, p),
        };
        // Every row's candidates are below both the representatives and the blocks.
        let cand = rule.m.max(n.div_ceil(rule.block)).max(1);
        let p2 = cand.next_power_of_two();
        let smem = rule.sort_bytes(n);
        if smem > SORT_SMEM {
            return Err(GpuError::Invalid(format!(
                "block_rows: {} representatives and {cand} blocks need {smem} bytes of shared \
                 memory per row (more than 200 KiB): use larger blocks or a shorter input",
                rule.m
            )));
        }
        self.launch(
            &BLOCKSEL,
            "block_rows",
            (nq as u32, 1, 1),
            256,
            smem as u32,
            &[
                Arg::P(logits.ptr_at(logits_off)),
                i(heads),
                i(nq),
                i(rule.m),
                i(i0),
                Arg::F(rule.scale),
                i(rule.vis_window),
                i(rule.vis_stride),
                Arg::I(rule.transform.code()),
                Arg::I(pool),
                i(per),
                i(rule.block),
                i(rule.n_init),
                // local = -1: neither the own block nor any before it is forced.
                if rule.force_own {
                    i(rule.local)
                } else {
                    Arg::I(-1)
                },
                i(k),
                i(width),
                i(p2),
                Arg::P(out.ptr_at(out_off)),
            ],
        )
    }

    /// Per (q-head, query): recall, relative output error and cosine of the renormalized sparse
    /// attention over the kept blocks of `sel` (`[selection heads, ceil(n / qblock), width]`,
    /// q-head `h` reading selection head `h / heads_per_sel`), against the dense output `dense`
    /// (`[n, nh d]`); `kept` counts the kept causal keys (u32 bits in an f32 buffer, so that it
    /// can be poisoned with NaN like the others). Outputs are `[nh, n]`.
    #[allow(clippy::too_many_arguments)]
    pub fn measure_blocks<T: GpuFloat>(
        &self,
        q: &DBuf<T>,
        k: &DBuf<T>,
        v: &DBuf<T>,
        lse: &DBuf<f32>,
        dense: &DBuf<T>,
        sel: &DBuf<u32>,
        shape: (usize, usize, usize, usize),
        width: usize,
        unit: usize,
        qblock: usize,
        heads_per_sel: usize,
        out: (
            &mut DBuf<f32>,
            &mut DBuf<f32>,
            &mut DBuf<f32>,
            &mut DBuf<f32>,
        ),
    ) -> Result<()> {
        let (nh, nkv, n, d) = shape;
        if d > 128 || d % 2 != 0 || nkv == 0 || nh % nkv != 0 || heads_per_sel == 0 {
            return Err(GpuError::Invalid(format!(
                "measure_blocks: head dim {d} (even, at most 128), {nh} heads / {nkv} kv heads"
            )));
        }
        need(q, nh * n * d, "measure q")?;
        need(k, nkv * n * d, "measure k")?;
        need(v, nkv * n * d, "measure v")?;
        need(lse, nh * n, "measure lse")?;
        need(dense, n * nh * d, "measure dense")?;
        let rows = n.div_ceil(qblock.max(1));
        need(
            sel,
            nh.div_ceil(heads_per_sel) * rows * width,
            "measure selection",
        )?;
        for b in [&*out.0, &*out.1, &*out.2] {
            need(b, nh * n, "measure output")?;
        }
        need(out.3, nh * n, "measure kept")?;
        if n == 0 {
            return Ok(());
        }
        let warps = 4usize;
        // One-token blocks: the kernel that gathers 32 list entries at a time.
        let (name, unit_arg) = match unit {
            1 => (format!("measure_tokens_{}", T::NAME), None),
            u => (format!("measure_blocks_{}", T::NAME), Some(i(u))),
        };
        let mut args = vec![
            Arg::P(q.ptr()),
            Arg::P(k.ptr()),
            Arg::P(v.ptr()),
            Arg::P(lse.ptr()),
            Arg::P(dense.ptr()),
            Arg::P(sel.ptr()),
            i(width),
        ];
        args.extend(unit_arg);
        args.extend([
            i(qblock.max(1)),
            i(heads_per_sel),
            i(nh),
            i(nkv),
            i(n),
            i(d),
            Arg::F(1.0 / (d as f32).sqrt()),
            Arg::P(out.0.ptr()),
            Arg::P(out.1.ptr()),
            Arg::P(out.2.ptr()),
            Arg::P(out.3.ptr()),
        ]);
        self.launch(
            &BLOCKSEL,
            &name,
            (n.div_ceil(warps) as u32, nh as u32, 1),
            (32 * warps) as u32,
            (warps * (d + 32 * (d + 1)) * 4) as u32,
            &args,
        )
    }

    /// Per row of the capture's block mass `p` (`[heads, n, nb]`, `nb = ceil(n / block)`), the
    /// rank of the query's own block among its causal blocks (descending mass, ties to the lower
    /// block; 0 = best) into `rank` (`[heads, n]`, u32 bits in an f32 buffer).
    pub fn own_block_ranks(
        &self,
        p: &DBuf<f32>,
        heads: usize,
        n: usize,
        block: usize,
        rank: &mut DBuf<f32>,
    ) -> Result<()> {
        let nb = n.div_ceil(block.max(1));
        need(p, heads * n * nb, "own_block_rank P")?;
        need(rank, heads * n, "own_block_rank out")?;
        if heads * n == 0 {
            return Ok(());
        }
        let warps = 8usize;
        self.launch(
            &BLOCKSEL,
            "own_block_rank",
            ((heads * n).div_ceil(warps) as u32, 1, 1),
            (32 * warps) as u32,
            0,
            &[
                Arg::P(p.ptr()),
                i(heads),
                i(n),
                i(nb),
                i(block.max(1)),
                Arg::P(rank.ptr()),
            ],
        )
    }

    /// Block x block tile maxima of the exact attention: `g [nh, nb, nb]` with `g[h, r, c]`
    /// (c <= r) the max over queries of block `r` and causal keys of block `c` of the exact
    /// attention probability.
    #[allow(clippy::too_many_arguments)]
    pub fn block_tile_max<T: GpuFloat>(
        &self,
        q: &DBuf<T>,
        k: &DBuf<T>,
        lse: &DBuf<f32>,
        g: &mut DBuf<f32>,
        shape: (usize, usize, usize, usize),
        block: usize,
    ) -> Result<()> {
        let (nh, nkv, n, d) = shape;
        let nb = n.div_ceil(block.max(1));
        need(q, nh * n * d, "block tile max q")?;
        need(k, nkv * n * d, "block tile max k")?;
        need(lse, nh * n, "block tile max lse")?;
        need(g, nh * nb * nb, "block tile maxima")?;
        if d % 2 != 0 || block > 64 || d > 128 {
            return Err(GpuError::Invalid(format!(
                "block_tile_max: block {block} (at most 64) x head dim {d} (at most 128)"
            )));
        }
        if n == 0 {
            return Ok(());
        }
        self.launch(
            &BLOCKSEL,
            &format!("block_tile_max_{}", T::NAME),
            (nb as u32, nh as u32, 1),
            256,
            (2 * 64 * (d + 1) * 4) as u32,
            &[
                Arg::P(q.ptr()),
                Arg::P(k.ptr()),
                Arg::P(lse.ptr()),
                Arg::P(g.ptr()),
                i(nh),
                i(nkv),
                i(n),
                i(d),
                i(block),
                Arg::F(1.0 / (d as f32).sqrt()),
            ],
        )
    }
}
