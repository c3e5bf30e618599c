//! `blasst`: BLASST's threshold skip inside the online-softmax sweep, per q-head.
//!
//! Yuan et al., BLASST: Dynamic BLocked Attention Sparsity via Softmax Thresholding
//! (arXiv:2512.12087). A FlashAttention-style sweep visits the key blocks of a query; with `m` the
//! running row max of the logits `s = q . k / sqrt d` over the blocks processed so far, block `b` is
//! skipped when `max_{j in b, j <= i} s_j - m < ln(lambda)`. What is not skipped is kept.
//!
//! With `ln(lambda) <= 0` a skipped block is always below the running max, so skipping never
//! changes `m`: the rule reduces to a per-(query, block) gap `g = prefix max before b - block max`,
//! and block `b` is kept iff `g <= -ln(lambda)`. The selection is therefore monotone in the knob
//! (`log_lambda` = ln lambda; larger skips more) and the first block of the sweep is always kept.
//!
//! Interpretations (explicit): key block 64 and a forward sweep (block 0 first, as in the
//! FlashAttention algorithm; `reverse` sweeps from the diagonal block down, as the FA2/FA3 CUDA
//! kernels do); `query_tile` 1 applies the rule per query row, a larger tile skips a block only when
//! every row of the tile would (kernel granularity). The paper calibrates lambda per length
//! (lambda ~ a / L); the runner's calibration plays that role, and the fixed default is
//! lambda = 1e-3. At `log_lambda <= -1000` nothing is skipped (dense).

use rayon::prelude::*;

use super::common::block_maxes;

use crate::method::{GroupInput, Knob, Prepared, Selector};
use crate::method::{MethodInfo, MethodKind, ParamSpec, Params};
use crate::selection::Selection;

pub const INFO: MethodInfo = MethodInfo {
    name: "blasst",
    kind: MethodKind::Published,
    paper: "Yuan et al., BLASST: Dynamic BLocked Attention Sparsity via Softmax Thresholding (arXiv:2512.12087)",
    rule: "per q-head, online-softmax sweep over key blocks skipping a block when its max logit - running max < ln(lambda)",
    params: &[
        ParamSpec { name: "block", default: 64.0, min: 1.0, max: 65536.0, integer: true, help: "key block size of the sweep" },
        ParamSpec { name: "query_tile", default: 1.0, min: 1.0, max: 65536.0, integer: true, help: "queries deciding together (1 = per query; a kernel tile skips only when all rows agree)" },
        ParamSpec { name: "reverse", default: 0.0, min: 0.0, max: 1.0, integer: true, help: "sweep from the diagonal block down to block 0 (FA2/FA3 CUDA order)" },
        ParamSpec { name: "log_lambda", default: -6.907_755_278_982_137, min: -1000.0, max: 0.0, integer: false, help: "ln(lambda), the skip threshold (default lambda = 1e-3; calibrated per length)" },
    ],
    build,
};

/// The dense end of the knob.
const DENSE_LOG_LAMBDA: f64 = -1000.0;

fn build(p: &Params) -> Box<dyn Selector> {
    Box::new(Blasst {
        block: p.count("block").max(1),
        tile: p.count("query_tile").max(1),
        reverse: p.flag("reverse"),
    })
}

#[derive(Debug)]
struct Blasst {
    block: usize,
    tile: usize,
    reverse: bool,
}

/// Per row (tile of queries): the gap of each visible key block (`-inf` = always kept).
struct Prep {
    n: usize,
    /// The first scored query.
    first: usize,
    block: usize,
    tile: usize,
    heads: Vec<Vec<Vec<f32>>>,
}

impl Blasst {
    /// Gaps of one query from its logits over keys `0..=i`.
    #[cfg(test)]
    fn row_gaps(&self, logits: &[f32]) -> Vec<f32> {
        let mut maxes = Vec::new();
        block_maxes(logits, self.block, 1.0, &mut maxes);
        let mut gaps = vec![f32::INFINITY; maxes.len()];
        self.min_gaps(&maxes, &mut gaps);
        gaps
    }

    /// Lowers `tile[b]` to the gap of block `b` given the row's block maxima: the running
    /// maximum of the blocks visited before it (in visiting order) minus its own.
    fn min_gaps(&self, maxes: &[f32], tile: &mut [f32]) {
        let mut run = f32::NEG_INFINITY;
        let mut visit = |b: usize| {
            tile[b] = tile[b].min(run - maxes[b]);
            run = run.max(maxes[b]);
        };
        if self.reverse {
            (0..maxes.len()).rev().for_each(&mut visit);
        } else {
            (0..maxes.len()).for_each(&mut visit);
        }
    }

