//! The registry fetch's error type and its constructors.

use std::io;
use std::path::{Path, PathBuf};

/// Errors of the registry fetch.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("unknown {kind} '{name}'; valid names: {valid}")]
    Unknown {
        kind: &'static str,
        name: String,
        valid: String,
    },
    #[error("`{client}` is not available ({detail}); install it or set {env_var}")]
    ClientMissing {
        client: String,
        env_var: &'static str,
        detail: String,
    },
    #[error("`{command}` failed ({status}); its stderr ends with:\n{stderr_tail}")]
    Download {
        command: String,
        status: String,
        stderr_tail: String,
    },
    #[error("{}: assembled {actual} bytes, expected {expected}", path.display())]
    Size {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    #[error("{}: {msg}", path.display())]
    Invalid { path: PathBuf, msg: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> FetchError + '_ {
    move |source| FetchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) fn invalid(path: &Path, msg: impl Into<String>) -> FetchError {
    FetchError::Invalid {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}
