//! Exact attention statistics of one layer, computed on the host without ever holding an
//! `n x n` map: per q-head the per-query log-sum-exp, the query-by-key-block mass `P[i, b]` (sum
//! of query `i`'s attention probabilities over the keys of block `b`), the sink mass (mass on the
//! first tokens) per query, and a pooled block x block map for viewing ([`HeadCapture`], computed
//! by [`capture_layer`] with [`CaptureOptions`]). The pass also yields the exact dense attention
//! output, so the layer need not recompute it.

use ndarray::{s, Array2, ArrayView2, Axis};
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
}

impl Default for CaptureOptions {
    fn default() -> Self {
        Self {
            block: 64,
            sink_tokens: 4,
            layers: None,
            keep_qkv: false,
        }
    }
}

/// Captured statistics of one (layer, q-head).
#[derive(Debug, Clone)]
pub struct HeadCapture {
    /// Per-query log-sum-exp of the layer's logits (`ScoreRule::logit` of `q_i . k_j`) over the
    /// keys the query sees (`j <= i`, inside the sliding window where the layer has one).
    pub lse: Vec<f32>,
    /// `P[i, b]`: `[n, n_blocks]`, zero for blocks entirely after query `i` or entirely before
    /// its sliding window.
    pub block_mass: Array2<f32>,
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
}

struct TileStats {
    block_mass: Array2<f32>,
    lse: Vec<f32>,
    sink: Vec<f32>,
    out: Array2<f32>,
}

fn tile_stats(
    qkv: &LayerQkv<'_>,
    kts: &[Array2<f32>],
    (h, t0): (usize, usize),
    block: usize,
    sink: usize,
) -> TileStats {
    let n = qkv.len();
    let t1 = (t0 + TILE).min(n);
    let g = qkv.kv_of(h);
    let (p, lse) = prob_tile_rule(
        qkv.q_head(h).slice(s![t0..t1, ..]),
        kts[g].slice(s![.., ..t1]),
        t0,
        &qkv.rule,
    );
    let n_blocks = n.div_ceil(block);
    let mut block_mass = Array2::zeros((t1 - t0, n_blocks));
    let mut sinks = Vec::with_capacity(t1 - t0);
    // Blocks before the tile's first visible key hold no mass (sliding windows).
    let lo = tile_first_key(&qkv.rule, t0);
    let b0 = lo / block;
    for (r, row) in p.outer_iter().enumerate() {
        // Invariant: `p` is a fresh product (`prob_tile`), standard row-major layout.
        let row = row.as_slice().expect("fresh arrays are contiguous");
        let vis = &row[b0 * block..=t0 + r];
        for (b, chunk) in vis.chunks(block).enumerate() {
            block_mass[[r, b0 + b]] = chunk.iter().sum();
        }
        sinks.push(row[..=t0 + r].iter().take(sink).sum());
    }
    let out = tile_output(p.view(), qkv.v_head(g), lo);
    TileStats {
        block_mass,
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
    let kts = qkv.keys_transposed();
    let tiles: Vec<((usize, usize), TileStats)> = head_tiles(qkv.n_heads, n)
        .into_par_iter()
        .map(|(h, t0)| {
            (
                (h, t0),
                tile_stats(qkv, &kts, (h, t0), block, opts.sink_tokens),
            )
        })
        .collect();
    let mut heads: Vec<HeadCapture> = (0..qkv.n_heads)
        .map(|_| HeadCapture {
            lse: vec![0.0; n],
            block_mass: Array2::zeros((n, n_blocks)),
            sink_mass: vec![0.0; n],
            pooled: Array2::zeros((n_blocks, n_blocks)),
        })
        .collect();
    let mut outs = Vec::with_capacity(tiles.len());
    for ((h, t0), st) in tiles {
        let t = st.lse.len();
        let hc = &mut heads[h];
        hc.lse[t0..t0 + t].copy_from_slice(&st.lse);
        hc.sink_mass[t0..t0 + t].copy_from_slice(&st.sink);
        hc.block_mass
            .slice_mut(s![t0..t0 + t, ..])
            .assign(&st.block_mass);
        outs.push(((h, t0), st.out));
    }
    heads.par_iter_mut().for_each(|hc| {
        hc.pooled = pool_rows(hc.block_mass.view(), block);
    });
    (heads, assemble_heads(n, qkv.head_dim, qkv.n_heads, outs))
}

/// Mean of consecutive groups of `block` rows (the last group may be shorter).
fn pool_rows(m: ArrayView2<f32>, block: usize) -> Array2<f32> {
    let groups = m.nrows().div_ceil(block);
    let mut out = Array2::zeros((groups, m.ncols()));
    for (qb, chunk) in m.axis_chunks_iter(Axis(0), block).enumerate() {
        // Invariant: `axis_chunks_iter` never yields an empty chunk (`capture_layer` passes
        // `block.max(1)`), and `mean_axis` is `None` only for an empty axis.
        let mean = chunk.mean_axis(Axis(0)).expect("chunks are non-empty");
        out.row_mut(qb).assign(&mean);
    }
    out
}
