//! A tokenized sample: ids, decoded pieces, punctuation mask, character offsets and the task's
//! ground truth (question, answers, needle and answer token spans).

use std::io::Write;
use std::path::Path;

use attnscope_core::tokenizer::Tokenizer;
use serde::{Deserialize, Serialize};

use crate::error::{io_err, Result};
use crate::punct::{punct_mask_in_text, punct_rate, PunctOptions};

/// A half-open range `[start, end)` (token positions or character offsets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Self {
        Self { start, end }
    }

    pub fn len(&self) -> usize {
        self.end.saturating_sub(self.start)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One inserted needle (a key-value sentence, a variable assignment).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Needle {
    /// The inserted sentence.
    pub text: String,
    pub key: String,
    pub value: String,
    /// True for needles the question asks about; false for distractors.
    pub target: bool,
    /// Tokens that overlap the needle text.
    pub tokens: Span,
    /// Character offsets of the needle text in [`Sample::text`].
    pub chars: Span,
    /// Tokens of the answer-bearing part (the value, or the assigned variable) inside the needle.
    pub answer_tokens: Span,
    /// Where the needle sits: its first token's position in the haystack tokens, 0..1.
    pub depth: f64,
}

/// The ground truth of a task (empty for plain text).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TaskMeta {
    pub question: Option<String>,
    /// Expected answer(s), in order.
    pub answers: Vec<String>,
    pub needles: Vec<Needle>,
    /// Token spans of every answer-bearing token range (of target needles), sorted.
    pub answer_spans: Vec<Span>,
    /// Task parameters as given or defaulted (depth, needles, hops, ...).
    pub params: serde_json::Map<String, serde_json::Value>,
}

/// A tokenized sample of exactly `len` tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Task name (`niah-single`, `text`, ...).
    pub dataset: String,
    /// Haystack text name.
    pub source: String,
    /// File name of the tokenizer.
    pub tokenizer: String,
    pub seed: u64,
    pub len: usize,
    pub text: String,
    pub ids: Vec<u32>,
    /// Decoded text of each token.
    pub pieces: Vec<String>,
    /// Punctuation flag of each token (rules: [`crate::punct`]).
    pub punct: Vec<bool>,
    pub punct_options: PunctOptions,
    /// Fraction of punctuation tokens.
    pub punct_rate: f64,
    /// Character offsets of each token in `text`.
    pub offsets: Vec<Span>,
    pub task: TaskMeta,
    pub warnings: Vec<String>,
    /// Character offset in the haystack text (as loaded, line ends normalized) where the hay of
    /// this sample starts (see [`crate::tasks::TaskParams::offset`]).
    #[serde(default)]
    pub start_char: usize,
    /// True when the hay ran past the end of the haystack text and continued from its top: from
    /// offset 0 this means the text was shorter than the requested length and is repeated.
    #[serde(default)]
    pub repeated: bool,
}

/// The token-level view of a text: ids, pieces, mask and character offsets.
#[derive(Debug, Clone, PartialEq)]
pub struct Tokenized {
    pub ids: Vec<u32>,
    pub pieces: Vec<String>,
    pub punct: Vec<bool>,
    pub offsets: Vec<Span>,
}

impl Tokenized {
    /// `ids` with their byte offsets in `text` turned into character offsets.
    pub fn new(
        tok: &Tokenizer,
        text: &str,
        ids: Vec<u32>,
        byte_offsets: &[(usize, usize)],
        opts: &PunctOptions,
    ) -> Self {
        let pieces = tok.pieces(&ids);
        let punct = punct_mask_in_text(&pieces, text, byte_offsets, opts);
        let offsets = char_offsets(text, byte_offsets);
        Self {
            ids,
            pieces,
            punct,
            offsets,
        }
    }

    /// Tokenizes `text` (no special tokens).
    pub fn from_text(tok: &Tokenizer, text: &str, opts: &PunctOptions) -> Result<Self> {
        let (ids, offs) = encode_bytes(tok, text)?;
        Ok(Self::new(tok, text, ids, &offs, opts))
    }

    pub fn punct_rate(&self) -> f64 {
        punct_rate(&self.punct)
    }
}

/// Token ids with the byte offsets of each token.
pub(crate) type IdsOffsets = (Vec<u32>, Vec<(usize, usize)>);

