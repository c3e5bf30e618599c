//! Rebuilding a `tokenizer.json` document from GGUF `tokenizer.ggml.*` metadata.
//!
//! Supported: `tokenizer.ggml.model == "llama"` of Gemma files (SentencePiece BPE, see
//! `super::sentencepiece`) and `tokenizer.ggml.model == "gpt2"` (byte-level BPE) with the pre-tokenizers listed in
//! [`PRE_TOKENIZERS`], the one table of `tokenizer.ggml.pre` values. Each row mirrors the
//! `normalizer` / `pre_tokenizer` / `decoder` sections of the official `tokenizer.json` of that
//! model family (or, where there is none, llama.cpp's `llm_tokenizer_bpe` regexes), so the rebuilt
//! tokenizer gives the same ids as the official one.
//!
//! Keys read: `tokenizer.ggml.model`, `.pre`, `.tokens` (id = index), `.merges` (`"a b"`),
//! `.token_type` (optional; 3 = control and 4 = user-defined become added tokens, special for 3).

use std::path::Path;

use serde_json::{json, Map, Value};

use crate::error::{CoreError, Result};
use crate::gguf::{GgufMetadata, GgufValue};

const KEY_MODEL: &str = "tokenizer.ggml.model";
const KEY_PRE: &str = "tokenizer.ggml.pre";
const KEY_TOKENS: &str = "tokenizer.ggml.tokens";
const KEY_MERGES: &str = "tokenizer.ggml.merges";
const KEY_TYPES: &str = "tokenizer.ggml.token_type";

/// llama.cpp token types that become added tokens.
pub(crate) const TYPE_CONTROL: u64 = 3;
pub(crate) const TYPE_USER_DEFINED: u64 = 4;

/// Qwen2 / Qwen2.5 / Qwen3: the `Split` regex of Qwen's tokenizer.json (one digit per piece).
pub const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Llama 3: as Qwen2 but digits in runs of up to three.
pub const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// llama.cpp's `LLAMA_VOCAB_PRE_TYPE_DEFAULT`: four regexes applied one after the other.
pub const DEFAULT_REGEXES: [&str; 4] = [
    r"[\p{P}\$\+<=>\^~\|]+",
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)",
    r"\p{N}+",
    r"[0-9][0-9][0-9]",
];

/// One supported `tokenizer.ggml.pre` family.
#[derive(Debug, Clone, Copy)]
pub struct PreTokenizerSpec {
    /// The `tokenizer.ggml.pre` values that select this row.
    pub names: &'static [&'static str],
    /// Where the sections come from.
    pub origin: &'static str,
    /// Whether the BPE model takes a piece whole when it is in the vocabulary (Llama 3).
    pub ignore_merges: bool,
    build: fn() -> Sections,
}

struct Sections {
    normalizer: Value,
    pre_tokenizer: Value,
    decoder: Value,
}

/// The table of supported pre-tokenizers; adding a family is one row.
pub const PRE_TOKENIZERS: &[PreTokenizerSpec] = &[
    PreTokenizerSpec {
        names: &["smollm"],
        origin: "SmolLM2 tokenizer.json: Digits(individual) + ByteLevel(use_regex)",
        ignore_merges: false,
        build: smollm,
    },
    PreTokenizerSpec {
        names: &["qwen2"],
        origin: "Qwen2.5 tokenizer.json: NFC, Split(regex) + ByteLevel",
        ignore_merges: false,
        build: qwen2,
    },
    PreTokenizerSpec {
        names: &["llama-bpe", "llama3"],
        origin: "Llama 3 tokenizer.json: Split(regex) + ByteLevel, ignore_merges",
        ignore_merges: true,
        build: llama3,
    },
    PreTokenizerSpec {
        names: &["gpt2"],
        origin: "GPT-2 tokenizer.json: ByteLevel(use_regex)",
        ignore_merges: false,
        build: gpt2,
    },
    PreTokenizerSpec {
        names: &["default"],
        origin: "llama.cpp LLAMA_VOCAB_PRE_TYPE_DEFAULT regexes",
        ignore_merges: false,
        build: llama_cpp_default,
    },
];

/// The row of [`PRE_TOKENIZERS`] for a `tokenizer.ggml.pre` value.
pub fn pre_tokenizer_spec(pre: &str) -> Option<&'static PreTokenizerSpec> {
    PRE_TOKENIZERS.iter().find(|s| s.names.contains(&pre))
}

fn byte_level(add_prefix_space: bool, trim_offsets: bool, use_regex: bool) -> Value {
    json!({"type": "ByteLevel", "add_prefix_space": add_prefix_space,
           "trim_offsets": trim_offsets, "use_regex": use_regex})
}

fn split(regex: &str) -> Value {
    json!({"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false})
}

fn sequence(pretokenizers: Vec<Value>) -> Value {
    json!({"type": "Sequence", "pretokenizers": pretokenizers})
}

fn smollm() -> Sections {
    Sections {
        normalizer: Value::Null,
        pre_tokenizer: sequence(vec![
            json!({"type": "Digits", "individual_digits": true}),
            byte_level(false, true, true),
        ]),
        decoder: byte_level(true, true, true),
    }
}

fn qwen2() -> Sections {
    Sections {
        normalizer: json!({"type": "NFC"}),
        pre_tokenizer: sequence(vec![split(QWEN2_REGEX), byte_level(false, false, false)]),
        decoder: byte_level(false, false, false),
    }
}

fn llama3() -> Sections {
    Sections {
        normalizer: Value::Null,
        pre_tokenizer: sequence(vec![split(LLAMA3_REGEX), byte_level(false, true, false)]),
        decoder: byte_level(true, true, true),
    }
}

fn gpt2() -> Sections {
    Sections {
        normalizer: Value::Null,
        pre_tokenizer: byte_level(false, true, true),
        decoder: byte_level(false, true, true),
    }
}

fn llama_cpp_default() -> Sections {
    let mut steps: Vec<Value> = DEFAULT_REGEXES.iter().map(|r| split(r)).collect();
    steps.push(byte_level(false, true, false));
    Sections {
        normalizer: Value::Null,
        pre_tokenizer: sequence(steps),
        decoder: byte_level(false, true, true),
    }
}

fn get<'a>(meta: &'a GgufMetadata, path: &Path, key: &str) -> Result<&'a GgufValue> {
    meta.get(key)
        .ok_or_else(|| CoreError::format(path, format!("missing metadata key {key}")))
}

