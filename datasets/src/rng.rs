//! The project's random generator (SplitMix64), defined in `attnscope_core::rng` and re-exported
//! here at its old path: the same seed gives the same stream on every platform, so samples are
//! reproducible byte for byte.

pub use attnscope_core::rng::Rng;
