//! The one attention call site of every model. Each layer hands its post-RoPE Q, K, V to an
//! [`AttentionHook`]; the hook may record them (capture), return a per-query key selection that the
//! layer then attends to instead of all keys (sparse simulation), or return the exact dense output
//! it already computed while capturing. Nothing here ever materializes an `n x n` map: scores are
//! computed one query tile at a time.

use ndarray::{s, Array2, ArrayView2};
use rayon::prelude::*;

use crate::error::{CoreError, Result};

/// Queries per tile in the exact attention sweeps (the tile's score block is `TILE x n`).
pub const TILE: usize = 64;

/// One layer's post-RoPE queries, keys and values, token-major: row `i` is position `i`.
#[derive(Debug, Clone, Copy)]
pub struct LayerQkv<'a> {
    pub layer: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// `[n, n_heads * head_dim]`.
    pub q: ArrayView2<'a, f32>,
    /// `[n, n_kv_heads * head_dim]`.
    pub k: ArrayView2<'a, f32>,
    /// `[n, n_kv_heads * head_dim]`.
    pub v: ArrayView2<'a, f32>,
}

impl<'a> LayerQkv<'a> {
    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.q.nrows()
    }

    /// True when the layer saw no token.
    pub fn is_empty(&self) -> bool {
        self.q.nrows() == 0
    }

    /// The KV head that q-head `h` reads (GQA).
    pub fn kv_of(&self, h: usize) -> usize {
        h / (self.n_heads / self.n_kv_heads)
    }

    /// `[n, head_dim]` queries of q-head `h`.
    pub fn q_head(&self, h: usize) -> ArrayView2<'a, f32> {
        let d = self.head_dim;
        self.q.slice_move(s![.., h * d..(h + 1) * d])
    }

    /// `[n, head_dim]` keys of KV head `g`.
    pub fn k_head(&self, g: usize) -> ArrayView2<'a, f32> {
        let d = self.head_dim;
        self.k.slice_move(s![.., g * d..(g + 1) * d])
    }

    /// Every KV head's keys transposed (`[head_dim, n]` each, [`crate::ops::transposed`]).
    pub fn keys_transposed(&self) -> Vec<Array2<f32>> {
        (0..self.n_kv_heads)
            .map(|g| crate::ops::transposed(self.k_head(g)))
            .collect()
    }

    /// `[n, head_dim]` values of KV head `g`.
    pub fn v_head(&self, g: usize) -> ArrayView2<'a, f32> {
        let d = self.head_dim;
        self.v.slice_move(s![.., g * d..(g + 1) * d])
    }

    /// The softmax scale `1 / sqrt(head_dim)`.
    pub fn scale(&self) -> f32 {
        1.0 / (self.head_dim as f32).sqrt()
    }
}

/// Per-(q-head, query) sorted key positions, stored compactly (CSR).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSelection {
    n_heads: usize,
    n_queries: usize,
    offsets: Vec<usize>,
    keys: Vec<u32>,
}

impl TokenSelection {
    /// Builds a selection from a rule `f(head, query) -> keys`; keys are sorted and deduplicated.
    pub fn from_fn(n_heads: usize, n_queries: usize, f: impl Fn(usize, usize) -> Vec<u32>) -> Self {
        let mut offsets = Vec::with_capacity(n_heads * n_queries + 1);
        let mut keys = Vec::new();
        offsets.push(0);
        for h in 0..n_heads {
            for i in 0..n_queries {
                let mut ks = f(h, i);
                ks.sort_unstable();
                ks.dedup();
                keys.extend_from_slice(&ks);
                offsets.push(keys.len());
            }
        }
        Self {
            n_heads,
            n_queries,
            offsets,
            keys,
        }
    }

    /// Sorted key positions kept by query `i` of q-head `h`.
    pub fn keys(&self, h: usize, i: usize) -> &[u32] {
        let r = h * self.n_queries + i;
        &self.keys[self.offsets[r]..self.offsets[r + 1]]
    }

