//! Tokenizers: `tokenizer.json` through the `tokenizers` crate, or rebuilt from GGUF metadata.
//!
//! Both paths end in the same [`tokenizers::Tokenizer`]: a GGUF's `tokenizer.ggml.*` keys are
//! turned into the `tokenizer.json` document the model's authors ship (same BPE model, same
//! pre-tokenizer, normalizer and decoder; see [`from_gguf`]), so ids agree with the official
//! tokenizer token for token.
//!
//! ```no_run
//! use attnscope_core::tokenizer::Tokenizer;
//! # fn main() -> Result<(), attnscope_core::CoreError> {
//! let tok = Tokenizer::from_file("tokenizer.json".as_ref())?;
//! let ids = tok.encode("Alice was beginning to get very tired.")?;
//! assert_eq!(tok.decode(&ids)?, "Alice was beginning to get very tired.");
//! println!("{:?}", tok.pieces(&ids));
//! # Ok(()) }
//! ```

pub mod from_gguf;
mod sentencepiece;

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{CoreError, Result};
use crate::gguf::GgufMetadata;

/// Token ids with the byte offsets `(start, end)` of each token ([`Tokenizer::encode_bytes`]).
pub type IdsAndOffsets = (Vec<u32>, Vec<(usize, usize)>);

/// A text tokenizer that remembers the file it came from.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    source: PathBuf,
}

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokenizer")
            .field("source", &self.source)
            .field("vocab_size", &self.vocab_size())
            .finish()
    }
}

impl Tokenizer {
    /// Loads a Hugging Face `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| CoreError::io(path, e))?;
        // Parsed as JSON first: `tokenizers` 0.23 panics (instead of failing) on some syntax
        // errors inside the `decoder` section.
        let doc: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| CoreError::format(path, format!("not a valid tokenizer.json: {e}")))?;
        let inner = deserialize(doc)
            .map_err(|e| CoreError::format(path, format!("not a valid tokenizer.json: {e}")))?;
        Ok(Self {
            inner,
            source: path.to_path_buf(),
        })
    }

    /// Rebuilds the tokenizer stored in a GGUF file's `tokenizer.ggml.*` metadata.
    ///
    /// `path` is the GGUF file the metadata was read from; it names the file in errors.
    pub fn from_gguf(meta: &GgufMetadata, path: &Path) -> Result<Self> {
        let doc = from_gguf::tokenizer_json(meta, path)?;
        let inner = deserialize(doc).map_err(|e| {
            CoreError::format(path, format!("tokenizer rebuilt from metadata: {e}"))
        })?;
        Ok(Self {
            inner,
            source: path.to_path_buf(),
        })
    }

    /// Token ids of `text`, with no special tokens added (no BOS/EOS).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.encoding(text, false)?;
        Ok(enc.get_ids().to_vec())
    }

    /// The text of `ids` (special tokens kept).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        if let Some(bad) = ids.iter().find(|&&id| self.inner.id_to_token(id).is_none()) {
            return Err(CoreError::Input(format!(
                "token id {bad} is not in the vocabulary of {} ({} tokens)",
                self.source.display(),
                self.vocab_size()
            )));
        }
        guarded(|| self.inner.decode(ids, false))
            .and_then(|r| r.map_err(|e| e.to_string()))
            .map_err(|e| CoreError::Input(format!("decoding {} ids: {e}", ids.len())))
    }

    /// Ids and byte offsets `(start, end)` in `text` of each token, in one pass (no special
    /// tokens). Empty text gives no tokens (unlike [`Tokenizer::encode`], which refuses it).
    pub fn encode_bytes(&self, text: &str) -> Result<IdsAndOffsets> {
        if text.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let enc = guarded(|| self.inner.encode(text, false).map_err(|e| e.to_string()))
            .and_then(|r| r)
            .map_err(|e| {
                CoreError::Input(format!("tokenizing with {}: {e}", self.source.display()))
            })?;
        Ok((enc.get_ids().to_vec(), enc.get_offsets().to_vec()))
    }

    /// The decoded text of each token on its own. Byte-level tokens that hold part of a UTF-8
    /// sequence come out lossy (U+FFFD); unknown ids give an empty string.
    pub fn pieces(&self, ids: &[u32]) -> Vec<String> {
        ids.iter()
            .map(|&id| {
                guarded(|| self.inner.decode(&[id], false).unwrap_or_default()).unwrap_or_default()
            })
            .collect()
    }

    /// Character offsets `(start, end)` in `text` of each token of [`Tokenizer::encode`].
    pub fn offsets(&self, text: &str) -> Result<Vec<(usize, usize)>> {
        let enc = self.encoding(text, true)?;
        Ok(enc.get_offsets().to_vec())
    }

    /// Number of distinct ids, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The `tokenizer.json` or GGUF file this tokenizer was loaded from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// The id of token `tok` (a vocabulary entry in its stored form, e.g. `"Ġthe"`, or an added
    /// token such as `"<|im_start|>"`).
    pub fn token_to_id(&self, tok: &str) -> Option<u32> {
        self.inner.token_to_id(tok)
    }

    /// The wrapped `tokenizers` tokenizer, for anything this API does not cover.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    fn encoding(&self, text: &str, char_offsets: bool) -> Result<tokenizers::Encoding> {
        if text.is_empty() {
            return Err(CoreError::Input("empty text: nothing to tokenize".into()));
        }
        let enc = guarded(|| {
            if char_offsets {
                self.inner.encode_char_offsets(text, false)
            } else {
                self.inner.encode(text, false)
            }
            .map_err(|e| e.to_string())
        })
        .and_then(|r| r)
        .map_err(|e| CoreError::Input(format!("tokenizing with {}: {e}", self.source.display())))?;
        if enc.get_ids().is_empty() {
            return Err(CoreError::Input(format!(
                "empty text: {} gave no tokens for {} bytes of input",
                self.source.display(),
                text.len()
            )));
        }
        Ok(enc)
    }
}

/// A `tokenizers::Tokenizer` from its JSON document, with a panic inside the library (some of its
/// deserializers unwrap on malformed sections) turned into an error.
fn deserialize(doc: serde_json::Value) -> std::result::Result<tokenizers::Tokenizer, String> {
    guarded(|| serde_json::from_value::<tokenizers::Tokenizer>(doc).map_err(|e| e.to_string()))
        .and_then(|r| r)
}

/// Runs a call into `tokenizers` and turns a panic (the library unwraps on some malformed
/// input) into an error message, printing nothing for it ([`crate::contained`]), so a bad
/// tokenizer file never takes the program down.
pub(crate) fn guarded<T>(f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    crate::contained::catch_quietly(f)
        .map_err(|msg| format!("the tokenizers library failed on this input ({msg})"))
}
