//! Tokenizers rebuilt from GGUF metadata must give the official tokenizer's ids.
//!
//! Fixtures (core/tests/fixtures/tokenizer/):
//! - `smollm2.tokenizer.gguf`, `qwen25.tokenizer.gguf`: the tokenizer metadata of the real
//!   SmolLM2-135M-Instruct and Qwen2.5-Coder-0.5B-Instruct GGUFs, no tensors
//!   (`scripts/extract_tokenizer_gguf.py MODEL.gguf OUT`).
//! - `qwen25.expected.json`: ids of the test texts under Qwen's official tokenizer.json, from
//!   `scripts/tokenizer_expected_ids.py` (python `tokenizers`,
//!   `Tokenizer.from_file(json).encode(text, add_special_tokens=False).ids`).
//! - `cases.json` (short edge cases: digits, CRLF, code, emoji, special tokens, NFD),
//!   `english_sample.txt`; plus `../shared/corpora/sanguo.txt` (first 200,000 bytes).
//!
//! SmolLM2 is compared with its official tokenizer.json in `../shared/reference/` directly.

use std::path::{Path, PathBuf};

use attnscope_core::gguf::reader::GgufFile;
use attnscope_core::gguf::{GgufMetadata, GgufValue};
use attnscope_core::tokenizer::Tokenizer;
use attnscope_core::CoreError;
use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};

const SANGUO_BYTES: usize = 200_000;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tokenizer")
        .join(name)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn gguf_meta(name: &str) -> (GgufMetadata, PathBuf) {
    let path = fixture(name);
    let file = GgufFile::open(&path).expect("fixture GGUF opens");
    (file.metadata, path)
}

fn gguf_tokenizer(name: &str) -> Tokenizer {
    let (meta, path) = gguf_meta(name);
    Tokenizer::from_gguf(&meta, &path).expect("tokenizer rebuilt from GGUF metadata")
}

/// The test texts, named, in the order of `qwen25.expected.json`'s `cases`, then the long ones.
fn texts() -> Vec<(String, String)> {
    let cases: Vec<String> =
        serde_json::from_str(&read(&fixture("cases.json"))).expect("cases.json");
    let mut out: Vec<(String, String)> = cases
        .into_iter()
        .enumerate()
        .map(|(i, s)| (format!("cases[{i}]"), s))
        .collect();
    out.push((
        "english_sample".into(),
        read(&fixture("english_sample.txt")),
    ));
    out.push(("sanguo_200k".into(), sanguo_prefix()));
    out
}

/// The longest prefix of sanguo.txt of at most 200,000 UTF-8 bytes.
fn sanguo_prefix() -> String {
    let path = root().join("../shared/corpora/sanguo.txt");
    let text = read(&path);
    let mut end = SANGUO_BYTES.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

fn assert_same_ids(what: &str, got: &[u32], want: &[u32]) {
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        let lo = i.saturating_sub(5);
        panic!(
            "{what}: first difference at token {i}: got {:?}, want {:?}",
            &got[lo..(i + 5).min(got.len())],
            &want[lo..(i + 5).min(want.len())]
        );
    }
    assert_eq!(got.len(), want.len(), "{what}: token count");
}

#[test]
fn smollm2_gguf_matches_official_tokenizer_json() {
    let official_path = root().join("../shared/reference/smollm2-tokenizer.json");
    let official = Tokenizer::from_file(&official_path).expect("official SmolLM2 tokenizer.json");
    let rebuilt = gguf_tokenizer("smollm2.tokenizer.gguf");
    assert_eq!(rebuilt.vocab_size(), 49152);
    assert_eq!(official.vocab_size(), rebuilt.vocab_size());
    let mut total = 0;
    for (name, text) in texts() {
        let want = official.encode(&text).expect("official encode");
        let got = rebuilt.encode(&text).expect("rebuilt encode");
        assert_same_ids(&format!("smollm2 {name}"), &got, &want);
        assert_eq!(
            rebuilt.decode(&got).expect("decode"),
            text,
            "{name} round trip"
        );
        let offsets = rebuilt.offsets(&text).expect("offsets");
        assert_eq!(
            offsets,
            official.offsets(&text).expect("offsets"),
            "{name} offsets"
        );
        total += got.len();
    }
    println!("smollm2: {total} tokens identical to the official tokenizer.json");
    // Digits one by one, as the official Digits(individual_digits) pre-tokenizer does.
    let digits = rebuilt.encode("2025").expect("encode");
    assert_eq!(rebuilt.pieces(&digits), ["2", "0", "2", "5"]);
}

