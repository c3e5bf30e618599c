//! Live re-selection reproduces `attnscope simulate`: the same method, parameters and budget on
//! the bundle's captured Q/K give the recall and sparsity the bundle recorded.

mod common;

use attnscope_viewer::data::RunData;
use attnscope_viewer::live::{compute_once, LiveBudget, LiveRequest, LiveSource};
use common::fixture;

#[test]
fn live_matches_the_bundle_at_the_runs_settings() {
    let run = RunData::open(&fixture()).expect("fixture");
    let src = LiveSource::of(&run);
    for method in ["phsa", "quest", "oracle-topk"] {
        let params: Vec<(String, f64)> = run
            .manifest
            .methods
            .iter()
            .find(|m| m.name == method)
            .map(|m| m.params.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default();
        let budget = 1;
        let target = run.manifest.budgets[budget].value;
        let req = LiveRequest {
            input: 0,
            layer: 2,
            method: method.into(),
            overrides: params,
            budget: LiveBudget::Sparsity(target),
        };
        let res = compute_once(&src, &req).expect("computes");
        assert_eq!(res.heads.len(), run.n_heads);
        let m = run.method_index(method).expect("method");
        for h in &res.heads {
            let saved = run.metric(0, 2, h.head, m, budget).expect("saved row");
            assert!(
                (saved.recall - h.recall).abs() < 1e-4,
                "{method} H{}: live recall {} vs bundle {}",
                h.head,
                h.recall,
                saved.recall
            );
            assert!(
                (saved.sparsity - h.sparsity).abs() < 1e-9,
                "{method} sparsity"
            );
            assert_eq!(
                h.recall_by_query_block.len(),
                saved.recall_by_query_block.len()
            );
            // The compacted selection is the one the bundle saved.
            let sel = run
                .selection(0, 2, h.head, m, budget)
                .expect("saved selection");
            assert_eq!(
                sel.offsets, h.selection.offsets,
                "{method} H{} offsets",
                h.head
            );
            assert_eq!(
                sel.blocks, h.selection.blocks,
                "{method} H{} blocks",
                h.head
            );
        }
    }
}

#[test]
fn lambda_changes_phsa_and_bad_requests_are_errors() {
    let run = RunData::open(&fixture()).expect("fixture");
    let src = LiveSource::of(&run);
    let req = |lambda: f64| LiveRequest {
        input: 0,
        layer: 2,
        method: "phsa".into(),
        overrides: vec![
            ("lambda".into(), lambda),
            ("block".into(), 16.0),
            ("local_blocks".into(), 1.0),
        ],
        budget: LiveBudget::Sparsity(0.6),
    };
    let a = compute_once(&src, &req(0.0)).expect("lambda 0");
    let b = compute_once(&src, &req(1.0)).expect("lambda 1");
    let sa: Vec<&Vec<u32>> = a.heads.iter().map(|h| &h.selection.blocks).collect();
    let sb: Vec<&Vec<u32>> = b.heads.iter().map(|h| &h.selection.blocks).collect();
    assert_ne!(sa, sb, "lambda changes PHSA's selection");
    let mut bad = req(0.5);
    bad.layer = 10;
    assert!(compute_once(&src, &bad)
        .expect_err("an error")
        .contains("no layer 10"));
    let mut bad = req(0.5);
    bad.method = "nope".into();
    assert!(compute_once(&src, &bad).is_err());
    let mut bad = req(7.0);
    bad.overrides = vec![("lambda".into(), 7.0)];
    assert!(compute_once(&src, &bad)
        .expect_err("an error")
        .contains("out of range"));
}
