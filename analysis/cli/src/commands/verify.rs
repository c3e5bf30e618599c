//! `attnscope verify RUN`: checks a bundle end to end: the manifest and its required parts,
//! every table file against its SHA-256 and row count, every row against the manifest's methods
//! and budgets, and the saved Q/K/V files.

use std::path::PathBuf;

use anyhow::{bail, Result};
use attnscope_analysis::bundle::Bundle;

#[derive(clap::Args)]
pub struct Args {
    /// Run directories (bundles).
    #[arg(required = true)]
    runs: Vec<PathBuf>,
}

pub fn run(a: Args) -> Result<()> {
    let mut bad = 0;
    for dir in &a.runs {
        match verify(dir) {
            Ok(lines) => {
                for l in lines {
                    println!("{l}");
                }
                println!("{}: OK", dir.display());
            }
            Err(e) => {
                bad += 1;
                eprintln!("{}: FAILED: {e:#}", dir.display());
            }
        }
    }
    if bad > 0 {
        bail!("{bad} of {} bundle(s) failed verification", a.runs.len());
    }
    Ok(())
}

/// One line per checked file.
fn verify(dir: &std::path::Path) -> Result<Vec<String>> {
    let b = Bundle::read(dir)?;
    let mut lines = Vec::new();
    for t in &b.manifest.tables {
        let check = if t.sha256.is_empty() {
            "rows checked (no SHA-256: written by an earlier attnscope)".to_string()
        } else {
            format!(
                "sha256 {} and rows checked",
                &t.sha256[..16.min(t.sha256.len())]
            )
        };
        lines.push(format!("  {:<20} {:>9} rows  {check}", t.file, t.rows));
    }
    for q in &b.manifest.qkv {
        let layers = b.read_qkv(q.input)?.map_or(0, |l| l.len());
        lines.push(format!("  {:<20} {layers} layers read", q.file));
    }
    Ok(lines)
}