fn get_str<'a>(meta: &'a GgufMetadata, path: &Path, key: &str) -> Result<&'a str> {
    get(meta, path, key)?
        .as_str()
        .ok_or_else(|| CoreError::format(path, format!("metadata key {key} is not a string")))
}

fn get_strings<'a>(meta: &'a GgufMetadata, path: &Path, key: &str) -> Result<Vec<&'a str>> {
    let arr = get(meta, path, key)?
        .as_array()
        .ok_or_else(|| CoreError::format(path, format!("metadata key {key} is not an array")))?;
    arr.iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_str().ok_or_else(|| {
                CoreError::format(path, format!("metadata key {key}[{i}] is not a string"))
            })
        })
        .collect()
}

/// Token types (`tokenizer.ggml.token_type`), all normal (1) when the key is absent.
fn token_types(meta: &GgufMetadata, path: &Path, n: usize) -> Result<Vec<u64>> {
    let Some(v) = meta.get(KEY_TYPES) else {
        return Ok(vec![1; n]);
    };
    let bad = |msg: String| CoreError::format(path, format!("metadata key {KEY_TYPES} {msg}"));
    let arr = v.as_array().ok_or_else(|| bad("is not an array".into()))?;
    if arr.len() != n {
        return Err(bad(format!(
            "has {} entries but {KEY_TOKENS} has {n}",
            arr.len()
        )));
    }
    arr.iter()
        .enumerate()
        .map(|(i, t)| {
            t.as_u64()
                .ok_or_else(|| bad(format!("[{i}] is not an integer >= 0")))
        })
        .collect()
}

/// The `tokenizer.json` document equivalent to the GGUF tokenizer metadata in `meta`.
///
/// `path` names the GGUF file in errors. Load the result with `serde_json::from_value`.
pub fn tokenizer_json(meta: &GgufMetadata, path: &Path) -> Result<Value> {
    let model = get_str(meta, path, KEY_MODEL)?;
    let arch = meta
        .get("general.architecture")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    if model == "llama" && matches!(arch, "gemma" | "gemma2" | "gemma3") {
        let tokens = get_strings(meta, path, KEY_TOKENS)?;
        let types = token_types(meta, path, tokens.len())?;
        return super::sentencepiece::gemma_tokenizer_json(&tokens, &types, path);
    }
    if model != "gpt2" {
        return Err(CoreError::unsupported(
            path,
            format!(
                "tokenizer model {KEY_MODEL} = {model:?} of architecture {arch:?} (implemented: \
                 \"gpt2\" byte-level BPE, and \"llama\" SentencePiece for Gemma)"
            ),
        ));
    }
    let pre = get_str(meta, path, KEY_PRE)?;
    let spec = pre_tokenizer_spec(pre).ok_or_else(|| {
        let known: Vec<&str> = PRE_TOKENIZERS
            .iter()
            .flat_map(|s| s.names)
            .copied()
            .collect();
        CoreError::unsupported(
            path,
            format!(
                "pre-tokenizer {KEY_PRE} = {pre:?} (supported: {})",
                known.join(", ")
            ),
        )
    })?;
    let tokens = get_strings(meta, path, KEY_TOKENS)?;
    if tokens.is_empty() {
        return Err(CoreError::format(path, format!("{KEY_TOKENS} is empty")));
    }
    let types = token_types(meta, path, tokens.len())?;

    let mut vocab = Map::with_capacity(tokens.len());
    let mut added = Vec::new();
    for (id, (&tok, &ty)) in tokens.iter().zip(&types).enumerate() {
        if !vocab.contains_key(tok) {
            vocab.insert(tok.to_string(), json!(id));
        }
        if ty == TYPE_CONTROL || ty == TYPE_USER_DEFINED {
            added.push(json!({
                "id": id, "content": tok, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": ty == TYPE_CONTROL,
            }));
        }
    }

    let merges = get_strings(meta, path, KEY_MERGES)?
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            // As llama.cpp: the separator is the first space after the first character.
            let cut = m
                .char_indices()
                .skip(1)
                .find(|&(_, c)| c == ' ')
                .map(|(at, _)| at)
                .ok_or_else(|| {
                    CoreError::format(path, format!("{KEY_MERGES}[{i}] = {m:?} has no space"))
                })?;
            Ok(json!([&m[..cut], &m[cut + 1..]]))
        })
        .collect::<Result<Vec<Value>>>()?;

    let sections = (spec.build)();
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": sections.normalizer,
        "pre_tokenizer": sections.pre_tokenizer,
        "post_processor": null,
        "decoder": sections.decoder,
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": null,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": false,
            "byte_fallback": false,
            "ignore_merges": spec.ignore_merges,
            "vocab": vocab,
            "merges": merges,
        },
    }))
}
