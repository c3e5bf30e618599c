//! `attnscope figures RUN --out DIR`: publication figures of a run bundle as PNG and SVG.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use attnscope_analysis::bundle::Bundle;
use attnscope_analysis::figures::{render_all_with_notes, FigureOptions, ImageFormat};

#[derive(clap::Args)]
pub struct Args {
    /// A run bundle written by `attnscope simulate`.
    run: PathBuf,
    /// Output folder (created).
    #[arg(long)]
    out: PathBuf,
    /// Budget of the per-budget figures: an index or a label like `sparsity=0.9` (default: the
    /// last budget).
    #[arg(long)]
    budget: Option<String>,
    /// Layer and head of the attention map, `LAYER:HEAD` (default: the head where the two
    /// compared methods' information loss differs most).
    #[arg(long)]
    head: Option<String>,
    /// Input of the attention map (runs over several inputs).
    #[arg(long, default_value_t = 0)]
    input: usize,
    /// The two methods overlaid on the attention map, `A,B` (default: phsa,infllm-v2).
    #[arg(long)]
    compare: Option<String>,
    /// Image formats: `png`, `svg` or both (comma-separated).
    #[arg(long, default_value = "png,svg")]
    format: String,
}

pub fn run(a: Args) -> Result<()> {
    let b = Bundle::read(&a.run)?;
    let budget = match &a.budget {
        None => None,
        Some(s) => Some(match s.parse::<usize>() {
            Ok(i) => i,
            Err(_) => b
                .manifest
                .budgets
                .iter()
                .find(|x| x.label == *s)
                .map(|x| x.index)
                .with_context(|| {
                    let labels: Vec<&str> = b
                        .manifest
                        .budgets
                        .iter()
                        .map(|x| x.label.as_str())
                        .collect();
                    format!("--budget {s}: the run's budgets are {}", labels.join(", "))
                })?,
        }),
    };
    let head = match &a.head {
        None => None,
        Some(s) => {
            let (l, h) = s
                .split_once(':')
                .with_context(|| format!("--head {s}: expected LAYER:HEAD"))?;
            Some((
                l.trim()
                    .parse()
                    .with_context(|| format!("--head {s}: bad layer"))?,
                h.trim()
                    .parse()
                    .with_context(|| format!("--head {s}: bad head"))?,
            ))
        }
    };
    let compare = match &a.compare {
        None => None,
        Some(s) => {
            let (x, y) = s
                .split_once(',')
                .with_context(|| format!("--compare {s}: expected A,B"))?;
            for m in [x, y] {
                if !b.manifest.methods.iter().any(|z| z.name == m) {
                    bail!("--compare: the run has no method '{m}'");
                }
            }
            Some((x.to_string(), y.to_string()))
        }
    };
    let mut formats = Vec::new();
    for f in a.format.split(',').map(str::trim) {
        formats.push(match f {
            "png" => ImageFormat::Png,
            "svg" => ImageFormat::Svg,
            _ => bail!("--format {f}: expected png or svg"),
        });
    }
    let o = FigureOptions {
        budget,
        input: a.input,
        head,
        compare,
        formats,
    };
    let (files, notes) = render_all_with_notes(&b, &a.out, &o)?;
    for n in notes {
        eprintln!("note: {n}");
    }
    for f in files {
        println!("{}", f.display());
    }
    Ok(())
}
