//! Errors of text loading and sample generation.

use std::io;
use std::path::PathBuf;

use attnscope_core::CoreError;

use crate::fetch::FetchError;

/// Errors of text sources, tasks and samples. Every message names what the user gave (file, byte
/// offset, task, length) and, where there is one, the way out.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{origin}: invalid UTF-8 at byte offset {offset}; pass --latin1 to read it as Latin-1"
    )]
    Encoding { origin: String, offset: usize },
    #[error("{origin}: {msg}")]
    Format { origin: String, msg: String },
    #[error("{origin}: empty input (no text)")]
    Empty { origin: String },
    #[error(
        "corpus text '{name}' is not in the cache ({}); run `attnscope fetch {corpus}` first",
        cache.display()
    )]
    MissingCorpus {
        name: String,
        corpus: String,
        cache: PathBuf,
    },
    #[error("'{spec}' is not a file, '-' (stdin) or a known text ({known})")]
    UnknownSource { spec: String, known: String },
    #[error("unknown dataset '{name}'; known tasks: {known}")]
    UnknownTask { name: String, known: String },
    #[error(
        "{task}: --len {len} is below the minimum of {min} tokens for this task and tokenizer"
    )]
    TooShort {
        task: String,
        len: usize,
        min: usize,
    },
    #[error(
        "haystack '{source_name}' has about {have} tokens, a {len}-token sample needs about {need}; \
         use a longer text, or let it be reused (leave out --no-repeat)"
    )]
    HaystackTooShort {
        source_name: String,
        len: usize,
        need: usize,
        have: usize,
    },
    #[error("{0}")]
    Param(String),
    #[error("could not reach exactly {len} tokens for {task} ({detail})")]
    Length {
        task: String,
        len: usize,
        detail: String,
    },
    #[error(transparent)]
    Core(#[from] CoreError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// `Result` with [`DatasetError`].
pub type Result<T, E = DatasetError> = std::result::Result<T, E>;

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> DatasetError {
    let path = path.into();
    move |source| DatasetError::Io { path, source }
}
