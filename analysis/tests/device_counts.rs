//! The device path's score-independent kept-pair counts and knob calibration against the host
//! methods, on random data (no GPU needed): every registered method with a device scoring
//! (`analysis/src/device/`), representative rules, block-mass top-k and static patterns.
#![cfg(feature = "cuda")]

mod device_util;

use attnscope_analysis::budget::{resolve, sparsity_of_kept, Budget};
use attnscope_analysis::device::{block_scoring, resolve_counted, static_rule, RowCounts};
use attnscope_analysis::method::{DeviceScoring, HeadKeys, Prepared, Selector};
use attnscope_analysis::methods::oracle_topk_block::block_topk_kept;
use attnscope_analysis::selection::Scored;
use attnscope_analysis::sim::MethodRun;
use attnscope_analysis::testing::GroupData;
use device_util::*;

#[test]
fn counted_kept_pairs_and_knobs_match_the_host_methods() {
    let all: Vec<MethodRun> = device_methods()
        .iter()
        .map(|m| run_of(m, &overrides(m)))
        .collect();
    let rep = |r: &&MethodRun| matches!(scoring(r, 1 << 20), DeviceScoring::Representatives(_));
    let runs: Vec<&MethodRun> = all.iter().filter(rep).collect();
    assert!(runs.len() >= 5, "representative rules: {}", runs.len());
    let oracle = run_of("oracle-topk-block", &[]);
    for (n, group, seed) in [(300usize, 3usize, 5u64), (1000, 2, 9), (777, 1, 3)] {
        let data = GroupData::random(n, 16, group, seed);
        let input = data.input();
        // The oracle: counts from the own-block ranks (what the device returns) per KV group.
        {
            let block = scoring(&oracle, n).block();
            let ranks: Vec<Vec<u32>> = (0..group)
                .map(|h| host_ranks(&data.truth[h].block_mass, block))
                .collect();
            let prep = oracle.selector.prepare(&input);
            let counted =
                |k: usize| -> u64 { ranks.iter().map(|r| block_topk_kept(r, block, k)).sum() };
            for k in [1usize, 2, 3, 5, 8, 13, 40, 1000] {
                let (kept, heads) = prep.kept_pairs_at(k as f64).expect("counted");
                assert_eq!(heads, group);
                assert_eq!(counted(k), kept, "oracle-topk-block n {n} k {k}");
                let built: u64 = prep.select(k as f64).iter().map(|s| s.kept_pairs()).sum();
                assert_eq!(built, kept, "oracle-topk-block n {n} k {k}: selections");
            }
            let sparsity =
                |x: f64| sparsity_of_kept(counted(x.max(0.0).round() as usize), group, n);
            same_knobs(
                oracle.selector.as_ref(),
                prep.as_ref(),
                n,
                &sparsity,
                "oracle-topk-block",
            );
        }
        for run in &runs {
            let name = run.label.as_str();
            let DeviceScoring::Representatives(rule) = scoring(run, n) else {
                unreachable!("filtered above")
            };
            let keys = HeadKeys {
                k: input.k,
                punct: input.punct,
                newline: input.newline,
            };
            let (rf, mf, m) = reps_of(run, &keys);
            let spec = block_scoring(&rule, &rf, (!mf.is_empty()).then_some(&mf[..]), m, 16);
            let counts = RowCounts::new(&spec, n);
            let prep = run.selector.prepare(&input);
            let min = run.selector.knob().min;
            for k in [0usize, 1, 2, 3, 5, 8, 13, 40, 1000] {
                if (k as f64) < min {
                    continue;
                }
                let (kept, heads) = prep
                    .kept_pairs_at(k as f64)
                    .expect("block methods count pairs");
                assert_eq!(heads, group, "{name}");
                assert_eq!(counts.kept(k) * group as u64, kept, "{name} n {n} k {k}");
            }
            let sparsity = |x: f64| {
                let k = x.max(min.max(0.0)).round() as usize;
                sparsity_of_kept(counts.kept(k) * group as u64, group, n)
            };
            same_knobs(run.selector.as_ref(), prep.as_ref(), n, &sparsity, name);
        }
    }
}

/// Static patterns: the device's counted pairs and knobs equal the host method's.
#[test]
fn static_patterns_count_like_the_host_methods() {
    let runs: Vec<MethodRun> = device_methods()
        .iter()
        .map(|m| run_of(m, &overrides(m)))
        .filter(|r| matches!(scoring(r, 1 << 20), DeviceScoring::Static { .. }))
        .collect();
    assert!(runs.len() >= 2, "static patterns: {}", runs.len());
    for (n, group, seed) in [(300usize, 3usize, 5u64), (1000, 2, 9), (777, 1, 3)] {
        let data = GroupData::random(n, 16, group, seed);
        let input = data.input();
        for run in &runs {
            let name = run.label.as_str();
            let DeviceScoring::Static { n_init } = scoring(run, n) else {
                unreachable!("filtered above")
            };
            let prep = run.selector.prepare(&input);
            let counted =
                |x: f64| RowCounts::new(&static_rule(n_init, x), n).kept(0) * group as u64;
            for w in [1.0, 2.0, 3.0, 7.0, 64.0, 299.0, 1000.0, 5000.0] {
                let (kept, heads) = prep.kept_pairs_at(w).expect("static patterns count pairs");
                assert_eq!(heads, group, "{name}");
                assert_eq!(counted(w), kept, "{name} n {n} window {w}");
                let built: u64 = prep.select(w).iter().map(|s| s.kept_pairs()).sum();
                assert_eq!(built, kept, "{name} n {n} window {w}: selections");
            }
            let sparsity = |x: f64| sparsity_of_kept(counted(x), group, n);
            same_knobs(run.selector.as_ref(), prep.as_ref(), n, &sparsity, name);
        }
    }
}

/// The host calibration (on selections) and the device's (on counted pairs, `sparsity`) land on
/// the same knob, sparsity and reached flag for several budgets.
fn same_knobs(
    selector: &dyn Selector,
    prep: &dyn Prepared,
    n: usize,
    sparsity: &dyn Fn(f64) -> f64,
    name: &str,
) {
    for b in [
        Budget::Sparsity(0.5),
        Budget::Sparsity(0.8),
        Budget::Sparsity(0.95),
        Budget::Tokens(256),
    ] {
        let cpu = resolve(selector, prep, b, Scored::all(n), None);
        let dev = resolve_counted(selector, b, n, sparsity).expect("budget");
        assert_eq!(cpu.knob, dev.knob, "{name} n {n} {b:?}");
        assert_eq!(cpu.sparsity, dev.sparsity, "{name} n {n} {b:?}");
        assert_eq!(cpu.reached, dev.reached, "{name} n {n} {b:?}");
    }
}
