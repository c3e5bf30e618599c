//! `manifest.json`: what a run was (tool, model with the SHA-256 of its weights, data, methods
//! with every parameter, budgets, device, timings) and which table files it holds.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::io::{file_err, Format};
use crate::error::Result;

/// Format version of bundles written by this build. Readers refuse newer versions.
pub const FORMAT_VERSION: u32 = 2;

/// The git revision this binary was built from (`unknown` outside a git checkout).
pub const GIT_REVISION: &str = env!("ATTNSCOPE_GIT_REV");

/// What a run was: model, inputs, methods, budgets, timings, and its table files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Manifest {
    pub format_version: u32,
    /// Short id repeated in the `run` column of `metrics` (the bundle folder's name by default).
    pub run_id: String,
    /// Seconds since the Unix epoch when the run finished.
    pub created_unix: u64,
    pub tool: ToolInfo,
    /// The command line that produced the bundle.
    pub command: Vec<String>,
    pub model: ModelInfo,
    pub data: DataInfo,
    /// Tokens of each input.
    pub n_tokens: usize,
    /// Methods with every parameter value, in run order.
    pub methods: Vec<ManifestMethod>,
    /// Budgets, in index order (`budget` columns refer to them).
    pub budgets: Vec<BudgetInfo>,
    /// Simulated layers.
    pub layers: Vec<usize>,
    /// Key block of the captured block masses, pooled maps and selections; also the query block
    /// of `recall_by_query_block`.
    pub capture_block: usize,
    /// Tokens per block of the stored pooled maps (`maps` table), a multiple of
    /// `capture_block` ([`crate::results::maps::map_block`]); 0 in bundles written before it
    /// was recorded, whose maps are at `capture_block` ([`Manifest::map_block`]).
    pub map_block: usize,
    /// Top-k of the frequency-chunk agreement and queries sampled for it.
    pub freq_top_k: usize,
    pub freq_queries: usize,
    /// The queries scored (METHODS.md, "Scored queries"): `all` (sparsity and metrics over the
    /// causal triangle) or `last:N` (decode accounting: the last `N` queries of each input).
    /// Empty in bundles written before it was recorded, which scored every query.
    pub queries: String,
    /// Budgets whose selections are in the `selections` table.
    pub selection_budgets: Vec<usize>,
    pub device: String,
    /// Where each method's scoring and metrics ran (`cpu`, or `cuda` for the block methods
    /// scored on the GPU, see [`crate::device`]), by method name.
    pub method_devices: BTreeMap<String, String>,
    pub timings: Timings,
    pub format: Format,
    /// The table files, with row counts (a reader checks them).
    pub tables: Vec<TableInfo>,
    /// Captured post-RoPE Q/K/V (safetensors), when asked for.
    pub qkv: Vec<QkvFile>,
    /// Settings fitted on calibration text by methods labelled ours (e.g. `phsa-fit`'s lambda
    /// per layer).
    pub fitted: Vec<crate::results::FittedRow>,
    /// The calibration text those settings were fitted on.
    pub calibration: Option<CalibrationInfo>,
    /// The named protocol the run used (`--preset`), with every value it set.
    pub preset: Option<PresetInfo>,
    pub warnings: Vec<String>,
    /// The source of each method defined outside the library (a Python rule), by method name;
    /// absent when every method is built in.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub method_sources: BTreeMap<String, crate::method::MethodSource>,
    /// The part of a sweep this bundle holds (`simulate --shard K/N`); absent in a whole run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardInfo>,
    /// The parts a merged bundle was joined from (`attnscope merge`); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merged: Option<MergeInfo>,
}

impl Manifest {
    /// Tokens per block of the stored pooled maps.
    pub fn map_block(&self) -> usize {
        match self.map_block {
            0 => self.capture_block.max(1),
            b => b,
        }
    }
}

/// The part of a sweep a bundle holds ([`crate::shard::Shard`]): its inputs are in `data.inputs`,
/// with their indices in the whole sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ShardInfo {
    /// K, from 1.
    pub index: usize,
    /// N.
    pub count: usize,
    /// Every input of the whole sweep (index, text, seed), in sweep order.
    pub sweep: Vec<InputInfo>,
    /// The options that decide the results, as a resumed run compares them; `merge` requires
    /// the same in every part.
    pub options: serde_json::Value,
}

/// Where a merged bundle came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct MergeInfo {
    /// The parts, in part order.
    pub shards: Vec<MergedShard>,
}

/// One part of a merged bundle, as its own manifest described it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct MergedShard {
    /// K of K/N.
    pub index: usize,
    /// The part's bundle folder as given to `merge`.
    pub dir: String,
    pub run_id: String,
    /// Its input indices.
    pub inputs: Vec<usize>,
    pub device: String,
    pub created_unix: u64,
    /// The command line that produced it.
    pub command: Vec<String>,
    /// Its own timings (load, hashing, each input, writing, per method, peak memory).
    pub timings: Timings,
}

/// The named protocol of a run (`--preset`, [`crate::preset`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct PresetInfo {
    pub name: String,
    /// `method.param`, value and source of each setting; `applied` false where an explicit
    /// `--param`, budget or `--queries` of the command line took its place.
    pub values: Vec<PresetSetting>,
}

