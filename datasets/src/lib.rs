//! attnscope-datasets: text sources, registry fetch of real models and corpora, synthetic
//! long-context tasks and punctuation masks.

pub mod fetch;
pub mod hf_cache;

pub use fetch::{
    cache_home, corpora, corpus_file, fetch_corpus, fetch_model, model_path, models, CorpusEntry,
    FetchError, FetchedModel, ModelEntry,
};

pub mod error;
pub mod punct;
pub mod rng;
pub mod sample;
pub mod tasks;
pub mod text;

pub use error::DatasetError;
pub use punct::PunctOptions;
pub use sample::{Needle, Sample, Span, TaskMeta, Tokenized};
pub use tasks::{generate, TaskParams};
pub use text::{Text, TextOptions, TextSource};
