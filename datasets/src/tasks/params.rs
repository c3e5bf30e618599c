//! A task's parameters ([`TaskParams`]) and what a task file hands to the composer ([`Built`]).

use super::compose::Plan;
use crate::punct::PunctOptions;

/// What a task file hands to the composer.
pub(crate) struct Built {
    pub plan: Plan,
    pub question: Option<String>,
    pub answers: Vec<String>,
    pub params: serde_json::Map<String, serde_json::Value>,
}

/// Parameters of one sample.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskParams {
    /// Exact length in tokens.
    pub len: usize,
    pub seed: u64,
    /// Where the (first) target needle sits, 0..1 of the haystack; random when `None`.
    pub depth: Option<f64>,
    /// multikey: needles in all (1 target); multivalue: values; multiquery: keys. Default 4.
    pub needles: Option<usize>,
    /// vt: assignments after the first (default 4).
    pub hops: Option<usize>,
    /// vt: chains, the first asked, the others distractors (default 1).
    pub chains: Option<usize>,
    /// Reuse the haystack text (with a warning) when it is too short; else refuse.
    pub repeat: bool,
    pub punct: PunctOptions,
}

impl TaskParams {
    pub fn new(len: usize, seed: u64) -> Self {
        Self {
            len,
            seed,
            depth: None,
            needles: None,
            hops: None,
            chains: None,
            repeat: true,
            punct: PunctOptions::default(),
        }
    }
}