/// One setting of a preset as the run used it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct PresetSetting {
    /// `phsa.block`, `budget_tokens` or `queries`.
    pub name: String,
    pub value: String,
    pub source: String,
    pub applied: bool,
}

/// Calibration text of methods that fit settings (ours).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct CalibrationInfo {
    /// Corpus text name or file.
    pub text: String,
    pub n_tokens: usize,
}

/// The tool that wrote the bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ToolInfo {
    pub name: String,
    pub version: String,
    pub git_revision: String,
}

impl ToolInfo {
    /// This build.
    pub fn current() -> Self {
        Self {
            name: "attnscope".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            git_revision: GIT_REVISION.into(),
        }
    }
}

/// The model of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ModelInfo {
    /// `--model` as given (registry name or path).
    pub spec: String,
    /// The file or folder it was loaded from.
    pub source: String,
    pub architecture: String,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub max_context: usize,
    /// Storage types as loaded (e.g. `Q4_1 x 180, F32 x 61`).
    pub storage: String,
    /// Weight files with size and SHA-256.
    pub files: Vec<FileHash>,
}

impl ModelInfo {
    /// One line naming the model: spec and the first weights hash, if any.
    pub fn identity(&self) -> String {
        match self.files.first() {
            Some(f) => format!(
                "{} (sha256 {})",
                self.spec,
                &f.sha256[..12.min(f.sha256.len())]
            ),
            None => self.spec.clone(),
        }
    }

    /// True when two runs used the same weights (same hashes, or the same source when unhashed).
    pub fn same_weights(&self, other: &ModelInfo) -> bool {
        if self.files.is_empty() || other.files.is_empty() {
            return self.source == other.source;
        }
        self.files
            .iter()
            .map(|f| &f.sha256)
            .eq(other.files.iter().map(|f| &f.sha256))
    }
}

/// A file with its size and SHA-256.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct FileHash {
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

/// The inputs of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct DataInfo {
    /// Task (`text`, `niah-single`, ...).
    pub dataset: String,
    pub len: usize,
    pub depth: Option<f64>,
    pub inputs: Vec<InputInfo>,
}

/// One input of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct InputInfo {
    pub index: usize,
    pub name: String,
    /// The text (corpus name or file).
    pub text: String,
    pub seed: u64,
    pub n_tokens: usize,
    pub n_needles: usize,
    /// Where the input starts in its text, in characters of the line-end-normalized text.
    pub start_char: usize,
    /// True when the text was shorter than the input and continued from its top.
    pub repeated: bool,
    /// SHA-256 of the input's token ids ([`crate::input::ids_sha256`]).
    pub ids_sha256: String,
}

/// One method of a run with its parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ManifestMethod {
    pub name: String,
    pub kind: String,
    pub params: BTreeMap<String, f64>,
}

/// One budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct BudgetInfo {
    pub index: usize,
    /// e.g. `sparsity=0.9`.
    pub label: String,
    /// `sparsity`, `tokens` or `top_p`.
    pub kind: String,
    pub value: f64,
}

/// Wall-clock seconds of the parts of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Timings {
    pub load_s: f64,
    pub hash_s: f64,
    /// Simulation of each input (0 for inputs restored by a resumed run).
    pub inputs_s: Vec<f64>,
    pub write_s: f64,
    pub total_s: f64,
    /// Per method: scoring and calibration (on a GPU, metrics too), summed over layers, groups
    /// and inputs. The host methods' metrics are one shared pass per group, not counted here.
    pub method_s: BTreeMap<String, f64>,
    /// Per simulated input: its pipeline in one line (calibration, forward pass, layer jobs).
    #[serde(default)]
    pub pipeline: Vec<String>,
    /// Per simulated input and layer: `[input, layer, handed over, started, finished]`, seconds
    /// from the start of that input's simulation.
    #[serde(default)]
    pub layer_spans: Vec<[f64; 5]>,
    /// Peak resident host memory of the writing process in bytes (Linux `VmHWM`; 0 where not
    /// readable). A resumed run's peak is that of its last process.
    pub peak_host_bytes: u64,
}

/// A table file of the bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TableInfo {
    pub name: String,
    pub file: String,
    pub rows: usize,
    pub bytes: u64,
    /// SHA-256 of the file, hex (empty in bundles of earlier versions: then unchecked).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sha256: String,
}

/// A safetensors file of captured Q/K/V.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct QkvFile {
    pub input: usize,
    pub file: String,
    pub layers: Vec<usize>,
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<FileHash> {
    let mut f = std::fs::File::open(path).map_err(|e| file_err(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let k = f.read(&mut buf).map_err(|e| file_err(path, e))?;
        if k == 0 {
            break;
        }
        bytes += k as u64;
        h.update(&buf[..k]);
    }
    let sha256 = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(FileHash {
        path: path.display().to_string(),
        bytes,
        sha256,
    })
}

/// Hashes a model's weights: the file itself, or every `*.safetensors` / `*.gguf` file of a folder.
pub fn hash_weights(source: &Path) -> Result<Vec<FileHash>> {
    if source.is_file() {
        return Ok(vec![sha256_file(source)?]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(source)
        .map_err(|e| file_err(source, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .is_some_and(|x| x == "safetensors" || x == "gguf")
        })
        .collect();
    files.sort();
    files.iter().map(|p| sha256_file(p)).collect()
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