/// Ids and byte offsets of `text` in one pass.
pub(crate) fn encode_bytes(tok: &Tokenizer, text: &str) -> Result<IdsOffsets> {
    Ok(tok.encode_bytes(text)?)
}

/// Byte offsets to character offsets (a start inside a character rounds down to it, an end
/// inside a character rounds up past it).
pub fn char_offsets(text: &str, byte_offsets: &[(usize, usize)]) -> Vec<Span> {
    let mut map = vec![0usize; text.len() + 1];
    let mut n = 0;
    for (ci, (bi, c)) in text.char_indices().enumerate() {
        for m in &mut map[bi..bi + c.len_utf8()] {
            *m = ci;
        }
        n = ci + 1;
    }
    map[text.len()] = n;
    let at = |b: usize| map.get(b).copied().unwrap_or(n);
    byte_offsets
        .iter()
        .map(|&(s, e)| {
            let end = if e < text.len() && !text.is_char_boundary(e) {
                at(e) + 1
            } else {
                at(e)
            };
            Span::new(at(s), end)
        })
        .collect()
}

impl Sample {
    /// A one-screen summary: length, punctuation rate, needles, question and answer.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let mut line = |k: &str, v: String| s.push_str(&format!("{k:<14}{v}\n"));
        line("dataset", self.dataset.clone());
        line("source", self.source.clone());
        line("tokenizer", self.tokenizer.clone());
        line("seed", self.seed.to_string());
        line(
            "start",
            format!(
                "character {}{}",
                self.start_char,
                if self.repeated {
                    " (text repeated from its top)"
                } else {
                    ""
                }
            ),
        );
        line(
            "length",
            format!("{} tokens, {} chars", self.len, self.text.chars().count()),
        );
        line(
            "punctuation",
            format!(
                "{:.2}% ({} tokens)",
                100.0 * self.punct_rate,
                self.punct.iter().filter(|&&p| p).count()
            ),
        );
        for (i, n) in self.task.needles.iter().enumerate() {
            line(
                &format!("needle {i}"),
                format!(
                    "tokens {}..{} depth {:.3} {} {:?}",
                    n.tokens.start,
                    n.tokens.end,
                    n.depth,
                    if n.target { "target" } else { "distractor" },
                    n.text
                ),
            );
        }
        if let Some(q) = &self.task.question {
            line("question", q.clone());
        }
        if !self.task.answers.is_empty() {
            line("answer", self.task.answers.join(", "));
        }
        if !self.task.answer_spans.is_empty() {
            let spans: Vec<String> = self
                .task
                .answer_spans
                .iter()
                .map(|a| format!("{}..{}", a.start, a.end))
                .collect();
            line("answer tokens", spans.join(" "));
        }
        for w in &self.warnings {
            line("warning", w.clone());
        }
        s
    }

    /// The summary as JSON (no per-token arrays).
    pub fn summary_json(&self) -> serde_json::Value {
        serde_json::json!({
            "dataset": self.dataset, "source": self.source, "tokenizer": self.tokenizer,
            "seed": self.seed, "len": self.len, "chars": self.text.chars().count(),
            "start_char": self.start_char, "repeated": self.repeated,
            "punct_rate": self.punct_rate,
            "punct_tokens": self.punct.iter().filter(|&&p| p).count(),
            "question": self.task.question, "answers": self.task.answers,
            "needles": self.task.needles, "answer_spans": self.task.answer_spans,
            "params": self.task.params, "warnings": self.warnings,
        })
    }

    /// One JSON line.
    pub fn to_json_line(&self) -> Result<String> {
        Ok(serde_json::to_string(self)?)
    }
}

/// Writes samples to `path` as JSONL (one sample per line), through a temp name renamed at the
/// end so an interrupted write never leaves a half file under the final name.
pub fn write_jsonl(path: &Path, samples: &[Sample]) -> Result<()> {
    let tmp = path.with_extension("jsonl.partial");
    {
        let f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
        let mut w = std::io::BufWriter::new(f);
        for s in samples {
            w.write_all(s.to_json_line()?.as_bytes())
                .and_then(|_| w.write_all(b"\n"))
                .map_err(io_err(&tmp))?;
        }
        w.flush().map_err(io_err(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

/// Reads samples written by [`write_jsonl`].
pub fn read_jsonl(path: &Path) -> Result<Vec<Sample>> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| Ok(serde_json::from_str(l)?))
        .collect()
}
