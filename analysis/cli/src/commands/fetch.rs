//! `attnscope fetch NAME | --list`.

use anyhow::{bail, Result};
use attnscope_datasets::fetch;

#[derive(clap::Args)]
pub struct Args {
    /// A model or corpus name (see --list).
    name: Option<String>,
    /// List what can be fetched and whether it is cached.
    #[arg(long)]
    list: bool,
}

pub fn run(a: Args) -> Result<()> {
    if a.list || a.name.is_none() {
        println!("cache: {}", fetch::cache_home().display());
        println!("models:");
        for m in fetch::models() {
            let state = if fetch::model_path(m.name).is_some() {
                "cached"
            } else {
                "-"
            };
            println!("  {:<20} {:<7} {}", m.name, state, m.description);
        }
        println!("corpora:");
        for c in fetch::corpora() {
            println!("  {:<20} {}", c.name, c.description);
        }
        return Ok(());
    }
    let name = a.name.unwrap_or_default();
    let mut say = |msg: &str| eprintln!("  {msg}");
    if fetch::models().iter().any(|m| m.name == name) {
        let f = fetch::fetch_model(&name, &mut say)?;
        println!("{}", f.gguf.display());
        if let Some(t) = f.tokenizer_json {
            println!("{}", t.display());
        }
    } else if fetch::corpora().iter().any(|c| c.name == name) {
        println!("{}", fetch::fetch_corpus(&name, &mut say)?.display());
    } else {
        let mut names: Vec<&str> = fetch::models().iter().map(|m| m.name).collect();
        names.extend(fetch::corpora().iter().map(|c| c.name));
        bail!("unknown name '{name}'; known: {}", names.join(", "));
    }
    Ok(())
}
