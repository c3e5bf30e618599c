//! Exact attention statistics of one layer, computed on the host without ever holding an
//! `n x n` map: per q-head the per-query log-sum-exp, the query-by-key-block mass `P[i, b]` (sum
//! of query `i`'s attention probabilities over the keys of block `b`) of the queries from
//! [`CaptureOptions::block_mass_from`] on, the sink mass (mass on the first tokens) per query,
//! and a pooled block x block map for viewing ([`HeadCapture`], computed by [`capture_layer`]
//! with [`CaptureOptions`]). The pass also yields the exact dense attention output, so the layer
//! need not recompute it. Its memory beyond the layer's tensors is the output, `P`'s kept rows
//! and the pooled map: the probabilities live one tile of queries at a time.

use ndarray::{s, Array2};
use rayon::prelude::*;

use crate::exact_attention::{
    assemble_heads, head_tiles, prob_tile_rule, tile_first_key, tile_output, LayerQkv, TILE,
};

/// What to capture.
#[derive(Debug, Clone, PartialEq)]
pub struct CaptureOptions {
    /// Key block size of `P` and of the pooled map (default 64).
    pub block: usize,
    /// Tokens at the start counted as the attention sink (default 4).
    pub sink_tokens: usize,
    /// Layers to capture; `None` captures every layer.
    pub layers: Option<Vec<usize>>,
    /// Keep the post-RoPE Q, K, V of captured layers (for method replay).
    pub keep_qkv: bool,
    /// The first query whose row of `P` is kept (default 0: every query). Scoring only the last
    /// queries (decode accounting) needs only theirs: at 32k tokens and key blocks of 16 the
    /// whole `P` of a 14-head layer is 3.8 GB, the last 512 rows 59 MB. Every query still counts
    /// in the pooled map, the LSE and the sink mass.
    pub block_mass_from: usize,
}

impl Default for CaptureOptions {
    fn default() -> Self {
        Self {
            block: 64,
            sink_tokens: 4,
            layers: None,
            keep_qkv: false,
            block_mass_from: 0,
        }
    }
}

/// Captured statistics of one (layer, q-head).
#[derive(Debug, Clone)]
pub struct HeadCapture {
    /// Per-query log-sum-exp of the layer's logits (`ScoreRule::logit` of `q_i . k_j`) over the
    /// keys the query sees (`j <= i`, inside the sliding window where the layer has one).
    pub lse: Vec<f32>,
    /// `P[i, b]` of the queries `i >= block_mass_from`: `[n - block_mass_from, n_blocks]` (row
    /// `i - block_mass_from` is query `i`), zero for blocks entirely after query `i` or entirely
    /// before its sliding window.
    pub block_mass: Array2<f32>,
    /// The query of `block_mass`'s first row ([`CaptureOptions::block_mass_from`]).
    pub block_mass_from: usize,
    /// Per-query attention mass on the first `sink_tokens` keys.
    pub sink_mass: Vec<f32>,
    /// `[n_blocks, n_blocks]`: mean over the queries of each query block of `P[i, b]`.
    pub pooled: Array2<f32>,
}

impl HeadCapture {
    /// Mean sink mass over all queries.
    pub fn mean_sink_mass(&self) -> f32 {
        self.sink_mass.iter().sum::<f32>() / self.sink_mass.len().max(1) as f32
    }

    /// Query `i`'s row of `P`, when it was kept (`i >= block_mass_from`).
    pub fn block_mass_row(&self, i: usize) -> Option<ndarray::ArrayView1<'_, f32>> {
        let r = i.checked_sub(self.block_mass_from)?;
        (r < self.block_mass.nrows()).then(|| self.block_mass.row(r))
    }
}

struct TileStats {
    /// The rows of `P` kept (queries `>= block_mass_from` of the tile).
    block_mass: Array2<f32>,
    /// Per query block the tile's rows touch, from `pooled_from`: the sum of its rows of `P` in
    /// this tile, and how many.
    pooled_sums: Vec<(Vec<f32>, usize)>,
    pooled_from: usize,
    lse: Vec<f32>,
    sink: Vec<f32>,
    out: Array2<f32>,
}

