//! The input of a simulation: token ids with their pieces, punctuation and newline flags, and the
//! needles a synthetic task marks with the queries that must retrieve them.

use attnscope_datasets::punct::{punct_mask, PunctOptions};
use attnscope_datasets::{Needle, Sample};

use crate::results::TokenRow;

/// One tokenized input of a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SimInput {
    /// A readable name, e.g. `niah-multikey (alice29, seed 0)`.
    pub name: String,
    pub ids: Vec<u32>,
    /// Decoded text of each token.
    pub pieces: Vec<String>,
    /// Punctuation flags (METHODS.md rule, newline-only tokens excluded; [`punct_masks`]).
    pub punct: Vec<bool>,
    /// Newline-only flags (punctuation when a method's newline option is on).
    pub newline: Vec<bool>,
    /// The target needles of a synthetic task (none for plain text).
    pub needles: Vec<Needle>,
    /// The query positions that must retrieve the needles (the question and what follows it),
    /// ascending.
    pub question: Vec<usize>,
    /// Character offsets `[start, end)` of each token in the input text.
    pub offsets: Vec<(usize, usize)>,
    /// Where in its text the input starts, in characters (0 for token inputs).
    pub start_char: usize,
    /// True when the text was shorter than the input and continued from its top.
    pub repeated: bool,
}

/// SHA-256 of token ids (little-endian `u32`s), hex: the one fingerprint of a token sequence
/// (the manifest's inputs and `attnscope ppl --json` print it).
pub fn ids_sha256(ids: &[u32]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for id in ids {
        h.update(id.to_le_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Punctuation flags (newline-only tokens excluded) and newline-only flags of token pieces, both
/// from [`punct_mask`].
pub fn punct_masks<S: AsRef<str>>(pieces: &[S]) -> (Vec<bool>, Vec<bool>) {
    let plain = PunctOptions {
        newlines: false,
        ..PunctOptions::default()
    };
    let punct = punct_mask(pieces, &plain);
    let with_newlines = punct_mask(pieces, &PunctOptions::default());
    let newline = with_newlines
        .iter()
        .zip(&punct)
        .map(|(&any, &pu)| any && !pu)
        .collect();
    (punct, newline)
}

impl SimInput {
    /// Token ids and pieces with no task (calibration text, tests): flags from the pieces.
    pub fn from_tokens(name: impl Into<String>, ids: Vec<u32>, pieces: Vec<String>) -> Self {
        let (punct, newline) = punct_masks(&pieces);
        Self {
            name: name.into(),
            ids,
            pieces,
            punct,
            newline,
            ..Self::default()
        }
    }

    /// The input of a generated sample: its tokens and, for a task with a question, the target
    /// needles read by every query from the question's first token on.
    pub fn from_sample(sample: &Sample) -> Self {
        let question = sample
            .task
            .question
            .as_deref()
            .and_then(|q| {
                let byte = sample.text.rfind(q)?;
                let start = sample.text[..byte].chars().count();
                let first = sample.offsets.iter().position(|o| o.end > start)?;
                Some((first..sample.ids.len()).collect::<Vec<usize>>())
            })
            .unwrap_or_default();
        let needles = if question.is_empty() {
            Vec::new()
        } else {
            sample
                .task
                .needles
                .iter()
                .filter(|n| n.target)
                .cloned()
                .collect()
        };
        let name = format!(
            "{} ({}, seed {})",
            sample.dataset, sample.source, sample.seed
        );
        Self {
            needles,
            question,
            offsets: sample.offsets.iter().map(|o| (o.start, o.end)).collect(),
            start_char: sample.start_char,
            repeated: sample.repeated,
            ..Self::from_tokens(name, sample.ids.clone(), sample.pieces.clone())
        }
    }

    /// Tokens.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True for an input without tokens.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The rows of the bundle's `tokens` table for input `index`.
    pub fn token_rows(&self, index: usize) -> Vec<TokenRow> {
        let in_span = |p: usize| {
            self.needles
                .iter()
                .any(|n| (n.tokens.start..n.tokens.end).contains(&p))
        };
        let is_query =
            |p: usize| !self.needles.is_empty() && self.question.binary_search(&p).is_ok();
        self.ids
            .iter()
            .enumerate()
            .map(|(p, &id)| TokenRow {
                input: index,
                position: p,
                id,
                piece: self.pieces[p].clone(),
                is_punct: self.punct[p],
                is_newline: self.newline[p],
                char_start: self.offsets.get(p).map(|o| o.0),
                char_end: self.offsets.get(p).map(|o| o.1),
                is_needle: in_span(p),
                is_needle_query: is_query(p),
            })
            .collect()
    }
}
