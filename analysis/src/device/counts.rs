//! Kept causal pairs counted without selections, and the knob calibration on those counts: a
//! block rule keeps `forced + block * min(k, candidates)` pairs per query whatever the scores,
//! so the knob is found on the host (the same bisection as [`crate::budget::calibrate`]) before
//! the device scores anything.

use attnscope_core::attention::{BlockPool, BlockScoring};

use crate::budget::{search_knob, sparsity_of_tokens, Budget, SPARSITY_TOLERANCE};
use crate::method::{Knob, Selector};
use crate::selection::Scored;

/// Per query, the causal pairs of its forced blocks and its number of candidate blocks under a
/// [`BlockScoring`] rule: kept pairs at top-k are `forced + block * min(k, candidates)` per
/// query, whatever the scores.
#[derive(Debug, Clone)]
pub struct RowCounts {
    pub block: usize,
    pub forced_pairs: Vec<u64>,
    pub candidates: Vec<u32>,
}

impl RowCounts {
    /// The counts of `spec` over `n` tokens (mirrors `block_rows` in `kernels/cu/blocksel.cu`
    /// and `select_rows_radix` in `kernels/cu/topk_rows.cu`), in O(n).
    pub fn new(spec: &BlockScoring<'_>, n: usize) -> Self {
        let (bs, w, st) = (spec.block, spec.vis_window, spec.vis_stride);
        let mut forced_pairs = Vec::with_capacity(n);
        let mut candidates = Vec::with_capacity(n);
        for i in 0..n {
            let vis = if i + 1 >= w {
                ((i + 1 - w) / st + 1).min(spec.m)
            } else {
                0
            };
            let own = i / bs;
            let f = Forced::of(spec, own);
            // Every forced block before the own one is whole; the own block holds i + 1 - own bs.
            let own_pairs = (i + 1 - own * bs) as u64;
            let whole = f.count() - usize::from(f.holds_own(own));
            forced_pairs
                .push(whole as u64 * bs as u64 + if f.holds_own(own) { own_pairs } else { 0 });
            // Candidates: b < lim, valid, not forced (valid: every block, or for max-pooling
            // the blocks whose first window is visible, `per b <= vis`: a prefix of the blocks).
            let (lim, per) = match spec.pool {
                BlockPool::Identity => (vis, 0),
                BlockPool::Sum(_) => (own, 0),
                BlockPool::Max(per) => (own + 1, per.max(1)),
            };
            let all = if per == 0 {
                lim
            } else if vis == 0 {
                0
            } else {
                lim.min(vis / per + 1)
            };
            candidates.push((all - f.below(all)) as u32);
        }
        Self {
            block: bs,
            forced_pairs,
            candidates,
        }
    }

    /// Kept causal pairs of one selection at top-`k`.
    pub fn kept(&self, k: usize) -> u64 {
        self.kept_from(k, 0)
    }

    /// Kept causal pairs of the queries from `first` on at top-`k`.
    pub fn kept_from(&self, k: usize, first: usize) -> u64 {
        let b = self.block as u64;
        let first = first.min(self.forced_pairs.len());
        self.forced_pairs[first..]
            .iter()
            .zip(&self.candidates[first..])
            .map(|(&f, &c)| f + b * (k.min(c as usize) as u64))
            .sum()
    }
}

/// The forced blocks of a row: `[0, init)` and `[lo, own]` (empty when `lo > own`).
struct Forced {
    init: usize,
    lo: usize,
    hi: Option<usize>,
}

impl Forced {
    fn of(spec: &BlockScoring<'_>, own: usize) -> Self {
        let init = spec.n_init.min(own + 1);
        if !spec.force_own {
            return Self {
                init,
                lo: 0,
                hi: None,
            };
        }
        let lo = own.saturating_sub(spec.local).max(init);
        Self {
            init,
            lo,
            hi: (lo <= own).then_some(own),
        }
    }

    fn count(&self) -> usize {
        self.init + self.hi.map_or(0, |hi| hi + 1 - self.lo)
    }

    /// True when the own block is among them.
    fn holds_own(&self, own: usize) -> bool {
        self.hi == Some(own) || own < self.init
    }

    /// Forced blocks below `lim`.
    fn below(&self, lim: usize) -> usize {
        let local = self
            .hi
            .map_or(0, |hi| (hi + 1).min(lim).saturating_sub(self.lo));
        self.init.min(lim) + local
    }
}

/// A knob value chosen for a budget: as [`crate::budget::Calibrated`] without selections.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Chosen {
    pub knob: f64,
    pub sparsity: f64,
    pub target: f64,
    pub reached: bool,
}

/// [`crate::budget::calibrate`]'s bisection ([`search_knob`]) on counted sparsities
/// (`sparsity(x)`), so that it lands on the same knob value as the host path.
pub fn calibrate_counted(
    knob: &Knob,
    target: f64,
    n: usize,
    sparsity: &dyn Fn(f64) -> f64,
) -> Chosen {
    let (x, (), s) = search_knob(knob, target, n, |x| ((), sparsity(x)))
        .unwrap_or_else(|| (knob.min, (), sparsity(knob.min)));
    Chosen {
        knob: x,
        sparsity: s,
        target,
        reached: (s - target).abs() <= SPARSITY_TOLERANCE,
    }
}

/// [`crate::budget::resolve`] on counted sparsities; `None` for top-p budgets.
pub fn resolve_counted(
    selector: &dyn Selector,
    budget: Budget,
    n: usize,
    sparsity: &dyn Fn(f64) -> f64,
) -> Option<Chosen> {
    resolve_counted_scored(selector, budget, Scored::all(n), sparsity)
}

/// [`resolve_counted`] over the `scored` queries (`sparsity(x)` counts their pairs only).
pub fn resolve_counted_scored(
    selector: &dyn Selector,
    budget: Budget,
    scored: Scored,
    sparsity: &dyn Fn(f64) -> f64,
) -> Option<Chosen> {
    let (knob, n) = (selector.knob(), scored.n);
    Some(match budget {
        Budget::Tokens(t) => match selector.knob_for_tokens(t) {
            Some(x) => Chosen {
                knob: x,
                sparsity: sparsity(x),
                target: sparsity_of_tokens(t, scored),
                reached: true,
            },
            None => calibrate_counted(&knob, sparsity_of_tokens(t, scored), n, sparsity),
        },
        Budget::Sparsity(s) => calibrate_counted(&knob, s, n, sparsity),
        Budget::TopP(_) => return None,
    })
}
