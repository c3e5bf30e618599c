//! `attnscope merge PART... --out RUN`: joins the bundles of a sweep's parts (`simulate --shard
//! K/N`) into the bundle of the whole sweep (the library's `bundle::merge`).

use std::path::PathBuf;

use anyhow::Result;
use attnscope_analysis::bundle::merge::{merge, MergeOptions};

#[derive(clap::Args)]
pub struct Args {
    /// The bundles of every part of one sweep (`simulate --shard K/N`, K = 1..N), in any order.
    #[arg(required = true, value_name = "PART")]
    parts: Vec<PathBuf>,
    /// Output run directory.
    #[arg(long)]
    out: PathBuf,
    /// Run id stored in the merged manifest and `metrics.run` (default: the folder's name).
    #[arg(long)]
    run_id: Option<String>,
    /// Overwrite an existing run directory.
    #[arg(long)]
    force: bool,
    /// No summary line.
    #[arg(long)]
    quiet: bool,
    /// The command line as given, recorded in the merged manifest (set by the caller).
    #[arg(skip)]
    pub command: Vec<String>,
}

pub fn run(a: Args) -> Result<()> {
    let opts = MergeOptions {
        run_id: a.run_id.clone(),
        force: a.force,
        command: a.command.clone(),
    };
    let b = merge(&a.parts, &a.out, &opts)?;
    if !a.quiet {
        let rows: usize = b.manifest.tables.iter().map(|t| t.rows).sum();
        eprintln!(
            "merged {} parts ({} inputs, {rows} table rows) into {}",
            a.parts.len(),
            b.manifest.data.inputs.len(),
            a.out.display()
        );
    }
    Ok(())
}
