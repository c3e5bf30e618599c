//! `minference-vs`: MInference's vertical-slash pattern. The exact causal attention of the last
//! 64 queries is summed per key column (vertical score) and per diagonal offset `o = i - j`
//! (slash score); every query then keeps the top-`v` columns and the top-`s` diagonals.
//!
//! Jiang et al., MInference 1.0: Accelerating Pre-filling for Long-Context LLMs via Dynamic Sparse
//! Attention, NeurIPS 2024 (arXiv:2407.02490). As in the public `vertical_and_slash_kernel`: the
//! first 30 columns and the 100 nearest diagonals (offsets 0..100) rank first (`= inf` there),
//! `v >= 30`, `s >= 50`, both at most `n`; ties rank by index (forced diagonals by offset, so
//! every query keeps itself).
//!
//! Interpretations (explicit):
//! - Scaled to length: the paper's sizes (v 1000, s 6096) are taken to hold at `ref_len` tokens
//!   (default 131072, the 128k context the published configs target; open) and scale linearly:
//!   `v = scale * 1000 * n / ref_len`, `s = scale * 6096 * n / ref_len` (rounded, then the minimums).
//!   The knob is `scale` (default 1, denser when larger); at `scale >= ref_len / slash` every
//!   diagonal is kept, i.e. dense.
//! - Token-exact lines: the public kernel rounds slash lines to 64-query tiles; here a query keeps
//!   exactly the keys on its chosen columns and diagonals.
//!
//! Each q-head estimates and selects on its own (the public code works on repeated KV heads).

use rayon::prelude::*;

use super::common::{last_queries_vertical_slash, rank_desc};
use crate::method::{GroupInput, Knob, Prepared, Selector};
use crate::method::{MethodInfo, MethodKind, ParamSpec, Params};
use crate::selection::{Range, Scored, Selection};

pub const INFO: MethodInfo = MethodInfo {
    name: "minference-vs",
    kind: MethodKind::Published,
    paper: "Jiang et al., MInference 1.0: Accelerating Pre-filling for Long-Context LLMs via Dynamic Sparse Attention, NeurIPS 2024 (arXiv:2407.02490)",
    rule: "per q-head, top-v columns and top-s diagonals of the last 64 queries' attention (30 first columns, 100 nearest diagonals forced), for all queries",
    params: &[
        ParamSpec { name: "vertical", default: 1000.0, min: 0.0, max: 1e9, integer: true, help: "vertical lines at ref_len tokens (scaled linearly to the input length)" },
        ParamSpec { name: "slash", default: 6096.0, min: 1.0, max: 1e9, integer: true, help: "slash lines at ref_len tokens (scaled linearly to the input length)" },
        ParamSpec { name: "ref_len", default: 131072.0, min: 1.0, max: 1e9, integer: true, help: "length at which vertical/slash hold (open; 128k)" },
        ParamSpec { name: "last_q", default: 64.0, min: 1.0, max: 1e6, integer: true, help: "last queries whose attention estimates the lines" },
        ParamSpec { name: "scale", default: 1.0, min: 0.0, max: 1e9, integer: false, help: "multiplier on the length-scaled (vertical, slash) sizes" },
    ],
    build,
};

/// Columns at the start ranked first, and the least vertical lines kept (public code: 30).
const FORCED_COLS: usize = 30;
/// Nearest diagonals ranked first (public code: 100).
const FORCED_DIAGS: usize = 100;
/// Least slash lines kept (public code: 50).
const MIN_SLASH: usize = 50;

fn build(p: &Params) -> Box<dyn Selector> {
    Box::new(MinferenceVs {
        vertical: p.get("vertical").max(0.0),
        slash: p.get("slash").max(1.0),
        ref_len: p.get("ref_len").max(1.0),
        last_q: p.count("last_q").max(1),
    })
}

#[derive(Debug)]
struct MinferenceVs {
    vertical: f64,
    slash: f64,
    ref_len: f64,
    last_q: usize,
}

impl MinferenceVs {
    /// The knob value from which every diagonal is kept (dense).
    fn dense_scale(&self) -> f64 {
        self.ref_len / self.slash
    }
}

/// One q-head's ranked columns and diagonal offsets (forced ones first).
struct Lines {
    cols: Vec<u32>,
    diags: Vec<u32>,
}

struct Prep {
    n: usize,
    scored: Scored,
    heads: Vec<Lines>,
    /// `(vertical, slash)` per unit of `scale` at this length.
    per_scale: (f64, f64),
    dense_scale: f64,
}