fn tile_stats(
    qkv: &LayerQkv<'_>,
    kts: &[Array2<f32>],
    (h, t0): (usize, usize),
    opts: &CaptureOptions,
) -> TileStats {
    let (n, block) = (qkv.len(), opts.block.max(1));
    let t1 = (t0 + TILE).min(n);
    let g = qkv.kv_of(h);
    let (p, lse) = prob_tile_rule(
        qkv.q_head(h).slice(s![t0..t1, ..]),
        kts[g].slice(s![.., ..t1]),
        t0,
        &qkv.rule,
    );
    let n_blocks = n.div_ceil(block);
    let keep0 = opts.block_mass_from.clamp(t0, t1);
    let mut block_mass = Array2::zeros((t1 - keep0, n_blocks));
    let pooled_from = t0 / block;
    let mut pooled_sums = vec![(vec![0f32; n_blocks], 0usize); (t1 - 1) / block + 1 - pooled_from];
    let mut masses = vec![0f32; n_blocks];
    let mut sinks = Vec::with_capacity(t1 - t0);
    // Blocks before the tile's first visible key hold no mass (sliding windows).
    let lo = tile_first_key(&qkv.rule, t0);
    let b0 = lo / block;
    for (r, row) in p.outer_iter().enumerate() {
        // Invariant: `p` is a fresh product (`prob_tile`), standard row-major layout.
        let row = row.as_slice().expect("fresh arrays are contiguous");
        let vis = &row[b0 * block..=t0 + r];
        masses.fill(0.0);
        for (b, chunk) in vis.chunks(block).enumerate() {
            masses[b0 + b] = chunk.iter().sum();
        }
        // Rows added one after another from zero, as a mean over the query block adds them.
        let (sum, count) = &mut pooled_sums[(t0 + r) / block - pooled_from];
        sum.iter_mut().zip(&masses).for_each(|(s, m)| *s += m);
        *count += 1;
        if t0 + r >= keep0 {
            block_mass
                .row_mut(t0 + r - keep0)
                .assign(&ndarray::aview1(&masses));
        }
        sinks.push(row[..=t0 + r].iter().take(opts.sink_tokens).sum());
    }
    let out = tile_output(p.view(), qkv.v_head(g), lo);
    TileStats {
        block_mass,
        pooled_sums,
        pooled_from,
        lse,
        sink: sinks,
        out,
    }
}