    /// Per tile of queries: the smallest gap over its rows for every block, from the head's
    /// shared logits ([`GroupInput::logits`]).
    fn head_gaps(&self, logits: &crate::logits::Logits, scale: f32) -> Vec<Vec<f32>> {
        let (n, first) = (logits.len(), logits.scored().first);
        (0..n.div_ceil(self.tile))
            .into_par_iter()
            .map(|r| {
                let (t0, t1) = (r * self.tile, ((r + 1) * self.tile).min(n));
                let mut tile = vec![f32::INFINITY; (t1 - 1) / self.block + 1];
                let mut maxes = Vec::new();
                // A query tile partly before the first scored query takes its scored queries.
                for i in t0.max(first)..t1 {
                    block_maxes(logits.row(i), self.block, scale, &mut maxes);
                    self.min_gaps(&maxes, &mut tile);
                }
                tile
            })
            .collect()
    }
}

/// Causal pairs of queries `t0..t1` with keys `s..e`: `sum_i clamp(i + 1 - s, 0, e - s)`, in
/// closed form (rows on the diagonal block count an arithmetic series, rows below it all keys).
fn block_pairs(s: usize, e: usize, t0: usize, t1: usize) -> u64 {
    let tri = |x: usize| (x * (x + 1) / 2) as u64;
    let (a, b) = (t0.max(s), t1.min(e - 1));
    let partial = if b > a { tri(b - s) - tri(a - s) } else { 0 };
    let full = t1.saturating_sub(t0.max(e - 1)) as u64 * (e - s) as u64;
    partial + full
}

/// The gap threshold of `log_lambda`: blocks with `gap <= thr` are kept.
fn gap_threshold(log_lambda: f64) -> f32 {
    if log_lambda <= DENSE_LOG_LAMBDA {
        f32::INFINITY
    } else {
        (-log_lambda.min(0.0)) as f32
    }
}

impl Prepared for Prep {
    fn kept_pairs_at(&self, log_lambda: f64) -> Option<(u64, usize)> {
        let thr = gap_threshold(log_lambda);
        let (bs, tile, n) = (self.block, self.tile, self.n);
        let kept = self
            .heads
            .par_iter()
            .map(|rows| {
                rows.par_iter()
                    .enumerate()
                    .skip(self.first / tile)
                    .with_min_len(8)
                    .map(|(r, gaps)| {
                        // The tile's scored queries.
                        let (t0, t1) = ((r * tile).max(self.first), ((r + 1) * tile).min(n));
                        gaps.iter()
                            .enumerate()
                            .filter(|(_, &g)| g <= thr)
                            .map(|(k, _)| block_pairs(k * bs, (k + 1) * bs, t0, t1))
                            .sum::<u64>()
                    })
                    .sum::<u64>()
            })
            .sum();
        Some((kept, self.heads.len()))
    }

    fn select(&self, log_lambda: f64) -> Vec<Selection> {
        let thr = gap_threshold(log_lambda);
        let bs = self.block;
        self.heads
            .par_iter()
            .map(|rows| {
                let mut b = Selection::builder(self.n, self.tile);
                for (r, gaps) in rows.iter().enumerate() {
                    let end = ((r + 1) * self.tile).min(self.n);
                    b.push_ranges(
                        gaps.iter()
                            .enumerate()
                            .filter(|(_, &g)| g <= thr)
                            .map(|(k, _)| ((k * bs) as u32, ((k + 1) * bs).min(end) as u32)),
                    );
                }
                b.finish()
            })
            .collect()
    }
}

impl Selector for Blasst {
    fn knob(&self) -> Knob {
        Knob {
            name: "log_lambda",
            min: DENSE_LOG_LAMBDA,
            max: 0.0,
            integer: false,
            denser_when_larger: false,
            tokens_per_unit: 0,
        }
    }

