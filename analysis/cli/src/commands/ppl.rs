//! `attnscope ppl --model M --text FILE [--max-tokens N] [--json]`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use attnscope_core::attention::NoHook;
use serde_json::json;

use super::model_arg;

#[derive(clap::Args)]
pub struct Args {
    /// Model: a registry name, a HF folder, a .gguf file, or a Hugging Face id ORG/NAME in the
    /// local hub cache.
    #[arg(long, default_value = "smollm2-135m")]
    model: String,
    /// Revision (branch, tag or commit) of a Hugging Face id `--model ORG/NAME` in the local hub
    /// cache ($HF_HUB_CACHE, $HF_HOME/hub or ~/.cache/huggingface/hub); default `main`.
    #[arg(long)]
    revision: Option<String>,
    /// UTF-8 text file (tokenized whole with no special tokens), or a corpus text name
    /// (alice29, plrabn12, asyoulik, lcet10: fetched when missing). Read as `simulate` reads it:
    /// `\r\n` as `\n` unless --keep-crlf.
    #[arg(long)]
    text: String,
    /// Keep `\r\n` line ends.
    #[arg(long)]
    keep_crlf: bool,
    /// Read bytes that are not UTF-8 as Latin-1 instead of refusing the file.
    #[arg(long)]
    latin1: bool,
    /// Keep only the first N tokens (at least 2: the first token is not predicted).
    #[arg(long, value_parser = super::input::at_least_one)]
    max_tokens: Option<usize>,
    /// A tokenizer.json to use instead of the model's own.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Print one JSON object (no progress output).
    #[arg(long)]
    json: bool,
    /// Where the forward pass runs: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: attnscope_core::Device,
    /// Storage on the GPU: f32 (exact, matches the CPU path) or bf16 (fast).
    #[arg(long, default_value = "f32")]
    precision: attnscope_core::device::Precision,
}

pub fn run(a: Args) -> Result<()> {
    let mut model = model_arg::load_revision(
        &a.model,
        a.revision.as_deref(),
        a.tokenizer.as_deref(),
        a.json,
    )?;
    model.to_device(a.device, a.precision)?;
    let opts = attnscope_datasets::TextOptions {
        keep_crlf: a.keep_crlf,
        latin1: a.latin1,
        ..Default::default()
    };
    let text = super::input::load_text(&a.text, &opts, a.json)?;
    let path = text.name.clone();
    let mut ids = model
        .tokenizer()?
        .encode(&text.text)
        .with_context(|| format!("{path}: tokenizing"))?;
    let total = ids.len();
    if let Some(n) = a.max_tokens {
        ids.truncate(n);
    }
    let bar = model_arg::bar(a.json, model.config.n_layers as u64, "forward");
    let started = std::time::Instant::now();
    let hidden = model.forward_with_progress(&ids, &mut NoHook, &mut |_| bar.inc(1))?;
    bar.finish_and_clear();
    let (nll, n) = model.nll_of_hidden(hidden.view(), &ids)?;
    let secs = started.elapsed().as_secs_f64();
    if a.json {
        let v = json!({
            "model": model.source, "text": path, "n_tokens": ids.len(),
            "ids_sha256": attnscope_analysis::input::ids_sha256(&ids),
            "n_predicted": n, "text_tokens": total, "mean_nll": nll, "ppl": nll.exp(),
            "seconds": secs, "tokens_per_second": ids.len() as f64 / secs,
        });
        println!("{}", serde_json::to_string(&v)?);
    } else {
        println!(
            "{} tokens of {} ({} in the file): mean NLL {nll:.5} nats, perplexity {:.4} ({secs:.1} s, {:.0} tokens/s)",
            ids.len(),
            path,
            total,
            nll.exp(),
            ids.len() as f64 / secs
        );
    }
    Ok(())
}
