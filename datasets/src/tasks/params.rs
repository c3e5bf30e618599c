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
    /// Where the haystack window starts, in characters (Unicode scalar values) of the loaded,
    /// line-end-normalized [`crate::text::Text::text`]; it must be below the text's character
    /// count.
    ///
    /// - `Some(c)`: the window starts at character `c`, for every task. When the text from `c` to
    ///   its end is too short, the window continues from the top of the text (with a warning; an
    ///   error when `repeat` is false). When no cut of the text from `c` has exactly `len` tokens
    ///   (a tokenizer that spends two tokens on every character of a CJK text can miss odd or even
    ///   lengths), the next characters `c + 1 ..= c + 3` are tried, with a warning; then the
    ///   sample fails.
    /// - `None`, task `text`, seed 0 (the default): as `Some(0)`, the top of the text, except that
    ///   when the first four characters all fail, a paragraph chosen from the seed is used (with a
    ///   warning).
    ///
    /// The start actually used is [`crate::sample::Sample::start_char`].
    /// - `None`, task `text`, seed != 0: a paragraph chosen from the seed (the behaviour before
    ///   this option existed).
    /// - `None`, synthetic tasks (needles): a paragraph chosen from the seed, as before.
    pub offset: Option<usize>,
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
            offset: None,
            punct: PunctOptions::default(),
        }
    }
}
