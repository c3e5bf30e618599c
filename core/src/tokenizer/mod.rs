//! Tokenizers: `tokenizer.json` through the `tokenizers` crate, or rebuilt from GGUF metadata.
