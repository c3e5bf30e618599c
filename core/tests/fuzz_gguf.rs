//! Fuzzing the GGUF reader and model loader (core/FUZZING.md): random bytes, truncations, bit
//! flips and overwritten words of real GGUF fixtures. Every input must give `Ok` or an error that
//! names the file, without a panic or a hang.

mod fuzz_util;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use attnscope_core::gguf::{load_gguf_model, GgufFile};
use attnscope_core::tokenizer::Tokenizer;
use fuzz_util::{apply, config, fixture, mutations, within};
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

/// Bytes of the header, metadata and tensor directory of a fixture (where structure lives).
fn structured_len(bytes: &[u8], name: &str) -> usize {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).expect("write");
    GgufFile::open(&p).expect("fixture opens").data_offset as usize
}

fn fixture_bytes(rel: &str) -> Vec<u8> {
    std::fs::read(fixture(rel)).expect("fixture")
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn random_bytes(
        header in prop_oneof![Just(Vec::new()), Just(b"GGUF\x03\x00\x00\x00".to_vec())],
        body in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        check(dir.path(), [header, body].concat())?;
    }

    #[test]
    fn mutated_tiny_llama(muts in mutations(8), in_header in prop::bool::weighted(0.85)) {
        let bytes = fixture_bytes("gguf/tiny_llama.gguf");
        let focus = if in_header { structured_len(&bytes, "t.gguf") } else { 0 };
        let dir = tempfile::tempdir().expect("tempdir");
        check(dir.path(), apply(&bytes, &muts, focus))?;
    }

    #[test]
    fn mutated_metadata_of_every_type(muts in mutations(6)) {
        let bytes = fixture_bytes("gguf/meta.gguf");
        let dir = tempfile::tempdir().expect("tempdir");
        check(dir.path(), apply(&bytes, &muts, 0))?;
    }

    #[test]
    fn mutated_quantized_tensors(muts in mutations(6), in_header in prop::bool::weighted(0.7)) {
        let bytes = fixture_bytes("gguf/quants.gguf");
        let focus = if in_header { structured_len(&bytes, "q.gguf") } else { 0 };
        let dir = tempfile::tempdir().expect("tempdir");
        check(dir.path(), apply(&bytes, &muts, focus))?;
    }

    #[test]
    fn truncated_tiny_llama(cut in 0usize..105_216) {
        let bytes = fixture_bytes("gguf/tiny_llama.gguf");
        let dir = tempfile::tempdir().expect("tempdir");
        check(dir.path(), bytes[..cut.min(bytes.len())].to_vec())?;
    }
}
