//! `attnscope info --model M`.

use anyhow::Result;
use serde_json::json;

use super::model_arg;

#[derive(clap::Args)]
pub struct Args {
    /// Model: a registry name (see `attnscope fetch --list`), a HF folder, a .gguf file, or a
    /// Hugging Face id ORG/NAME in the local hub cache.
    #[arg(long, default_value = "smollm2-135m")]
    model: String,
    /// Revision (branch, tag or commit) of a Hugging Face id `--model ORG/NAME` in the local hub
    /// cache ($HF_HUB_CACHE, $HF_HOME/hub or ~/.cache/huggingface/hub); default `main`.
    #[arg(long)]
    revision: Option<String>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let m = model_arg::load_revision(&a.model, a.revision.as_deref(), None, a.json)?;
    let c = &m.config;
    let params = c.param_count();
    if a.json {
        let v = json!({
            "source": m.source, "architecture": c.arch.name(), "layers": c.n_layers,
            "heads": c.n_heads, "kv_heads": c.n_kv_heads, "head_dim": c.head_dim,
            "hidden": c.hidden, "intermediate": c.intermediate, "vocab": c.vocab,
            "context": c.max_context, "rope_theta": c.rope_theta,
            "tied_embeddings": c.tie_embeddings, "storage": m.storage, "parameters": params,
            "tokenizer": m.tokenizer.as_ref().map(|t| t.source().display().to_string()),
            "attention": c.attention,
            "local_layers": (0..c.n_layers).filter(|&l| c.window_of(l).is_some()).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("model         {}", m.source.display());
    println!("architecture  {}", c.arch.name());
    println!("layers        {}", c.n_layers);
    println!(
        "heads         {} query / {} key-value (group {})",
        c.n_heads,
        c.n_kv_heads,
        c.group_size()
    );
    println!("head dim      {}", c.head_dim);
    println!("hidden        {} (MLP {})", c.hidden, c.intermediate);
    println!("vocab         {}", c.vocab);
    println!(
        "context       {} tokens (RoPE theta {})",
        c.max_context, c.rope_theta
    );
    println!(
        "embeddings    {}",
        if c.tie_embeddings {
            "tied"
        } else {
            "separate output head"
        }
    );
    let a = &c.attention;
    if let Some(w) = a.sliding_window {
        let local = (0..c.n_layers)
            .filter(|&l| c.window_of(l).is_some())
            .count();
        let theta = a
            .local_rope_theta
            .map(|t| format!(", RoPE theta {t} there"))
            .unwrap_or_default();
        println!(
            "attention     sliding window of {w} keys on {local} of {} layers{theta}",
            c.n_layers
        );
    }
    if a.attn_softcap.is_some() || a.final_softcap.is_some() {
        let show = |x: Option<f32>| x.map_or("none".to_string(), |v| v.to_string());
        println!(
            "soft-capping  attention {}, output {}",
            show(a.attn_softcap),
            show(a.final_softcap)
        );
    }
    if let Some(s) = a.query_pre_attn_scalar {
        println!("query scale   1/sqrt({s})");
    }
    println!("storage       {}", m.storage);
    println!("parameters    {params} ({:.1} M)", params as f64 / 1e6);
    match &m.tokenizer {
        Some(t) => println!(
            "tokenizer     {} ({} tokens)",
            t.source().display(),
            t.vocab_size()
        ),
        None => println!("tokenizer     none"),
    }
    Ok(())
}
