//! The layer the worker keeps between requests: Q/K/V as read from the bundle and the exact
//! per-query log-sum-exp of every q-head ([`capture_lse`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use attnscope_analysis::bundle::qkv::{read_qkv, SavedLayer};
use attnscope_core::attention::{prob_tile, TILE};
use attnscope_core::capture::HeadCapture;
use ndarray::{Array2, ArrayView2};

use super::request::LiveSource;

/// A captured layer kept by the worker between requests.
pub(super) struct LayerCache {
    pub(super) input: usize,
    /// Q/K/V as read, head-major (`[heads, n, d]`): each head's `[n, d]` is contiguous, as in
    /// the simulator's per-group copies.
    pub(super) saved: SavedLayer,
    /// The exact statistics of each q-head; only `lse` is filled (see [`capture_lse`]).
    pub(super) heads: Vec<HeadCapture>,
}

impl LayerCache {
    /// Reads and captures a layer; also returns the seconds spent reading.
    pub(super) fn load(
        src: &LiveSource,
        input: usize,
        layer: usize,
    ) -> Result<(Self, f64), String> {
        let t = Instant::now();
        let file = src
            .qkv_files
            .get(input)
            .cloned()
            .flatten()
            .ok_or_else(|| format!("input {input} has no captured Q/K/V"))?;
        let layers = read_qkv(&src.dir.join(&file)).map_err(|e| e.to_string())?;
        let saved = layers
            .into_iter()
            .find(|l| l.layer == layer)
            .ok_or_else(|| format!("{file} holds no layer {layer}"))?;
        let read = t.elapsed().as_secs_f64();
        Ok((Self::from_saved(saved, input)?, read))
    }

    pub(super) fn from_saved(s: SavedLayer, input: usize) -> Result<Self, String> {
        let (n, d) = (s.n, s.head_dim);
        if s.n_kv_heads == 0 || !s.n_heads.is_multiple_of(s.n_kv_heads) || d == 0 {
            return Err(format!(
                "layer {}: {} q-heads over {} KV heads of dim {d}",
                s.layer, s.n_heads, s.n_kv_heads
            ));
        }
        if s.q.len() != s.n_heads * n * d
            || s.k.len() != s.n_kv_heads * n * d
            || s.v.len() != s.n_kv_heads * n * d
        {
            return Err(format!(
                "layer {}: tensor sizes do not match their shapes",
                s.layer
            ));
        }
        let heads = capture_lse(&s)
            .into_iter()
            .map(|lse| HeadCapture {
                lse,
                block_mass: Array2::zeros((0, 0)),
                block_mass_from: 0,
                sink_mass: Vec::new(),
                pooled: Array2::zeros((0, 0)),
            })
            .collect();
        Ok(Self {
            input,
            saved: s,
            heads,
        })
    }

    /// The `[n, d]` slab of head `head` of a head-major tensor.
    fn view(x: &[f32], head: usize, n: usize, d: usize) -> ArrayView2<'_, f32> {
        ArrayView2::from_shape((n, d), &x[head * n * d..(head + 1) * n * d])
            .expect("sizes checked at load")
    }

    pub(super) fn q_head(&self, h: usize) -> ArrayView2<'_, f32> {
        Self::view(&self.saved.q, h, self.saved.n, self.saved.head_dim)
    }

    pub(super) fn k_head(&self, g: usize) -> ArrayView2<'_, f32> {
        Self::view(&self.saved.k, g, self.saved.n, self.saved.head_dim)
    }

    pub(super) fn v_head(&self, g: usize) -> ArrayView2<'_, f32> {
        Self::view(&self.saved.v, g, self.saved.n, self.saved.head_dim)
    }
}

/// The exact per-query log-sum-exp of every q-head of a saved layer, bit for bit what
/// `attnscope_core::capture::capture_layer` (the simulator's capture) records: the same
/// [`prob_tile`] over the same 64-query tiles. It is the only part of the exact capture that the
/// methods (oracles) and the metrics read; the rest of `capture_layer`'s work (the dense output
/// `P V`, the `[n, n / block]` block masses, the sink mass and the pooled map, which the bundle's
/// tables already hold) is skipped: half the floating-point work and ~0.9 GB less memory at 32k
/// tokens x 14 heads. Tiles are spread over the machine's cores, longest first.
fn capture_lse(s: &SavedLayer) -> Vec<Vec<f32>> {
    let (n, d) = (s.n, s.head_dim);
    let gs = s.n_heads / s.n_kv_heads.max(1);
    let scale = 1.0 / (d as f32).sqrt();
    // Longest tiles (the last queries see the most keys) first, for balance.
    let mut tiles: Vec<(usize, usize)> = (0..s.n_heads)
        .flat_map(|h| (0..n).step_by(TILE).map(move |t0| (h, t0)))
        .collect();
    tiles.sort_by_key(|&(h, t0)| (std::cmp::Reverse(t0), h));
    let kts: Vec<ndarray::Array2<f32>> = (0..s.n_kv_heads)
        .map(|g| attnscope_core::ops::transposed(LayerCache::view(&s.k, g, n, d)))
        .collect();
    let next = AtomicUsize::new(0);
    let workers = std::thread::available_parallelism()
        .map_or(1, |p| p.get())
        .min(tiles.len().max(1));
    let done: Vec<Vec<(usize, usize, Vec<f32>)>> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                sc.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&(h, t0)) = tiles.get(i) else {
                            break;
                        };
                        let t1 = (t0 + TILE).min(n);
                        let q = LayerCache::view(&s.q, h, n, d);
                        let kt = &kts[h / gs];
                        let (_, lse) = prob_tile(
                            q.slice(ndarray::s![t0..t1, ..]),
                            kt.slice(ndarray::s![.., ..t1]),
                            t0,
                            scale,
                        );
                        out.push((h, t0, lse));
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let mut lse = vec![vec![0f32; n]; s.n_heads];
    for (h, t0, l) in done.into_iter().flatten() {
        lse[h][t0..t0 + l.len()].copy_from_slice(&l);
    }
    lse
}
