//! Budgets and the calibration that puts every method at the same achieved sparsity.
//!
//! Sparsity (METHODS.md) = 1 - kept visible pairs / all visible pairs of the scored queries
//! ([`Scored`]), over the q-heads of a group: the visible pairs are the causal ones, or on a
//! sliding-window layer the causal ones inside the window ([`Scored::visible_pairs`]); a
//! selection's keys outside the window are not counted ([`Selection::kept_pairs`]). Defined
//! once, in [`sparsity_of`]; [`sparsity_of_kept`] is its shortcut for counted pairs of a plain
//! causal layer.
//! A budget is a fixed number of keys per query, a target sparsity, or top-p. Calibration searches
//! a method's one knob (bisection; integer knobs by binary search) for the requested sparsity.

pub use crate::method::Budget;
use crate::method::{Knob, Prepared, Selector};
use crate::selection::{causal_pairs, Scored, Selection};

/// Achieved sparsity must be within this of the target (0.2 percentage points).
pub const SPARSITY_TOLERANCE: f64 = 0.002;

/// Sparsity of the selections of a group's q-heads over their scored queries: 1 - kept visible
/// pairs / visible pairs.
pub fn sparsity_of(sels: &[Selection]) -> f64 {
    let kept: u64 = sels.iter().map(Selection::kept_pairs).sum();
    let all: u64 = sels.iter().map(|s| s.scored().visible_pairs()).sum();
    1.0 - kept as f64 / all.max(1) as f64
}

/// Sparsity of a budget of `tokens` keys per query over the `scored` queries (query `i` keeps
/// `min(tokens, visible keys of i)` keys).
pub fn sparsity_of_tokens(tokens: usize, scored: Scored) -> f64 {
    let kept: u64 = scored
        .range()
        .map(|i| tokens.min(i + 1 - scored.first_visible(i)) as u64)
        .sum();
    1.0 - kept as f64 / scored.visible_pairs().max(1) as f64
}

/// True when a method's counted kept pairs ([`Prepared::kept_pairs_at`], which counts causal
/// pairs of the scored queries) measure sparsity over `scored`: no window.
pub fn counts_pairs(scored: Scored) -> bool {
    scored.window.is_none()
}

/// A method's selections at the chosen knob value.
#[derive(Debug, Clone)]
pub struct Calibrated {
    pub knob: f64,
    pub selections: Vec<Selection>,
    pub sparsity: f64,
    /// The sparsity asked for (for `Tokens` on a count knob: that budget's own sparsity).
    pub target: f64,
    /// False when no knob value came within [`SPARSITY_TOLERANCE`] of the target.
    pub reached: bool,
}

/// The selections at `x` for the `scored` queries, and their sparsity.
fn eval(prep: &dyn Prepared, x: f64, scored: Scored) -> (Vec<Selection>, f64) {
    let sels: Vec<Selection> = prep
        .select(x)
        .into_iter()
        .map(|s| s.restricted(scored))
        .collect();
    let s = sparsity_of(&sels);
    (sels, s)
}

/// Sparsity from kept causal pairs over `heads` selections of every query of an `n`-token plain
/// causal layer (the same arithmetic as [`sparsity_of`] there, [`counts_pairs`]).
pub fn sparsity_of_kept(kept: u64, heads: usize, n: usize) -> f64 {
    sparsity_of_kept_scored(kept, heads, Scored::all(n))
}

/// As [`sparsity_of_kept`] over the visible pairs of the `scored` queries only (the same
/// definition as [`sparsity_of`]).
pub fn sparsity_of_kept_scored(kept: u64, heads: usize, scored: Scored) -> f64 {
    1.0 - kept as f64 / (scored.visible_pairs() * heads.max(1) as u64) as f64
}

/// The sparsity at `x`, counted without selections when the method can (every query scored),
/// else with them.
fn probe(prep: &dyn Prepared, x: f64, scored: Scored) -> (Option<Vec<Selection>>, f64) {
    match counts_pairs(scored)
        .then(|| prep.kept_pairs_at(x))
        .flatten()
    {
        Some((kept, heads)) => (None, sparsity_of_kept_scored(kept, heads, scored)),
        None => {
            let (sels, s) = eval(prep, x, scored);
            (Some(sels), s)
        }
    }
}

/// The bisection on a method's knob towards `target` sparsity, shared by [`calibrate`] and the
/// GPU path's counted calibration: `probe(x)` returns what it built at `x` (selections, or
/// nothing when it only counted) and the sparsity there. Stops within a quarter of
/// [`SPARSITY_TOLERANCE`]; returns the probed value closest to the target (the first of equals)
/// with its payload and sparsity, `None` if the range was empty.
pub fn search_knob<T>(
    knob: &Knob,
    target: f64,
    n: usize,
    probe: impl FnMut(f64) -> (T, f64),
) -> Option<(f64, T, f64)> {
    search_knob_guided(knob, target, n, probe, None)
}

/// Exact probes spent on guesses from an estimate before [`search_knob_guided`] bisects.
const GUIDED_PROBES: usize = 4;

