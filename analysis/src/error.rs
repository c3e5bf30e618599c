//! The error type of the analysis library.

/// Errors of method construction, budgets, simulation runs and run bundles.
#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    /// An unknown method name; lists the valid ones.
    #[error("unknown method '{name}'; valid methods: {valid}")]
    UnknownMethod { name: String, valid: String },
    /// An unknown or out-of-range method parameter.
    #[error("method '{method}': {msg}")]
    Param { method: String, msg: String },
    /// A budget no setting of the method can express, or invalid budget values.
    #[error("budget: {0}")]
    Budget(String),
    /// Bad run options (layers out of range, length above the context, ...).
    #[error("{0}")]
    Input(String),
    /// A method defined outside the library (a Python rule) failed while it ran; the message
    /// names the layer and head.
    #[error("method '{method}': {msg}")]
    Method { method: String, msg: String },
    /// The run was asked to stop ([`crate::sim::request_stop`]) before it finished.
    #[error("stopped: {0}")]
    Stopped(String),
    /// Bundles that cannot be joined into one (`attnscope merge`): the message names the bundles
    /// and what differs, or the part that is missing or given twice.
    #[error("{0}")]
    Merge(String),
    /// An error from the core crate (model loading, forward pass).
    #[error(transparent)]
    Core(#[from] attnscope_core::CoreError),
    /// An error from the datasets crate (task generation, texts).
    #[error(transparent)]
    Dataset(#[from] attnscope_datasets::DatasetError),
    /// Reading or writing a run directory failed.
    #[error("{path}: {msg}")]
    File {
        path: std::path::PathBuf,
        msg: String,
    },
}

/// Result alias of the analysis library.
pub type Result<T, E = AnalysisError> = std::result::Result<T, E>;
