//! `attnscope methods`: the registry table (names, kinds, papers, devices, parameters) and, with
//! `--params`, the presets.

use anyhow::Result;
use attnscope_analysis::registry;

#[derive(clap::Args)]
pub struct Args {
    /// Also list every parameter with its default and range.
    #[arg(long)]
    params: bool,
    /// Print a Markdown table (the README's method table is made with this).
    #[arg(long)]
    markdown: bool,
}

pub fn run(a: Args) -> Result<()> {
    if a.markdown {
        println!("| method | kind | selection rule | knob | devices | paper |");
        println!("|---|---|---|---|---|---|");
        for m in registry::all() {
            let knob = (m.build)(&m.params(&[])?).knob();
            println!(
                "| `{}` | {} | {} | `{}` | {} | {} |",
                m.name,
                m.kind.as_str(),
                m.rule.replace('|', "/"),
                knob.name,
                m.devices(),
                m.paper.replace('|', "/")
            );
        }
        return Ok(());
    }
    for m in registry::all() {
        println!("{:<16} {:<10} {}", m.name, m.kind.as_str(), m.rule);
        println!("{:<16} {:<10} {}", "", "", m.paper);
        println!("{:<16} {:<10} runs on: {}", "", "", m.devices());
        if a.params {
            for p in m.params {
                println!(
                    "{:<27} {}={} [{}, {}]  {}",
                    "", p.name, p.default, p.min, p.max, p.help
                );
            }
        }
    }
    if a.params {
        print_presets();
    }
    Ok(())
}

/// The named protocols of `simulate --preset`, every value with its source.
fn print_presets() {
    for p in attnscope_analysis::preset::PRESETS {
        println!("\npreset {}: {}", p.name, p.description);
        for v in p.values {
            let name = format!("{}.{}", v.method, v.param);
            println!("  {name:<26} {:<8} {}", v.value, v.source);
        }
        if let Some((tokens, source)) = p.budget_tokens {
            println!("  {:<26} {tokens:<8} {source}", "--budget-tokens");
        }
        if let Some((queries, source)) = p.queries {
            println!("  {:<26} {:<8} {source}", "--queries", queries.to_string());
        }
    }
}
