//! `attnscope methods`: the registry table (names, kinds, papers, parameters).

use anyhow::Result;
use attnscope_analysis::registry::METHODS;

#[derive(clap::Args)]
pub struct Args {
    /// Also list every parameter with its default and range.
    #[arg(long)]
    params: bool,
}

pub fn run(a: Args) -> Result<()> {
    for m in METHODS {
        println!(
            "{:<16} {:<10} {}",
            m.name,
            format!("{:?}", m.kind).to_lowercase(),
            m.rule
        );
        println!("{:<16} {:<10} {}", "", "", m.paper);
        if a.params {
            for p in m.params {
                println!(
                    "{:<27} {}={} [{}, {}]  {}",
                    "", p.name, p.default, p.min, p.max, p.help
                );
            }
        }
    }
    Ok(())
}
