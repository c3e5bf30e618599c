//! Launcher of `cu/topk_rows.cu`: row selection by radix select, for token-level rules and
//! identity-pooled block rules too large for `block_rows`' in-shared-memory sort
//! ([`RowRule::by_radix`]).

use super::blocksel::{RowPool, RowRule};
use super::buffer::DBuf;
use super::device::{grid_for, i, need, Arg, GpuDevice, GpuError, Result, TOPK_ROWS};

impl GpuDevice {
    /// As [`GpuDevice::block_rows`] for an identity-pooled rule, by radix select: rows
    /// `i0 .. i0 + nq` of one selection head, `logits` `[heads, nq, m]` from element
    /// `logits_off` on, `scratch` at least `nq * m` floats (the combined scores), `out` from
    /// element `out_off` on (`[n, width]`) receives each row's forced blocks then its `k` best
    /// candidates in index order, padded with `u32::MAX`.
    #[allow(clippy::too_many_arguments)]
    pub fn select_rows_radix(
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
        scratch: &mut DBuf<f32>,
        out: &mut DBuf<u32>,
        out_off: usize,
    ) -> Result<()> {
        need(
            logits,
            logits_off + heads * nq * rule.m,
            "radix rows logits",
        )?;
        need(scratch, nq * rule.m, "radix rows scratch")?;
        need(out, out_off + n * width, "radix rows out")?;
        if i0 + nq > n
            || rule.block == 0
            || rule.vis_stride == 0
            || rule.pool != RowPool::Identity
            || (!rule.force_own && rule.local > 0)
            || [rule.m, n, k, width, rule.n_init, rule.local]
                .iter()
                .any(|&v| v > i32::MAX as usize)
        {
            return Err(GpuError::Invalid(
                "select_rows_radix: bad rows, or a pooled rule".into(),
            ));
        }
        if nq == 0 {
            return Ok(());
        }
        self.launch(
            &TOPK_ROWS,
            "select_rows_radix",
            (nq as u32, 1, 1),
            256,
            0,
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
                Arg::P(scratch.ptr()),
                Arg::P(out.ptr_at(out_off)),
            ],
        )
    }

    /// `q[h, i, c] *= w[h, c]` over f32 queries `[nh, n, d]`: per q-head weights of the query
    /// dimensions before a rule scores them.
    pub fn scale_query_dims(
        &self,
        q: &mut DBuf<f32>,
        w: &DBuf<f32>,
        (nh, n, d): (usize, usize, usize),
    ) -> Result<()> {
        need(q, nh * n * d, "scaled queries")?;
        need(w, nh * d, "query weights")?;
        if nh * n * d == 0 {
            return Ok(());
        }
        self.launch(
            &TOPK_ROWS,
            "scale_query_dims",
            (grid_for((nh * n * d) as u64), 1, 1),
            256,
            0,
            &[Arg::P(q.ptr()), Arg::P(w.ptr()), i(nh), i(n), i(d)],
        )
    }
}
