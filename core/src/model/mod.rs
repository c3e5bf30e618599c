//! Decoder-only transformer models (in progress).

/// A loaded model.
#[derive(Debug)]
pub struct Model;
