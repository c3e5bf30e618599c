//! Tokenizers rebuilt from the metadata of the real GGUFs in the fetch cache must give exactly the
//! ids of the official tokenizer.json on long real text (the Canterbury corpus when fetched, all
//! of sanguo.txt, and core's tokenizer edge cases). Each test skips with a notice when its model
//! is not in the cache (`attnscope fetch NAME`, or `$ATTNSCOPE_HOME`).

use std::path::{Path, PathBuf};

use attnscope_core::gguf::reader::GgufFile;
use attnscope_core::tokenizer::Tokenizer;
use attnscope_datasets::fetch;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Named texts: core's edge cases, the Canterbury files in the cache, sanguo.txt when present.
fn texts() -> Vec<(String, String)> {
    let fixtures = repo().join("core/tests/fixtures/tokenizer");
    let cases: Vec<String> =
        serde_json::from_str(&read(&fixtures.join("cases.json"))).expect("cases.json");
    let mut out: Vec<(String, String)> = cases
        .into_iter()
        .enumerate()
        .map(|(i, s)| (format!("cases[{i}]"), s))
        .collect();
    out.push((
        "english_sample".into(),
        read(&fixtures.join("english_sample.txt")),
    ));
    for name in ["alice29", "plrabn12", "asyoulik", "lcet10"] {
        match fetch::corpus_file(name) {
            Some(p) => out.push((name.into(), read(&p))),
            None => println!("SKIP {name}: not in the cache (attnscope fetch canterbury)"),
        }
    }
    let sanguo = repo().join("../shared/corpora/sanguo.txt");
    if sanguo.is_file() {
        out.push(("sanguo".into(), read(&sanguo)));
    } else {
        println!("SKIP sanguo: {} not found", sanguo.display());
    }
    out
}

fn compare(model: &str, official: &Tokenizer) {
    let Some(files) = fetch::model_path(model) else {
        println!("SKIP {model}: not in the cache (attnscope fetch {model})");
        return;
    };
    let gguf = GgufFile::open(&files.gguf).expect("cached GGUF opens");
    let rebuilt = Tokenizer::from_gguf(&gguf.metadata, &gguf.path).expect("rebuilt tokenizer");
    let mut total = 0;
    for (name, text) in texts() {
        let want = official.encode(&text).expect("official encode");
        let got = rebuilt.encode(&text).expect("rebuilt encode");
        if let Some(i) = got.iter().zip(&want).position(|(a, b)| a != b) {
            let r = i.saturating_sub(3)..i + 3;
            panic!(
                "{model} {name}: first difference at token {i}: got {:?}, want {:?}",
                &got[r.start..r.end.min(got.len())],
                &want[r.start..r.end.min(want.len())]
            );
        }
        assert_eq!(got.len(), want.len(), "{model} {name}: token count");
        total += got.len();
    }
    println!(
        "{model}: {total} tokens identical to {}",
        official.source().display()
    );
}

#[test]
fn smollm2_gguf_tokenizer_matches_official_on_long_text() {
    let json = repo().join("../shared/reference/smollm2-tokenizer.json");
    let official = Tokenizer::from_file(&json).expect("official SmolLM2 tokenizer.json");
    compare("smollm2-135m", &official);
}

#[test]
fn qwen25_gguf_tokenizers_match_official_on_long_text() {
    for model in ["qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"] {
        match fetch::model_path(model).and_then(|m| m.tokenizer_json) {
            Some(json) => compare(model, &Tokenizer::from_file(&json).expect("Qwen json")),
            None => println!("SKIP {model}: not in the cache (attnscope fetch {model})"),
        }
    }
}

/// Gemma 3's SentencePiece vocabulary rebuilt from its GGUF against transformers' own rebuild of
/// the same metadata, saved as a tokenizer.json by scripts/gguf_tokenizer_json.py and named by
/// `ATTNSCOPE_GEMMA3_TOKENIZER_JSON` (no official file is in the registries).
#[test]
fn gemma3_gguf_tokenizer_matches_transformers_on_long_text() {
    let Some(json) = std::env::var_os("ATTNSCOPE_GEMMA3_TOKENIZER_JSON") else {
        println!("SKIP gemma3-270m: set ATTNSCOPE_GEMMA3_TOKENIZER_JSON (scripts/gguf_tokenizer_json.py)");
        return;
    };
    let official = Tokenizer::from_file(Path::new(&json)).expect("transformers' tokenizer.json");
    compare("gemma3-270m", &official);
}
