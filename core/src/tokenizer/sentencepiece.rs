//! Rebuilding a Gemma tokenizer from GGUF metadata (`tokenizer.ggml.model == "llama"`, a
//! SentencePiece BPE vocabulary without merges), the way transformers' GGUF loader does
//! (`gemma_tokenizer` in `integrations/gguf/gguf_tokenizer_mapping.py`, `GemmaTokenizer`):
//!
//! 1. tokens made only of whitespace that contain a space (stored as real spaces) are respelled
//!    as that many `▁`;
//! 2. merges are recovered from the vocabulary: every split of a token into two tokens of the
//!    vocabulary, ranked by the position of the merged token in the file (earlier first), then by
//!    the lengths of the two pieces (longer first), ties kept in file order and, within one
//!    token, by the ids of the two pieces (`generate_merges`);
//! 3. BPE with byte fallback, the normalizer `" " -> "▁"`, no prefix space; control tokens
//!    (type 3) are special added tokens and user-defined ones (type 4) plain added tokens, both
//!    matched whole in the raw text.
//!
//! Other SentencePiece vocabularies (Llama 2, Mistral) are not rebuilt yet.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{json, Map, Value};

use crate::error::{CoreError, Result};

/// Python's `str.isspace` for the characters tokenizers store.
fn py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Gemma's respelling of whitespace tokens (step 1).
fn respell(t: &str) -> String {
    if t.contains(' ') && t.chars().all(py_space) {
        "\u{2581}".repeat(t.chars().count())
    } else {
        t.to_string()
    }
}

/// The merges transformers' `generate_merges` derives with scores `-position` (step 2).
fn merges(tokens: &[String], vocab: &HashMap<&str, usize>) -> Vec<(String, String)> {
    let mut seen = std::collections::HashSet::with_capacity(tokens.len());
    // (score, left, right) in the order generate_merges appends them.
    let mut all: Vec<(i64, &str, &str)> = Vec::new();
    for t in tokens {
        if !seen.insert(t.as_str()) {
            continue;
        }
        let score = -(vocab[t.as_str()] as i64);
        let mut local: Vec<(i64, &str, &str)> = t
            .char_indices()
            .skip(1)
            .filter_map(|(at, _)| {
                let (l, r) = t.split_at(at);
                (vocab.contains_key(l) && vocab.contains_key(r)).then_some((score, l, r))
            })
            .collect();
        local.sort_by_key(|&(_, l, r)| (vocab[l], vocab[r]));
        all.extend(local);
    }
    // Python's stable sort with reverse=True on (score, len(l), len(r)).
    all.sort_by(|a, b| {
        let key = |x: &(i64, &str, &str)| (x.0, x.1.chars().count(), x.2.chars().count());
        key(b).cmp(&key(a))
    });
    all.into_iter()
        .map(|(_, l, r)| (l.to_string(), r.to_string()))
        .collect()
}

/// The `tokenizer.json` document of a Gemma GGUF's SentencePiece vocabulary.
pub(crate) fn gemma_tokenizer_json(original: &[&str], types: &[u64], path: &Path) -> Result<Value> {
    let tokens: Vec<String> = original.iter().map(|t| respell(t)).collect();
    let mut vocab: HashMap<&str, usize> = HashMap::with_capacity(tokens.len());
    for (id, t) in tokens.iter().enumerate() {
        vocab.insert(t.as_str(), id);
    }
    let unk = "<unk>";
    if !vocab.contains_key(unk) {
        return Err(CoreError::format(
            path,
            "the SentencePiece vocabulary has no <unk> token",
        ));
    }
    let merges: Vec<Value> = merges(&tokens, &vocab)
        .into_iter()
        .map(|(l, r)| json!([l, r]))
        .collect();
    let mut added = Vec::new();
    for (id, (&tok, &ty)) in original.iter().zip(types).enumerate() {
        let control = ty == super::from_gguf::TYPE_CONTROL;
        let user = ty == super::from_gguf::TYPE_USER_DEFINED && vocab.contains_key(tok);
        if control || user {
            added.push(json!({
                "id": vocab.get(tok).copied().unwrap_or(id), "content": tok,
                "single_word": false, "lstrip": false, "rstrip": false,
                "normalized": false, "special": control,
            }));
        }
    }
    let vocab_json: Map<String, Value> = vocab
        .iter()
        .map(|(t, &id)| (t.to_string(), json!(id)))
        .collect();
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"},
        "pre_tokenizer": {"type": "Split", "pattern": {"String": " "},
                          "behavior": "MergedWithPrevious", "invert": false},
        "post_processor": null,
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"}
        ]},
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": unk,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": true,
            "byte_fallback": true,
            "ignore_merges": false,
            "vocab": vocab_json,
            "merges": merges,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitespace_tokens_are_respelled_and_merges_ranked_by_position() {
        assert_eq!(respell("  "), "\u{2581}\u{2581}");
        assert_eq!(respell(" \n"), "\u{2581}\u{2581}");
        assert_eq!(respell("\n\n"), "\n\n");
        assert_eq!(respell("a b"), "a b");
        // "ab" comes before "bc" in the file: its merge ranks first; "abc" splits two ways,
        // the longer left piece first on equal score.
        let tokens: Vec<String> = ["a", "b", "c", "ab", "bc", "abc"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let vocab: HashMap<&str, usize> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.as_str(), i))
            .collect();
        let m = merges(&tokens, &vocab);
        let pairs: Vec<(&str, &str)> = m.iter().map(|(l, r)| (l.as_str(), r.as_str())).collect();
        assert_eq!(pairs, [("a", "b"), ("b", "c"), ("ab", "c"), ("a", "bc")]);
    }
}
