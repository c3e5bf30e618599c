//! Per-query smallest top-p sets (`oracle-topp`, `rtpurbo-proxy`): for each query, the fewest
//! best-ranked keys whose cumulative mass reaches `p` (at least one; every key when none does),
//! exactly as a walk over the fully sorted row summing masses in order.
//!
//! Nothing per key is stored. Each row keeps a histogram of its keys by coarse mass bucket (counts
//! and approximate masses, cumulated), computed once; a `p` then names the bucket where the
//! cumulative mass crosses it, and only that bucket's keys are found (one pass over the row's
//! scores) and sorted. Sums over whole buckets are exact enough except within a rounding error of
//! `p`, where the row is walked exactly. The histograms also give a cheap estimate of the kept
//! count at any `p` (linear within the crossing bucket), which calibration uses to guess where to
//! look before it counts exactly.

use rayon::prelude::*;

use super::common::{token_key, token_runs, TOKEN_CHUNK};
use super::top_set::{for_each_equal, ranked_through};
use crate::method::Prepared;
use crate::selection::Selection;

/// Where [`TopPRows`] reads a ranking: the ordering scores of each query's causal keys, the
/// mass the method sums for a key (exactly, and a close approximation fit for vectorized loops),
/// and a coarse bucket of each key's mass.
pub trait TopPSource: Sync {
    /// Calls `f(i, scores of keys 0..=i)` for every query `i` in `lo..hi` (a [`TOKEN_CHUNK`]
    /// aligned chunk); higher scores rank first, ties by lower index
    /// ([`rank_desc`](super::common::rank_desc) order).
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

/// Per-task buffers of one row's buckets and masses (allocated on first use: counting from
/// histograms that exist needs none).
struct Scratch {
    n: usize,
    bucket: Vec<u8>,
    mass: Vec<f64>,
}

impl Scratch {
    fn new(n: usize) -> Self {
        Self {
            n,
            bucket: Vec::new(),
            mass: Vec::new(),
        }
    }

    /// Both buffers, `m` long (at most the `n` asked for).
    fn get(&mut self, m: usize) -> (&mut [u8], &mut [f64]) {
        if self.bucket.is_empty() {
            self.bucket = vec![0; self.n];
            self.mass = vec![0.0; self.n];
        }
        (&mut self.bucket[..m], &mut self.mass[..m])
    }
}

/// One query's histogram of keys by mass bucket, cumulated, and one bucket sorted on demand
/// (the one where the cumulative mass last crossed `p`).
#[derive(Debug, Default)]
struct TopPRow {
    /// The first non-empty bucket: entry `x` of `before` and `sums` is bucket `first + x`.
    first: usize,
    /// Keys in the buckets before each bucket `first..=last + 1` (empty before the first use).
    before: Vec<u32>,
    /// Approximate mass of the buckets before each bucket `first..=last + 1`.
    sums: Vec<f64>,
    /// The sorted bucket: its index, keys in ranking order, approximate cumulative masses from
    /// the mass before it on.
    sorted: Option<(usize, Vec<u32>, Vec<f64>)>,
}

impl TopPRow {
    fn init(&mut self, i: usize, s: &[f32], src: &dyn TopPSource, sc: &mut Scratch) {
        let (bucket, mass) = sc.get(s.len());
        src.buckets(i, s, bucket);
        src.approx_masses_row(i, s, mass);
        // Four interleaved histograms, so that consecutive keys of one bucket do not wait on
        // each other's updates (sums in any order are within the bound `plan` allows for).
        let mut counts = [[0u32; 256]; 4];
        let mut sums = [[0f64; 256]; 4];
        let (bc, mc) = (bucket.chunks_exact(4), mass.chunks_exact(4));
        let (br, mr) = (bc.remainder(), mc.remainder());
        for (b4, m4) in bc.zip(mc) {
            for l in 0..4 {
                counts[l][b4[l] as usize] += 1;
                sums[l][b4[l] as usize] += m4[l];
            }
        }
        for (&b, &x) in br.iter().zip(mr) {
            counts[0][b as usize] += 1;
            sums[0][b as usize] += x;
        }
        let count: [u32; 256] = std::array::from_fn(|b| counts.iter().map(|c| c[b]).sum());
        let sum: [f64; 256] = std::array::from_fn(|b| sums.iter().map(|c| c[b]).sum());
        let first = count.iter().position(|&c| c > 0).unwrap_or(0);
        let last = count.iter().rposition(|&c| c > 0).unwrap_or(0);
        self.first = first;
        self.before = Vec::with_capacity(last - first + 2);
        self.sums = Vec::with_capacity(last - first + 2);
        let (mut c, mut x) = (0u32, 0f64);
        for b in first..=last {
            self.before.push(c);
            self.sums.push(x);
            c += count[b];
            x += sum[b];
        }
        self.before.push(c);
        self.sums.push(x);
    }

