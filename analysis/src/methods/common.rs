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

impl RankedRows {
    /// Kept causal pairs of [`RankedRows::take`]`(k)`, counted without building it (per-query
    /// rows of disjoint units only; `None` otherwise).
    pub fn kept_pairs(&self, k: usize) -> Option<u64> {
        use rayon::prelude::*;
        if self.query_block != 1 {
            return None;
        }
        let u = self.unit as u64;
        let kept = self
            .forced
            .par_iter()
            .zip(&self.ranked)
            .enumerate()
            .with_min_len(256)
            .map(|(i, (f, r))| {
                let lim = i as u64 + 1;
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
            self.heads.iter().map(|r| r.take(k)).collect()
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
    let b = score.to_bits();
    let ordered = if b >> 31 == 1 { !b } else { b | 0x8000_0000 };
    (u64::from(!ordered) << 32) | u64::from(idx)
}

/// The `k` best indices of `scores` in [`rank_desc`] order (the same set as [`top_tokens`]),
/// ascending by index: no ranking among them is needed to select them.
pub fn top_token_set(scores: &[f32], k: usize) -> Vec<u32> {
    let k = k.min(scores.len());
    if k == 0 {
        return Vec::new();
    }
    if k == scores.len() {
        return (0..k as u32).collect();
    }
    let mut keys: Vec<u64> = (0..scores.len() as u32)
        .map(|j| token_key(scores[j as usize], j))
        .collect();
    keys.select_nth_unstable(k - 1);
    let mut top: Vec<u32> = keys[..k].iter().map(|&x| x as u32).collect();
    top.sort_unstable();
    top
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

/// The per-query selection keeping the top `k` keys of every query (all causal keys when
/// `k > i`) by `scores(lo, hi)` (`[hi - lo, hi]`: queries `lo..hi` against keys `0..hi`), in
/// [`rank_desc`] order; scores are computed [`SCORE_CHUNK`] queries at a time, in parallel, and
/// nothing is stored between knob values.
pub fn top_k_selection<S>(n: usize, k: usize, scores: &S) -> Selection
where
    S: Fn(usize, usize) -> Array2<f32> + Sync,
{
    use rayon::prelude::*;
    let rows: Vec<Vec<crate::selection::Range>> = (0..n.div_ceil(SCORE_CHUNK))
        .into_par_iter()
        .flat_map(|c| {
            let (lo, hi) = (c * SCORE_CHUNK, ((c + 1) * SCORE_CHUNK).min(n));
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
    Selection::from_rows(n, 1, rows)
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

/// Where [`TopPRows`] reads a ranking: the ordering scores of each query's causal keys, the
/// mass the method sums for a key (exactly, and a close approximation fit for vectorized loops),
/// and a coarse bucket of each key's mass.
pub trait TopPSource: Sync {
    /// Calls `f(i, scores of keys 0..=i)` for every query `i` in `lo..hi` (a [`TOKEN_CHUNK`]
    /// aligned chunk); higher scores rank first, ties by lower index ([`rank_desc`] order).
    fn chunk(&self, lo: usize, hi: usize, f: &mut dyn FnMut(usize, &[f32]));
    /// The mass of key `j` (score `s`) of query `i`, exactly as the method accumulates it.
    fn mass(&self, i: usize, j: usize, s: f32) -> f64;
    /// Masses of keys `keys` of query `i` (scores `s`), each within a relative
    /// [`TopPSource::approx_error`] of [`TopPSource::mass`].
    fn approx_masses(&self, i: usize, s: &[f32], keys: &[u32], out: &mut [f64]);
    /// [`TopPSource::approx_masses`] of every key `0..=i`.
    fn approx_masses_row(&self, i: usize, s: &[f32], out: &mut [f64]) {
        let all: Vec<u32> = (0..s.len() as u32).collect();
        self.approx_masses(i, s, &all, out);
    }
    /// The relative error bound of [`TopPSource::approx_masses`].
    fn approx_error(&self) -> f64;
    /// Writes a coarse bucket of each key's mass (`s`: the scores of query `i`; about a quarter
    /// octave each, 0 the largest, 255 the last); buckets must never decrease as the score
    /// decreases. Only speed depends on how well they track the mass.
    fn buckets(&self, i: usize, s: &[f32], out: &mut [u8]);
}

/// How one query's keys at some `p` are found: every key, the keys of the buckets before
/// `bucket` and the best `t` of that bucket, or an explicit list.
enum TopPPlan {
    All,
    Prefix { bucket: usize, t: usize },
    Keys(Vec<u32>),
}

/// One query's keys grouped by mass bucket (each bucket a contiguous stretch of the ranking)
/// with approximate cumulative masses per bucket, and one bucket sorted on demand (the one
/// where the cumulative mass last crossed `p`).
#[derive(Debug, Default)]
struct TopPRow {
    /// Keys grouped by bucket (index order inside a bucket); empty before the first use.
    grouped: Vec<u32>,
    /// `before[b]`: keys in buckets `..b` (257 entries).
    before: Vec<u32>,
    /// `sums[b]`: approximate mass of buckets `..b` (257 entries).
    sums: Vec<f64>,
    /// The sorted bucket: its index, keys in ranking order, approximate cumulative masses from
    /// `sums[bucket]` on.
    sorted: Option<(usize, Vec<u32>, Vec<f64>)>,
}

impl TopPRow {
    fn init(&mut self, i: usize, s: &[f32], src: &dyn TopPSource) {
        let n = s.len();
        let mut bucket = vec![0u8; n];
        src.buckets(i, s, &mut bucket);
        let mut mass = vec![0f64; n];
        src.approx_masses_row(i, s, &mut mass);
        let mut count = [0u32; 256];
        let mut sum = [0f64; 256];
        for (&b, &m) in bucket.iter().zip(&mass) {
            count[b as usize] += 1;
            sum[b as usize] += m;
        }
        self.before = Vec::with_capacity(257);
        self.sums = Vec::with_capacity(257);
        let (mut c, mut m) = (0u32, 0f64);
        for b in 0..256 {
            self.before.push(c);
            self.sums.push(m);
            c += count[b];
            m += sum[b];
        }
        self.before.push(c);
        self.sums.push(m);
        let mut fill: Vec<u32> = self.before[..256].to_vec();
        self.grouped = vec![0u32; n];
        for (j, &b) in bucket.iter().enumerate() {
            self.grouped[fill[b as usize] as usize] = j as u32;
            fill[b as usize] += 1;
        }
    }

    /// Sorts bucket `b` (ranking order) with its approximate cumulative masses.
    fn sort_bucket(&mut self, b: usize, i: usize, s: &[f32], src: &dyn TopPSource) {
        if self.sorted.as_ref().is_some_and(|x| x.0 == b) {
            return;
        }
        let keys = &self.grouped[self.before[b] as usize..self.before[b + 1] as usize];
        let mut k: Vec<u64> = keys.iter().map(|&j| token_key(s[j as usize], j)).collect();
        k.sort_unstable();
        let keys: Vec<u32> = k.into_iter().map(|x| x as u32).collect();
        let mut mass = vec![0f64; keys.len()];
        src.approx_masses(i, s, &keys, &mut mass);
        let mut acc = self.sums[b];
        let cum = mass
            .into_iter()
            .map(|m| {
                acc += m;
                acc
            })
            .collect();
        self.sorted = Some((b, keys, cum));
    }

    /// The keys kept at `p < 1`: the fewest best-ranked keys (at least one) whose mass summed in
    /// ranking order reaches `p`, every key when none does. Decided from the approximate sums
    /// wherever they are farther from `p` than their error bound, else by the exact walk.
    fn plan(&mut self, p: f64, i: usize, s: &[f32], src: &dyn TopPSource) -> TopPPlan {
        let n = s.len();
        if self.grouped.is_empty() {
            self.init(i, s, src);
        }
        let total = self.sums[256];
        // Sums of m non-negative terms in any order are within m 2^-53 (relative) of the real
        // sum: the exact walk (n terms) and these sums (n terms and 256 bucket sums) differ by
        // less than the sum of both bounds, plus the approximate masses' own error.
        let eps = (2.3e-16 * (2 * n + 256) as f64 + 2.0 * src.approx_error()) * total.max(1.0);
        let e = self.sums[1..].partition_point(|&x| x < p);
        if e == 256 {
            return if total < p - eps {
                TopPPlan::All
            } else {
                self.exact(p, i, s, src)
            };
        }
        self.sort_bucket(e, i, s, src);
        let Some((_, _, cum)) = &self.sorted else {
            unreachable!("sorted above")
        };
        let t = cum.partition_point(|&x| x < p);
        let below = if t == 0 { self.sums[e] } else { cum[t - 1] };
        if t < cum.len() && cum[t] >= p + eps && below < p - eps {
            TopPPlan::Prefix {
                bucket: e,
                t: t + 1,
            }
        } else {
            self.exact(p, i, s, src)
        }
    }

    /// The walk over the fully sorted row with exact masses (near-ties only).
    fn exact(&self, p: f64, i: usize, s: &[f32], src: &dyn TopPSource) -> TopPPlan {
        let mut keys: Vec<u64> = s
            .iter()
            .enumerate()
            .map(|(j, &x)| token_key(x, j as u32))
            .collect();
        keys.sort_unstable();
        let (mut mass, mut k) = (0f64, 0);
        while k < keys.len() && (mass < p || k == 0) {
            let j = keys[k] as u32;
            mass += src.mass(i, j as usize, s[j as usize]);
            k += 1;
        }
        TopPPlan::Keys(keys[..k].iter().map(|&x| x as u32).collect())
    }

    fn count(&self, plan: &TopPPlan, n: usize) -> usize {
        match plan {
            TopPPlan::All => n,
            TopPPlan::Prefix { bucket, t } => self.before[*bucket] as usize + t,
            TopPPlan::Keys(k) => k.len(),
        }
    }

    /// The kept keys, ascending.
    fn keys(&self, plan: &TopPPlan, n: usize) -> Vec<u32> {
        let mut k = match plan {
            TopPPlan::All => return (0..n as u32).collect(),
            TopPPlan::Prefix { bucket, t } => {
                let mut k = self.grouped[..self.before[*bucket] as usize].to_vec();
                if let Some((_, sorted, _)) = &self.sorted {
                    k.extend_from_slice(&sorted[..*t]);
                }
                k
            }
            TopPPlan::Keys(k) => k.clone(),
        };
        k.sort_unstable();
        k
    }
}

/// Per-query smallest top-p sets (`oracle-topp`, `rtpurbo-proxy`): for each query, the fewest
/// best-ranked keys whose cumulative mass reaches `p` (at least one; every key when none does),
/// exactly as a walk over the fully sorted row summing masses in order, but sorting only the
/// bucket of keys where the sum crosses `p` (sums over whole buckets are exact enough except
/// within a rounding error of `p`, where the row is walked exactly).
#[derive(Debug)]
pub struct TopPRows {
    n: usize,
    chunks: Vec<std::sync::Mutex<Vec<TopPRow>>>,
}

impl TopPRows {
    /// Empty rows for `n` queries (nothing is ranked before the first `p` asks for it).
    pub fn new(n: usize) -> Self {
        Self {
            n,
            chunks: (0..n.div_ceil(TOKEN_CHUNK))
                .map(|c| {
                    let len = TOKEN_CHUNK.min(n - c * TOKEN_CHUNK);
                    std::sync::Mutex::new((0..len).map(|_| TopPRow::default()).collect())
                })
                .collect(),
        }
    }

    /// `f(row, plan, keys in the row)` for every query at `p < 1`, in parallel, chunk by chunk.
    fn map_rows<T: Send>(
        &self,
        src: &dyn TopPSource,
        p: f64,
        f: impl Fn(&TopPRow, &TopPPlan, usize) -> T + Sync,
    ) -> Vec<T> {
        use rayon::prelude::*;
        self.chunks
            .par_iter()
            .enumerate()
            .flat_map_iter(|(c, m)| {
                let lo = c * TOKEN_CHUNK;
                let mut rows = m.lock().unwrap_or_else(|e| e.into_inner());
                let hi = lo + rows.len();
                let mut out = Vec::with_capacity(hi - lo);
                src.chunk(lo, hi, &mut |i, s| {
                    let row = &mut rows[i - lo];
                    let plan = row.plan(p, i, s, src);
                    out.push(f(row, &plan, s.len()));
                });
                out
            })
            .collect()
    }

    /// Kept causal pairs at `p` (every key of every query when `p >= 1`).
    pub fn kept_pairs(&self, src: &dyn TopPSource, p: f64) -> u64 {
        if p >= 1.0 {
            return top_k_pairs(self.n, self.n);
        }
        self.map_rows(src, p, |row, plan, n| row.count(plan, n) as u64)
            .into_iter()
            .sum()
    }

    /// The selection at `p` (dense when `p >= 1`).
    pub fn select(&self, src: &dyn TopPSource, p: f64) -> Selection {
        let rows: Vec<Vec<crate::selection::Range>> = if p >= 1.0 {
            (0..self.n).map(|i| vec![(0, i as u32 + 1)]).collect()
        } else {
            self.map_rows(src, p, |row, plan, n| token_runs(&row.keys(plan, n)))
        };
        Selection::from_rows(self.n, 1, rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::SplitMix;

    #[test]
    fn top_token_set_is_the_rank_desc_prefix() {
        let mut rng = SplitMix(21);
        for (len, levels) in [(40, 0), (700, 0), (3000, 5), (5000, 0), (2048, 1)] {
            // `levels` > 0: few distinct values, so ties straddle every cut.
            let xs: Vec<f32> = (0..len)
                .map(|_| {
                    if levels > 0 {
                        (rng.next_u64() % levels) as f32
                    } else {
                        rng.normal()
                    }
                })
                .collect();
            let all = rank_desc(&xs);
            for k in [1, 7, 48, 64, 100, 333, len / 2, len - 1, len] {
                let mut want = all[..k.min(len)].to_vec();
                want.sort_unstable();
                assert_eq!(top_token_set(&xs, k), want, "len {len} k {k}");
            }
        }
    }
}
