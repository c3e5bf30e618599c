//! Models whose layers soft-cap their logits, scale `q . k` by other than `1 / sqrt(head_dim)` or
//! attend over a sliding window shorter than the input are simulated under each layer's rule:
//! a tiny Gemma 2 (soft-cap 2, `query_pre_attn_scalar` 24 with head dim 32, window 8 on its
//! local layers), a tiny Gemma 3 (window 8 on five of six layers) and a tiny Mistral (window 8)
//! on 40 tokens. Every visible key kept (oracle-topk at every key) has a true recall of 1 and a
//! sparsity of 0 on every layer and head: the exact attention the metrics read sums to 1 under
//! the capture's log-sum-exp, and sparsity counts only the visible pairs.

use attnscope_analysis::budget::Budget;
use attnscope_analysis::input::SimInput;
use attnscope_analysis::registry;
use attnscope_analysis::sim::{SimConfig, Simulation};
use attnscope_core::Model;

const N: usize = 40;

fn tiny(name: &str) -> Model {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../core/tests/fixtures/tiny")
        .join(name);
    Model::load(&dir).expect("fixture loads")
}

fn config() -> SimConfig {
    let methods = ["streaming", "oracle-topk", "quest"]
        .iter()
        .map(|m| registry::find(m).and_then(|i| i.configure(&[])))
        .collect::<Result<Vec<_>, _>>()
        .expect("methods");
    let mut cfg = SimConfig::new(methods, vec![Budget::Sparsity(0.5), Budget::Tokens(N)]);
    cfg.capture_block = 8;
    cfg
}

fn input(n: usize) -> SimInput {
    SimInput {
        name: "ids".into(),
        ids: (0..n as u32).map(|i| 3 + (i * 7) % 100).collect(),
        pieces: vec!["a".into(); n],
        punct: vec![false; n],
        newline: vec![false; n],
        ..SimInput::default()
    }
}

#[test]
fn soft_capped_and_windowed_layers_are_simulated_under_their_rule() {
    for name in ["gemma2", "gemma3", "mistral"] {
        let model = tiny(name);
        let c = &model.config;
        assert!(
            (0..c.n_layers).any(|l| c.score_rule(l).window.is_some_and(|w| w < N)),
            "{name}: a layer with a window shorter than the input"
        );
        let sim = Simulation::new(&model, config()).expect("not refused");
        let res = sim.run(&input(N)).expect("simulated");
        let heads = c.n_layers * c.n_heads;
        for (method, budget) in [("streaming", 0), ("oracle-topk", 0), ("oracle-topk", 1)] {
            let rows: Vec<_> = res
                .metrics
                .iter()
                .filter(|r| r.method == method && r.budget == budget)
                .collect();
            assert_eq!(
                rows.len(),
                heads,
                "{name} {method}: a row per layer and head"
            );
            for r in rows {
                let what = format!("{name} {method} layer {} head {}", r.layer, r.head);
                assert!(
                    r.recall > 0.0 && r.recall <= 1.0,
                    "{what}: recall {}",
                    r.recall
                );
                assert!((0.0..=1.0).contains(&r.sparsity), "{what}: {}", r.sparsity);
                if budget == 1 {
                    assert!((r.recall - 1.0).abs() < 1e-5, "{what}: recall {}", r.recall);
                    assert_eq!(r.sparsity, 0.0, "{what}");
                    assert!(
                        r.out_rel_err < 1e-4,
                        "{what}: output error {}",
                        r.out_rel_err
                    );
                }
            }
        }
    }
}