    /// Builds the histogram on first use.
    fn ensure(&mut self, i: usize, s: &[f32], src: &dyn TopPSource, sc: &mut Scratch) {
        if self.before.is_empty() {
            self.init(i, s, src, sc);
        }
    }

    /// The crossing bucket of `p` as an entry of `sums` (`sums.len() - 1` when no bucket's
    /// cumulative mass reaches `p`).
    fn crossing(&self, p: f64) -> usize {
        self.sums[1..].partition_point(|&x| x < p)
    }

    /// Sorts bucket entry `e` (ranking order) with its approximate cumulative masses.
    fn sort_bucket(
        &mut self,
        e: usize,
        i: usize,
        s: &[f32],
        src: &dyn TopPSource,
        sc: &mut Scratch,
    ) {
        let b = self.first + e;
        if self.sorted.as_ref().is_some_and(|x| x.0 == b) {
            return;
        }
        let (bucket, _) = sc.get(s.len());
        src.buckets(i, s, bucket);
        let mut k: Vec<u64> = Vec::with_capacity((self.before[e + 1] - self.before[e]) as usize);
        for_each_equal(bucket, b as u8, |j| k.push(token_key(s[j], j as u32)));
        k.sort_unstable();
        let keys: Vec<u32> = k.into_iter().map(|x| x as u32).collect();
        let (_, mass) = sc.get(s.len());
        let mass = &mut mass[..keys.len()];
        src.approx_masses(i, s, &keys, mass);
        let mut acc = self.sums[e];
        let cum = mass
            .iter()
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
    fn plan(
        &mut self,
        p: f64,
        i: usize,
        s: &[f32],
        src: &dyn TopPSource,
        sc: &mut Scratch,
    ) -> TopPPlan {
        let n = s.len();
        self.ensure(i, s, src, sc);
        let total = *self.sums.last().expect("initialized");
        // Sums of m non-negative terms in any order are within m 2^-53 (relative) of the real
        // sum: the exact walk (n terms) and these sums (n terms, 4 x 256 partial histograms merged) differ by
        // less than the sum of both bounds, plus the approximate masses' own error.
        let eps = (2.3e-16 * (2 * n + 1024) as f64 + 2.0 * src.approx_error()) * total.max(1.0);
        let e = self.crossing(p);
        if e == self.sums.len() - 1 {
            return if total < p - eps {
                TopPPlan::All
            } else {
                self.exact(p, i, s, src)
            };
        }
        self.sort_bucket(e, i, s, src, sc);
        let Some((_, _, cum)) = &self.sorted else {
            unreachable!("sorted above")
        };
        let t = cum.partition_point(|&x| x < p);
        let below = if t == 0 { self.sums[e] } else { cum[t - 1] };
        if t < cum.len() && cum[t] >= p + eps && below < p - eps {
            TopPPlan::Prefix {
                bucket: self.first + e,
                t: t + 1,
            }
        } else {
            self.exact(p, i, s, src)
        }
    }

    /// The kept count at `p < 1` estimated from the histogram alone (exact within the crossing
    /// bucket when that bucket is the sorted one, linear in its mass otherwise).
    fn approx_count(
        &mut self,
        p: f64,
        i: usize,
        s: &[f32],
        src: &dyn TopPSource,
        sc: &mut Scratch,
    ) -> f64 {
        self.ensure(i, s, src, sc);
        let e = self.crossing(p);
        if e == self.sums.len() - 1 {
            return s.len() as f64;
        }
        let c = f64::from(self.before[e + 1] - self.before[e]);
        let t = match &self.sorted {
            Some((b, _, cum)) if *b == self.first + e => {
                (cum.partition_point(|&x| x < p) + 1) as f64
            }
            _ => {
                let (lo, hi) = (self.sums[e], self.sums[e + 1]);
                let frac = if hi > lo {
                    ((p - lo) / (hi - lo)).clamp(0.0, 1.0)
                } else {
                    1.0
                };
                (frac * c).ceil().max(1.0)
            }
        };
        f64::from(self.before[e]) + t.min(c)
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
            TopPPlan::Prefix { bucket, t } => self.before[bucket - self.first] as usize + t,
            TopPPlan::Keys(k) => k.len(),
        }
    }