#[test]
fn qwen25_gguf_matches_committed_official_ids() {
    let expected: serde_json::Value =
        serde_json::from_str(&read(&fixture("qwen25.expected.json"))).expect("expected ids");
    let rebuilt = gguf_tokenizer("qwen25.tokenizer.gguf");
    assert_eq!(rebuilt.vocab_size(), 151936);
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        serde_json::from_value(v.clone()).expect("an id list")
    };
    let mut total = 0;
    for (name, text) in texts() {
        let want = match name.strip_prefix("cases[") {
            Some(i) => {
                let i: usize = i.trim_end_matches(']').parse().expect("case index");
                ids(&expected["cases"][i])
            }
            None => ids(&expected[name.as_str()]),
        };
        assert!(!want.is_empty(), "{name}: no expected ids in the fixture");
        let got = rebuilt.encode(&text).expect("encode");
        assert_same_ids(&format!("qwen25 {name}"), &got, &want);
        total += got.len();
    }
    println!("qwen25: {total} tokens identical to the official tokenizer.json's ids");
    let sanguo = sanguo_prefix();
    let ids = rebuilt.encode(&sanguo).expect("encode");
    assert_eq!(rebuilt.decode(&ids).expect("decode"), sanguo);
}

#[test]
fn special_tokens_pieces_and_offsets() {
    let tok = gguf_tokenizer("smollm2.tokenizer.gguf");
    assert_eq!(tok.token_to_id("<|im_start|>"), Some(1));
    assert_eq!(tok.token_to_id("<|endoftext|>"), Some(0));
    assert_eq!(tok.token_to_id("no such token"), None);
    assert_eq!(tok.source(), fixture("smollm2.tokenizer.gguf"));

    let text = "<|im_start|>user\nHi there!<|im_end|>";
    let ids = tok.encode(text).expect("encode");
    assert_eq!(ids.first(), Some(&1));
    assert_eq!(ids.last(), Some(&2));
    let pieces = tok.pieces(&ids);
    assert_eq!(pieces.concat(), text);
    assert_eq!(pieces[0], "<|im_start|>");

    // A 4-byte emoji split over byte-level tokens: each piece alone is lossy, the whole exact.
    let emoji = "🧪";
    let ids = tok.encode(emoji).expect("encode");
    assert_eq!(tok.decode(&ids).expect("decode"), emoji);
    if ids.len() > 1 {
        assert!(tok.pieces(&ids).iter().all(|p| p.contains('\u{FFFD}')));
    }

    // Char offsets: "é" is one char but two bytes.
    let text = "café au lait";
    let ids = tok.encode(text).expect("encode");
    let offsets = tok.offsets(text).expect("offsets");
    assert_eq!(offsets.len(), ids.len());
    assert_eq!(offsets.last().map(|o| o.1), Some(text.chars().count()));

    let qwen = gguf_tokenizer("qwen25.tokenizer.gguf");
    assert_eq!(qwen.token_to_id("<|im_start|>"), Some(151644));
    assert_eq!(qwen.token_to_id("<tool_call>"), Some(151657));
    assert!(qwen
        .inner()
        .get_added_vocabulary()
        .is_special_token("<|im_end|>"));
    assert!(!qwen
        .inner()
        .get_added_vocabulary()
        .is_special_token("<tool_call>"));
    // NFC: a decomposed "é" tokenizes like the composed one.
    assert_eq!(qwen.encode("e\u{301}").ok(), qwen.encode("\u{e9}").ok());
}

#[test]
fn every_pre_tokenizer_row_splits_digits_as_its_family() {
    let (mut meta, path) = gguf_meta("smollm2.tokenizer.gguf");
    let cases: [(&str, &[&str]); 6] = [
        ("smollm", &["1", "2", "3", "4", "5", "Ġx"]),
        ("qwen2", &["1", "2", "3", "4", "5", "Ġx"]),
        ("llama3", &["123", "45", "Ġx"]),
        ("llama-bpe", &["123", "45", "Ġx"]),
        ("gpt2", &["12345", "Ġx"]),
        ("default", &["123", "45", "Ġx"]),
    ];
    for (pre, want) in cases {
        meta.insert("tokenizer.ggml.pre".into(), GgufValue::String(pre.into()));
        let tok = Tokenizer::from_gguf(&meta, &path).expect(pre);
        let mut pre_tokenized = PreTokenizedString::from("12345 x");
        tok.inner()
            .get_pre_tokenizer()
            .expect("a pre-tokenizer")
            .pre_tokenize(&mut pre_tokenized)
            .expect("pre-tokenize");
        let splits = pre_tokenized.get_splits(OffsetReferential::Original, OffsetType::Byte);
        let got: Vec<&str> = splits.iter().map(|(s, _, _)| *s).collect();
        assert_eq!(got, want, "pre = {pre}");
        assert_eq!(
            tok.decode(&tok.encode("12345 x").expect(pre)).expect(pre),
            "12345 x"
        );
    }
}

