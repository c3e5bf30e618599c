//! Synthetic long-context tasks: one registry table, one file per task family.
//!
//! Every task builds its text over a real haystack (a [`Text`]) to an exact token length for a
//! given tokenizer, deterministically from a seed, and records the ground truth: question,
//! answers, needle token spans and answer-bearing token spans.
//!
//! ```no_run
//! use attnscope_core::tokenizer::Tokenizer;
//! use attnscope_datasets::tasks::{self, TaskParams};
//! use attnscope_datasets::text::{self, TextOptions, TextSource};
//! # fn main() -> Result<(), attnscope_datasets::DatasetError> {
//! let tok = Tokenizer::from_file("tokenizer.json".as_ref())?;
//! let hay = text::load(&TextSource::parse("canterbury")?, &TextOptions::default())?;
//! let mut p = TaskParams::new(8192, 7);
//! p.depth = Some(0.5);
//! let s = tasks::generate("niah-single", &tok, &hay, &p)?;
//! assert_eq!(s.ids.len(), 8192);
//! println!("{}", s.summary());
//! # Ok(()) }
//! ```

pub(crate) mod compose;
mod hay;
mod layout;
mod niah;
mod params;
mod plain;
mod trim;
mod vt;

pub use params::TaskParams;

use attnscope_core::tokenizer::Tokenizer;

use crate::error::{DatasetError, Result};
use crate::punct::punct_rate;
use crate::rng::Rng;
use crate::sample::{char_offsets, Needle, Sample, Span, TaskMeta, Tokenized};
use crate::text::Text;

use compose::Start;
use niah::Variant;
use params::Built;

/// A task parameter, for listings.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct ParamInfo {
    pub name: &'static str,
    pub default: &'static str,
    pub help: &'static str,
}

/// One registered task.
#[derive(Debug, Clone, Copy)]
pub struct TaskInfo {
    pub name: &'static str,
    pub summary: &'static str,
    /// Parameters beyond `len` and `seed`.
    pub params: &'static [ParamInfo],
    build: fn(&TaskParams, &mut Rng, &Text) -> Result<Built>,
}

const DEPTH: ParamInfo = ParamInfo {
    name: "depth",
    default: "random",
    help: "position of the (first) target needle in the haystack, 0..1",
};

static TASKS: [TaskInfo; 6] = [
    TaskInfo {
        name: "text",
        summary: "the haystack text itself, cut to the length: from --offset (characters), else \
                  from the top with seed 0, else from a paragraph chosen by the seed",
        params: &[],
        build: plain::build,
    },
    TaskInfo {
        name: "niah-single",
        summary: "one key-value needle (7-digit number) in the haystack; asks for its value",
        params: &[DEPTH],
        build: |p, r, h| niah::build(Variant::Single, p, r, h),
    },
    TaskInfo {
        name: "niah-multikey",
        summary: "one asked needle among distractor needles with other keys and values",
        params: &[
            DEPTH,
            ParamInfo {
                name: "needles",
                default: "4",
                help: "needles in all (1 target + distractors)",
            },
        ],
        build: |p, r, h| niah::build(Variant::MultiKey, p, r, h),
    },
    TaskInfo {
        name: "niah-multivalue",
        summary: "several values under one key; asks for all of them",
        params: &[
            DEPTH,
            ParamInfo {
                name: "needles",
                default: "4",
                help: "values of the key",
            },
        ],
        build: |p, r, h| niah::build(Variant::MultiValue, p, r, h),
    },
    TaskInfo {
        name: "niah-multiquery",
        summary: "several keys with one value each; asks for all of them",
        params: &[
            DEPTH,
            ParamInfo {
                name: "needles",
                default: "4",
                help: "keys asked",
            },
        ],
        build: |p, r, h| niah::build(Variant::MultiQuery, p, r, h),
    },
    TaskInfo {
        name: "vt",
        summary: "variable tracking: a chain VAR A = 12345. VAR B = A. ...; asks for every \
                  variable holding the value",
        params: &[
            ParamInfo {
                name: "depth",
                default: "random",
                help: "first assignment of the asked chain; the rest spread evenly after it",
            },
            ParamInfo {
                name: "hops",
                default: "4",
                help: "assignments after the first",
            },
            ParamInfo {
                name: "chains",
                default: "1",
                help: "chains (1 asked + distractors)",
            },
        ],
        build: vt::build,
    },
];

/// Every task.
pub fn tasks() -> &'static [TaskInfo] {
    &TASKS
}

/// The task called `name`.
pub fn find(name: &str) -> Result<&'static TaskInfo> {
    TASKS
        .iter()
        .find(|t| t.name == name)
        .ok_or_else(|| DatasetError::UnknownTask {
            name: name.into(),
            known: TASKS.iter().map(|t| t.name).collect::<Vec<_>>().join(", "),
        })
}

