//! `attnscope view RUN_DIR`: opens a run in the desktop viewer by executing the
//! `attnscope-viewer` binary found next to this executable or on PATH (the analysis crate does not
//! depend on the viewer).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

#[derive(clap::Args)]
pub struct Args {
    /// Run directory written by `attnscope simulate --out RUN_DIR`.
    run: PathBuf,
    /// Options passed to attnscope-viewer unchanged (e.g. `--view head-map --layer 3`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    viewer_args: Vec<OsString>,
}

const VIEWER: &str = "attnscope-viewer";

/// The viewer binary: next to the current executable, else the first on PATH.
pub fn find_viewer() -> Option<PathBuf> {
    let exe_name = format!("{VIEWER}{}", std::env::consts::EXE_SUFFIX);
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join(&exe_name)));
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(&exe_name));
    beside.into_iter().chain(on_path).find(|p| p.is_file())
}

pub fn run(a: Args) -> Result<()> {
    if !a.run.join("manifest.json").is_file() {
        bail!(
            "{}: not a finished run directory (no manifest.json); write one with \
             `attnscope simulate --out {}`",
            a.run.display(),
            a.run.display()
        );
    }
    let viewer = find_viewer().with_context(|| {
        format!(
            "the desktop viewer `{VIEWER}` was not found next to this executable or on PATH; \
             build it with `cargo build --release --workspace` (it lands beside `attnscope` in \
             target/release) or install it with `cargo install --path viewer`"
        )
    })?;
    exec(&viewer, &a.run, &a.viewer_args)
}

#[cfg(unix)]
fn exec(viewer: &Path, run: &Path, rest: &[OsString]) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let err = std::process::Command::new(viewer)
        .arg(run)
        .args(rest)
        .exec();
    Err(err).with_context(|| format!("could not start {}", viewer.display()))
}

#[cfg(not(unix))]
fn exec(viewer: &Path, run: &Path, rest: &[OsString]) -> Result<()> {
    let status = std::process::Command::new(viewer)
        .arg(run)
        .args(rest)
        .status()
        .with_context(|| format!("could not start {}", viewer.display()))?;
    if !status.success() {
        bail!("{} exited with {status}", viewer.display());
    }
    Ok(())
}