    /// The kept keys, ascending.
    fn keys(&self, plan: &TopPPlan, s: &[f32]) -> Vec<u32> {
        match plan {
            TopPPlan::All => (0..s.len() as u32).collect(),
            TopPPlan::Prefix { t, .. } => {
                // The buckets before the sorted one rank above all of its keys, and those after
                // it below: the kept keys are exactly those ranked at or before its t-th.
                let Some((_, sorted, _)) = &self.sorted else {
                    unreachable!("a prefix plan sorts its bucket")
                };
                ranked_through(s, sorted[*t - 1])
            }
            TopPPlan::Keys(k) => {
                let mut k = k.clone();
                k.sort_unstable();
                k
            }
        }
    }
}

/// The rows of one q-head, chunk by chunk ([`TOKEN_CHUNK`] queries), each histogrammed on first
/// use (see the module documentation).
#[derive(Debug)]
pub struct TopPRows {
    scored: crate::selection::Scored,
    chunks: Vec<std::sync::Mutex<Vec<TopPRow>>>,
}

impl TopPRows {
    /// Empty rows for the `scored` queries (nothing is computed before the first `p` asks for
    /// it).
    pub fn new(scored: crate::selection::Scored) -> Self {
        let len = scored.len();
        Self {
            scored,
            chunks: (0..len.div_ceil(TOKEN_CHUNK))
                .map(|c| {
                    let len = TOKEN_CHUNK.min(len - c * TOKEN_CHUNK);
                    std::sync::Mutex::new((0..len).map(|_| TopPRow::default()).collect())
                })
                .collect(),
        }
    }

    /// `f(row, i, scores, scratch)` for every query, in parallel, chunk by chunk.
    fn map_rows<T: Send>(
        &self,
        src: &dyn TopPSource,
        f: impl Fn(&mut TopPRow, usize, &[f32], &mut Scratch) -> T + Sync,
    ) -> Vec<T> {
        self.chunks
            .par_iter()
            .enumerate()
            .flat_map_iter(|(c, m)| {
                let lo = self.scored.first + c * TOKEN_CHUNK;
                let mut rows = m.lock().unwrap_or_else(|e| e.into_inner());
                let hi = lo + rows.len();
                let mut sc = Scratch::new(hi);
                let mut out = Vec::with_capacity(hi - lo);
                src.chunk(lo, hi, &mut |i, s| {
                    out.push(f(&mut rows[i - lo], i, s, &mut sc));
                });
                out
            })
            .collect()
    }

    /// Kept causal pairs at `p` (every key of every query when `p >= 1`).
    pub fn kept_pairs(&self, src: &dyn TopPSource, p: f64) -> u64 {
        if p >= 1.0 {
            return self.scored.causal_pairs();
        }
        self.map_rows(src, |row, i, s, sc| {
            let plan = row.plan(p, i, s, src, sc);
            row.count(&plan, s.len()) as u64
        })
        .into_iter()
        .sum()
    }

    /// An estimate of [`TopPRows::kept_pairs`] from the rows' histograms, without finding any key.
    pub fn approx_kept_pairs(&self, src: &dyn TopPSource, p: f64) -> f64 {
        if p >= 1.0 {
            return self.scored.causal_pairs() as f64;
        }
        self.map_rows(src, |row, i, s, sc| row.approx_count(p, i, s, src, sc))
            .into_iter()
            .sum()
    }

    /// The selection at `p` (dense when `p >= 1`).
    pub fn select(&self, src: &dyn TopPSource, p: f64) -> Selection {
        let rows: Vec<Vec<crate::selection::Range>> = if p >= 1.0 {
            self.scored
                .range()
                .map(|i| vec![(0, i as u32 + 1)])
                .collect()
        } else {
            self.map_rows(src, |row, i, s, sc| {
                let plan = row.plan(p, i, s, src, sc);
                token_runs(&row.keys(&plan, s))
            })
        };
        Selection::from_rows_scored(self.scored, 1, rows)
    }
}

/// The q-heads of a group, each a ranking source with its rows: the [`Prepared`] of a top-p
/// method.
pub struct TopPHeads<S> {
    pub heads: Vec<(S, TopPRows)>,
}

impl<S: TopPSource + Send> Prepared for TopPHeads<S> {
    fn select(&self, p: f64) -> Vec<Selection> {
        self.heads
            .par_iter()
            .map(|(src, rows)| rows.select(src, p))
            .collect()
    }

    fn kept_pairs_at(&self, p: f64) -> Option<(u64, usize)> {
        Some(self.over_heads(|src, rows| rows.kept_pairs(src, p)))
    }

    fn approx_kept_pairs_at(&self, p: f64) -> Option<(f64, usize)> {
        Some(self.over_heads(|src, rows| rows.approx_kept_pairs(src, p)))
    }
}

impl<S: TopPSource> TopPHeads<S> {
    /// `f` of the q-heads computed in parallel, summed in head order (the same sum every run).
    fn over_heads<T: std::iter::Sum + Send>(
        &self,
        f: impl Fn(&S, &TopPRows) -> T + Sync,
    ) -> (T, usize) {
        let each: Vec<T> = self
            .heads
            .par_iter()
            .map(|(src, rows)| f(src, rows))
            .collect();
        (each.into_iter().sum(), self.heads.len())
    }
}
