//! What block and token methods share: block-mean keys, forced sink/local blocks, and ranked
//! candidate lists from which a selection at any count `k` is a prefix.

use ndarray::{Array2, ArrayView2, Axis};

use crate::method::Prepared;
use crate::selection::{Scored, Selection};

/// Mean key of each block of `block` tokens (the last block may be shorter): `[n_blocks, d]`.
pub fn block_means(k: ArrayView2<f32>, block: usize) -> Array2<f32> {
    let mut out = Array2::zeros((k.nrows().div_ceil(block), k.ncols()));
    for (b, chunk) in k.axis_chunks_iter(Axis(0), block).enumerate() {
        if let Some(m) = chunk.mean_axis(Axis(0)) {
            out.row_mut(b).assign(&m);
        }
    }
    out
}

/// Forced blocks of a query in block `own`: the first `n_init` blocks and the `local` blocks
/// before `own`, plus `own` itself.
pub fn forced_blocks(own: usize, n_init: usize, local: usize) -> impl Iterator<Item = usize> {
    (0..n_init.min(own + 1)).chain(own.saturating_sub(local)..=own)
}

/// Indices of `scores` sorted by descending score, ties by ascending index (deterministic).
pub fn rank_desc(scores: &[f32]) -> Vec<u32> {
    let mut idx: Vec<u32> = (0..scores.len() as u32).collect();
    idx.sort_by(|&a, &b| {
        scores[b as usize]
            .total_cmp(&scores[a as usize])
            .then(a.cmp(&b))
    });
    idx
}

/// Per-row forced units and ranked candidates, shared by one or all q-heads of a group.
/// `select(k)` keeps the forced units plus the first `k` candidates of every row. The rows are
/// those of the scored queries, from `scored.first_row(query_block)` on.
#[derive(Debug, Clone)]
pub struct RankedRows {
    pub scored: Scored,
    pub query_block: usize,
    /// Tokens per unit (1 = tokens, B = blocks).
    pub unit: usize,
    /// Forced units of each row.
    pub forced: Vec<Vec<u32>>,
    /// Other visible units of each row, best first.
    pub ranked: Vec<Vec<u32>>,
}

impl RankedRows {
    /// The selection keeping forced units and the top `k` candidates of each row.
    pub fn take(&self, k: usize) -> Selection {
        let mut b = Selection::builder_scored(self.scored, self.query_block);
        let u = self.unit as u32;
        for (f, r) in self.forced.iter().zip(&self.ranked) {
            b.push_ranges(
                f.iter()
                    .chain(r.iter().take(k))
                    .map(|&x| (x * u, (x + 1) * u)),
            );
        }
        b.finish()
    }
}

/// Rankings per q-head (`heads.len() == group size`), or one shared by the whole group.
#[derive(Debug)]
pub struct RankedHeads {
    pub heads: Vec<RankedRows>,
    pub group_size: usize,
}

impl RankedRows {
    /// Kept causal pairs of [`RankedRows::take`]`(k)`, counted without building it (per-query
    /// rows of disjoint units only; `None` otherwise).
    pub fn kept_pairs(&self, k: usize) -> Option<u64> {
        use rayon::prelude::*;
        if self.query_block != 1 {
            return None;
        }
        let u = self.unit as u64;
        let first = self.scored.first;
        let kept = self
            .forced
            .par_iter()
            .zip(&self.ranked)
            .enumerate()
            .with_min_len(256)
            .map(|(at, (f, r))| {
                let lim = (first + at) as u64 + 1;
                f.iter()
                    .chain(r.iter().take(k))
                    .map(|&x| {
                        let s = x as u64 * u;
                        (s + u).min(lim).saturating_sub(s)
                    })
                    .sum::<u64>()
            })
            .sum();
        Some(kept)
    }

    /// True when every row's forced and ranked units are distinct (so kept keys add up).
    fn disjoint(&self) -> bool {
        self.forced.iter().zip(&self.ranked).all(|(f, r)| {
            let mut all: Vec<u32> = f.iter().chain(r).copied().collect();
            all.sort_unstable();
            all.windows(2).all(|w| w[0] != w[1])
        })
    }
}