    /// Total kept (query, key) pairs over all heads.
    pub fn total_kept(&self) -> usize {
        self.keys.len()
    }

    /// Checks shape and causality: every query keeps at least one key and none after itself.
    pub fn validate(&self, n_heads: usize, n_queries: usize) -> Result<()> {
        if self.n_heads != n_heads || self.n_queries != n_queries {
            return Err(CoreError::Input(format!(
                "sparse selection is for {} heads x {} queries, the layer has {n_heads} x {n_queries}",
                self.n_heads, self.n_queries
            )));
        }
        for h in 0..n_heads {
            for i in 0..n_queries {
                let ks = self.keys(h, i);
                match ks.last() {
                    None => {
                        return Err(CoreError::Input(format!(
                            "sparse selection keeps no key for head {h}, query {i}"
                        )))
                    }
                    Some(&last) if last as usize > i => {
                        return Err(CoreError::Input(format!(
                            "sparse selection is not causal: head {h}, query {i} keeps key {last}"
                        )))
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

/// What a hook tells the layer to do with its attention.
#[derive(Debug)]
pub enum HookAction {
    /// Exact dense causal attention, computed by the layer.
    Dense,
    /// Attend only to the selected keys (renormalized softmax over them).
    Sparse(TokenSelection),
    /// The hook already computed the exact dense output (`[n, n_heads * head_dim]`).
    DenseOutput(Array2<f32>),
}

/// Receives every layer's post-RoPE Q, K, V at the attention call site.
pub trait AttentionHook {
    /// Called once per layer, in order, before the layer's attention.
    fn on_layer(&mut self, qkv: &LayerQkv<'_>) -> Result<HookAction>;

    /// Called instead of [`AttentionHook::on_layer`] by device (GPU) forward passes, with the same
    /// host copy of Q, K, V and a handle that computes the layer's exact capture on the device.
    /// The default ignores the handle; capturing hooks override it (see [`DeviceLayer`]).
    fn on_layer_device(
        &mut self,
        qkv: &LayerQkv<'_>,
        device: &mut dyn DeviceLayer,
    ) -> Result<HookAction> {
        let _ = device;
        self.on_layer(qkv)
    }

    /// False when the hook would answer [`HookAction::Dense`] for `layer` without reading Q, K, V:
    /// device passes then skip copying them to the host. The default is true.
    fn inspects(&self, layer: usize) -> bool {
        let _ = layer;
        true
    }
}

/// A device forward pass's handle on the current layer, given to
/// [`AttentionHook::on_layer_device`].
pub trait DeviceLayer {
    /// The layer's exact capture computed on the device and copied back (the same statistics
    /// [`crate::capture::capture_layer`] computes on the CPU), with the exact dense attention
    /// output `[n, n_heads * head_dim]`. The device keeps that output: a hook that then answers
    /// [`HookAction::DenseOutput`] costs no upload.
    fn capture(
        &mut self,
        opts: &crate::capture::CaptureOptions,
    ) -> Result<(Vec<crate::capture::HeadCapture>, Array2<f32>)>;

    /// The device, e.g. `cuda:0 (NVIDIA H100 80GB HBM3)`.
    fn device(&self) -> String;

    /// Computes the layer's exact dense attention output and LSE on the device and keeps them
    /// there (no capture, nothing copied back): what [`DeviceLayer::block_select_measure`] needs
    /// when no capture is wanted (benchmarks). The layer then continues with that output.
    fn dense(&mut self) -> Result<()> {
        Err(CoreError::Device(
            "device attention is not available on this device".into(),
        ))
    }

    /// Scores the key blocks of every query on the device by `spec`, keeps each query's forced
    /// blocks plus its `k` best other blocks for every `k` of `top_k`, and measures each of
    /// these selections against the exact dense attention ([`SparseMeasure`], one per `k`).
    /// `keep_blocks` also copies the kept blocks back. Needs [`DeviceLayer::capture`] or
    /// [`DeviceLayer::dense`] first (the exact LSE and dense output). Devices without it answer an error.
    fn block_select_measure(
        &mut self,
        spec: &BlockScoring<'_>,
        top_k: &[usize],
        keep_blocks: bool,
    ) -> Result<Vec<SparseMeasure>> {
        let _ = (spec, top_k, keep_blocks);
        Err(CoreError::Device(
            "block selection is not available on this device".into(),
        ))
    }

    /// Measures host-made block lists against the exact dense attention (as
    /// [`DeviceLayer::block_select_measure`] measures its own selections).
    fn measure_blocks(&mut self, lists: &BlockLists<'_>) -> Result<SparseMeasure> {
        let _ = lists;
        Err(CoreError::Device(
            "sparse measurement is not available on this device".into(),
        ))
    }

    /// For the block-level top-k oracle: per q-head and query (`[n_heads * n]`), the rank of
    /// the query's own key block among its causal blocks ordered by the layer's exact block mass
    /// `P[i, b]` at `block` (descending, ties to the lower block; 0 = best). Uses the device
    /// capture's `P` when [`DeviceLayer::capture`] ran at `block`, else computes `P` on the
    /// device (after [`DeviceLayer::dense`]); nothing n x n is copied back.
    fn block_mass_ranks(&mut self, block: usize) -> Result<Vec<u32>> {
        let _ = block;
        Err(CoreError::Device(
            "block mass ranks are not available on this device".into(),
        ))
    }

    /// The block-level top-k oracle on the device: per q-head `h` and query, the `top_k[s][h]`
    /// key blocks of largest `P[i, b]` at `block` (ties to the lower block, nothing forced),
    /// measured against the exact dense attention, one [`SparseMeasure`] per selection `s`
    /// (kept blocks `[n_heads, n, width]` when `keep_blocks`). `P` as in
    /// [`DeviceLayer::block_mass_ranks`].
    fn block_mass_select_measure(
        &mut self,
        block: usize,
        top_k: &[Vec<usize>],
        keep_blocks: bool,
    ) -> Result<Vec<SparseMeasure>> {
        let _ = (block, top_k, keep_blocks);
        Err(CoreError::Device(
            "block selection is not available on this device".into(),
        ))
    }

    /// SeerAttention's oracle target of every q-head, `[n_heads, nb, nb]` row-major
    /// (`nb = ceil(n / block)`): entry `(h, r, c)`, `c <= r`, is the largest exact attention
    /// probability of any query of block `r` on any causal key of block `c` (0 above the
    /// diagonal).
    fn pooled_max_truth(&mut self, block: usize) -> Result<Vec<f32>> {
        let _ = block;
        Err(CoreError::Device(
            "pooled truth is not available on this device".into(),
        ))
    }
}

/// How block scores pool representative scores (see [`BlockScoring`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockPool {
    /// Block `b` scores as representative `b`.
    Identity,
    /// Max over representatives `[per b - 1, per b + per - 1]` (InfLLM v2's max-pooling).
    Max(usize),
    /// Sum over representatives `[per b - 1, per (b + 1))` (NSA's overlapping windows).
    Sum(usize),
}

/// A block method's scoring rule, in method-neutral terms. Per query `i` and head of a
/// selection, the representative logits `x_j = scale * q_i . rep_j` (Quest's bound:
/// `q+ . max_j + q- . min_j`) of the visible representatives `j` (`i + 1 >= vis_window` and
/// `j <= (i + 1 - vis_window) / vis_stride`) are softmax-normalized (or not), summed over the
/// heads of the selection (a KV group, or one q-head), pooled to block scores, and the blocks
/// below the candidate limit (`vis` for [`BlockPool::Identity`], the own block for
/// [`BlockPool::Sum`], the own block included for [`BlockPool::Max`]) that are not forced are
/// ranked (higher first, ties by lower index). Forced: the first `n_init` blocks and the `local`
/// blocks before the own block, and the own block.
#[derive(Debug, Clone)]
pub struct BlockScoring<'a> {
    /// Representatives `[n_kv_heads, m, head_dim]`.
    pub reps: &'a [f32],
    /// Quest: element-wise minima (then `reps` are the maxima).
    pub reps_min: Option<&'a [f32]>,
    pub m: usize,
    pub scale: f32,
    pub vis_window: usize,
    pub vis_stride: usize,
    pub softmax: bool,
    /// One selection per KV group (scores summed over its q-heads) instead of per q-head.
    pub group_shared: bool,
    pub pool: BlockPool,
    /// Tokens per selected block.
    pub block: usize,
    pub n_init: usize,
    pub local: usize,
}

/// Host-made block selections to measure on the device: `blocks` is
/// `[selection heads, ceil(n / qblock), width]` (`u32::MAX` = no block); q-head `h` reads
/// selection head `h / heads_per_sel` and query `i` its row `i / qblock`; block `b` keeps keys
/// `[b unit, (b + 1) unit)` up to the query.
#[derive(Debug, Clone)]
pub struct BlockLists<'a> {
    pub blocks: &'a [u32],
    pub width: usize,
    pub unit: usize,
    pub qblock: usize,
    pub heads_per_sel: usize,
}

/// Per-query metrics of one selection on every q-head, `[n_heads * n]` each (head-major), with
/// the kept blocks when asked for.
#[derive(Debug, Clone, Default)]
pub struct SparseMeasure {
    /// True attention mass of the kept keys (at most 1).
    pub recall: Vec<f32>,
    /// `||o_sparse - o_dense|| / ||o_dense||` of the renormalized sparse output.
    pub out_rel_err: Vec<f32>,
    pub cosine: Vec<f32>,
    /// Kept causal keys.
    pub kept: Vec<u32>,
    /// Kept blocks `[selection heads, n, width]` (`u32::MAX` = none), when asked for.
    pub blocks: Option<Vec<u32>>,
    pub width: usize,
}

/// A hook that does nothing: plain dense attention.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoHook;

impl AttentionHook for NoHook {
    fn on_layer(&mut self, _qkv: &LayerQkv<'_>) -> Result<HookAction> {
        Ok(HookAction::Dense)
    }

    fn inspects(&self, _layer: usize) -> bool {
        false
    }
}

/// Exact causal softmax probabilities of queries `t0..t0 + q_tile.nrows()` over keys `0..t1`
/// (`kt_prefix` `[d, t1]` holds exactly those keys, transposed: see [`crate::ops::transposed`]).
/// Returns `probs [t, t1]` (zero above the diagonal) and the per-query log-sum-exp of the scaled
/// scores.
pub fn prob_tile(
    q_tile: ArrayView2<f32>,
    kt_prefix: ArrayView2<f32>,
    t0: usize,
    scale: f32,
) -> (Array2<f32>, Vec<f32>) {
    let mut p = q_tile.dot(&kt_prefix);
    let mut lse = Vec::with_capacity(p.nrows());
    let mut scratch = vec![0f32; p.ncols()];
    for (r, mut row) in p.outer_iter_mut().enumerate() {
        let i = t0 + r;
        let row = row.as_slice_mut().expect("fresh arrays are contiguous");
        let (vis, masked) = row.split_at_mut(i + 1);
        masked.fill(0.0);
        lse.push(softmax_row(vis, scale, &mut scratch[..i + 1]));
    }
    (p, lse)
}

crate::simd_fn! {
    /// Scales `x` by `scale`, replaces it with its softmax and returns its log-sum-exp: the
    /// maximum `m`, the platform's `f32::exp(x - m)` ([`crate::exact_exp::expf_into`]), their
    /// sum in eight interleaved partial sums, then `m + ln(sum)`. `tmp` is scratch of `x.len()`.
    fn softmax_row(x: &mut [f32], scale: f32, tmp: &mut [f32]) -> f32 => softmax_row_generic
}

#[inline(always)]
fn softmax_row_generic(x: &mut [f32], scale: f32, tmp: &mut [f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    for c in x.chunks_mut(8) {
        for (l, v) in c.iter_mut().enumerate() {
            *v *= scale;
            lanes[l] = lanes[l].max(*v);
        }
    }
    let m = lanes.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for (t, &v) in tmp.iter_mut().zip(x.iter()) {
        *t = v - m;
    }
    crate::exact_exp::expf_into(tmp, x);
    let mut sums = [0f32; 8];
    for c in x.chunks(8) {
        for (l, &v) in c.iter().enumerate() {
            sums[l] += v;
        }
    }
    let sum =
        ((sums[0] + sums[4]) + (sums[1] + sums[5])) + ((sums[2] + sums[6]) + (sums[3] + sums[7]));
    let inv = 1.0 / sum;
    x.iter_mut().for_each(|v| *v *= inv);
    m + sum.ln()
}

/// The (head, tile start) pairs of an `n`-token layer, for parallel sweeps.
pub fn head_tiles(n_heads: usize, n: usize) -> Vec<(usize, usize)> {
    (0..n_heads)
        .flat_map(|h| (0..n).step_by(TILE).map(move |t0| (h, t0)))
        .collect()
}

/// Writes per-(head, tile) output blocks `[t, head_dim]` into a `[n, n_heads * head_dim]` array.
pub fn assemble_heads(
    n: usize,
    head_dim: usize,
    n_heads: usize,
    blocks: Vec<((usize, usize), Array2<f32>)>,
) -> Array2<f32> {
    let mut out = Array2::zeros((n, n_heads * head_dim));
    for ((h, t0), b) in blocks {
        out.slice_mut(s![t0..t0 + b.nrows(), h * head_dim..(h + 1) * head_dim])
            .assign(&b);
    }
    out
}

/// Exact dense causal attention of a layer: `[n, n_heads * head_dim]`.
pub fn dense_attention(qkv: &LayerQkv<'_>) -> Array2<f32> {
    let n = qkv.len();
    let kts = qkv.keys_transposed();
    let blocks = head_tiles(qkv.n_heads, n)
        .into_par_iter()
        .map(|(h, t0)| {
            let t1 = (t0 + TILE).min(n);
            let g = qkv.kv_of(h);
            let q = qkv.q_head(h);
            let (p, _) = prob_tile(
                q.slice(s![t0..t1, ..]),
                kts[g].slice(s![.., ..t1]),
                t0,
                qkv.scale(),
            );
            ((h, t0), p.dot(&qkv.v_head(g).slice(s![..t1, ..])))
        })
        .collect();
    assemble_heads(n, qkv.head_dim, qkv.n_heads, blocks)
}

/// Attention restricted to a selection: each query's softmax runs over its kept keys only.
pub fn sparse_attention(qkv: &LayerQkv<'_>, sel: &TokenSelection) -> Result<Array2<f32>> {
    let (n, d) = (qkv.len(), qkv.head_dim);
    sel.validate(qkv.n_heads, n)?;
    let scale = qkv.scale();
    let mut out = Array2::<f32>::zeros((n, qkv.n_heads * d));
    out.outer_iter_mut()
        .into_par_iter()
        .enumerate()
        .for_each(|(i, mut row)| {
            let mut w = Vec::new();
            for h in 0..qkv.n_heads {
                let g = qkv.kv_of(h);
                let (q, k, v) = (qkv.q_head(h), qkv.k_head(g), qkv.v_head(g));
                let keys = sel.keys(h, i);
                w.clear();
                w.extend(
                    keys.iter()
                        .map(|&j| q.row(i).dot(&k.row(j as usize)) * scale),
                );
                let m = w.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0.0;
                w.iter_mut().for_each(|x| {
                    *x = (*x - m).exp();
                    sum += *x;
                });
                let mut o = row.slice_mut(s![h * d..(h + 1) * d]);
                for (&j, &wj) in keys.iter().zip(&w) {
                    o.scaled_add(wj / sum, &v.row(j as usize));
                }
            }
        });
    Ok(out)
}
