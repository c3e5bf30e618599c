//! How a method runs on a device: a method declares its device scoring through
//! [`super::Selector::device_scoring`] in the generic terms of core's device layer (key-block
//! representatives in, pooled scores, top-k block sets out; or the top-k blocks of an exact
//! statistic the device computes), and the runner ([`crate::device`]) executes it without knowing
//! which method it is. A method without a declaration runs on the host.

use attnscope_core::attention::BlockPool;
pub use attnscope_core::attention::RepTransform;
use ndarray::{Array2, ArrayView2};

/// The keys of one KV head with the token flags that representatives may read.
#[derive(Debug, Clone, Copy)]
pub struct HeadKeys<'a> {
    /// Post-RoPE keys `[n, d]`.
    pub k: ArrayView2<'a, f32>,
    /// Punctuation flags (newline-only tokens excluded).
    pub punct: &'a [bool],
    /// Newline-only flags.
    pub newline: &'a [bool],
}

/// The post-RoPE queries of one KV group's q-heads (in head order) with the group's keys, for
/// [`super::Selector::query_weights`].
#[derive(Debug, Clone)]
pub struct GroupQueries<'a> {
    pub layer: usize,
    pub kv_head: usize,
    pub q: Vec<ArrayView2<'a, f32>>,
    pub k: ArrayView2<'a, f32>,
}

/// Key-block representatives of one KV head: `reps [m, d]`, and for bound scoring the
/// element-wise minima (then `reps` holds the maxima).
#[derive(Debug, Clone)]
pub struct Representatives {
    pub reps: Array2<f32>,
    pub minima: Option<Array2<f32>>,
}

/// A block rule in the device layer's terms (core's `BlockScoring` without the data): per query,
/// representative logits of the visible representatives (scaled by `1 / sqrt(d)` or not, then
/// transformed: raw, softmax-normalized or ReLU), summed over the heads of a selection, pooled to
/// key blocks; the forced blocks plus the top-k others are kept. With one-token blocks and the
/// keys themselves as representatives it is a token-level top-k.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RepresentativeRule {
    /// Tokens per selected block.
    pub block: usize,
    /// Forced: the first `n_init` blocks, and when `force_own` the own block and the `local`
    /// blocks before it (`local` 0 otherwise).
    pub n_init: usize,
    pub local: usize,
    pub force_own: bool,
    /// Representative `j` is visible to query `i` iff `i + 1 >= vis_window` and
    /// `j <= (i + 1 - vis_window) / vis_stride`.
    pub vis_window: usize,
    pub vis_stride: usize,
    pub transform: RepTransform,
    /// Logits scaled by `1 / sqrt(d)`.
    pub scaled: bool,
    pub pool: BlockPool,
    /// One selection per KV group (scores summed over its q-heads) instead of per q-head.
    pub group_shared: bool,
}

/// A method's device scoring.
#[derive(Debug, Clone, Copy)]
pub enum DeviceScoring {
    /// Blocks scored from representatives ([`super::Selector::representatives`]) by `rule`.
    Representatives(RepresentativeRule),
    /// A static token pattern: the first `n_init` tokens and the `knob` most recent keys (the
    /// query among them), nothing scored; the selection is shared by the KV group.
    Static { n_init: usize },
    /// Per q-head and query, the `k` key blocks of largest exact block mass `P[i, b]` at `block`
    /// (nothing forced). `kept(own_ranks, block, k)` counts the kept causal pairs of one q-head
    /// from the rank of each query's own block (the method's own counting rule).
    BlockMassTopK {
        block: usize,
        kept: fn(&[u32], usize, usize) -> u64,
    },
    /// Per q-head and query block, the `k` key blocks ranked by the exact attention's maximum
    /// over each (query block x key block) tile: `rank(tile_max_rows, n_blocks)` ranks the rows
    /// of one q-head's `[nb, nb]` map best first and `kept(ranked, n, block, k)` counts its kept
    /// causal pairs (the method's own rules).
    TileMaxTopK {
        block: usize,
        rank: fn(&[f32], usize) -> Vec<Vec<u32>>,
        kept: fn(&[Vec<u32>], usize, usize, usize) -> u64,
    },
}

impl DeviceScoring {
    /// Tokens per selected block.
    pub fn block(&self) -> usize {
        match *self {
            Self::Representatives(r) => r.block,
            Self::Static { .. } => 1,
            Self::BlockMassTopK { block, .. } | Self::TileMaxTopK { block, .. } => block,
        }
    }
}
