//! Every host method of a KV group prepared and calibrated at every budget, one method's
//! prepared state alive only while that method runs: a method's scores over the scored pairs
//! (hundreds of MB per q-head at 32k tokens) are dropped before the next wave of methods is
//! prepared. Waves of `method_jobs` methods run side by side.

use super::layer::LayerOut;
use super::SimConfig;
use crate::budget::{resolve, Budget};
use crate::method::GroupInput;

/// One method's selections on one budget of a KV group (calibrated), and its wall seconds.
pub(crate) struct MethodOut {
    pub cal: crate::budget::Calibrated,
    pub seconds: f64,
}

/// Methods run side by side, this many at a time (`method_jobs`; 0: all of them).
pub(crate) fn wave(cfg: &SimConfig) -> usize {
    match cfg.method_jobs {
        0 => cfg.methods.len().max(1),
        j => j,
    }
}

/// Every host method's calibrated selections at every budget (`None` for those the device ran):
/// `[budget][method]`. Per method its preparation, then its calibration at each budget (with the
/// top-p budgets' targets `top_p`), then its prepared state is dropped. A method's seconds are
/// its preparation's and calibrations' together.
pub(crate) fn calibrate_all<'i>(
    cfg: &'i SimConfig,
    input: &'i GroupInput<'i>,
    on_gpu: &(dyn Fn(usize) -> bool + Sync),
    top_p: &[Option<f64>],
    out: &mut LayerOut,
) -> Vec<Vec<Option<MethodOut>>> {
    let wave = wave(cfg);
    // One at a time, a method's CPU seconds are its own (the process's over its run).
    let alone = wave == 1;
    let mut by_budget: Vec<Vec<Option<MethodOut>>> =
        cfg.budgets.iter().map(|_| Vec::new()).collect();
    for (w, ms) in cfg.methods.chunks(wave).enumerate() {
        let mark = super::Profile::mark();
        let done = side_by_side(ms, |i, m| {
            if on_gpu(w * wave + i) {
                return None;
            }
            let t = std::time::Instant::now();
            let prep = m.selector.prepare(input);
            let prepared = t.elapsed().as_secs_f64();
            let cals: Vec<MethodOut> = cfg
                .budgets
                .iter()
                .zip(top_p)
                .map(|(&budget, &target)| calibrate(m, prep.as_ref(), budget, input, target))
                .collect();
            Some((prepared, cals))
        });
        for (res, m) in done.into_iter().zip(ms) {
            match res {
                Some((prepared, cals)) => {
                    let secs = prepared + cals.iter().map(|c| c.seconds).sum::<f64>();
                    out.add_method_time(&m.label, secs, alone.then_some(mark));
                    for (b, c) in by_budget.iter_mut().zip(cals) {
                        b.push(Some(c));
                    }
                }
                None => by_budget.iter_mut().for_each(|b| b.push(None)),
            }
        }
    }
    by_budget
}

/// Calibrates method `m` (prepared as `prep`) to `budget` on the group's scored queries.
fn calibrate(
    m: &super::MethodRun,
    prep: &dyn crate::method::Prepared,
    budget: Budget,
    input: &GroupInput<'_>,
    top_p_sparsity: Option<f64>,
) -> MethodOut {
    let t = std::time::Instant::now();
    let cal = resolve(
        m.selector.as_ref(),
        prep,
        budget,
        input.scored,
        top_p_sparsity,
    );
    MethodOut {
        cal,
        seconds: t.elapsed().as_secs_f64(),
    }
}

/// `f(i, item)` for every item, each a task of its own on rayon's pool, results in order. One
/// task per item rather than a parallel iterator: a worker waiting inside one method's parallel
/// loop steals the oldest task it finds, and a parallel iterator's oldest task is half of the
/// remaining items, which the waiting method would then wait out (a layer job once took the
/// whole run that way); a single method is the most it can take here.
fn side_by_side<'t, T: Sync, R: Send>(
    items: &'t [T],
    f: impl Fn(usize, &'t T) -> R + Sync,
) -> Vec<R> {
    if items.len() <= 1 {
        return items.iter().enumerate().map(|(i, x)| f(i, x)).collect();
    }
    let mut slots: Vec<Option<R>> = items.iter().map(|_| None).collect();
    rayon::scope(|scope| {
        let f = &f;
        for ((i, x), slot) in items.iter().enumerate().zip(slots.iter_mut()) {
            scope.spawn(move |_| *slot = Some(f(i, x)));
        }
    });
    slots
        .into_iter()
        .map(|r| r.expect("every task of the scope ran"))
        .collect()
}
