//! What block and token methods share: block-mean keys, forced sink/local blocks, and ranked
//! candidate lists from which a selection at any count `k` is a prefix.

use ndarray::{Array2, ArrayView2, Axis};

use crate::method::Prepared;
use crate::selection::Selection;

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
/// `select(k)` keeps the forced units plus the first `k` candidates of every row.
#[derive(Debug, Clone)]
pub struct RankedRows {
    pub n: usize,
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
        let mut b = Selection::builder(self.n, self.query_block);
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

impl Prepared for RankedHeads {
    fn select(&self, x: f64) -> Vec<Selection> {
        let k = x.max(0.0).round() as usize;
        if self.heads.len() == 1 {
            let s = self.heads[0].take(k);
            vec![s; self.group_size]
        } else {
            self.heads.iter().map(|r| r.take(k)).collect()
        }
    }
}

/// Softmax of `xs` in place (max-subtracted).
pub fn softmax_inplace(xs: &mut [f32]) {
    let m = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for x in xs.iter_mut() {
        *x = (*x - m).exp();
        sum += *x;
    }
    if sum > 0.0 {
        xs.iter_mut().for_each(|x| *x /= sum);
    }
}

/// The count knob of block methods: extra blocks beyond the forced ones.
pub fn block_knob(block: usize) -> crate::method::Knob {
    crate::method::Knob {
        name: "top_k",
        min: 0.0,
        max: 1e9,
        integer: true,
        denser_when_larger: true,
        tokens_per_unit: block,
    }
}

/// Extra blocks that make `tokens` keys per query with `n_init + local + 1` forced blocks.
pub fn block_k_for_tokens(tokens: usize, block: usize, n_init: usize, local: usize) -> f64 {
    (tokens / block.max(1)).saturating_sub(n_init + local + 1) as f64
}

/// Ranks, for every query `i`, the complete visible blocks that are not forced, by `score(i, b)`
/// (higher first); `None` scores are not candidates.
pub fn rank_blocks_per_query(
    n: usize,
    block: usize,
    n_init: usize,
    local: usize,
    score_row: impl Fn(usize) -> Vec<Option<f32>> + Sync,
) -> RankedRows {
    use rayon::prelude::*;
    let rows: Vec<(Vec<u32>, Vec<u32>)> = (0..n)
        .into_par_iter()
        .map(|i| {
            let own = i / block;
            let mut forced: Vec<u32> = forced_blocks(own, n_init, local)
                .map(|b| b as u32)
                .collect();
            forced.sort_unstable();
            forced.dedup();
            let scores = score_row(i);
            let mut cand: Vec<(u32, f32)> = scores
                .iter()
                .enumerate()
                .take(own + 1)
                .filter_map(|(b, s)| s.map(|s| (b as u32, s)))
                .filter(|(b, _)| forced.binary_search(b).is_err())
                .collect();
            cand.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            (forced, cand.into_iter().map(|(b, _)| b).collect())
        })
        .collect();
    let (forced, ranked) = rows.into_iter().unzip();
    RankedRows {
        n,
        query_block: 1,
        unit: block,
        forced,
        ranked,
    }
}

/// Queries per chunk when token methods score keys as matrix products.
pub const TOKEN_CHUNK: usize = 64;

/// A key whose ascending order is descending `score` (as `f32::total_cmp`), then ascending `idx`:
/// the order of [`rank_desc`], sortable without a comparator.
fn token_key(score: f32, idx: u32) -> u64 {
    let b = score.to_bits();
    let ordered = if b >> 31 == 1 { !b } else { b | 0x8000_0000 };
    (u64::from(!ordered) << 32) | u64::from(idx)
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

/// A per-query selection (`query_block == 1`) built in parallel. `row(i, None)` gives query `i`'s
/// kept ranges, or `None` when it needs the full score row of `i`; then `row(i, Some(s))` is called
/// with `s` = scores of keys `0..=i`, computed [`TOKEN_CHUNK`] queries at a time by
/// `scores(lo, hi)` (`[hi - lo, hi]`: queries `lo..hi` against keys `0..hi`) and must answer.
pub fn token_selection<S, R>(n: usize, scores: &S, row: R) -> Selection
where
    S: Fn(usize, usize) -> Array2<f32> + Sync,
    R: Fn(usize, Option<&[f32]>) -> Option<Vec<crate::selection::Range>> + Sync,
{
    use rayon::prelude::*;
    let chunks: Vec<Vec<Vec<crate::selection::Range>>> = (0..n.div_ceil(TOKEN_CHUNK))
        .into_par_iter()
        .map(|c| {
            let (lo, hi) = (c * TOKEN_CHUNK, ((c + 1) * TOKEN_CHUNK).min(n));
            let mut rows: Vec<Option<Vec<_>>> = (lo..hi).map(|i| row(i, None)).collect();
            if rows.iter().any(Option::is_none) {
                let s = scores(lo, hi);
                for (r, i) in rows.iter_mut().zip(lo..hi).filter(|(r, _)| r.is_none()) {
                    let full: Vec<f32> = s.row(i - lo).iter().take(i + 1).copied().collect();
                    *r = row(i, Some(&full));
                }
            }
            rows.into_iter().map(Option::unwrap_or_default).collect()
        })
        .collect();
    let mut b = Selection::builder(n, 1);
    for r in chunks.into_iter().flatten() {
        b.push_ranges(r);
    }
    b.finish()
}

/// Per-query token rankings over the causal keys (best first, [`rank_desc`] order), each kept to
/// its first `cap` entries to bound memory; rows needing more are re-scored exactly on demand, so
/// results never depend on `cap`.
#[derive(Debug, Clone, Default)]
pub struct TokenRanking {
    pub rows: Vec<Vec<u32>>,
    /// An optional per-row statistic of the full score row (e.g. its log-sum-exp).
    pub stats: Vec<f32>,
}

impl TokenRanking {
    /// Ranks every query's keys `0..=i` by `scores` (see [`token_selection`] for its shape).
    pub fn build<S>(n: usize, cap: usize, scores: &S, stat: Option<fn(&[f32]) -> f32>) -> Self
    where
        S: Fn(usize, usize) -> Array2<f32> + Sync,
    {
        use rayon::prelude::*;
        let cap = cap.max(1);
        let chunks: Vec<Vec<(Vec<u32>, f32)>> = (0..n.div_ceil(TOKEN_CHUNK))
            .into_par_iter()
            .map(|c| {
                let (lo, hi) = (c * TOKEN_CHUNK, ((c + 1) * TOKEN_CHUNK).min(n));
                let s = scores(lo, hi);
                (lo..hi)
                    .map(|i| {
                        let row: Vec<f32> = s.row(i - lo).iter().take(i + 1).copied().collect();
                        (top_tokens(&row, cap), stat.map_or(0.0, |f| f(&row)))
                    })
                    .collect()
            })
            .collect();
        let (rows, stats): (Vec<_>, Vec<_>) = chunks.into_iter().flatten().unzip();
        Self {
            rows,
            stats: if stat.is_some() { stats } else { Vec::new() },
        }
    }

    /// True when row `i` holds every causal key of query `i`.
    pub fn complete(&self, i: usize) -> bool {
        self.rows[i].len() > i
    }

    /// The top `k` keys of every query (all causal keys when `k > i`).
    pub fn take<S>(&self, k: usize, scores: &S) -> Selection
    where
        S: Fn(usize, usize) -> Array2<f32> + Sync,
    {
        let k = k.max(1);
        token_selection(self.rows.len(), scores, |i, full| {
            if k > i {
                return Some(vec![(0, i as u32 + 1)]);
            }
            let top = match full {
                Some(s) => top_tokens(s, k),
                None if k <= self.rows[i].len() => self.rows[i][..k].to_vec(),
                None => return None,
            };
            Some(top.into_iter().map(|t| (t, t + 1)).collect())
        })
    }
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
