//! The sparse attention kernels of `attnscope eval --device cuda` (each query's softmax over its
//! selected keys only: `sparse_rows`, one warp per query, and in bf16 the block-sparse flash
//! kernel `flash_sparse` over per-tile key lists) against the dense attention kernel of the same
//! layer shape, on random inputs and a random block selection at each sparsity
//! (`attnscope bench --device cuda --sparse-kernel`).
//!
//! The selection keeps, per q-head and query block of 64, the first key block, the query's own
//! block and random other 64-token blocks, as many as the sparsity leaves (the shape block
//! methods select). Times are CUDA-event medians after a warm-up run; building and uploading the
//! selection is not timed. `vs_density` (`flash_vs_density`) is the sparse time over the dense
//! time times the density (1 - sparsity): 1 means time proportional to kept pairs.

use attnscope_kernels::cuda::{AttnKernel, AttnShape, DBuf, GpuDevice, GpuFloat};
use rayon::prelude::*;
use serde_json::{json, Value};

use super::bench::median;
use super::forward::GpuModel;
use crate::device::Precision;
use crate::error::Result;
use crate::tile_lists::TileLists;

const BLOCK: usize = 64;

/// A well-mixed 64-bit hash (splitmix64's finalizer).
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The kept key blocks of q-head `h` and query block `qb` at `sparsity` (ascending).
fn kept_blocks(h: usize, qb: usize, sparsity: f64) -> Vec<usize> {
    let visible = qb + 1;
    let want = ((1.0 - sparsity) * visible as f64).ceil().max(1.0) as usize;
    let mut blocks: Vec<usize> = (1..qb).collect();
    blocks.sort_by_key(|&b| mix(((h as u64) << 40) ^ ((qb as u64) << 20) ^ b as u64));
    blocks.truncate(want.saturating_sub(2));
    blocks.push(0);
    blocks.push(qb);
    blocks.sort_unstable();
    blocks.dedup();
    blocks
}

/// CSR of the selection: per (q-head, query) its keys, and the kept pairs.
fn selection(heads: usize, n: usize, sparsity: f64) -> (Vec<u64>, Vec<u32>, u64) {
    let rows: Vec<Vec<usize>> = (0..heads * n.div_ceil(BLOCK))
        .into_par_iter()
        .map(|r| kept_blocks(r / n.div_ceil(BLOCK), r % n.div_ceil(BLOCK), sparsity))
        .collect();
    let nqb = n.div_ceil(BLOCK);
    let count = |h: usize, i: usize| -> u64 {
        rows[h * nqb + i / BLOCK]
            .iter()
            .map(|&b| ((b + 1) * BLOCK).min(i + 1).saturating_sub(b * BLOCK) as u64)
            .sum()
    };
    let mut offsets = Vec::with_capacity(heads * n + 1);
    offsets.push(0u64);
    for h in 0..heads {
        for i in 0..n {
            offsets.push(offsets[offsets.len() - 1] + count(h, i));
        }
    }
    let total = offsets[heads * n];
    let mut keys = vec![0u32; total as usize];
    let mut slices: Vec<&mut [u32]> = Vec::with_capacity(heads * n);
    let mut rest = keys.as_mut_slice();
    for w in offsets.windows(2) {
        let (a, b) = rest.split_at_mut((w[1] - w[0]) as usize);
        slices.push(a);
        rest = b;
    }
    slices.into_par_iter().enumerate().for_each(|(r, out)| {
        let (h, i) = (r / n, r % n);
        let mut at = 0;
        for &b in &rows[h * nqb + i / BLOCK] {
            for j in b * BLOCK..((b + 1) * BLOCK).min(i + 1) {
                out[at] = j as u32;
                at += 1;
            }
        }
    });
    (offsets, keys, total)
}

/// Dense and sparse attention of one layer of `model`'s shape over `n` tokens, in its storage
/// precision, at each sparsity: one JSON row each.
pub fn time_sparse_layer(
    model: &GpuModel,
    n: usize,
    sparsities: &[f64],
    repeats: usize,
) -> Result<Vec<Value>> {
    let c = &model.config;
    let s = AttnShape {
        n,
        heads: c.n_heads,
        kv_heads: c.n_kv_heads,
        head_dim: c.head_dim,
    };
    let dev = model.device();
    match model.precision {
        Precision::F32 => time_sparse::<f32>(dev, s, sparsities, repeats),
        Precision::Bf16 => {
            time_sparse::<attnscope_kernels::cuda::bf16>(dev, s, sparsities, repeats)
        }
    }
}