/// The `x` in `[lo, hi]` where the monotone `f` crosses `target`: bisection until `f` is within
/// a sixteenth of [`SPARSITY_TOLERANCE`] of it (an estimate is not worth more), or the bracket is
/// `2^-40` of the range.
fn root_of(f: &dyn Fn(f64) -> f64, target: f64, lo: f64, hi: f64, denser_when_larger: bool) -> f64 {
    let (mut lo, mut hi) = (lo, hi);
    for _ in 0..40 {
        let mid = (lo + hi) / 2.0;
        let y = f(mid);
        if (y - target).abs() <= SPARSITY_TOLERANCE / 16.0 {
            return mid;
        }
        if (y < target) == denser_when_larger {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    (lo + hi) / 2.0
}

/// [`search_knob`], first probing where `approx` (an estimate of the sparsity at `x`, monotone
/// like it) meets the target, corrected by the difference it showed at the last probe, for up to
/// `GUIDED_PROBES` probes; then it bisects within the bracket those probes left. The result
/// meets the same tolerance as without `approx` (which is ignored for integer knobs). A target of
/// 0 (a full budget) probes the knob's dense end first and takes it when it keeps every pair.
pub fn search_knob_guided<T>(
    knob: &Knob,
    target: f64,
    n: usize,
    mut probe: impl FnMut(f64) -> (T, f64),
    approx: Option<&dyn Fn(f64) -> f64>,
) -> Option<(f64, T, f64)> {
    let (mut lo, mut hi) = (knob.min, knob.max_for(n).max(knob.min));
    // A full budget (target 0) is the knob's dense end when that keeps every pair: the search
    // below would stop within a quarter of the tolerance, short of it.
    if target <= 0.0 {
        let x = if knob.denser_when_larger { hi } else { lo };
        let (payload, s) = probe(x);
        if s <= 0.0 {
            return Some((x, payload, s));
        }
    }
    let mut best: Option<(f64, T, f64)> = None;
    let mut consider = |x: f64, payload: T, s: f64| {
        let better = best
            .as_ref()
            .is_none_or(|b| (s - target).abs() < (b.2 - target).abs());
        if better {
            best = Some((x, payload, s));
        }
    };
    if let (Some(approx), false) = (approx, knob.integer) {
        let mut offset = 0.0;
        for _ in 0..GUIDED_PROBES {
            if hi <= lo {
                break;
            }
            let f = |x: f64| approx(x) + offset;
            let x = root_of(&f, target, lo, hi, knob.denser_when_larger);
            let (payload, s) = probe(x);
            consider(x, payload, s);
            if (s - target).abs() <= SPARSITY_TOLERANCE / 4.0 {
                return best;
            }
            if (s < target) == knob.denser_when_larger {
                hi = x;
            } else {
                lo = x;
            }
            offset = s - approx(x);
        }
    }
    let iterations = if knob.integer { 64 } else { 40 };
    for _ in 0..iterations {
        let mid = if knob.integer {
            ((lo + hi) / 2.0).floor()
        } else {
            (lo + hi) / 2.0
        };
        let (payload, s) = probe(mid);
        let too_dense = s < target;
        consider(mid, payload, s);
        if (s - target).abs() <= SPARSITY_TOLERANCE / 4.0 {
            break;
        }
        // Too dense: move away from the dense end of the range.
        if too_dense == knob.denser_when_larger {
            hi = mid;
        } else {
            lo = mid;
        }
        if knob.integer && hi - lo <= 1.0 {
            for x in [lo, hi] {
                let (payload, s) = probe(x);
                consider(x, payload, s);
            }
            break;
        }
    }
    best
}

/// Finds the knob value whose selections come closest to `target` sparsity over the `scored`
/// queries.
pub fn calibrate(prep: &dyn Prepared, knob: &Knob, target: f64, scored: Scored) -> Calibrated {
    let n = scored.n;
    let approx = |x: f64| {
        prep.approx_kept_pairs_at(x)
            .map_or(f64::NAN, |(kept, heads)| {
                1.0 - kept / (causal_pairs(n) * heads.max(1) as u64) as f64
            })
    };
    // The estimate counts every query's pairs.
    let guided =
        scored.is_all() && counts_pairs(scored) && prep.approx_kept_pairs_at(knob.min).is_some();
    let best = search_knob_guided(
        knob,
        target,
        n,
        |x| probe(prep, x, scored),
        guided.then_some(&approx as &dyn Fn(f64) -> f64),
    );
    let (knob_value, selections, sparsity) = match best {
        Some((x, Some(sels), s)) => (x, sels, s),
        // Counted without selections: build them once, at the chosen value.
        Some((x, None, counted)) => {
            let (sels, s) = eval(prep, x, scored);
            debug_assert_eq!(s, counted, "kept_pairs_at disagrees with select at {x}");
            (x, sels, s)
        }
        None => {
            let (sels, s) = eval(prep, knob.min, scored);
            (knob.min, sels, s)
        }
    };
    Calibrated {
        knob: knob_value,
        reached: (sparsity - target).abs() <= SPARSITY_TOLERANCE,
        selections,
        sparsity,
        target,
    }
}

/// Selections of a method under `budget` over the `scored` queries. `top_p_sparsity` is the
/// sparsity exact top-p reached on this group (needed for [`Budget::TopP`] only).
pub fn resolve(
    method: &dyn Selector,
    prep: &dyn Prepared,
    budget: Budget,
    scored: Scored,
    top_p_sparsity: Option<f64>,
) -> Calibrated {
    let knob = method.knob();
    match budget {
        Budget::Tokens(t) => match method.knob_for_tokens(t) {
            Some(x) => {
                let (selections, sparsity) = eval(prep, x, scored);
                Calibrated {
                    knob: x,
                    selections,
                    sparsity,
                    target: sparsity_of_tokens(t, scored),
                    reached: true,
                }
            }
            None => calibrate(prep, &knob, sparsity_of_tokens(t, scored), scored),
        },
        Budget::Sparsity(s) => calibrate(prep, &knob, s, scored),
        Budget::TopP(p) => calibrate(prep, &knob, top_p_sparsity.unwrap_or(1.0 - p), scored),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::METHODS;
    use crate::testing::GroupData;

    /// Every method that counts kept pairs without selections counts exactly what `select`
    /// keeps, over its whole knob range, and calibration lands on the same value both ways.
    #[test]
    fn counted_kept_pairs_match_selections() {
        let n = 300;
        let data = GroupData::random(n, 16, 3, 17);
        for info in METHODS {
            let method = info.build_with(&[]).expect("defaults build");
            let input = data.input();
            let prep = method.prepare(&input);
            let knob = method.knob();
            let (lo, hi) = (knob.min, knob.max_for(n).max(knob.min));
            let xs: Vec<f64> = (0..=24)
                .map(|t| {
                    let x = lo + (hi - lo) * (t as f64 / 24.0).powi(3);
                    if knob.integer {
                        x.round()
                    } else {
                        x
                    }
                })
                .chain([lo, hi, 0.5, 0.9, 0.99, 1.0, 2.0, 7.0])
                .collect();
            for x in xs {
                let Some((kept, heads)) = prep.kept_pairs_at(x) else {
                    continue;
                };
                let sels = prep.select(x);
                let want: u64 = sels.iter().map(Selection::kept_pairs).sum();
                assert_eq!(heads, sels.len(), "{}: heads at {x}", info.name);
                assert_eq!(kept, want, "{}: kept pairs at {x}", info.name);
            }
            for target in [0.3, 0.7, 0.9] {
                let c = calibrate(prep.as_ref(), &knob, target, Scored::all(n));
                assert_eq!(c.sparsity, sparsity_of(&c.selections), "{}", info.name);
            }
        }
    }

    /// The top-p methods' histogram estimates: monotone in `p`, close to the exact count, and a
    /// guided calibration reaches every target with fewer exact counts than bisection.
    #[test]
    fn guided_calibration_meets_the_tolerance_with_fewer_counts() {
        let n = 400;
        let data = GroupData::random(n, 32, 3, 29);
        for name in ["oracle-topp", "rtpurbo-proxy"] {
            let method = crate::registry::find(name)
                .expect("registered")
                .build_with(&[])
                .expect("defaults build");
            let input = data.input();
            let prep = method.prepare(&input);
            let knob = method.knob();
            let mut last = 0.0;
            for t in 0..=40 {
                let p = f64::from(t) / 40.0;
                let (approx, _) = prep.approx_kept_pairs_at(p).expect("estimates");
                let (exact, _) = prep.kept_pairs_at(p).expect("counts");
                assert!(approx >= last, "{name}: estimate not monotone at p = {p}");
                last = approx;
                let rel = (approx - exact as f64).abs() / exact as f64;
                assert!(
                    rel < 0.05,
                    "{name}: estimate {approx} vs {exact} at p = {p}"
                );
            }
            let approx = |x: f64| {
                let (kept, heads) = prep.approx_kept_pairs_at(x).expect("estimates");
                1.0 - kept / (causal_pairs(n) * heads as u64) as f64
            };
            for target in [0.5, 0.8, 0.9, 0.95] {
                let (mut guided_counts, mut plain_counts) = (0, 0);
                let count = |x: f64, calls: &mut usize| {
                    *calls += 1;
                    let (kept, heads) = prep.kept_pairs_at(x).expect("counts");
                    ((), sparsity_of_kept(kept, heads, n))
                };
                let guided = search_knob_guided(
                    &knob,
                    target,
                    n,
                    |x| count(x, &mut guided_counts),
                    Some(&approx),
                )
                .expect("a value");
                let plain = search_knob(&knob, target, n, |x| count(x, &mut plain_counts))
                    .expect("a value");
                for (how, r) in [("guided", guided), ("bisection", plain)] {
                    assert!(
                        (r.2 - target).abs() <= SPARSITY_TOLERANCE,
                        "{name} {how}: sparsity {} for target {target}",
                        r.2
                    );
                }
                assert!(
                    guided_counts < plain_counts,
                    "{name} target {target}: {guided_counts} guided counts vs {plain_counts}"
                );
            }
        }
    }
}
