//! Helpers shared by the device method tests (`device_counts.rs`, `gpu_block_methods.rs`).
#![allow(dead_code)]

use attnscope_analysis::method::{DeviceScoring, HeadKeys};
use attnscope_analysis::methods::oracle_topk_block::own_block_rank;
use attnscope_analysis::registry;
use attnscope_analysis::sim::MethodRun;
use ndarray::Array2;

/// Every registered method with a device scoring at its defaults (on a long input, past any
/// dense fallback).
pub fn device_methods() -> Vec<&'static str> {
    registry::METHODS
        .iter()
        .filter(|m| {
            let s = m.build_with(&overrides(m.name)).expect("builds");
            s.device_scoring(1 << 20).is_some()
        })
        .map(|m| m.name)
        .collect()
}

/// The device scoring of `run` over `n` tokens.
pub fn scoring(run: &MethodRun, n: usize) -> DeviceScoring {
    run.selector.device_scoring(n).expect("device scoring")
}

/// The representatives of `run` over keys `k` and their device scoring rule at head dim `d`:
/// `(reps, minima, rows)`.
pub fn reps_of(run: &MethodRun, keys: &HeadKeys<'_>) -> (Vec<f32>, Vec<f32>, usize) {
    let r = run.selector.representatives(keys).expect("representatives");
    (
        r.reps.iter().copied().collect(),
        r.minima.iter().flat_map(|m| m.iter().copied()).collect(),
        r.reps.nrows(),
    )
}

/// Per-query own-block ranks of one head from its block mass `[n, nb]` (the host rule).
pub fn host_ranks(mass: &Array2<f32>, block: usize) -> Vec<u32> {
    (0..mass.nrows())
        .map(|i| {
            let row: Vec<f32> = mass.row(i).iter().take(i / block + 1).copied().collect();
            own_block_rank(&row)
        })
        .collect()
}

pub fn run_of(name: &str, overrides: &[(String, f64)]) -> MethodRun {
    let info = registry::find(name).expect("registered");
    MethodRun {
        label: name.into(),
        info,
        overrides: overrides.to_vec(),
        selector: info.build_with(overrides).expect("builds"),
    }
}

/// Small blocks for short inputs (moba's default 512 would leave few candidates).
pub fn overrides(name: &str) -> Vec<(String, f64)> {
    match name {
        "moba" => vec![("block".into(), 64.0)],
        _ => Vec::new(),
    }
}