/// Dense and sparse attention of one layer of shape `s` at each sparsity: one JSON row each.
fn time_sparse<T: GpuFloat>(
    dev: &GpuDevice,
    s: AttnShape,
    sparsities: &[f64],
    repeats: usize,
) -> Result<Vec<Value>> {
    let (n, h, g, d) = (s.n, s.heads, s.kv_heads, s.head_dim);
    let mk = |len: usize, seed: u64| -> Result<DBuf<T>> {
        let mut b = dev.alloc::<T>(len, "bench input")?;
        dev.fill_uniform(&mut b, seed, 2.0, 0.0)?;
        Ok(b)
    };
    let (q, k, v) = (mk(h * n * d, 21)?, mk(g * n * d, 22)?, mk(g * n * d, 23)?);
    let mut out = dev.alloc::<T>(n * h * d, "bench out")?;
    let mut lse = dev.alloc::<f32>(h * n, "bench lse")?;
    let kernel = AttnKernel::auto::<T>(dev, d, BLOCK, 4);
    let dense = time_ms(dev, repeats, || {
        dev.attention(&q, &k, &v, &mut out, &mut lse, s, kernel)
    })?;
    let causal = n as f64 * (n as f64 + 1.0) / 2.0 * h as f64;
    let mut rows = Vec::new();
    for &sp in sparsities {
        let (offsets, keys, kept) = selection(h, n, sp);
        let lists = (T::NAME == "bf16" && (d == 64 || d == 128)).then(|| {
            TileLists::from_rows(h, n, |hh, i| {
                let r = hh * n + i;
                &keys[offsets[r] as usize..offsets[r + 1] as usize]
            })
        });
        let (offsets, keys) = (dev.upload(&offsets, "offsets")?, dev.upload(&keys, "keys")?);
        let sparse = time_ms(dev, repeats, || {
            dev.sparse_attention(&q, &k, &v, &offsets, &keys, s, &mut out)
        })?;
        drop((offsets, keys));
        let flash = match lists {
            Some(l) => {
                let (o, kk, m) = (
                    dev.upload(&l.offsets, "tile offsets")?,
                    dev.upload(&l.keys, "tile keys")?,
                    dev.upload(&l.mask, "tile masks")?,
                );
                Some(time_ms(dev, repeats, || {
                    dev.flash_sparse_attention(&q, &k, &v, &o, &kk, &m, s, &mut out)
                })?)
            }
            None => None,
        };
        let density = kept as f64 / causal;
        rows.push(json!({
            "tokens": n, "mode": "sparse-kernel", "kernel": format!("{kernel:?}"),
            "target_sparsity": sp, "sparsity": 1.0 - density,
            "dense_ms": dense, "sparse_ms": sparse,
            "sparse_over_dense": sparse / dense,
            "vs_density": sparse / (dense * density),
            "kept_pairs_per_s": kept as f64 / (sparse * 1e-3),
            "flash_sparse_ms": flash,
            "flash_sparse_over_dense": flash.map(|f| f / dense),
            "flash_vs_density": flash.map(|f| f / (dense * density)),
        }));
    }
    Ok(rows)
}

/// The median of `repeats` CUDA-event timings of `f` (after one warm-up run), in ms.
fn time_ms(
    dev: &GpuDevice,
    repeats: usize,
    mut f: impl FnMut() -> attnscope_kernels::cuda::Result<()>,
) -> Result<f64> {
    let mut times = Vec::new();
    for rep in 0..=repeats.max(1) {
        let t = dev.timer()?;
        f()?;
        let ms = t.stop_ms(dev)?;
        if rep > 0 {
            times.push(ms);
        }
    }
    Ok(median(times) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CSR holds, per query, the causal keys of its kept blocks, and the measured sparsity
    /// is near the target.
    #[test]
    fn selection_keeps_whole_causal_blocks_at_about_the_sparsity() {
        let (heads, n) = (2, 1000);
        let (offsets, keys, kept) = selection(heads, n, 0.9);
        assert_eq!(offsets.len(), heads * n + 1);
        assert_eq!(kept as usize, keys.len());
        for (r, w) in offsets.windows(2).enumerate() {
            let row = &keys[w[0] as usize..w[1] as usize];
            let i = (r % n) as u32;
            assert!(row.windows(2).all(|p| p[0] < p[1]) && row.iter().all(|&j| j <= i));
            assert_eq!(row.last(), Some(&i), "the query's own key");
            assert_eq!(row.first(), Some(&0), "the first block");
        }
        let density = kept as f64 / (heads as f64 * n as f64 * (n as f64 + 1.0) / 2.0);
        assert!((0.1..0.3).contains(&density), "density {density}");
    }
}
