//! The run directory a simulation writes and `attnscope report` reads: `manifest.json` plus one
//! JSON table per result kind. Every file is written to a temporary name and renamed when
//! complete, so an interrupted run never leaves a half file that looks whole.

use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::error::{AnalysisError, Result};
use crate::sim::SimResults;

/// Format version of run directories written by this build.
pub const FORMAT_VERSION: u32 = 1;

/// What a run was: model, input, methods, budgets, timings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub tool_version: String,
    pub model: String,
    pub architecture: String,
    pub input: String,
    pub n_tokens: usize,
    pub seed: u64,
    pub device: String,
    /// Methods with every parameter value.
    pub methods: Vec<ManifestMethod>,
    /// Budgets, in index order (`metrics.budget` refers to them).
    pub budgets: Vec<String>,
    pub layers: Vec<usize>,
    pub capture_block: usize,
    pub seconds: f64,
}

/// One method of a run with its parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestMethod {
    pub name: String,
    pub kind: String,
    pub params: Vec<(String, f64)>,
}

/// Per-token data of the input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenRow {
    pub position: usize,
    pub id: u32,
    pub piece: String,
    pub is_punct: bool,
    pub is_newline: bool,
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> AnalysisError {
    AnalysisError::File {
        path: path.to_path_buf(),
        msg: e.to_string(),
    }
}

/// Writes `value` as JSON to `path` through a temporary file and a rename.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let tmp = path.with_extension("json.partial");
    let text = serde_json::to_vec(value).map_err(|e| io_err(path, e))?;
    std::fs::write(&tmp, text).map_err(|e| io_err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))
}

/// Reads a JSON file, naming the file in any error.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|e| io_err(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| io_err(path, format!("invalid or truncated: {e}")))
}

/// A complete run: manifest, results and tokens.
#[derive(Debug, Clone)]
pub struct Run {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub results: SimResults,
    pub tokens: Vec<TokenRow>,
}

impl Run {
    /// Writes the run into `dir` (created; refused when it holds a run, unless `force`).
    pub fn write(&self, force: bool) -> Result<()> {
        let dir = &self.dir;
        if dir.join("manifest.json").exists() && !force {
            return Err(io_err(
                dir,
                "already holds a run; pass --force to overwrite it",
            ));
        }
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        // The manifest goes last: a directory without it is an unfinished run.
        let _ = std::fs::remove_file(dir.join("manifest.json"));
        write_json(&dir.join("metrics.json"), &self.results.metrics)?;
        write_json(&dir.join("iou.json"), &self.results.iou)?;
        write_json(&dir.join("heads.json"), &self.results.heads)?;
        write_json(&dir.join("tokens.json"), &self.tokens)?;
        write_json(&dir.join("manifest.json"), &self.manifest)
    }

    /// Reads a run directory.
    pub fn read(dir: &Path) -> Result<Self> {
        let mpath = dir.join("manifest.json");
        if !mpath.exists() {
            return Err(io_err(
                dir,
                "no manifest.json: not a run directory, or the run did not finish",
            ));
        }
        let manifest: Manifest = read_json(&mpath)?;
        if manifest.format_version > FORMAT_VERSION {
            return Err(io_err(
                &mpath,
                format!(
                    "format version {} is newer than this attnscope reads ({FORMAT_VERSION}); upgrade attnscope",
                    manifest.format_version
                ),
            ));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            results: SimResults {
                metrics: read_json(&dir.join("metrics.json"))?,
                iou: read_json(&dir.join("iou.json"))?,
                heads: read_json(&dir.join("heads.json"))?,
                ..SimResults::default()
            },
            tokens: read_json(&dir.join("tokens.json"))?,
            manifest,
        })
    }
}