impl Prepared for RankedHeads {
    fn select(&self, x: f64) -> Vec<Selection> {
        let k = x.max(0.0).round() as usize;
        if self.heads.len() == 1 {
            let s = self.heads[0].take(k);
            vec![s; self.group_size]
        } else {
            use rayon::prelude::*;
            self.heads.par_iter().map(|r| r.take(k)).collect()
        }
    }

    fn kept_pairs_at(&self, x: f64) -> Option<(u64, usize)> {
        let k = x.max(0.0).round() as usize;
        debug_assert!(self.heads.iter().all(RankedRows::disjoint));
        if self.heads.len() == 1 {
            let kept = self.heads[0].kept_pairs(k)?;
            Some((kept * self.group_size as u64, self.group_size))
        } else {
            let mut total = 0;
            for r in &self.heads {
                total += r.kept_pairs(k)?;
            }
            Some((total, self.heads.len()))
        }
    }
}

/// Query-block row `r` covers queries `rB..hi`, of which `a..hi` (`L` of them) are scored, from
/// the first scored query of `(first, n)`: the causal pairs of those queries with a complete
/// earlier key block (`B L`) and with the row's own diagonal block (`sum_{i in a..hi} (i - rB + 1)`).
pub fn block_row_pairs(r: usize, block: usize, (first, n): (usize, usize)) -> (u64, u64) {
    let start = r * block;
    let hi = (start + block).min(n);
    let a = start.max(first).min(hi);
    let tri = |x: usize| (x * (x + 1) / 2) as u64;
    (
        block as u64 * (hi - a) as u64,
        tri(hi - start) - tri(a - start),
    )
}

/// `sum over the scored queries i of min(k, i + 1)`: the kept pairs of a method that keeps the top
/// `k` keys of every query (all of them when `k > i`).
pub fn top_k_pairs_scored(scored: crate::selection::Scored, k: usize) -> u64 {
    top_k_pairs(scored.n, k) - top_k_pairs(scored.first, k)
}

/// `sum over queries i < n of min(k, i + 1)`: the kept pairs of a method that keeps the top `k`
/// keys of every query (all of them when `k > i`).
pub fn top_k_pairs(n: usize, k: usize) -> u64 {
    let (n, k) = (n as u64, k as u64);
    if k >= n {
        n * (n + 1) / 2
    } else {
        // Queries 0..k keep i + 1 keys, the other n - k keep k.
        k * (k + 1) / 2 + (n - k) * k
    }
}

/// Softmax of `xs` in place (max-subtracted).
pub fn softmax_inplace(xs: &mut [f32]) {
    let mut e = vec![0f32; xs.len()];
    softmax_with(xs, &mut e);
}

attnscope_core::simd_fn! {
    /// [`softmax_inplace`] with a scratch buffer as long as `xs`.
    fn softmax_with(xs: &mut [f32], e: &mut [f32]) => softmax_with_generic
}

#[inline(always)]
fn softmax_with_generic(xs: &mut [f32], e: &mut [f32]) {
    let m = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for x in xs.iter_mut() {
        *x -= m;
    }
    // The platform's `f32::exp` values, vectorized; summed in eight interleaved lanes.
    attnscope_core::exact_exp::expf_into(xs, e);
    let mut lanes = [0f32; 8];
    let chunks = e.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..8 {
            lanes[l] += c[l];
        }
    }
    let mut sum: f32 = lanes.iter().sum();
    for &x in rest {
        sum += x;
    }
    if sum > 0.0 {
        for (x, &y) in xs.iter_mut().zip(e.iter()) {
            *x = y / sum;
        }
    } else {
        xs.copy_from_slice(e);
    }
}

/// The count knob of block methods: extra blocks beyond the forced ones.
pub fn block_knob(block: usize) -> crate::method::Knob {
    crate::method::Knob::count("top_k", 0.0, block)
}

/// Extra blocks that make `tokens` keys per query with `n_init + local + 1` forced blocks.
pub fn block_k_for_tokens(tokens: usize, block: usize, n_init: usize, local: usize) -> f64 {
    (tokens / block.max(1)).saturating_sub(n_init + local + 1) as f64
}

