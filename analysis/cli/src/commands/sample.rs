//! `attnscope sample --dataset NAME --model M --len N`: one tokenized sample (or several), with
//! its punctuation mask and task ground truth; a summary on stdout, the samples as JSONL.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use attnscope_core::gguf::GgufFile;
use attnscope_core::tokenizer::Tokenizer;
use attnscope_datasets::sample::{write_jsonl, Sample};
use attnscope_datasets::tasks::{self, TaskParams};
use attnscope_datasets::text::{self, TextOptions, TextSource};
use attnscope_datasets::PunctOptions;

use super::model_arg;

#[derive(clap::Args)]
pub struct Args {
    /// A task (see `attnscope datasets`), or a text (corpus name, file, FILE.jsonl, `-`) to cut
    /// to the length as it is.
    #[arg(long)]
    dataset: String,
    /// Model whose tokenizer to use: a registry name, a HF folder or a .gguf file.
    #[arg(long, default_value = "smollm2-135m")]
    model: String,
    /// A tokenizer.json to use instead of the model's (then the model is not needed).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Exact length in tokens.
    #[arg(long)]
    len: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Position of the (first) target needle in the haystack, 0..1 (default: from the seed).
    #[arg(long)]
    depth: Option<f64>,
    /// niah-multikey: needles in all; niah-multivalue: values; niah-multiquery: keys (default 4).
    #[arg(long)]
    needles: Option<usize>,
    /// vt: assignments after the first (default 4).
    #[arg(long)]
    hops: Option<usize>,
    /// vt: chains, one asked (default 1).
    #[arg(long)]
    chains: Option<usize>,
    /// Haystack text of the tasks: a corpus name, a file, FILE.jsonl or `-`.
    #[arg(long, default_value = text::DEFAULT_HAYSTACK)]
    haystack: String,
    /// Refuse (instead of reusing the text with a warning) when the haystack is too short.
    #[arg(long)]
    no_repeat: bool,
    /// Read bytes that are not UTF-8 as Latin-1 instead of failing.
    #[arg(long)]
    latin1: bool,
    /// Keep \r\n line ends (default: normalized to \n).
    #[arg(long)]
    keep_crlf: bool,
    /// Field of JSONL objects holding the text.
    #[arg(long, default_value = "text")]
    jsonl_field: String,
    /// Newline-only tokens are not punctuation.
    #[arg(long)]
    no_newline_punct: bool,
    /// Unicode symbols ($ + = ~ ...) count as punctuation.
    #[arg(long)]
    symbols: bool,
    /// Byte tokens holding part of a punctuation character count as punctuation.
    #[arg(long)]
    partial_chars: bool,
    /// Samples to make, with seeds seed, seed+1, ...
    #[arg(long, default_value_t = 1)]
    count: u64,
    /// Print the summary as JSON (one object per sample, one per line).
    #[arg(long)]
    json: bool,
    /// Write the full samples (ids, pieces, mask, offsets, metadata) as JSONL.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<()> {
    if a.count == 0 {
        bail!("--count must be at least 1");
    }
    let opts = TextOptions {
        latin1: a.latin1,
        keep_crlf: a.keep_crlf,
        jsonl_field: a.jsonl_field.clone(),
    };
    // --dataset is a task, or a text cut to the length as it is.
    let (task, hay_spec) = if tasks::find(&a.dataset).is_ok() {
        (a.dataset.as_str(), a.haystack.as_str())
    } else if TextSource::parse(&a.dataset).is_ok() {
        ("text", a.dataset.as_str())
    } else {
        let names: Vec<&str> = tasks::tasks().iter().map(|t| t.name).collect();
        bail!(
            "--dataset {}: not a task ({}) nor a text (a corpus name, a file or -; see \
             `attnscope datasets`)",
            a.dataset,
            names.join(", ")
        );
    };
    // Warnings (Latin-1 fallback, reused haystack) are part of each sample's summary.
    let hay = text::load(&TextSource::parse(hay_spec)?, &opts)?;
    let quiet = a.json;
    let tok = load_tokenizer(&a.model, a.tokenizer.as_deref(), quiet)?;
    let mut p = TaskParams::new(a.len, a.seed);
    p.depth = a.depth;
    p.needles = a.needles;
    p.hops = a.hops;
    p.chains = a.chains;
    p.repeat = !a.no_repeat;
    p.punct = PunctOptions {
        newlines: !a.no_newline_punct,
        symbols: a.symbols,
        partial_chars: a.partial_chars,
    };
    let mut samples: Vec<Sample> = Vec::new();
    for k in 0..a.count {
        p.seed = a.seed.wrapping_add(k);
        let t0 = Instant::now();
        let s = tasks::generate(task, &tok, &hay, &p)?;
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        if a.json {
            let mut v = s.summary_json();
            v["generate_ms"] = ms.into();
            println!("{}", serde_json::to_string(&v)?);
        } else {
            if k > 0 {
                println!();
            }
            print!("{}", s.summary());
            println!("{:<14}{ms:.1} ms", "generated in");
        }
        samples.push(s);
    }
    if let Some(out) = &a.out {
        write_jsonl(out, &samples).with_context(|| format!("writing {}", out.display()))?;
        if !a.json {
            println!("wrote {} sample(s) to {}", samples.len(), out.display());
        }
    }
    Ok(())
}

/// The tokenizer of `--tokenizer`, else of `--model` without loading its weights where possible
/// (a tokenizer.json beside it, or the GGUF's metadata), else from the loaded model.
fn load_tokenizer(model: &str, tokenizer: Option<&Path>, quiet: bool) -> Result<Tokenizer> {
    if let Some(t) = tokenizer {
        return Ok(Tokenizer::from_file(t)?);
    }
    let src = model_arg::resolve(model, quiet)?;
    if let Some(t) = &src.tokenizer_json {
        return Ok(Tokenizer::from_file(t)?);
    }
    let w = &src.weights;
    if w.is_dir() && w.join("tokenizer.json").is_file() {
        return Ok(Tokenizer::from_file(&w.join("tokenizer.json"))?);
    }
    if w.is_file() {
        if let Ok(g) = GgufFile::open(w) {
            if g.metadata.contains_key("tokenizer.ggml.model") {
                return Ok(Tokenizer::from_gguf(&g.metadata, w)?);
            }
        }
    }
    let m = model_arg::load(model, None, quiet)?;
    Ok(m.tokenizer()?.clone())
}
