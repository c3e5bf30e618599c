//! A layer with a non-plain score rule (query scale 0.5 instead of `1 / sqrt(8)`, logit
//! soft-capping at 3, a sliding window of 12 keys) against an independent numpy reference
//! (`scripts/ref_score_rule.py`, fixture `tests/fixtures/score_rule/case.json`; its docstring
//! says what each value is):
//! - the exact attention of the method input ([`GroupInput::true_probs`]) equals the reference's
//!   probabilities, 0 outside the window, to 1e-6;
//! - the simulator (one layer through [`SimHook`]) reports each q-head's recall, sparsity and
//!   target sparsity of `streaming` and `oracle-topk` at 8 keys per query, and of `oracle-topk`
//!   at every key (dense: recall 1, sparsity 0), as the reference computes them, to 1e-6: a
//!   method's keys outside the window are neither attended nor counted, and sparsity is taken
//!   over the visible pairs.

use std::path::Path;

use ndarray::Array2;
use serde_json::Value;

use attnscope_analysis::budget::Budget;
use attnscope_analysis::input::SimInput;
use attnscope_analysis::method::GroupInput;
use attnscope_analysis::registry;
use attnscope_analysis::sim::{SimConfig, SimHook};
use attnscope_analysis::testing::GroupData;
use attnscope_core::attention::{AttentionHook, LayerQkv, ScoreRule};

const TOL: f64 = 1e-6;

/// The fixture's case.
struct Case {
    json: Value,
    n: usize,
    d: usize,
    group: usize,
    rule: ScoreRule,
    /// `[n, group * d]` token-major queries, `[n, d]` keys and values.
    q: Array2<f32>,
    k: Array2<f32>,
    v: Array2<f32>,
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|x| x.as_f64().expect("a number"))
        .collect()
}

fn load() -> Case {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/score_rule/case.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let json: Value = serde_json::from_str(&text).expect("fixture JSON");
    let int = |k: &str| json[k].as_u64().expect("an integer") as usize;
    let (n, d, group) = (int("n"), int("d"), int("group"));
    let qs = floats(&json["q"]);
    let q = Array2::from_shape_fn((n, group * d), |(i, c)| {
        let (h, x) = (c / d, c % d);
        qs[(h * n + i) * d + x] as f32
    });
    let tokens = |key: &str| {
        let xs = floats(&json[key]);
        Array2::from_shape_fn((n, d), |(i, x)| xs[i * d + x] as f32)
    };
    let rule = ScoreRule {
        scale: json["scale"].as_f64().expect("scale") as f32,
        softcap: Some(json["softcap"].as_f64().expect("softcap") as f32),
        window: Some(int("window")),
    };
    Case {
        k: tokens("k"),
        v: tokens("v"),
        json,
        n,
        d,
        group,
        rule,
        q,
    }
}

#[test]
fn exact_attention_follows_the_layer_rule() {
    let c = load();
    let data = GroupData::from_qkv(
        c.q.clone(),
        c.k.clone(),
        c.v.clone(),
        vec![false; c.n],
        vec![false; c.n],
        c.group,
        4,
    )
    .with_rule(c.rule);
    let input: GroupInput<'_> = data.input();
    assert_eq!(input.scored.window, c.rule.window);
    let want = floats(&c.json["probs"]);
    let mut worst = 0f64;
    for (h, probs) in input.true_probs().iter().enumerate() {
        for i in 0..c.n {
            for (j, &p) in probs.row(i).iter().enumerate() {
                let w = want[(h * c.n + i) * c.n + j];
                worst = worst.max((p as f64 - w).abs());
                if !c.rule.visible(i, j) {
                    assert_eq!(p, 0.0, "head {h} ({i}, {j}) is outside the window");
                }
            }
        }
    }
    assert!(worst <= TOL, "largest probability difference {worst}");
}

#[test]
fn simulator_recall_and_sparsity_match_the_reference() {
    let c = load();
    let methods = ["streaming", "oracle-topk"]
        .iter()
        .map(|m| registry::find(m).and_then(|i| i.configure(&[])))
        .collect::<Result<Vec<_>, _>>()
        .expect("methods");
    let budgets = vec![Budget::Tokens(8), Budget::Tokens(c.n)];
    let mut cfg = SimConfig::new(methods, budgets);
    cfg.capture_block = 4;
    cfg.query_block = 4;
    let input = SimInput {
        punct: vec![false; c.n],
        newline: vec![false; c.n],
        ..SimInput::default()
    };
    let qkv = LayerQkv {
        layer: 0,
        n_heads: c.group,
        n_kv_heads: 1,
        head_dim: c.d,
        q: c.q.view(),
        k: c.k.view(),
        v: c.v.view(),
        rule: c.rule,
    };
    let mut hook = SimHook::new(&cfg, &input);
    hook.on_layer(&qkv).expect("the layer is simulated");
    let rows = &hook.results.metrics;
    for (method, budget, reference) in [
        ("streaming", 0, "streaming"),
        ("oracle-topk", 0, "oracle-topk"),
        ("oracle-topk", 1, "oracle-dense"),
    ] {
        let want = &c.json["methods"][reference];
        let (recall, sparsity) = (floats(&want["recall"]), floats(&want["sparsity"]));
        let target = want["target"].as_f64().expect("target");
        for h in 0..c.group {
            let row = rows
                .iter()
                .find(|r| r.method == method && r.budget == budget && r.head == h)
                .unwrap_or_else(|| panic!("no row for {method}, budget {budget}, head {h}"));
            let what = format!("{reference} head {h}");
            assert!(
                (row.recall - recall[h]).abs() <= TOL,
                "{what}: recall {} vs {}",
                row.recall,
                recall[h]
            );
            assert!(
                (row.sparsity - sparsity[h]).abs() <= TOL,
                "{what}: sparsity {} vs {}",
                row.sparsity,
                sparsity[h]
            );
            assert!(
                (row.target_sparsity - target).abs() <= TOL,
                "{what}: target {} vs {target}",
                row.target_sparsity
            );
        }
    }
}
