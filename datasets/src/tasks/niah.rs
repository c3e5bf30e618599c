//! Needle-in-a-haystack tasks in the spirit of RULER (Hsieh et al. 2024): key-value needles
//! ("One of the special magic numbers for ambitious-tomato is: 4920031.") hidden in real text.
//!
//! - `niah-single`: one needle, one question;
//! - `niah-multikey`: one asked needle among distractor needles with other keys and values;
//! - `niah-multivalue`: several values under one key, all asked;
//! - `niah-multiquery`: several keys, all asked.

use super::compose::{NeedleSpec, Plan};
use super::params::{Built, TaskParams};
use crate::error::{DatasetError, Result};
use crate::rng::Rng;
use crate::text::Text;

const ADJECTIVES: &[&str] = &[
    "ambitious",
    "bitter",
    "brave",
    "calm",
    "cheerful",
    "clumsy",
    "curious",
    "dapper",
    "eager",
    "elegant",
    "fancy",
    "fierce",
    "gentle",
    "gigantic",
    "glossy",
    "grumpy",
    "handsome",
    "hollow",
    "humble",
    "icy",
    "jolly",
    "juicy",
    "lazy",
    "lively",
    "lucky",
    "mellow",
    "modern",
    "nervous",
    "nimble",
    "odd",
    "plucky",
    "polite",
    "proud",
    "quaint",
    "quiet",
    "rapid",
    "rustic",
    "shiny",
    "silky",
    "sleepy",
    "smoky",
    "spicy",
    "sturdy",
    "swift",
    "tender",
    "tidy",
    "vivid",
    "witty",
];

const NOUNS: &[&str] = &[
    "anchor", "apricot", "badger", "banjo", "beacon", "biscuit", "canoe", "cactus", "comet",
    "cricket", "dolphin", "ember", "falcon", "fiddle", "glacier", "gazebo", "harbor", "hammock",
    "iguana", "jasmine", "kettle", "lantern", "lobster", "magnet", "meadow", "nugget", "orchid",
    "otter", "pebble", "pelican", "pumpkin", "quartz", "raccoon", "saddle", "sapphire", "spindle",
    "teapot", "thistle", "tomato", "trumpet", "tulip", "umbrella", "violin", "walrus", "willow",
    "yak", "zeppelin", "zucchini",
];

const PREFIX: &str = "Some special magic numbers are hidden within the following text. Make sure \
                      to memorize it. I will quiz you about the numbers afterwards.\n";

/// Which of the four variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Variant {
    Single,
    MultiKey,
    MultiValue,
    MultiQuery,
}

/// Draws `n` distinct strings from `draw` that occur nowhere in `hay`.
pub(crate) fn distinct_absent(
    n: usize,
    hay: &Text,
    rng: &mut Rng,
    draw: &mut dyn FnMut(&mut Rng) -> String,
) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::with_capacity(n);
    let mut tries = 0;
    while out.len() < n {
        tries += 1;
        if tries > 1000 * (n + 1) {
            return Err(DatasetError::Param(format!(
                "could not draw {n} distinct needle strings absent from '{}'",
                hay.name
            )));
        }
        let s = draw(rng);
        if !out
            .iter()
            .any(|o| o == &s || o.contains(&s) || s.contains(o.as_str()))
            && !hay.text.contains(&s)
        {
            out.push(s);
        }
    }
    Ok(out)
}

fn key(rng: &mut Rng) -> String {
    let a = rng.choose(ADJECTIVES).copied().unwrap_or("odd");
    let n = rng.choose(NOUNS).copied().unwrap_or("yak");
    format!("{a}-{n}")
}

fn needle(key: &str, value: &str, target: bool, depth: f64) -> NeedleSpec {
    NeedleSpec {
        text: format!("One of the special magic numbers for {key} is: {value}."),
        key: key.into(),
        value: value.into(),
        target,
        depth,
        answer_part: value.into(),
    }
}

/// Sorted depths: the first at `first` when given, the others drawn uniformly.
fn depths(n: usize, first: Option<f64>, rng: &mut Rng) -> Vec<f64> {
    (0..n)
        .map(|i| match (i, first) {
            (0, Some(d)) => d,
            _ => rng.unit(),
        })
        .collect()
}

fn join_keys(keys: &[String]) -> String {
    match keys {
        [] => String::new(),
        [k] => k.clone(),
        [a, b] => format!("{a} and {b}"),
        [rest @ .., last] => format!("{}, and {last}", rest.join(", ")),
    }
}

pub(crate) fn build(v: Variant, p: &TaskParams, rng: &mut Rng, hay: &Text) -> Result<Built> {
    let k = match v {
        Variant::Single => 1,
        _ => p.needles.unwrap_or(4),
    };
    if k == 0 || k > 64 {
        return Err(DatasetError::Param(format!(
            "--needles {k}: must be 1..=64"
        )));
    }
    if v == Variant::MultiKey && k < 2 {
        return Err(DatasetError::Param(
            "niah-multikey needs --needles 2 or more (one target, the rest distractors)".into(),
        ));
    }
    let n_keys = if v == Variant::MultiValue { 1 } else { k };
    let keys = distinct_absent(n_keys, hay, rng, &mut key)?;
    let values = distinct_absent(k, hay, rng, &mut |r| r.number(7))?;
    let ds = depths(k, p.depth, rng);
    let mut needles = Vec::with_capacity(k);
    let (question, prefix_answer, answers);
    match v {
        Variant::Single | Variant::MultiKey => {
            // Needle 0 is the target (at --depth when given); the others are distractors.
            for i in 0..k {
                needles.push(needle(&keys[i], &values[i], i == 0, ds[i]));
            }
            question = format!(
                "What is the special magic number for {} mentioned in the provided text?",
                keys[0]
            );
            prefix_answer = format!(
                "The special magic number for {} mentioned in the provided text is",
                keys[0]
            );
            answers = vec![values[0].clone()];
        }
        Variant::MultiValue => {
            let mut order: Vec<usize> = (0..k).collect();
            order.sort_by(|&a, &b| ds[a].total_cmp(&ds[b]));
            // Values listed in the order they appear.
            for (rank, &i) in order.iter().enumerate() {
                needles.push(needle(&keys[0], &values[rank], true, ds[i]));
            }
            question = format!(
                "What are all the special magic numbers for {} mentioned in the provided text?",
                keys[0]
            );
            prefix_answer = format!(
                "The special magic numbers for {} mentioned in the provided text are",
                keys[0]
            );
            answers = values.clone();
        }
        Variant::MultiQuery => {
            for i in 0..k {
                needles.push(needle(&keys[i], &values[i], true, ds[i]));
            }
            let all = join_keys(&keys);
            question = format!(
                "What are all the special magic numbers for {all} mentioned in the provided text?"
            );
            prefix_answer =
                format!("The special magic numbers for {all} mentioned in the provided text are");
            answers = values.clone();
        }
    }
    let mut params = serde_json::Map::new();
    params.insert("needles".into(), k.into());
    params.insert("depth".into(), p.depth.into());
    Ok(Built {
        plan: Plan {
            prefix: PREFIX.into(),
            suffix: format!("\n{question} {prefix_answer}"),
            needles,
        },
        question: Some(question),
        answers,
        params,
    })
}