/// Sorted indices merged into runs `[start, end)`.
fn runs(mut xs: Vec<u32>) -> Vec<Range> {
    xs.sort_unstable();
    let mut out: Vec<Range> = Vec::new();
    for x in xs {
        match out.last_mut() {
            Some(r) if r.1 == x => r.1 = x + 1,
            _ => out.push((x, x + 1)),
        }
    }
    out
}

/// Selection of columns `cols` and diagonal offsets `diags` (both as runs), per scored query
/// (the rows before them stay empty: at 32k tokens with 512 scored, the other 32k rows of runs
/// would cost about a gigabyte per KV group).
fn vs_selection(scored: Scored, cols: &[Range], diags: &[Range]) -> Selection {
    let rows: Vec<Vec<Range>> = (scored.first_row(1)..scored.n)
        .into_par_iter()
        .map(|i| {
            let lim = i as u32 + 1;
            let mut out: Vec<Range> = Vec::with_capacity(cols.len() + diags.len());
            out.extend(
                cols.iter()
                    .take_while(|c| c.0 < lim)
                    .map(|&(s, e)| (s, e.min(lim))),
            );
            // Offsets [a, b) cover keys (i - b, i - a]; largest offsets give the smallest keys.
            out.extend(
                diags
                    .iter()
                    .rev()
                    .filter(|d| d.0 < lim)
                    .map(|&(a, b)| (lim.saturating_sub(b), lim - a)),
            );
            out
        })
        .collect();
    let mut b = Selection::builder_scored(scored, 1);
    for r in rows {
        b.push_ranges(r);
    }
    b.finish()
}

impl Prep {
    /// Vertical lines and slash lines kept at knob `x`.
    fn counts(&self, x: f64) -> (usize, usize) {
        let n = self.n;
        if x >= self.dense_scale {
            (n, n)
        } else {
            let x = x.max(0.0);
            (
                ((x * self.per_scale.0).round() as usize).max(FORCED_COLS),
                ((x * self.per_scale.1).round() as usize).max(MIN_SLASH),
            )
        }
    }
}

impl Prepared for Prep {
    /// Over the scored queries `first..n`: column `j` is kept by the queries `i >= max(j, first)`,
    /// offset `o` by the queries `i >= max(o, first)`, and both keep the same key for the
    /// queries `i = j + o` in `first..n`.
    fn kept_pairs_at(&self, x: f64) -> Option<(u64, usize)> {
        let (n, first) = (self.n, self.scored.first);
        let (v, s) = self.counts(x);
        let kept = self
            .heads
            .iter()
            .map(|h| {
                let cols = &h.cols[..v.min(h.cols.len())];
                let mut diags = h.diags[..s.min(h.diags.len())].to_vec();
                diags.sort_unstable();
                let from = |x: u32| n.saturating_sub((x as usize).max(first)) as u64;
                let vertical: u64 = cols.iter().map(|&j| from(j)).sum();
                let slash: u64 = diags.iter().map(|&o| from(o)).sum();
                let below = |lim: usize| diags.partition_point(|&o| (o as usize) < lim);
                let both: u64 = cols
                    .iter()
                    .map(|&j| {
                        let j = j as usize;
                        (below(n - j) - below(first.saturating_sub(j).min(n - j))) as u64
                    })
                    .sum();
                vertical + slash - both
            })
            .sum();
        Some((kept, self.heads.len()))
    }

    fn select(&self, x: f64) -> Vec<Selection> {
        let n = self.n;
        let (v, s) = self.counts(x);
        self.heads
            .iter()
            .map(|h| {
                let cols = runs(h.cols[..v.min(n)].to_vec());
                let diags = runs(h.diags[..s.min(n)].to_vec());
                vs_selection(self.scored, &cols, &diags)
            })
            .collect()
    }
}

/// Ranks `scores`, with the first `forced` indices ahead of all others (in index order).
fn rank_forced(scores: &[f64], forced: usize) -> Vec<u32> {
    let s: Vec<f32> = scores
        .iter()
        .enumerate()
        .map(|(j, &x)| if j < forced { f32::INFINITY } else { x as f32 })
        .collect();
    rank_desc(&s)
}

impl Selector for MinferenceVs {
    fn knob(&self) -> Knob {
        Knob {
            name: "scale",
            min: 0.0,
            max: self.dense_scale(),
            integer: false,
            denser_when_larger: true,
            tokens_per_unit: 0,
        }
    }

