//! Fuzzing the tokenizer loaders (core/FUZZING.md): GGUF `tokenizer.ggml.*` metadata with values
//! replaced, removed or of the wrong type, and `tokenizer.json` documents with nodes replaced or
//! bytes flipped. Both start from a small real vocabulary (the first tokens and their merges of
//! SmolLM2's GGUF tokenizer). Every input gives `Ok` (and then encoding and decoding random text
//! does not panic either) or an error that names the file, without a panic or a hang.

mod fuzz_util;

use std::path::PathBuf;
use std::sync::OnceLock;

use attnscope_core::gguf::{GgufFile, GgufMetadata, GgufValue};
use attnscope_core::tokenizer::{from_gguf, Tokenizer};
use fuzz_util::{apply, config, fixture, json_value, mutations, progress, replace_at, within};
use proptest::prelude::*;

/// Tokens kept from the real vocabulary (byte-level alphabet and the first merges).
const VOCAB: usize = 700;

/// SmolLM2's tokenizer metadata cut to [`VOCAB`] tokens and the merges among them.
fn small_meta() -> &'static GgufMetadata {
    static M: OnceLock<GgufMetadata> = OnceLock::new();
    M.get_or_init(|| {
        let f = GgufFile::open(&fixture("tokenizer/smollm2.tokenizer.gguf")).expect("fixture");
        let strings = |k: &str| -> Vec<String> {
            f.get(k)
                .and_then(|v| v.as_array())
                .expect("array")
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        };
        let tokens: Vec<String> = strings("tokenizer.ggml.tokens")
            .into_iter()
            .take(VOCAB)
            .collect();
        let set: std::collections::HashSet<&str> = tokens.iter().map(String::as_str).collect();
        let merges: Vec<String> = strings("tokenizer.ggml.merges")
            .into_iter()
            .filter(|m| {
                m.split_once(' ').is_some_and(|(a, b)| {
                    set.contains(a) && set.contains(b) && set.contains(format!("{a}{b}").as_str())
                })
            })
            .collect();
        let mut meta = GgufMetadata::new();
        for (k, v) in &f.metadata {
            if k.starts_with("tokenizer.ggml.") {
                meta.insert(k.clone(), v.clone());
            }
        }
        let arr = |v: Vec<String>| GgufValue::Array(v.into_iter().map(GgufValue::String).collect());
        let types = match meta
            .get("tokenizer.ggml.token_type")
            .and_then(|v| v.as_array())
        {
            Some(t) => GgufValue::Array(t.iter().take(VOCAB).cloned().collect()),
            None => GgufValue::Array(vec![GgufValue::I32(1); tokens.len()]),
        };
        meta.insert("tokenizer.ggml.tokens".into(), arr(tokens));
        meta.insert("tokenizer.ggml.merges".into(), arr(merges));
        meta.insert("tokenizer.ggml.token_type".into(), types);
        meta
    })
}

fn gguf_path() -> PathBuf {
    PathBuf::from("/fuzz/tokenizer.gguf")
}

/// Encodes, decodes and splits `text` with `tok`: none may panic.
fn exercise(tok: &Tokenizer, text: &str) {
    if let Ok(ids) = tok.encode(text) {
        let _ = tok.decode(&ids);
        let _ = tok.pieces(&ids);
    }
    let _ = tok.offsets(text);
    let _ = tok.decode(&[0, 1, u32::MAX]);
}

/// A GGUF value of any shape, for replacing a metadata entry.
fn gguf_value() -> impl Strategy<Value = GgufValue> {
    let leaf = prop_oneof![
        any::<u32>().prop_map(GgufValue::U32),
        any::<i32>().prop_map(GgufValue::I32),
        any::<u64>().prop_map(GgufValue::U64),
        any::<f32>().prop_map(GgufValue::F32),
        any::<bool>().prop_map(GgufValue::Bool),
        prop_oneof![
            Just("gpt2".to_string()),
            Just("smollm".to_string()),
            Just("qwen2".to_string()),
            Just("llama-bpe".to_string()),
            Just("default".to_string()),
            "\\PC{0,8}",
        ]
        .prop_map(GgufValue::String),
    ];
    leaf.prop_recursive(2, 16, 6, |inner| {
        proptest::collection::vec(inner, 0..6).prop_map(GgufValue::Array)
    })
}

/// One edit of the tokenizer metadata.
#[derive(Debug, Clone)]
enum Edit {
    Remove(usize),
    Replace(usize, GgufValue),
    /// Replace element `i` of array key `k` with a value.
    Element(usize, usize, GgufValue),
    /// Cut array key `k` to a fraction of its length.
    Cut(usize, f64),
    /// Push a string to array key `k`.
    Push(usize, String),
}

