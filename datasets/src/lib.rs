//! attnscope-datasets: text sources, registry fetch of real models and corpora, synthetic
//! long-context tasks and punctuation masks.
