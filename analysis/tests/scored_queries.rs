//! Scoring some queries (`--queries last:N`) gives, for every scored query, exactly what scoring
//! every query gives: the same kept keys at the same knob value, and the same per-query metrics,
//! bit for bit. Selections, sparsity and calibration count the scored queries only.

use attnscope_analysis::budget::{resolve, sparsity_of, sparsity_of_tokens, Budget};
use attnscope_analysis::metrics::{evaluate_many, DenseHead};
use attnscope_analysis::registry::METHODS;
use attnscope_analysis::selection::{Queries, Scored, Selection};
use attnscope_analysis::testing::GroupData;

/// Knob values across a method's range (count knobs rounded).
fn knob_values(method: &dyn attnscope_analysis::method::Selector, n: usize) -> Vec<f64> {
    let knob = method.knob();
    let (lo, hi) = (knob.min, knob.max_for(n).max(knob.min));
    [0.0, 0.05, 0.3, 0.7, 1.0]
        .iter()
        .map(|t| {
            let x = lo + (hi - lo) * t * t;
            if knob.integer {
                x.round()
            } else {
                x
            }
        })
        .collect()
}

/// Every method: the rows of the scored queries equal those of a run that scores every query. `first` is a multiple of every block
/// size in the registry's defaults, so that block rows are whole.
#[test]
fn every_method_selects_the_same_keys_for_the_scored_queries() {
    let n = 640;
    let data = GroupData::random(n, 32, 2, 41);
    let tail = Scored::last(128, n);
    let mut checked = 0;
    for info in METHODS {
        let method = info.build_with(&[]).expect("defaults build");
        // phsa-fit needs calibration.
        if method.needs_calibration() {
            continue;
        }
        let (all, sub) = (data.input(), data.input_scored(tail));
        let (pa, ps) = (method.prepare(&all), method.prepare(&sub));
        for x in knob_values(method.as_ref(), n) {
            let (sa, ss) = (pa.select(x), ps.select(x));
            assert_eq!(sa.len(), ss.len(), "{}: heads", info.name);
            for (h, (a, s)) in sa.into_iter().zip(ss).enumerate() {
                let s = s.restricted(tail);
                assert_eq!(s.scored(), tail, "{} head {h} at {x}", info.name);
                assert_eq!(a.restricted(tail), s, "{} head {h} at {x}", info.name);
            }
        }
        checked += 1;
    }
    assert!(checked >= 19, "only {checked} methods checked");
}

/// Every method that counts its kept pairs without building selections (`kept_pairs_at`, which
/// calibration bisects on) counts those of its selections' scored queries exactly, for every
/// query and for the last 128 or 77 (a tail that starts inside a block row).
#[test]
fn counted_kept_pairs_are_the_scored_queries_pairs() {
    let n = 640;
    let data = GroupData::random(n, 32, 2, 43);
    let mut counted = 0;
    for info in METHODS {
        let method = info.build_with(&[]).expect("defaults build");
        if method.needs_calibration() {
            continue;
        }
        for scored in [Scored::all(n), Scored::last(128, n), Scored::last(77, n)] {
            let g = data.input_scored(scored);
            let prep = method.prepare(&g);
            for x in knob_values(method.as_ref(), n) {
                let Some((kept, heads)) = prep.kept_pairs_at(x) else {
                    continue;
                };
                let sels = prep.select(x);
                let at = format!("{} at {x}, queries {}..{n}", info.name, scored.first);
                assert_eq!(heads, sels.len(), "{at}: selections");
                let built: u64 = sels
                    .into_iter()
                    .map(|s| s.restricted(scored).kept_pairs())
                    .sum();
                assert_eq!(kept, built, "{at}: counted vs built kept pairs");
                counted += 1;
            }
        }
    }
    assert!(counted >= 100, "only {counted} counts compared");
}

