//! What an evaluation scores: the tokens of one input and the positions whose next token is
//! scored. A long text scores its last `N` tokens (`--ppl-last N`); a synthetic task is its
//! prompt followed by the reference answer (teacher forcing), and scores the answer's tokens.

use attnscope_core::tokenizer::Tokenizer;
use attnscope_datasets::tasks::{self, TaskParams};
use attnscope_datasets::text::Text;
use attnscope_datasets::Sample;

use crate::error::{AnalysisError, Result};
use crate::input::SimInput;

/// One input of an evaluation: the token sequence run by every (method, budget) and the dense
/// model, and the targets scored: the tokens `first_target..len()`, each predicted from the
/// hidden state of the token before it.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalInput {
    /// The tokens run (for a task: prompt + reference answer).
    pub input: SimInput,
    /// The first scored target position (at least 1).
    pub first_target: usize,
    /// For a task: its reference answer as appended (`" "` + the answers joined by `", "`).
    pub answer: Option<String>,
    /// For a task: the depth asked for, else the depth of its first target needle, 0..1.
    pub depth: Option<f64>,
}

impl EvalInput {
    /// A plain text scored on its last `ppl_last` tokens (`--ppl-last`): at least 1 and at most
    /// the input's length minus 1 (the first token is not predicted).
    pub fn text(input: SimInput, ppl_last: usize) -> Result<Self> {
        let n = input.len();
        if n < 2 {
            return Err(AnalysisError::Input(format!(
                "input '{}' has {n} token(s): perplexity needs at least 2",
                input.name
            )));
        }
        if ppl_last == 0 || ppl_last > n - 1 {
            return Err(AnalysisError::Input(format!(
                "--ppl-last {ppl_last}: the {n}-token input '{}' predicts 1..{} tokens",
                input.name,
                n - 1
            )));
        }
        Ok(Self {
            first_target: n - ppl_last,
            input,
            answer: None,
            depth: None,
        })
    }

    /// A generated task sample followed by its reference answer (teacher forcing): the answer's
    /// tokens are scored. The answer is tokenized on its own (it starts with a space, so the
    /// tokens of the prompt do not change).
    pub fn teacher_forced(sample: &Sample, tok: &Tokenizer) -> Result<Self> {
        let answer = reference_answer(sample)?;
        let ids = tok.encode(&answer)?;
        let base = SimInput::from_sample(sample);
        let first_target = base.len();
        let mut all = base.ids.clone();
        all.extend_from_slice(&ids);
        let mut pieces = base.pieces.clone();
        pieces.extend(tok.pieces(&ids));
        let input = SimInput {
            needles: base.needles.clone(),
            question: base.question.clone(),
            offsets: base.offsets.clone(),
            start_char: base.start_char,
            repeated: base.repeated,
            ..SimInput::from_tokens(base.name.clone(), all, pieces)
        };
        let depth = sample
            .task
            .needles
            .iter()
            .find(|n| n.target)
            .map(|n| n.depth);
        Ok(Self {
            input,
            first_target,
            answer: Some(answer),
            depth,
        })
    }

    /// A task of `params.len` tokens in all, prompt and reference answer together: the prompt
    /// is generated `answer tokens` shorter than `params.len` (same seed, so the same needles
    /// and answer), so that any length the model's context holds can be evaluated.
    pub fn generate_task(
        dataset: &str,
        tok: &Tokenizer,
        hay: &Text,
        params: &TaskParams,
    ) -> Result<(Self, Sample)> {
        let mut prompt_len = params.len;
        for _ in 0..4 {
            if prompt_len < 2 {
                break;
            }
            let p = TaskParams {
                len: prompt_len,
                ..params.clone()
            };
            let sample = tasks::generate(dataset, tok, hay, &p)?;
            let mut ev = Self::teacher_forced(&sample, tok)?;
            // Rows group by the depth asked for (the needle lands near it).
            ev.depth = params.depth.or(ev.depth);
            if ev.input.len() == params.len {
                return Ok((ev, sample));
            }
            prompt_len = params.len.saturating_sub(ev.input.len() - ev.first_target);
        }
        Err(AnalysisError::Input(format!(
            "{dataset}: no prompt length gives a {}-token prompt + answer; try another --len",
            params.len
        )))
    }

    /// Tokens run.
    pub fn len(&self) -> usize {
        self.input.len()
    }

    /// True for an input without tokens.
    pub fn is_empty(&self) -> bool {
        self.input.is_empty()
    }

    /// The scored targets.
    pub fn targets(&self) -> &[u32] {
        &self.input.ids[self.first_target..]
    }

    /// The hidden-state rows that predict the targets.
    pub fn rows(&self) -> std::ops::Range<usize> {
        self.first_target - 1..self.len() - 1
    }
}

/// The reference answer of a task sample as the model should continue its prompt: a space, then
/// the expected answers joined by `", "` (in the task's order).
pub fn reference_answer(sample: &Sample) -> Result<String> {
    if sample.task.answers.is_empty() {
        return Err(AnalysisError::Input(format!(
            "task '{}' has no answer to score; evaluate a plain text with --ppl-last N",
            sample.dataset
        )));
    }
    Ok(format!(" {}", sample.task.answers.join(", ")))
}