    fn prepare<'a>(&'a self, g: &'a GroupInput<'a>) -> Box<dyn Prepared + 'a> {
        let n = g.n();
        let scale = g.scale();
        let heads = g
            .q
            .par_iter()
            .map(|q| {
                let (vertical, slash) = last_queries_vertical_slash(*q, g.k, scale, self.last_q);
                Lines {
                    cols: rank_forced(&vertical, FORCED_COLS),
                    diags: rank_forced(&slash, FORCED_DIAGS),
                }
            })
            .collect();
        let len = n as f64 / self.ref_len;
        Box::new(Prep {
            n,
            scored: g.scored,
            heads,
            per_scale: (self.vertical * len, self.slash * len),
            dense_scale: self.dense_scale(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selection::causal_pairs;
    use crate::testing::GroupData;

    #[test]
    fn columns_and_diagonals_per_query() {
        // Columns {0, 1, 5} and offsets {0, 2, 3}.
        let cols = runs(vec![5, 0, 1]);
        let diags = runs(vec![3, 0, 2]);
        assert_eq!(cols, vec![(0, 2), (5, 6)]);
        let s = vs_selection(Scored::all(10), &cols, &diags);
        // Query 9: columns 0, 1, 5 and keys 9, 7, 6.
        assert_eq!(
            s.keys_of(9).collect::<Vec<_>>(),
            vec![(0, 2), (5, 8), (9, 10)]
        );
        // Query 2: columns 0, 1 (5 is in the future) and keys 2, 0.
        assert_eq!(s.keys_of(2).collect::<Vec<_>>(), vec![(0, 3)]);
        assert_eq!(s.row_max_key(2), Some(2));
        assert_eq!(s.kept_of(0), 1);
        // The last 4 queries scored: the same rows as the full selection restricted to them.
        let last = Scored {
            first: 6,
            n: 10,
            window: None,
        };
        assert_eq!(vs_selection(last, &cols, &diags), s.restricted(last));
    }

    #[test]
    fn forced_lines_rank_first_then_scores() {
        let r = rank_forced(&[0.0, 0.1, 0.9, 0.5, 0.9], 2);
        assert_eq!(r, vec![0, 1, 2, 4, 3]);
    }

    #[test]
    fn estimates_a_planted_column_and_diagonal() {
        use ndarray::Array2;
        // A heavy key at column 2: queries 5, 6, 7 put (almost) all their mass on it.
        let q = Array2::from_shape_fn((8, 2), |(_, c)| if c == 0 { 1.0 } else { 0.0 });
        let k = Array2::from_shape_fn((8, 2), |(j, c)| if j == 2 && c == 0 { 20.0 } else { 0.0 });
        let (v, s) = last_queries_vertical_slash(q.view(), k.view(), 1.0, 3);
        assert!((v[2] - 3.0).abs() < 1e-6 && v.iter().sum::<f64>() > 2.999);
        assert!((s[3] - 1.0).abs() < 1e-6 && (s[5] - 1.0).abs() < 1e-6);
        assert_eq!(rank_forced(&v, 0)[0], 2);
        // Rotating queries and keys (RoPE-like): key j matches query j + 1, so offset 1 wins.
        let th = 0.3f32;
        let q = Array2::from_shape_fn((12, 2), |(i, c)| {
            let a = th * i as f32;
            if c == 0 {
                a.cos()
            } else {
                a.sin()
            }
        });
        let k = Array2::from_shape_fn((12, 2), |(j, c)| {
            let a = th * (j + 1) as f32;
            10.0 * if c == 0 { a.cos() } else { a.sin() }
        });
        let (_, s) = last_queries_vertical_slash(q.view(), k.view(), 1.0, 4);
        assert_eq!(rank_forced(&s, 0)[0], 1);
    }

    #[test]
    fn knob_is_monotone_and_dense_at_the_top() {
        let data = GroupData::random(300, 16, 2, 3);
        let g = data.input();
        let m = MinferenceVs {
            vertical: 1000.0,
            slash: 6096.0,
            ref_len: 131072.0,
            last_q: 64,
        };
        let prep = m.prepare(&g);
        let mut last = 0;
        for x in [0.0, 1.0, 5.0, 10.0, 20.0] {
            let kept: u64 = prep.select(x).iter().map(Selection::kept_pairs).sum();
            assert!(kept >= last);
            last = kept;
        }
        for s in prep.select(m.knob().max) {
            assert_eq!(s.kept_pairs(), causal_pairs(300));
        }
    }
}