/// Generates one sample of task `name` over `hay`, exactly `p.len` tokens of `tok`.
pub fn generate(name: &str, tok: &Tokenizer, hay: &Text, p: &TaskParams) -> Result<Sample> {
    let info = find(name)?;
    if p.len == 0 {
        return Err(DatasetError::Param("--len must be at least 1".into()));
    }
    if let Some(d) = p.depth {
        if !(0.0..=1.0).contains(&d) {
            return Err(DatasetError::Param(format!("--depth {d}: must be in 0..1")));
        }
    }
    let start = start_of(name, hay, p)?;
    let mut rng = Rng::new(p.seed, name);
    let built = (info.build)(p, &mut rng, hay)?;
    let fitted = compose::fit(tok, hay, &built.plan, p.len, p.seed, name, p.repeat, start)?;
    let start_char = hay.text[..fitted.start_byte.min(hay.text.len())]
        .chars()
        .count();
    let t = Tokenized::new(
        tok,
        &fitted.text,
        fitted.ids,
        &fitted.byte_offsets,
        &p.punct,
    );
    let offs = &fitted.byte_offsets;
    let token_span = |b: (usize, usize)| -> Span {
        let mut s = offs.partition_point(|o| o.0 < b.0);
        while s > 0 && offs[s - 1].1 > b.0 {
            s -= 1;
        }
        Span::new(s, offs.partition_point(|o| o.0 < b.1).max(s))
    };
    let mut needles = Vec::with_capacity(built.plan.needles.len());
    let mut answer_spans = Vec::new();
    for (i, n) in built.plan.needles.iter().enumerate() {
        let nb = fitted.needle_bytes[i];
        let ab = n
            .text
            .find(&n.answer_part)
            .filter(|_| !n.answer_part.is_empty())
            .map(|a| (nb.0 + a, nb.0 + a + n.answer_part.len()));
        let answer_tokens = ab.map_or(Span::new(0, 0), token_span);
        if n.target && !answer_tokens.is_empty() {
            answer_spans.push(answer_tokens);
        }
        needles.push(Needle {
            text: n.text.clone(),
            key: n.key.clone(),
            value: n.value.clone(),
            target: n.target,
            tokens: token_span(nb),
            chars: char_offsets(&fitted.text, &[nb])[0],
            answer_tokens,
            depth: fitted.needle_depths[i],
        });
    }
    answer_spans.sort_by_key(|s| (s.start, s.end));
    let mut params = built.params;
    params.insert("repeat".into(), p.repeat.into());
    if let Some(o) = p.offset {
        params.insert("offset".into(), o.into());
    }
    let tokenizer = tok.source().file_name().map_or_else(
        || tok.source().display().to_string(),
        |f| f.to_string_lossy().into_owned(),
    );
    let mut warnings = hay.warnings.clone();
    warnings.extend(fitted.warnings);
    let asked = match start {
        Start::Fixed { byte, .. } => Some(hay.text[..byte].chars().count()),
        Start::Seeded => None,
    };
    if let Some(c) = asked.filter(|&c| c != start_char) {
        warnings.push(format!(
            "no exact {}-token cut from character {c} of '{}'; the sample starts at character \
             {start_char}",
            p.len, hay.name
        ));
    }
    Ok(Sample {
        dataset: name.into(),
        source: hay.name.clone(),
        tokenizer,
        seed: p.seed,
        len: t.ids.len(),
        text: fitted.text,
        punct_rate: punct_rate(&t.punct),
        ids: t.ids,
        pieces: t.pieces,
        punct: t.punct,
        punct_options: p.punct,
        offsets: t.offsets,
        task: TaskMeta {
            question: built.question,
            answers: built.answers,
            needles,
            answer_spans,
            params,
        },
        warnings,
        start_char,
        repeated: fitted.repeated,
    })
}

/// Where the haystack window starts (the rules are on [`TaskParams::offset`]).
fn start_of(name: &str, hay: &Text, p: &TaskParams) -> Result<Start> {
    Ok(match p.offset {
        Some(c) => {
            let byte = hay.text.char_indices().nth(c).map(|(b, _)| b);
            let Some(byte) = byte else {
                return Err(DatasetError::Param(format!(
                    "--offset {c}: the text '{}' has only {} characters",
                    hay.name,
                    hay.text.chars().count()
                )));
            };
            Start::Fixed {
                byte,
                explicit: true,
            }
        }
        None if name == "text" && p.seed == 0 => Start::Fixed {
            byte: 0,
            explicit: false,
        },
        None => Start::Seeded,
    })
}