    fn prepare<'a>(&'a self, g: &'a GroupInput<'a>) -> Box<dyn Prepared + 'a> {
        Box::new(Prep {
            n: g.n(),
            first: g.scored.first,
            block: self.block,
            tile: self.tile,
            heads: g
                .logits()
                .iter()
                .map(|l| self.head_gaps(l, g.scale()))
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selection::causal_pairs;
    use crate::testing::GroupData;

    #[test]
    fn block_pairs_closed_form_counts_every_row() {
        for (s, e) in [(0usize, 1usize), (0, 4), (4, 8), (8, 11)] {
            for t0 in 0usize..14 {
                for t1 in t0..16 {
                    let want: usize = (t0..t1).map(|i| (e.min(i + 1)).saturating_sub(s)).sum();
                    assert_eq!(block_pairs(s, e, t0, t1), want as u64, "{s} {e} {t0} {t1}");
                }
            }
        }
    }

    #[test]
    fn gaps_follow_the_running_max() {
        let m = Blasst {
            block: 2,
            tile: 1,
            reverse: false,
        };
        // Block maxes 5, 1, 7, 2 -> running max before each: -inf, 5, 5, 7.
        let gaps = m.row_gaps(&[5.0, 0.0, 1.0, -3.0, 7.0, 6.0, 2.0]);
        assert_eq!(gaps, vec![f32::NEG_INFINITY, 4.0, -2.0, 5.0]);
        let m = Blasst {
            block: 2,
            tile: 1,
            reverse: true,
        };
        // Reverse: 2 first, then 7 (gap -5), then 1 (gap 6), then 5 (gap 2).
        let gaps = m.row_gaps(&[5.0, 0.0, 1.0, -3.0, 7.0, 6.0, 2.0]);
        assert_eq!(gaps, vec![2.0, 6.0, -5.0, f32::NEG_INFINITY]);
    }

    #[test]
    fn threshold_keeps_blocks_within_ln_lambda() {
        let prep = Prep {
            n: 8,
            first: 0,
            block: 2,
            tile: 1,
            heads: vec![vec![
                vec![f32::NEG_INFINITY],
                vec![f32::NEG_INFINITY],
                vec![f32::NEG_INFINITY, 1.0],
                vec![f32::NEG_INFINITY, 1.0],
                vec![f32::NEG_INFINITY, 4.0, 0.5],
                vec![f32::NEG_INFINITY, 4.0, -1.0],
                vec![f32::NEG_INFINITY, 4.0, -2.0, 5.0],
                vec![f32::NEG_INFINITY, 4.0, -2.0, 5.0],
            ]],
        };
        // ln(lambda) = -3: skip blocks whose gap exceeds 3.
        let s = &prep.select(-3.0)[0];
        assert_eq!(s.row_ranges(7), &[(0, 2), (4, 6)]);
        // The own block is clipped at the query.
        assert_eq!(s.row_ranges(4), &[(0, 2), (4, 5)]);
        assert_eq!(s.row_ranges(3), &[(0, 4)]);
        // ln(lambda) = -4.5 keeps block 1 too; -1000 keeps everything.
        assert_eq!(prep.select(-4.5)[0].row_ranges(7), &[(0, 6)]);
        assert_eq!(prep.select(-1000.0)[0].kept_pairs(), causal_pairs(8));
    }

    #[test]
    fn tiles_skip_only_when_every_row_agrees() {
        let data = GroupData::random(300, 16, 2, 9);
        let g = data.input();
        let per_row = Blasst {
            block: 16,
            tile: 1,
            reverse: false,
        }
        .prepare(&g)
        .select(-2.0);
        let tiled = Blasst {
            block: 16,
            tile: 16,
            reverse: false,
        }
        .prepare(&g)
        .select(-2.0);
        for (a, b) in per_row.iter().zip(&tiled) {
            for i in 0..300 {
                for j in (0..=i).step_by(5) {
                    if a.contains(i, j) {
                        assert!(b.contains(i, j));
                    }
                }
            }
        }
    }

    #[test]
    fn monotone_and_dense_at_the_end() {
        let data = GroupData::random(257, 16, 2, 4);
        let methods = [false, true].map(|reverse| Blasst {
            block: 32,
            tile: 1,
            reverse,
        });
        let g = data.input();
        for m in &methods {
            let prep = m.prepare(&g);
            let mut last = u64::MAX;
            for x in [-1000.0, -20.0, -5.0, -1.0, 0.0] {
                let kept: u64 = prep.select(x).iter().map(Selection::kept_pairs).sum();
                assert!(kept <= last);
                last = kept;
            }
            for s in prep.select(-1000.0) {
                assert_eq!(s.kept_pairs(), causal_pairs(257));
            }
            // Even at lambda = 1 every query keeps a key: the first block of its sweep.
            for s in prep.select(0.0) {
                assert!((0..257).all(|i| s.kept_of(i) > 0));
            }
        }
    }
}
