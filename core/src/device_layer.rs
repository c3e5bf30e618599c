//! The device side of the attention hook: a [`DeviceLayer`] is a device forward pass's handle
//! on the current layer, given to [`crate::attention::AttentionHook::on_layer_device`]. It computes
//! the layer's exact capture on the device and, for sparse-selection studies, speaks in generic
//! primitives: block representatives in ([`BlockScoring`]), pooled block scores and top-k block
//! sets out, measured against the exact dense attention ([`SparseMeasure`]); or host-made block
//! lists in ([`BlockLists`]).

use ndarray::Array2;

use crate::capture_stats::{CaptureOptions, HeadCapture};
use crate::error::{CoreError, Result};

/// A device forward pass's handle on the current layer, given to
/// [`crate::attention::AttentionHook::on_layer_device`].
/// An f32 tensor left on the device by [`DeviceLayer::export_qkv`]: row-major and compact,
/// freed when dropped (shared with other frameworks through DLPack by the Python package).
pub trait DeviceTensor: Send {
    /// Device address of the first element.
    fn device_ptr(&self) -> u64;
    /// Extent of each dimension.
    fn shape(&self) -> &[usize];
    /// CUDA device ordinal.
    fn ordinal(&self) -> usize;
}

pub trait DeviceLayer {
    /// The layer's exact capture computed on the device and copied back (the same statistics
    /// [`crate::capture_stats::capture_layer`] computes on the CPU), with the exact dense attention
    /// output `[n, n_heads * head_dim]`. The device keeps that output: a hook that then answers
    /// [`crate::attention::HookAction::DenseOutput`] costs no upload.
    fn capture(&mut self, opts: &CaptureOptions) -> Result<(Vec<HeadCapture>, Array2<f32>)>;

    /// The device, e.g. `cuda:0 (NVIDIA H100 80GB HBM3)`.
    fn device(&self) -> String;

    /// The current layer's post-RoPE queries `[n_heads, n, head_dim]`, keys
    /// `[n_kv_heads, n, head_dim]` and per-query log-sum-exp of the scaled causal scores
    /// `[n_heads, n]`, copied to f32 device tensors that outlive the layer (the layer's dense
    /// attention runs first when it has not yet).
    fn export_qkv(&mut self) -> Result<[Box<dyn DeviceTensor>; 3]> {
        Err(crate::error::CoreError::Device(format!(
            "{} cannot export device tensors",
            self.device()
        )))
    }

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

    /// Per q-head and query (`[n_heads * n]`), the rank of the query's own key block among its
    /// causal blocks ordered by the layer's exact block mass `P[i, b]` at `block` (descending,
    /// ties to the lower block; 0 = best). Uses the device
    /// capture's `P` when [`DeviceLayer::capture`] ran at `block`, else computes `P` on the
    /// device (after [`DeviceLayer::dense`]); nothing n x n is copied back.
    fn block_mass_ranks(&mut self, block: usize) -> Result<Vec<u32>> {
        let _ = block;
        Err(CoreError::Device(
            "block mass ranks are not available on this device".into(),
        ))
    }

    /// Top-k block sets by exact block mass: per q-head `h` and query, the `top_k[s][h]` key
    /// blocks of largest `P[i, b]` at `block` (ties to the lower block, nothing forced),
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

    /// The block x block tile maxima of the exact attention of every q-head, `[n_heads, nb, nb]`
    /// row-major (`nb = ceil(n / block)`): entry `(h, r, c)`, `c <= r`, is the largest exact
    /// attention probability of any query of query block `r` on any causal key of key block `c`
    /// (0 above the diagonal). Needs the exact LSE ([`DeviceLayer::capture`] or
    /// [`DeviceLayer::dense`] first).
    fn block_tile_max(&mut self, block: usize) -> Result<Vec<f32>> {
        let _ = block;
        Err(CoreError::Device(
            "block tile maxima are not available on this device".into(),
        ))
    }