/// Ranks, for every scored query `i`, the complete visible blocks that are not forced, by
/// `score(i, b)` (higher first); `None` scores are not candidates.
pub fn rank_blocks_per_query(
    scored: Scored,
    block: usize,
    n_init: usize,
    local: usize,
    score_row: impl Fn(usize) -> Vec<Option<f32>> + Sync,
) -> RankedRows {
    use rayon::prelude::*;
    let rows: Vec<(Vec<u32>, Vec<u32>)> = scored
        .range()
        .into_par_iter()
        .map(|i| {
            let own = i / block;
            let mut forced: Vec<u32> = forced_blocks(own, n_init, local)
                .map(|b| b as u32)
                .collect();
            forced.sort_unstable();
            forced.dedup();
            let scores = score_row(i);
            // Descending score (`total_cmp`), ties by lower block: the ascending order of
            // `token_key`, sorted without a comparator.
            let mut cand: Vec<u64> = scores
                .iter()
                .enumerate()
                .take(own + 1)
                .filter_map(|(b, s)| s.map(|s| (b as u32, s)))
                .filter(|(b, _)| forced.binary_search(b).is_err())
                .map(|(b, s)| token_key(s, b))
                .collect();
            cand.sort_unstable();
            (forced, cand.into_iter().map(|x| x as u32).collect())
        })
        .collect();
    let (forced, ranked) = rows.into_iter().unzip();
    RankedRows {
        scored,
        query_block: 1,
        unit: block,
        forced,
        ranked,
    }
}

/// Mean keys of the complete windows `[t * stride, t * stride + window)`, `[m, d]` (InfLLM v2's
/// compressed keys `K1` / `K2`, NSA's `K_cmp`; the GPU path uploads the same arrays).
pub fn window_means(k: ArrayView2<f32>, window: usize, stride: usize) -> Array2<f32> {
    let n = k.nrows();
    let m = if n >= window {
        (n - window) / stride + 1
    } else {
        0
    };
    let mut out = Array2::zeros((m, k.ncols()));
    for t in 0..m {
        let w = k.slice(ndarray::s![t * stride..t * stride + window, ..]);
        if let Some(mean) = w.mean_axis(ndarray::Axis(0)) {
            out.row_mut(t).assign(&mean);
        }
    }
    out
}

/// Queries per chunk when token methods score keys as matrix products.
pub const TOKEN_CHUNK: usize = 64;

/// Queries per matrix product when whole score rows are needed: larger products pack the keys
/// fewer times. A product's entries do not depend on how the queries are chunked (each is the
/// same sequence of operations over the head dimension), so neither do any results.
pub const SCORE_CHUNK: usize = 256;

/// A key whose ascending order is descending `score` (as `f32::total_cmp`), then ascending `idx`:
/// the order of [`rank_desc`], sortable without a comparator.
pub(crate) fn token_key(score: f32, idx: u32) -> u64 {
    (u64::from(!super::top_set::ordered_bits(score)) << 32) | u64::from(idx)
}

pub use super::top_set::top_token_set;

/// The scaled maximum of each block of `block` values (the last may be shorter), into `out`: the
/// maximum of `x * scale` for `scale > 0`, which is the scaled maximum exactly (rounding is
/// monotone). Blasst's block maxima of the logits, seer-oracle's pooling of the exact attention.
#[inline(always)]
fn block_maxes_generic(values: &[f32], block: usize, scale: f32, out: &mut Vec<f32>) {
    out.clear();
    for c in values.chunks(block) {
        let mut lanes = [f32::NEG_INFINITY; 16];
        let whole = c.chunks_exact(16);
        let rest = whole.remainder();
        for v in whole {
            for l in 0..16 {
                lanes[l] = lanes[l].max(v[l]);
            }
        }
        let m = rest
            .iter()
            .chain(&lanes)
            .copied()
            .fold(f32::NEG_INFINITY, f32::max);
        out.push(m * scale);
    }
}