/// The per-query metrics of the scored queries are those of the full run's last rows, and a
/// subset's sparsity counts its own causal pairs.
#[test]
fn metrics_of_the_scored_queries_are_the_last_rows_of_the_full_run() {
    let n = 500;
    let data = GroupData::random(n, 16, 2, 43);
    let tail = Queries::Last(77).of(n);
    assert_eq!(tail.range(), 423..500);
    let method = attnscope_analysis::registry::find("oracle-topk")
        .expect("registered")
        .build_with(&[])
        .expect("defaults build");
    let (all, sub) = (data.input(), data.input_scored(tail));
    let (pa, ps) = (method.prepare(&all), method.prepare(&sub));
    for h in 0..all.group_size() {
        let head = DenseHead {
            q: data.q_head(h),
            k: data.k.view(),
            v: data.v.view(),
            lse: &data.truth[h].lse,
            dense_out: data.dense_out_head(h),
            rule: data.rule,
        };
        let full_sel = &pa.select(40.0)[h];
        let sub_sel = &ps.select(40.0)[h];
        let full = evaluate_many(&head, &all.true_probs()[h], &[full_sel]).remove(0);
        let part = evaluate_many(&head, &sub.true_probs()[h], &[sub_sel]).remove(0);
        assert_eq!(part.recall, full.recall[423..].to_vec(), "recall, head {h}");
        assert_eq!(part.out_rel_err, full.out_rel_err[423..].to_vec());
        assert_eq!(part.cosine, full.cosine[423..].to_vec());
        // 40 keys of each scored query out of i + 1.
        let kept: u64 = (423..500u64).map(|_| 40).sum();
        let pairs: u64 = (423..500u64).map(|i| i + 1).sum();
        let want = 1.0 - kept as f64 / pairs as f64;
        assert!((sparsity_of(std::slice::from_ref(sub_sel)) - want).abs() < 1e-15);
    }
}

/// A budget of tokens per query at the end of a 32k context: the last query keeps exactly
/// 128 + 512 + 16 x 16 = 896 keys of 32768, 2.73% density (the PHSA paper's 97.3%).
#[test]
fn decode_accounting_of_a_token_budget_at_32k() {
    let n = 32768;
    let last = Queries::Last(1).of(n);
    let s = sparsity_of_tokens(896, last);
    assert!(
        (1.0 - s - 896.0 / 32768.0).abs() < 1e-15,
        "density {}",
        1.0 - s
    );
    assert!((1.0 - s - 0.02734375).abs() < 1e-15);
    // Over every query the same budget is far denser at the start of the triangle.
    assert!(sparsity_of_tokens(896, Scored::all(n)) < s);
}

/// Calibration to a sparsity over the scored queries lands on it (within the tolerance), and
/// selections keep nothing before the first scored query.
#[test]
fn calibration_counts_the_scored_queries() {
    let n = 2048;
    let data = GroupData::random(n, 16, 2, 47);
    let tail = Scored::last(256, n);
    for name in [
        "phsa",
        "infllm-v2",
        "quest",
        "oracle-topk",
        "streaming",
        "snapkv",
    ] {
        let method = attnscope_analysis::registry::find(name)
            .expect("registered")
            .build_with(&[])
            .expect("defaults build");
        let sub = data.input_scored(tail);
        let prep = method.prepare(&sub);
        let cal = resolve(
            method.as_ref(),
            prep.as_ref(),
            Budget::Sparsity(0.8),
            tail,
            None,
        );
        // Block methods move in steps of one 64-token block per query (3.3% of the ~1900 keys
        // of a scored query); token methods reach the tolerance.
        let step = if name == "oracle-topk" || name == "streaming" || name == "snapkv" {
            assert!(cal.reached, "{name}: sparsity {}", cal.sparsity);
            0.002
        } else {
            64.0 / 1792.0
        };
        assert!(
            (cal.sparsity - 0.8).abs() <= step,
            "{name}: {}",
            cal.sparsity
        );
        assert_eq!(cal.sparsity, sparsity_of(&cal.selections), "{name}");
        for sel in &cal.selections {
            assert_eq!(sel.scored(), tail);
            assert!((0..tail.first).all(|i| sel.kept_of(i) == 0 || i / 64 == tail.first / 64));
        }
    }
}

/// `--queries` values: `all` and `last:N` with N >= 1.
#[test]
fn query_sets_parse_and_print() {
    assert_eq!("all".parse::<Queries>(), Ok(Queries::All));
    assert_eq!("last:512".parse::<Queries>(), Ok(Queries::Last(512)));
    for bad in ["last:0", "last:", "last:-3", "first:3", "", "last:1.5"] {
        let err = bad.parse::<Queries>().expect_err(bad);
        assert!(err.contains("last:N"), "{bad}: {err}");
    }
    assert_eq!(Queries::Last(7).to_string(), "last:7");
    assert_eq!(Queries::Last(900).of(100), Scored::all(100));
    // Queries 7..12 scored: row 0 (queries 0..4) is empty; rows 1 and 2 are pushed.
    let mut b = Selection::builder_scored(Scored::last(5, 12), 4);
    b.push_ranges([(0, 2)]);
    b.push_ranges([(0, 12)]);
    let s = b.finish();
    assert_eq!(s.rows(), 3);
    assert!(s.row_ranges(0).is_empty());
    // Query 7 keeps keys 0..2 (row 1); queries 8..12 keep every causal key.
    assert_eq!(s.kept_pairs(), 2 + (8..12u64).map(|i| i + 1).sum::<u64>());
    assert_eq!(
        Scored::last(5, 12).causal_pairs(),
        (7..12u64).map(|i| i + 1).sum::<u64>()
    );
}
