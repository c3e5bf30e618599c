//! The one error type of the core crate. Every variant that concerns a file names it.

use std::path::PathBuf;

/// Errors raised while loading models, tokenizing or running a forward pass.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// Reading a file failed at the OS level.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file is malformed, truncated, or disagrees with the model config.
    #[error("{path}: {msg}")]
    Format { path: PathBuf, msg: String },
    /// A number read from a model file or config is out of range or inconsistent (NaN, zero,
    /// negative, not a multiple of another): names the file, the key as spelled in that file, the
    /// value and what was expected.
    #[error("{path}: {key} = {value}: {why}")]
    BadValue {
        path: PathBuf,
        key: String,
        value: String,
        why: String,
    },
    /// A non-finite value (NaN or infinity) appeared during a forward pass: where it first
    /// appeared (e.g. `layer 3: non-finite value in the attention output (head 2, token 17)`).
    #[error("{0}")]
    NonFinite(String),
    /// A model architecture or feature this crate does not implement.
    #[error("{path}: unsupported {what}")]
    Unsupported { path: PathBuf, what: String },
    /// Bad input given to a forward pass or tokenizer (empty text, too many tokens, ...).
    #[error("{0}")]
    Input(String),
    /// The requested device is not available (no CUDA build, no driver, no GPU).
    #[error("device: {0}")]
    Device(String),
    /// A GPU operation failed: the kernel layer's error says which operation and why (driver,
    /// cuBLAS or NVRTC error, out of memory with the numbers, bad kernel arguments).
    #[cfg(feature = "cuda")]
    #[error("device: {0}")]
    Gpu(#[from] attnscope_kernels::cuda::GpuError),
}

impl CoreError {
    /// A [`CoreError::Format`] for `path` with message `msg`.
    pub fn format(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Self::Format {
            path: path.into(),
            msg: msg.into(),
        }
    }

    /// A [`CoreError::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// A [`CoreError::BadValue`]: `key` in `path` has `value`, which is wrong because `why`.
    pub fn bad_value(
        path: impl Into<PathBuf>,
        key: impl Into<String>,
        value: impl std::fmt::Display,
        why: impl Into<String>,
    ) -> Self {
        Self::BadValue {
            path: path.into(),
            key: key.into(),
            value: value.to_string(),
            why: why.into(),
        }
    }

    /// A [`CoreError::Unsupported`] for `path`.
    pub fn unsupported(path: impl Into<PathBuf>, what: impl Into<String>) -> Self {
        Self::Unsupported {
            path: path.into(),
            what: what.into(),
        }
    }
}

/// Result alias of the core crate.
pub type Result<T, E = CoreError> = std::result::Result<T, E>;
