//! Fuzzing the safetensors reader (core/FUZZING.md): bit flips, truncations and JSON edits of the
//! header of a real file, and random `model.safetensors.index.json` documents. Every input must
//! give `Ok` or an error that names the file, without a panic or a hang; shards accepted from an
//! index always lie inside the model folder.

mod fuzz_util;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use attnscope_core::safetensors_io::{load_safetensors_dir, shards_of_index};
use attnscope_core::{Model, ModelConfig};
use fuzz_util::{apply, config, fixture, json_value, mutations, progress, replace_at, within};
use proptest::prelude::*;

fn tiny() -> PathBuf {
    fixture("tiny/llama")
}

/// Writes `bytes` as `model.safetensors` next to the tiny llama config, loads the weights and
/// builds the model from them; every error must name the folder or file.
fn check(bytes: Vec<u8>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
    let d = dir.path().to_path_buf();
    std::fs::write(d.join("model.safetensors"), &bytes)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let errors = within("safetensors load", move || {
        let cfg = tiny_config().clone();
        match load_safetensors_dir(&d) {
            Err(e) => vec![e.to_string()],
            Ok(w) => match Model::from_weights(cfg, w) {
                Err(e) => vec![e.to_string()],
                Ok(_) => Vec::new(),
            },
        }
    });
    let name = dir.path().display().to_string();
    for e in errors {
        prop_assert!(e.contains(&name), "error does not name the file: {e}");
    }
    Ok(())
}

/// The tiny llama config, parsed once per process.
fn tiny_config() -> &'static ModelConfig {
    static CFG: OnceLock<ModelConfig> = OnceLock::new();
    CFG.get_or_init(|| {
        ModelConfig::from_hf_json(&tiny().join("config.json")).expect("fixture config")
    })
}

/// The fixture's bytes and the length of its 8-byte prefix plus JSON header (read once).
fn fixture_bytes() -> (&'static [u8], usize) {
    static BYTES: OnceLock<(Vec<u8>, usize)> = OnceLock::new();
    let (b, header) = BYTES.get_or_init(|| {
        let b = std::fs::read(tiny().join("model.safetensors")).expect("fixture");
        let mut n = [0u8; 8];
        n.copy_from_slice(&b[..8]);
        let header = 8 + u64::from_le_bytes(n) as usize;
        (b, header)
    });
    (b, *header)
}

/// Shard names: plain, climbing, absolute, odd characters.
fn shard_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("model.safetensors".to_string()),
        Just("../../etc/passwd".to_string()),
        Just("/etc/passwd".to_string()),
        Just("a\0b".to_string()),
        Just(".".to_string()),
        Just(String::new()),
        "[a-z./]{0,24}",
        "\\PC{0,12}",
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn mutated_header_bytes(muts in mutations(6), in_header in prop::bool::weighted(0.85)) {
        progress("mutated_header_bytes");
        let (bytes, header) = fixture_bytes();
        check(apply(bytes, &muts, if in_header { header } else { 0 }))?;
    }

    #[test]
    fn edited_header_json(
        pick in proptest::collection::vec(any::<usize>(), 1..4),
        value in json_value(),
        remove in any::<bool>(),
        length_delta in prop_oneof![8 => Just(0i64), 1 => -16i64..16],
    ) {
        progress("edited_header_json");
        let (bytes, header) = fixture_bytes();
        let mut doc: serde_json::Value =
            serde_json::from_slice(&bytes[8..header]).expect("fixture header");
        replace_at(&mut doc, &pick, value, remove);
        let json = doc.to_string().into_bytes();
        let n = (json.len() as i64 + length_delta).max(0) as u64;
        let out = [&n.to_le_bytes()[..], &json, &bytes[header..]].concat();
        check(out)?;
    }

    #[test]
    fn random_index_documents(
        doc in prop_oneof![
            3 => proptest::collection::btree_map("[a-z.]{1,12}", shard_name(), 0..5)
                .prop_map(|m| serde_json::json!({ "weight_map": m })),
            1 => json_value().prop_map(|v| serde_json::json!({ "weight_map": v })),
            1 => json_value(),
        ],
        garble in proptest::collection::vec(any::<u8>(), 0..3),
    ) {
        progress("random_index_documents");
        let dir = tempfile::tempdir().expect("tempdir");
        // The index reader only resolves shard names; an empty shard file is enough.
        std::fs::write(dir.path().join("model.safetensors"), b"").expect("shard");
        let mut text = doc.to_string();
        if !garble.is_empty() {
            text.push_str(&String::from_utf8_lossy(&garble));
        }
        let d = dir.path().to_path_buf();
        let index: PathBuf = d.join("model.safetensors.index.json");
        let ix = index.clone();
        let r = within("index", move || shards_of_index(&d, &ix, &text));
        match r {
            Err(e) => {
                let e = e.to_string();
                prop_assert!(
                    e.contains(&index.display().to_string())
                        || e.contains(&dir.path().display().to_string()),
                    "error does not name the index: {e}"
                );
            }
            Ok(files) => {
                let root = dir.path().canonicalize().expect("canonical");
                for f in files {
                    let real = f.canonicalize().expect("accepted shards exist");
                    prop_assert!(real.starts_with(&root), "{} escapes the folder", f.display());
                    prop_assert!(Path::new(&f).starts_with(dir.path()));
                }
            }
        }
    }
}
