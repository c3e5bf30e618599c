//! The pooled attention maps a bundle stores: the capture's map (mean over each query block of
//! the mass on each key block, [`attnscope_core::capture::HeadCapture::pooled`]) at most
//! [`MAX_MAP_BLOCKS`] blocks a side. A longer input's map is stored with blocks of a whole
//! multiple of the capture block ([`map_block`]): at 32k tokens and capture blocks of 16, the
//! capture's map is 2,048 x 2,048 floats (16.8 MB) per head, 5.6 GB for a 336-head model,
//! where 256 x 256 (0.26 MB) is as much as a heatmap shows.

use ndarray::ArrayView2;

/// Most blocks a side of a stored map.
pub const MAX_MAP_BLOCKS: usize = 256;

/// Tokens per block of the stored maps of an `n`-token input captured with key blocks of
/// `capture_block`: the capture block times the smallest factor that leaves at most
/// [`MAX_MAP_BLOCKS`] blocks.
pub fn map_block(capture_block: usize, n: usize) -> usize {
    let cb = capture_block.max(1);
    cb * n.div_ceil(cb).div_ceil(MAX_MAP_BLOCKS).max(1)
}

/// The stored map (row-major, and its blocks a side) of a capture's pooled map `pooled`
/// (`[nb, nb]` at `capture_block`) of an `n`-token input: the same values when the map block is
/// the capture block, else per coarse cell the mean over its queries of the mass on its keys
/// (fine query blocks weighted by their query counts, fine key blocks summed).
pub fn stored_map(pooled: ArrayView2<f32>, capture_block: usize, n: usize) -> (Vec<f32>, usize) {
    let cb = capture_block.max(1);
    let f = map_block(cb, n) / cb;
    let nb = pooled.nrows();
    if f == 1 {
        return (pooled.iter().copied().collect(), nb);
    }
    let coarse = nb.div_ceil(f);
    let mut out = vec![0f64; coarse * coarse];
    let mut queries = vec![0f64; coarse];
    for (qb, row) in pooled.outer_iter().enumerate() {
        let rows = ((qb + 1) * cb).min(n).saturating_sub(qb * cb) as f64;
        queries[qb / f] += rows;
        for (kb, &m) in row.iter().enumerate() {
            out[(qb / f) * coarse + kb / f] += rows * f64::from(m);
        }
    }
    let map = out
        .iter()
        .enumerate()
        .map(|(i, &x)| (x / queries[i / coarse].max(1.0)) as f32)
        .collect();
    (map, coarse)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_inputs_keep_the_capture_map_and_long_ones_are_pooled_to_at_most_256_blocks() {
        assert_eq!(map_block(64, 8192), 64);
        assert_eq!(map_block(16, 4096), 16);
        assert_eq!(map_block(16, 4097), 32);
        assert_eq!(map_block(16, 32768), 128);
        assert_eq!(map_block(0, 10), 1);
    }

    /// A coarse cell is the mean over its queries of the mass on its keys, computed here from a
    /// per-query mass matrix with uneven last blocks.
    #[test]
    fn coarse_cells_are_query_means_of_key_block_masses() {
        let (n, cb): (usize, usize) = (16 * 300 + 5, 16);
        let nb = n.div_ceil(cb);
        // Per-query mass on each fine key block: a smooth pattern.
        let mass = |i: usize, kb: usize| ((i * 7 + kb * 3) % 11) as f64 / 100.0;
        let pooled = ndarray::Array2::from_shape_fn((nb, nb), |(qb, kb)| {
            let qs = qb * cb..((qb + 1) * cb).min(n);
            (qs.clone().map(|i| mass(i, kb)).sum::<f64>() / qs.len() as f64) as f32
        });
        let (map, coarse) = stored_map(pooled.view(), cb, n);
        let f = map_block(cb, n) / cb;
        assert_eq!((f, coarse), (2, nb.div_ceil(2)));
        for (cq, ck) in [(0, 0), (5, 17), (coarse - 1, coarse - 1), (coarse - 1, 3)] {
            let qs = cq * f * cb..((cq + 1) * f * cb).min(n);
            let ks = ck * f..((ck + 1) * f).min(nb);
            let want: f64 = qs
                .clone()
                .map(|i| ks.clone().map(|kb| mass(i, kb)).sum::<f64>())
                .sum::<f64>()
                / qs.len() as f64;
            let got = f64::from(map[cq * coarse + ck]);
            assert!((got - want).abs() < 1e-5, "[{cq}, {ck}] {got} vs {want}");
        }
    }
}