#[test]
fn errors_name_the_file_and_the_problem() {
    let dir = tempfile::tempdir().expect("tempdir");

    let missing = dir.path().join("tokenizer.json");
    let err = Tokenizer::from_file(&missing).expect_err("missing file");
    assert!(matches!(err, CoreError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("tokenizer.json"), "{err}");

    let corrupt = dir.path().join("corrupt.json");
    std::fs::write(&corrupt, "{\"model\": {\"type\": \"BPE\", \"vocab\": [1, 2").expect("write");
    let err = Tokenizer::from_file(&corrupt).expect_err("corrupt json");
    assert!(matches!(err, CoreError::Format { .. }), "{err:?}");
    assert!(err.to_string().contains("corrupt.json"), "{err}");

    let gguf = Path::new("model.gguf");
    let mut bare = GgufMetadata::new();
    bare.insert(
        "general.architecture".into(),
        GgufValue::String("llama".into()),
    );
    let err = Tokenizer::from_gguf(&bare, gguf).expect_err("no tokenizer keys");
    assert!(matches!(err, CoreError::Format { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("model.gguf") && msg.contains("tokenizer.ggml.model"),
        "{msg}"
    );

    let (meta, path) = gguf_meta("smollm2.tokenizer.gguf");
    let mut unknown_pre = meta.clone();
    unknown_pre.insert(
        "tokenizer.ggml.pre".into(),
        GgufValue::String("tekken9".into()),
    );
    let err = Tokenizer::from_gguf(&unknown_pre, &path).expect_err("unknown pre");
    assert!(matches!(err, CoreError::Unsupported { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("smollm2.tokenizer.gguf") && msg.contains("tekken9"),
        "{msg}"
    );

    let mut spm = meta.clone();
    spm.insert(
        "tokenizer.ggml.model".into(),
        GgufValue::String("llama".into()),
    );
    let err = Tokenizer::from_gguf(&spm, &path).expect_err("sentencepiece model");
    assert!(matches!(err, CoreError::Unsupported { .. }), "{err:?}");
    assert!(err.to_string().contains("\"llama\""), "{err}");

    let mut no_merges = meta.clone();
    no_merges.remove("tokenizer.ggml.merges");
    let err = Tokenizer::from_gguf(&no_merges, &path).expect_err("no merges");
    assert!(err.to_string().contains("tokenizer.ggml.merges"), "{err}");

    let mut bad_merge = meta;
    bad_merge.insert(
        "tokenizer.ggml.merges".into(),
        GgufValue::Array(vec![GgufValue::String("nospace".into())]),
    );
    let err = Tokenizer::from_gguf(&bad_merge, &path).expect_err("merge without a space");
    assert!(err.to_string().contains("merges[0]"), "{err}");

    let tok = gguf_tokenizer("smollm2.tokenizer.gguf");
    let err = tok.encode("").expect_err("empty text");
    assert!(matches!(err, CoreError::Input(_)), "{err:?}");
    assert!(err.to_string().contains("empty text"), "{err}");
    assert!(tok.offsets("").is_err());
    let err = tok.decode(&[1_000_000]).expect_err("id out of range");
    assert!(matches!(err, CoreError::Input(_)), "{err:?}");
}

/// Malformed sections that make the `tokenizers` library panic are errors naming the file.
#[test]
fn malformed_sections_are_errors_not_panics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        // A control character inside a string of the decoder section.
        "{\"version\":\"1.0\",\"decoder\":{\"type\":\"ByteLevel\",\"x\":\"a\u{1}b\"}}".to_string(),
        // A Precompiled normalizer without its fields.
        serde_json::json!({"version": "1.0", "normalizer": {"type": "Precompiled"},
            "model": {"type": "BPE", "vocab": {}, "merges": []}})
        .to_string(),
    ];
    for (i, text) in cases.iter().enumerate() {
        let p = dir.path().join(format!("t{i}.json"));
        std::fs::write(&p, text).expect("write");
        let e = Tokenizer::from_file(&p).expect_err("must fail").to_string();
        assert!(e.contains(&p.display().to_string()), "{e}");
    }
}
