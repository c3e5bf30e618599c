//! `attnscope datasets`: the text sources and synthetic tasks `attnscope sample` can use.

use anyhow::Result;
use attnscope_datasets::{tasks, text};
use serde_json::json;

#[derive(clap::Args)]
pub struct Args {
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

const USER_INPUTS: [(&str, &str); 3] = [
    (
        "FILE",
        "a UTF-8 text file (--latin1 reads other bytes as Latin-1)",
    ),
    (
        "FILE.jsonl",
        "JSONL, one object per line with a \"text\" field (or jsonl:FILE)",
    ),
    ("-", "standard input"),
];

pub fn run(a: Args) -> Result<()> {
    let texts = text::known_texts();
    if a.json {
        let tasks: Vec<_> = tasks::tasks()
            .iter()
            .map(|t| json!({"name": t.name, "summary": t.summary, "params": t.params}))
            .collect();
        let inputs: Vec<_> = USER_INPUTS
            .iter()
            .map(|(n, d)| json!({"name": n, "description": d}))
            .collect();
        let v = json!({
            "tasks": tasks, "texts": texts, "user_inputs": inputs,
            "default_haystack": text::DEFAULT_HAYSTACK,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("tasks (attnscope sample --dataset NAME --len N [--seed S]):");
    for t in tasks::tasks() {
        println!("  {:<16} {}", t.name, t.summary);
        for p in t.params {
            println!(
                "  {:<16}   --{} (default {}): {}",
                "", p.name, p.default, p.help
            );
        }
    }
    println!();
    println!(
        "texts (--haystack NAME, default {}; or --dataset NAME for plain text):",
        text::DEFAULT_HAYSTACK
    );
    for k in &texts {
        let state = if k.cached {
            "cached".to_string()
        } else {
            format!("run `attnscope fetch {}`", k.corpus)
        };
        println!("  {:<16} {:<52} {state}", k.name, k.description);
    }
    for (n, d) in USER_INPUTS {
        println!("  {n:<16} {d}");
    }
    Ok(())
}