attnscope_core::simd_fn! {
    pub(crate) fn block_maxes(values: &[f32], block: usize, scale: f32, out: &mut Vec<f32>) => block_maxes_generic
}

/// Sorted token positions as merged runs `[start, end)`.
pub fn token_runs(sorted: &[u32]) -> Vec<crate::selection::Range> {
    let mut out: Vec<crate::selection::Range> = Vec::new();
    for &x in sorted {
        match out.last_mut() {
            Some(r) if r.1 == x => r.1 = x + 1,
            _ => out.push((x, x + 1)),
        }
    }
    out
}

/// The per-query selection keeping the top `k` keys of every scored query (all causal keys when
/// `k > i`) by `scores(lo, hi)` (`[hi - lo, hi]`: queries `lo..hi` against keys `0..hi`), in
/// [`rank_desc`] order; scores are computed [`SCORE_CHUNK`] queries at a time, in parallel, and
/// nothing is stored between knob values.
pub fn top_k_selection<S>(scored: Scored, k: usize, scores: &S) -> Selection
where
    S: Fn(usize, usize) -> Array2<f32> + Sync,
{
    use rayon::prelude::*;
    let (first, n) = (scored.first, scored.n);
    let rows: Vec<Vec<crate::selection::Range>> = (0..scored.len().div_ceil(SCORE_CHUNK))
        .into_par_iter()
        .flat_map(|c| {
            let (lo, hi) = (
                first + c * SCORE_CHUNK,
                (first + (c + 1) * SCORE_CHUNK).min(n),
            );
            let s = (lo..hi).any(|i| k <= i).then(|| scores(lo, hi));
            (lo..hi)
                .into_par_iter()
                .map(|i| {
                    if k > i {
                        return vec![(0, i as u32 + 1)];
                    }
                    let Some(s) = s.as_ref() else {
                        unreachable!("the chunk is scored when one of its rows needs it")
                    };
                    let row = s.row(i - lo);
                    let set = match row.as_slice() {
                        Some(r) => top_token_set(&r[..=i], k),
                        None => {
                            top_token_set(&row.iter().take(i + 1).copied().collect::<Vec<_>>(), k)
                        }
                    };
                    token_runs(&set)
                })
                .collect::<Vec<_>>()
        })
        .collect();
    Selection::from_rows_scored(scored, 1, rows)
}

/// The `k` best indices of `scores` in [`rank_desc`] order, best first, without sorting the rest.
pub fn top_tokens(scores: &[f32], k: usize) -> Vec<u32> {
    let mut keys: Vec<u64> = (0..scores.len() as u32)
        .map(|j| token_key(scores[j as usize], j))
        .collect();
    let k = k.min(keys.len());
    if k == 0 {
        return Vec::new();
    }
    if k < keys.len() {
        keys.select_nth_unstable(k - 1);
        keys.truncate(k);
    }
    keys.sort_unstable();
    keys.into_iter().map(|x| x as u32).collect()
}

/// Exact causal attention of the last `last` queries (softmax over keys `0..=i`), summed per key
/// column (`vertical[j]`) and per diagonal offset (`slash[o]`, `o = i - j`); both of length `n`.
/// The estimator of vertical-slash methods (minference-vs, flexprefill).
pub fn last_queries_vertical_slash(
    q: ArrayView2<f32>,
    k: ArrayView2<f32>,
    scale: f32,
    last: usize,
) -> (Vec<f64>, Vec<f64>) {
    let n = k.nrows();
    let last = last.min(n);
    let (mut vertical, mut slash) = (vec![0f64; n], vec![0f64; n]);
    let lo = n - last;
    let logits = q.slice(ndarray::s![lo..n, ..]).dot(&k.t());
    for (a, row) in logits.outer_iter().enumerate() {
        let i = lo + a;
        let mut p: Vec<f32> = row.iter().take(i + 1).map(|&x| x * scale).collect();
        softmax_inplace(&mut p);
        for (j, &pj) in p.iter().enumerate() {
            vertical[j] += pj as f64;
            slash[i - j] += pj as f64;
        }
    }
    (vertical, slash)
}
