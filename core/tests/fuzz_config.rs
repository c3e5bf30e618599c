//! Fuzzing `config.json` parsing (core/FUZZING.md): the tiny llama config with keys replaced by
//! arbitrary JSON values (numbers at the edges: 0, negative, huge, fractional) or removed, and
//! random text. Every input gives `Ok` with a config whose numbers are in range, or an error that
//! names the file, without a panic.

mod fuzz_util;

use attnscope_core::ModelConfig;
use fuzz_util::{config, fixture, json_value, within};
use proptest::prelude::*;

const KEYS: &[&str] = &[
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "hidden_size",
    "intermediate_size",
    "vocab_size",
    "rms_norm_eps",
    "rope_theta",
    "rope_parameters",
    "rope_scaling",
    "max_position_embeddings",
    "tie_word_embeddings",
    "bos_token_id",
    "eos_token_id",
    "model_type",
    "architectures",
];

fn base() -> serde_json::Value {
    let text = std::fs::read_to_string(fixture("tiny/llama/config.json")).expect("fixture");
    serde_json::from_str(&text).expect("fixture JSON")
}

fn check(text: String) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
    let path = dir.path().join("config.json");
    std::fs::write(&path, text).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let p = path.clone();
    match within("config.json", move || ModelConfig::from_hf_json(&p)) {
        Err(e) => {
            let e = e.to_string();
            prop_assert!(e.contains(&path.display().to_string()), "no file in: {e}");
        }
        Ok(c) => {
            prop_assert!(c.validate(&path).is_ok());
            prop_assert!(c.n_heads % c.n_kv_heads == 0 && c.head_dim % 2 == 0);
            prop_assert!(c.rms_eps.is_finite() && c.rms_eps > 0.0 && c.rms_eps < 1.0);
            prop_assert!(c.rope_theta.is_finite() && c.rope_theta > 0.0);
            prop_assert!(c.n_layers > 0 && c.vocab > 0 && c.max_context > 0);
            let _ = c.param_count();
        }
    }
    Ok(())
}

/// Numbers a config key may hold, biased to the edges.
fn number() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::json;
    prop_oneof![
        Just(json!(0)),
        Just(json!(0.0)),
        Just(json!(-1)),
        Just(json!(1e-300)),
        Just(json!(1e39)),
        Just(json!(u64::MAX)),
        Just(json!(3)),
        (0u64..100_000).prop_map(|v| json!(v)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|v| json!(v)),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn edited_keys(
        edits in proptest::collection::vec(
            (0..KEYS.len(), prop_oneof![3 => number(), 1 => json_value()], prop::bool::weighted(0.15)),
            1..5,
        ),
    ) {
        let mut doc = base();
        for (k, v, remove) in edits {
            let obj = doc.as_object_mut().expect("object");
            if remove {
                obj.remove(KEYS[k]);
            } else {
                obj.insert(KEYS[k].to_string(), v);
            }
        }
        check(doc.to_string())?;
    }

    #[test]
    fn random_documents(doc in json_value()) {
        check(doc.to_string())?;
    }

    #[test]
    fn random_text(text in "\\PC{0,200}") {
        check(text)?;
    }
}