    /// The former name of [`DeviceLayer::block_tile_max`] (same result); implement that one.
    fn pooled_max_truth(&mut self, block: usize) -> Result<Vec<f32>> {
        self.block_tile_max(block)
    }
}

/// How each head's representative logits become scores before the sum over the heads of a
/// selection (see [`BlockScoring`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepTransform {
    /// The scaled logit.
    Raw,
    /// Softmax over the query's visible representatives.
    Softmax,
    /// `max(scaled logit, 0)` (DSA's indexer activation).
    Relu,
}

/// How the scores of the representatives pool into one score per key block (see
/// [`BlockScoring`]); `per` is the number of representatives per block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockPool {
    /// One representative per block: block `b` scores as representative `b`.
    Identity,
    /// Max-pooling over a window of representatives: block `b` scores as the maximum over
    /// representatives `[per b - 1, per b + per - 1]` (the window reaches one representative
    /// back and overlaps the next block's).
    Max(usize),
    /// Overlapping-sum pooling: block `b` scores as the sum over representatives
    /// `[per b - 1, per (b + 1))` (one representative back, so neighbouring windows share one),
    /// each (a window two strides wide) times its overlap with the block in strides.
    Sum(usize),
}

/// A block scoring rule: block representatives in, pooled block scores and top-k block sets
/// out. Per query `i` and head of a selection, the representative logits
/// `x_j = scale * q_i . rep_j` (with element-wise bounds: the upper bound
/// `q+ . max_j + q- . min_j`) of the visible representatives `j` (`i + 1 >= vis_window` and
/// `j <= (i + 1 - vis_window) / vis_stride`) are transformed ([`RepTransform`]), summed over the
/// heads of the selection (a KV group, or one q-head), pooled to block scores ([`BlockPool`]),
/// and the blocks below the candidate limit (`vis` for [`BlockPool::Identity`], the own block for
/// [`BlockPool::Sum`], the own block included for [`BlockPool::Max`]) that are not forced are
/// ranked (higher first, ties by lower index). Forced: the first `n_init` blocks, and when
/// `force_own` the own block and the `local` blocks before it. A rule of one-token blocks and
/// one representative per key (`m = n`) is a token-level top-k.
#[derive(Debug, Clone)]
pub struct BlockScoring<'a> {
    /// Representatives `[n_kv_heads, m, head_dim]` (the element-wise maxima when `reps_min` is
    /// given).
    pub reps: &'a [f32],
    /// Element-wise minima `[n_kv_heads, m, head_dim]`: the logit is then the upper bound of
    /// `q . k` over the box `[reps_min, reps]`.
    pub reps_min: Option<&'a [f32]>,
    /// Representatives per KV head.
    pub m: usize,
    /// Per q-head weights `[n_heads, head_dim]` multiplying the queries before they score
    /// (e.g. a 0/1 mask of dimensions); `None` scores the queries as they are.
    pub query_weights: Option<&'a [f32]>,
    /// Factor of every logit (e.g. `1 / sqrt(head_dim)`).
    pub scale: f32,
    /// Tokens a representative covers: representative `j` becomes visible to query `i` once
    /// `i + 1 >= vis_window + j vis_stride`.
    pub vis_window: usize,
    /// Tokens between the starts of consecutive representatives.
    pub vis_stride: usize,
    /// Each head's representative scores before the head sum.
    pub transform: RepTransform,
    /// One selection per KV group (scores summed over its q-heads) instead of per q-head.
    pub group_shared: bool,
    pub pool: BlockPool,
    /// Tokens per selected block.
    pub block: usize,
    /// Leading blocks always kept.
    pub n_init: usize,
    /// Blocks right before the query's own block always kept.
    pub local: usize,
    /// The own block (and the `local` before it) forced; false: a candidate like any other
    /// (then `local` must be 0).
    pub force_own: bool,
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