const KEYS: &[&str] = &[
    "tokenizer.ggml.model",
    "tokenizer.ggml.pre",
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.merges",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.bos_token_id",
];

fn edit() -> impl Strategy<Value = Edit> {
    let k = 0..KEYS.len();
    prop_oneof![
        1 => k.clone().prop_map(Edit::Remove),
        2 => (k.clone(), gguf_value()).prop_map(|(k, v)| Edit::Replace(k, v)),
        4 => (k.clone(), any::<usize>(), gguf_value()).prop_map(|(k, i, v)| Edit::Element(k, i, v)),
        1 => (k.clone(), 0.0f64..1.0).prop_map(|(k, f)| Edit::Cut(k, f)),
        3 => (k, "\\PC{0,6}( \\PC{0,6})?").prop_map(|(k, s)| Edit::Push(k, s)),
    ]
}

fn edited(edits: &[Edit]) -> GgufMetadata {
    let mut meta = small_meta().clone();
    for e in edits {
        match e {
            Edit::Remove(k) => {
                meta.remove(KEYS[*k]);
            }
            Edit::Replace(k, v) => {
                meta.insert(KEYS[*k].into(), v.clone());
            }
            Edit::Element(k, i, v) => {
                if let Some(GgufValue::Array(a)) = meta.get_mut(KEYS[*k]) {
                    if !a.is_empty() {
                        let n = a.len();
                        a[i % n] = v.clone();
                    }
                }
            }
            Edit::Cut(k, f) => {
                if let Some(GgufValue::Array(a)) = meta.get_mut(KEYS[*k]) {
                    let n = (a.len() as f64 * f) as usize;
                    a.truncate(n);
                }
            }
            Edit::Push(k, s) => {
                if let Some(GgufValue::Array(a)) = meta.get_mut(KEYS[*k]) {
                    a.push(GgufValue::String(s.clone()));
                }
            }
        }
    }
    meta
}

/// The small tokenizer as a tokenizer.json document (built once).
fn small_json() -> &'static serde_json::Value {
    static DOC: OnceLock<serde_json::Value> = OnceLock::new();
    DOC.get_or_init(|| {
        from_gguf::tokenizer_json(small_meta(), &gguf_path()).expect("small vocabulary rebuilds")
    })
}

/// [`small_json`] as text (built once).
fn small_json_text() -> &'static [u8] {
    static TEXT: OnceLock<Vec<u8>> = OnceLock::new();
    TEXT.get_or_init(|| small_json().to_string().into_bytes())
}

fn check_file(text: Vec<u8>, input: String) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
    let path = dir.path().join("tokenizer.json");
    std::fs::write(&path, text).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let p = path.clone();
    let r = within("tokenizer.json", move || {
        Tokenizer::from_file(&p).map(|t| exercise(&t, &input))
    });
    if let Err(e) = r {
        let e = e.to_string();
        prop_assert!(e.contains(&path.display().to_string()), "no file in: {e}");
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn gguf_metadata_edits(edits in proptest::collection::vec(edit(), 1..5), input in "\\PC{1,40}") {
        progress("gguf_metadata_edits");
        let meta = edited(&edits);
        let r = within("tokenizer from GGUF", move || {
            Tokenizer::from_gguf(&meta, &gguf_path()).map(|t| exercise(&t, &input))
        });
        if let Err(e) = r {
            let e = e.to_string();
            prop_assert!(e.contains("/fuzz/tokenizer.gguf"), "no file in: {e}");
        }
    }

    #[test]
    fn tokenizer_json_node_edits(
        pick in proptest::collection::vec(any::<usize>(), 1..5),
        value in json_value(),
        remove in prop::bool::weighted(0.2),
        input in "\\PC{1,40}",
    ) {
        progress("tokenizer_json_node_edits");
        let mut doc = small_json().clone();
        replace_at(&mut doc, &pick, value, remove);
        check_file(doc.to_string().into_bytes(), input)?;
    }

    #[test]
    fn tokenizer_json_byte_edits(muts in mutations(4), input in "\\PC{1,40}") {
        progress("tokenizer_json_byte_edits");
        check_file(apply(small_json_text(), &muts, 0), input)?;
    }
}

/// The starting point of the fuzzing works: the small vocabulary rebuilds and tokenizes.
#[test]
fn small_vocabulary_tokenizes() {
    let tok = Tokenizer::from_gguf(small_meta(), &gguf_path()).expect("rebuilds");
    let ids = tok.encode("the cat sat on the mat").expect("encode");
    assert!(!ids.is_empty() && ids.iter().all(|&i| (i as usize) < VOCAB));
    assert_eq!(tok.decode(&ids).expect("decode"), "the cat sat on the mat");
}