/// Captures every head of one layer and computes its exact dense attention output.
pub fn capture_layer(qkv: &LayerQkv<'_>, opts: &CaptureOptions) -> (Vec<HeadCapture>, Array2<f32>) {
    let n = qkv.len();
    let block = opts.block.max(1);
    let n_blocks = n.div_ceil(block);
    let from = opts.block_mass_from.min(n);
    let kts = qkv.keys_transposed();
    let tiles: Vec<((usize, usize), TileStats)> = head_tiles(qkv.n_heads, n)
        .into_par_iter()
        .map(|(h, t0)| ((h, t0), tile_stats(qkv, &kts, (h, t0), opts)))
        .collect();
    let mut heads: Vec<HeadCapture> = (0..qkv.n_heads)
        .map(|_| HeadCapture {
            lse: vec![0.0; n],
            block_mass: Array2::zeros((n - from, n_blocks)),
            block_mass_from: from,
            sink_mass: vec![0.0; n],
            pooled: Array2::zeros((n_blocks, n_blocks)),
        })
        .collect();
    let mut counts = vec![vec![0usize; n_blocks]; qkv.n_heads];
    let mut outs = Vec::with_capacity(tiles.len());
    for ((h, t0), st) in tiles {
        let t = st.lse.len();
        let hc = &mut heads[h];
        hc.lse[t0..t0 + t].copy_from_slice(&st.lse);
        hc.sink_mass[t0..t0 + t].copy_from_slice(&st.sink);
        if t0 + t > from {
            let keep0 = from.max(t0);
            hc.block_mass
                .slice_mut(s![keep0 - from..t0 + t - from, ..])
                .assign(&st.block_mass);
        }
        for (j, (sum, count)) in st.pooled_sums.into_iter().enumerate() {
            let qb = st.pooled_from + j;
            hc.pooled
                .row_mut(qb)
                .iter_mut()
                .zip(&sum)
                .for_each(|(p, s)| *p += s);
            counts[h][qb] += count;
        }
        outs.push(((h, t0), st.out));
    }
    heads.par_iter_mut().zip(&counts).for_each(|(hc, counts)| {
        for (mut row, &c) in hc.pooled.outer_iter_mut().zip(counts) {
            row.mapv_inplace(|x| x / c.max(1) as f32);
        }
    });
    (heads, assemble_heads(n, qkv.head_dim, qkv.n_heads, outs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exact_attention::ScoreRule;
    use crate::rng::Rng;

    fn random(n: usize, cols: usize, rng: &mut Rng) -> Array2<f32> {
        Array2::from_shape_fn((n, cols), |_| rng.normal_f32())
    }

    /// `P`, the pooled map and the sink mass against an f64 softmax computed here, for a plain
    /// and a windowed layer, every query kept and only the last ones: the kept rows and every
    /// other statistic are bit-identical to the full capture's.
    #[test]
    fn kept_rows_and_pooled_map_match_an_f64_softmax() {
        let (n, d, heads, kv) = (203, 8, 4, 2);
        let mut rng = Rng::new(5, "capture");
        let (q, k, v) = (
            random(n, heads * d, &mut rng),
            random(n, kv * d, &mut rng),
            random(n, kv * d, &mut rng),
        );
        for (window, block) in [(None, 16), (None, 100), (Some(50), 16)] {
            let rule = ScoreRule {
                window,
                ..ScoreRule::plain(d)
            };
            let qkv = LayerQkv {
                layer: 0,
                n_heads: heads,
                n_kv_heads: kv,
                head_dim: d,
                q: q.view(),
                k: k.view(),
                v: v.view(),
                rule,
            };
            let full_opts = CaptureOptions {
                block,
                ..Default::default()
            };
            let (full, full_out) = capture_layer(&qkv, &full_opts);
            let nb = n.div_ceil(block);
            for (h, hc) in full.iter().enumerate() {
                let (qh, kh) = (qkv.q_head(h), qkv.k_head(h / 2));
                let mut pooled = vec![vec![0f64; nb]; nb];
                for i in 0..n {
                    let lo = window.map_or(0, |w| (i + 1).saturating_sub(w));
                    let logits: Vec<f64> = (lo..=i)
                        .map(|j| f64::from(qh.row(i).dot(&kh.row(j)) * rule.scale))
                        .collect();
                    let max = logits.iter().copied().fold(f64::MIN, f64::max);
                    let z: f64 = logits.iter().map(|x| (x - max).exp()).sum();
                    let mut p = vec![0f64; nb];
                    for (j, x) in (lo..=i).zip(&logits) {
                        p[j / block] += (x - max).exp() / z;
                    }
                    for b in 0..nb {
                        let got = f64::from(hc.block_mass[[i, b]]);
                        assert!((got - p[b]).abs() < 1e-5, "P[{i},{b}] {got} vs {}", p[b]);
                        pooled[i / block][b] += p[b];
                    }
                    let sink: f64 = (lo..=i.min(3))
                        .map(|j| (logits[j - lo] - max).exp() / z)
                        .sum();
                    assert!((f64::from(hc.sink_mass[i]) - sink).abs() < 1e-5);
                }
                for (qb, row) in pooled.iter().enumerate() {
                    let rows = ((qb + 1) * block).min(n) - qb * block;
                    for (b, &x) in row.iter().enumerate() {
                        let got = f64::from(hc.pooled[[qb, b]]);
                        assert!((got - x / rows as f64).abs() < 1e-5, "pooled [{qb},{b}]");
                    }
                }
            }
            for from in [1, 64, 150, n] {
                let opts = CaptureOptions {
                    block_mass_from: from,
                    ..full_opts.clone()
                };
                let (part, out) = capture_layer(&qkv, &opts);
                assert_eq!(out, full_out);
                for (a, b) in part.iter().zip(&full) {
                    assert_eq!(a.block_mass_from, from);
                    assert_eq!(a.block_mass, b.block_mass.slice(s![from.., ..]));
                    assert_eq!(
                        (&a.lse, &a.sink_mass, &a.pooled),
                        (&b.lse, &b.sink_mass, &b.pooled)
                    );
                    assert_eq!(
                        a.block_mass_row(from.saturating_sub(1)).is_some(),
                        from == 0
                    );
                    assert_eq!(a.block_mass_row(n - 1).is_some(), from < n);
                }
            }
        }
    }
}
