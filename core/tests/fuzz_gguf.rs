//! Fuzzing the GGUF reader and model loader (core/FUZZING.md): random bytes, truncations, bit
//! flips and overwritten words of real GGUF fixtures. Every input must give `Ok` or an error that
//! names the file, without a panic or a hang.

mod fuzz_util;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use attnscope_core::gguf::{load_gguf_model, GgufFile};
use attnscope_core::tokenizer::Tokenizer;
use fuzz_util::{apply, config, fixture, mutations, progress, within};
use proptest::prelude::*;

/// Writes `bytes` to a fresh file in `dir`, opens and loads it (and its tokenizer when the
/// metadata has one); every error must name the file.
fn check(dir: &Path, bytes: Vec<u8>) -> Result<(), TestCaseError> {
    static N: AtomicUsize = AtomicUsize::new(0);
    let path: PathBuf = dir.join(format!("case{}.gguf", N.fetch_add(1, Ordering::Relaxed)));
    std::fs::write(&path, &bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let p = path.clone();
    let errors = within("GGUF open/load", move || {
        let mut errors = Vec::new();
        match GgufFile::open(&p) {
            Err(e) => errors.push(e.to_string()),
            Ok(f) => {
                if f.metadata.contains_key("tokenizer.ggml.model") {
                    if let Err(e) = Tokenizer::from_gguf(&f.metadata, &p) {
                        errors.push(e.to_string());
                    }
                }
                for t in &f.tensors {
                    if let Err(e) = f.tensor_f32(t) {
                        errors.push(e.to_string());
                    }
                }
                if let Err(e) = load_gguf_model(&p) {
                    errors.push(e.to_string());
                }
            }
        }
        errors
    });
    let _ = std::fs::remove_file(&path);
    let name = path.display().to_string();
    for e in errors {
        prop_assert!(e.contains(&name), "error does not name the file: {e}");
    }
    Ok(())
}

/// A fixture of `tests/fixtures` and the length of its header, metadata and tensor directory
/// (where the structure lives), read once per process.
struct Fixture {
    bytes: Vec<u8>,
    structured_len: usize,
}

fn gguf_fixture(rel: &'static str) -> &'static Fixture {
    static CACHE: OnceLock<Mutex<HashMap<&'static str, &'static Fixture>>> = OnceLock::new();
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    cache.entry(rel).or_insert_with(|| {
        let path = fixture(rel);
        let bytes = std::fs::read(&path).expect("fixture");
        let structured_len = GgufFile::open(&path).expect("fixture opens").data_offset as usize;
        Box::leak(Box::new(Fixture {
            bytes,
            structured_len,
        }))
    })
}

fn fixture_bytes(rel: &'static str) -> &'static [u8] {
    &gguf_fixture(rel).bytes
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn random_bytes(
        header in prop_oneof![Just(Vec::new()), Just(b"GGUF\x03\x00\x00\x00".to_vec())],
        body in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        progress("random_bytes");
        let dir = tempfile::tempdir().expect("tempdir");
        check(dir.path(), [header, body].concat())?;
    }

    #[test]
    fn mutated_tiny_llama(muts in mutations(8), in_header in prop::bool::weighted(0.85)) {
        progress("mutated_tiny_llama");
        let f = gguf_fixture("gguf/tiny_llama.gguf");
        let focus = if in_header { f.structured_len } else { 0 };
        let dir = tempfile::tempdir().expect("tempdir");
        check(dir.path(), apply(&f.bytes, &muts, focus))?;
    }

    #[test]
    fn mutated_metadata_of_every_type(muts in mutations(6)) {
        progress("mutated_metadata_of_every_type");
        let bytes = fixture_bytes("gguf/meta.gguf");
        let dir = tempfile::tempdir().expect("tempdir");
        check(dir.path(), apply(bytes, &muts, 0))?;
    }

    #[test]
    fn mutated_quantized_tensors(muts in mutations(6), in_header in prop::bool::weighted(0.7)) {
        progress("mutated_quantized_tensors");
        let f = gguf_fixture("gguf/quants.gguf");
        let focus = if in_header { f.structured_len } else { 0 };
        let dir = tempfile::tempdir().expect("tempdir");
        check(dir.path(), apply(&f.bytes, &muts, focus))?;
    }

    #[test]
    fn truncated_tiny_llama(cut in 0usize..105_216) {
        progress("truncated_tiny_llama");
        let bytes = fixture_bytes("gguf/tiny_llama.gguf");
        let dir = tempfile::tempdir().expect("tempdir");
        check(dir.path(), bytes[..cut.min(bytes.len())].to_vec())?;
    }
}

/// `bytes` (a GGUF file) with the dimensions of tensor `name` overwritten (same count).
fn with_dims(bytes: &[u8], name: &str, dims: &[u64]) -> Vec<u8> {
    let mut key = (name.len() as u64).to_le_bytes().to_vec();
    key.extend_from_slice(name.as_bytes());
    let at = bytes
        .windows(key.len())
        .position(|w| w == key.as_slice())
        .expect("tensor name in the directory")
        + key.len();
    let n = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
    assert_eq!(n, dims.len(), "dimension count of '{name}'");
    let mut out = bytes.to_vec();
    for (i, d) in dims.iter().enumerate() {
        let p = at + 4 + 8 * i;
        out[p..p + 8].copy_from_slice(&d.to_le_bytes());
    }
    out
}

/// Found at 10^6 cases: a Q or K projection with no elements but 2^40 rows (`dims [0, 2^40]`)
/// passed the size checks, and undoing the llama Q/K row permutation then looped over 2^39 row
/// pairs (a hang). The loader now checks the projection's shape against the config first.
#[test]
fn empty_projection_with_huge_row_count_is_refused_quickly() {
    let bytes = with_dims(
        fixture_bytes("gguf/tiny_llama.gguf"),
        "blk.0.attn_q.weight",
        &[0, 1 << 40],
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("q.gguf");
    std::fs::write(&path, bytes).expect("write");
    let p = path.clone();
    let e = within("GGUF load", move || load_gguf_model(&p).map(|_| ()))
        .expect_err("an empty Q projection must be refused");
    let msg = e.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("blk.0.attn_q.weight"), "{msg}");
    assert!(msg.contains("[1099511627776, 0]"), "{msg}");
}
