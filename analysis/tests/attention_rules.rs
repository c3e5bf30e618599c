//! Models whose attention the simulator does not model yet are refused with the layers named,
//! never simulated into a wrong answer: soft-capped logits (a tiny Gemma 2) at once, a sliding
//! window (a tiny Mistral, window 8) when the input is longer than the window; an input within
//! the window runs.

use attnscope_analysis::budget::Budget;
use attnscope_analysis::input::SimInput;
use attnscope_analysis::registry;
use attnscope_analysis::sim::{MethodRun, SimConfig, Simulation};
use attnscope_core::Model;

fn tiny(name: &str) -> Model {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../core/tests/fixtures/tiny")
        .join(name);
    Model::load(&dir).expect("fixture loads")
}

fn config() -> SimConfig {
    let info = registry::find("streaming").expect("registered");
    let run = MethodRun {
        label: info.name.into(),
        info,
        selector: info.build_with(&[]).expect("defaults"),
        overrides: Vec::new(),
    };
    SimConfig::new(vec![run], vec![Budget::Sparsity(0.5)])
}

fn input(n: usize) -> SimInput {
    SimInput {
        name: "ids".into(),
        ids: (0..n as u32).map(|i| 3 + i % 100).collect(),
        pieces: vec!["a".into(); n],
        punct: vec![false; n],
        newline: vec![false; n],
        ..SimInput::default()
    }
}

#[test]
fn soft_capping_is_refused_before_anything_runs() {
    let model = tiny("gemma2");
    let err = Simulation::new(&model, config()).expect_err("refused");
    let msg = err.to_string();
    assert!(
        msg.contains("layers 0,1") && msg.contains("soft-cap"),
        "{msg}"
    );
}

#[test]
fn a_window_shorter_than_the_input_is_refused() {
    let model = tiny("mistral");
    let sim = Simulation::new(&model, config()).expect("no soft-cap, plain scale");
    let msg = sim.run(&input(40)).expect_err("refused").to_string();
    assert!(
        msg.contains("sliding window of 8 tokens") && msg.contains("--len 8"),
        "{msg}"
    );
    let res = sim.run(&input(8)).expect("within the window");
    assert!(!res.metrics.is_empty());
}
