//! Run bundles: the folder `attnscope simulate` writes and `report`, `figures` and the viewer
//! read. A bundle is `manifest.json` plus seven tables — `metrics`, `iou`, `heads`, `tokens`,
//! `maps`, `selections`, and `eval` (rows of `attnscope eval`) — as Parquet (default) or Arrow IPC files that pandas, polars and pyarrow
//! read directly, and optionally `qkv-input{I}.safetensors` with captured Q/K/V. The columns are
//! defined once, in [`schema`].
//!
//! Every file is written under a temporary name and renamed when complete; `manifest.json` is
//! written last and lists every table with its row count, so a reader can tell a finished bundle
//! from an interrupted or truncated one (see [`partial`] for resuming). The bundles of the parts
//! of a sweep (`simulate --shard K/N`) are joined into one by [`merge`].
//!
//! ```
//! use attnscope_analysis::bundle::{BudgetInfo, Bundle, Format, Manifest, ManifestMethod};
//! use attnscope_analysis::results::SimResults;
//! let dir = tempfile::tempdir().unwrap();
//! let manifest = Manifest {
//!     format: Format::Parquet,
//!     methods: vec![ManifestMethod { name: "phsa".into(), ..ManifestMethod::default() }],
//!     budgets: vec![BudgetInfo { label: "sparsity=0.9".into(), ..BudgetInfo::default() }],
//!     layers: vec![0],
//!     capture_block: 64,
//!     ..Manifest::default()
//! };
//! let mut b = Bundle {
//!     dir: dir.path().join("run"),
//!     manifest,
//!     results: SimResults::default(),
//!     tokens: Vec::new(),
//! };
//! b.write(false).unwrap();
//! let back = Bundle::read(&b.dir).unwrap();
//! assert_eq!(back.manifest.tables.len(), 7);
//! assert!(b.write(false).is_err()); // refuses to overwrite without force
//! ```

mod describe;
pub mod io;
pub mod lock;
pub mod manifest;
pub mod merge;
pub mod partial;
pub mod qkv;
pub mod schema;
pub mod stats;
pub mod tables;
mod writer;

use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;

pub use io::{read_table, Format, TableWriter};
pub use manifest::*;
pub use partial::{check_out, dir_state, prepare_out, DirState, Partial};
pub use schema::Table;
pub use tables::TableContext;
pub use writer::{BundleWriter, OutMode};

use crate::error::Result;
use crate::results::{SimResults, TokenRow};
use io::{file_err, read_json, write_json};

/// A run bundle in memory.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub results: SimResults,
    pub tokens: Vec<TokenRow>,
}

/// Rows per record batch of each table (maps rows are large).
fn chunk(t: Table) -> usize {
    match t {
        Table::Maps => 64,
        Table::Selections => 64,
        Table::Heads | Table::Metrics | Table::Eval => 16384,
        Table::Iou | Table::Tokens => 65536,
    }
}

fn write_one<T>(
    dir: &Path,
    t: Table,
    rows: &[T],
    format: Format,
    ctx: &TableContext,
    to_batch: fn(&[T], &TableContext) -> Result<RecordBatch>,
) -> Result<TableInfo> {
    let file = format!("{}.{}", t.name(), format.ext());
    let path = dir.join(&file);
    let mut w = TableWriter::try_new(&path, schema::schema(t), format)?;
    for c in rows.chunks(chunk(t)) {
        w.write(&to_batch(c, ctx)?)?;
    }
    let rows = w.close()?;
    let hash = sha256_file(&path)?;
    Ok(TableInfo {
        name: t.name().into(),
        file,
        rows,
        bytes: hash.bytes,
        sha256: hash.sha256,
    })
}

/// Writes the tables of `results` and `tokens` into `dir`.
pub fn write_tables(
    dir: &Path,
    results: &SimResults,
    tokens: &[TokenRow],
    ctx: &TableContext,
    format: Format,
) -> Result<Vec<TableInfo>> {
    use rayon::prelude::*;
    use tables::*;
    // The tables are independent files: written side by side (in `Table::ALL` order).
    Table::ALL
        .par_iter()
        .map(|&t| match t {
            Table::Metrics => write_one(dir, t, &results.metrics, format, ctx, metrics_batch),
            Table::Iou => write_one(dir, t, &results.iou, format, ctx, iou_batch),
            Table::Heads => write_one(dir, t, &results.heads, format, ctx, heads_batch),
            Table::Tokens => write_one(dir, t, tokens, format, ctx, tokens_batch),
            Table::Maps => write_one(dir, t, &results.heads, format, ctx, maps_batch),
            Table::Selections => {
                write_one(dir, t, &results.selections, format, ctx, selections_batch)
            }
            Table::Eval => write_one(dir, t, &results.eval, format, ctx, eval_batch),
        })
        .collect()
}

/// Checks that a listed table file exists and, when its listing has one, that its SHA-256 is
/// the listed one.
pub fn check_table_file(path: &Path, info: &TableInfo) -> Result<()> {
    if !path.is_file() {
        return Err(file_err(
            path,
            format!(
                "missing table file (manifest.json lists it with {} rows)",
                info.rows
            ),
        ));
    }
    if !info.sha256.is_empty() {
        let got = sha256_file(path)?.sha256;
        if got != info.sha256 {
            return Err(file_err(
                path,
                format!(
                    "damaged or changed: its SHA-256 is {got}, manifest.json lists {}",
                    info.sha256
                ),
            ));
        }
    }
    Ok(())
}

/// Reads the tables listed in `infos` from `dir`, checking that each file exists, is readable
/// and has the rows the listing says.
pub fn read_tables(
    dir: &Path,
    infos: &[TableInfo],
    format: Format,
    block: usize,
) -> Result<(SimResults, Vec<TokenRow>)> {
    let load = |t: Table| -> Result<(PathBuf, Vec<RecordBatch>)> {
        let info = infos.iter().find(|i| i.name == t.name()).ok_or_else(|| {
            file_err(
                &dir.join("manifest.json"),
                format!("lists no '{}' table", t.name()),
            )
        })?;
        let path = dir.join(&info.file);
        check_table_file(&path, info)?;
        let batches = read_table(&path, format)?;
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        if rows != info.rows {
            return Err(file_err(
                &path,
                format!(
                    "has {rows} rows but manifest.json says {} (truncated or replaced?)",
                    info.rows
                ),
            ));
        }
        Ok((path, batches))
    };
    let (mp, m) = load(Table::Metrics)?;
    let (ip, i) = load(Table::Iou)?;
    let (hp, h) = load(Table::Heads)?;
    let (tp, t) = load(Table::Tokens)?;
    let (pp, p) = load(Table::Maps)?;
    let (sp, s) = load(Table::Selections)?;
    // Bundles written before `eval` existed do not list it: no evaluation rows.
    let eval = match infos.iter().any(|i| i.name == Table::Eval.name()) {
        true => {
            let (ep, e) = load(Table::Eval)?;
            tables::eval_rows(&e, &ep)?
        }
        false => Vec::new(),
    };
    let results = SimResults {
        eval,
        metrics: tables::metrics_rows(&m, &mp)?,
        iou: tables::iou_rows(&i, &ip)?,
        heads: tables::head_rows(&h, &hp, &p, &pp)?,
        selections: tables::selection_rows(&s, &sp, block)?,
        ..SimResults::default()
    };
    Ok((results, tables::token_rows(&t, &tp)?))
}

impl Bundle {
    /// The values tables repeat from the manifest.
    pub fn context(&self) -> TableContext {
        context_of(&self.manifest)
    }

    /// Number of inputs.
    pub fn n_inputs(&self) -> usize {
        self.manifest.data.inputs.len().max(1)
    }

    /// Writes the bundle into `self.dir` (created), filling in `manifest.tables` and the format
    /// version; refused when the folder holds a finished bundle, unless `force`.
    pub fn write(&mut self, force: bool) -> Result<()> {
        let dir = self.dir.clone();
        let mpath = dir.join("manifest.json");
        if mpath.exists() && !force {
            return Err(file_err(
                &dir,
                "already holds a finished run (manifest.json); pass --force to overwrite it",
            ));
        }
        std::fs::create_dir_all(&dir).map_err(|e| file_err(&dir, e))?;
        // Without a manifest the folder is an unfinished bundle until the very end.
        if mpath.exists() {
            std::fs::remove_file(&mpath).map_err(|e| file_err(&mpath, e))?;
        }
        self.manifest.format_version = FORMAT_VERSION;
        if self.manifest.tool.name.is_empty() {
            self.manifest.tool = ToolInfo::current();
        }
        let format = self.manifest.format;
        self.manifest.tables =
            write_tables(&dir, &self.results, &self.tokens, &self.context(), format)?;
        // Tables of the other format from an overwritten bundle would be stale.
        let other = match format {
            Format::Parquet => Format::Ipc,
            Format::Ipc => Format::Parquet,
        };
        for t in Table::ALL {
            let _ = std::fs::remove_file(dir.join(format!("{}.{}", t.name(), other.ext())));
        }
        write_json(&mpath, &self.manifest)
    }

    /// Reads a bundle, with errors that name the file at fault.
    pub fn read(dir: &Path) -> Result<Self> {
        let mpath = dir.join("manifest.json");
        if !mpath.is_file() {
            let why = match dir_state(dir) {
                DirState::Interrupted { done, missing } => format!(
                    "no manifest.json: {}; finish it with `attnscope simulate ... --resume` and \
                     the same options",
                    partial::describe_interrupted(dir, &done, &missing)
                ),
                _ if !dir.exists() => "no manifest.json: no such run directory".to_string(),
                _ => "no manifest.json: not a run directory, or the run did not finish".to_string(),
            };
            return Err(file_err(dir, why));
        }
        // Check the version before the typed parse: a newer manifest may not parse at all.
        let raw: serde_json::Value = read_json(&mpath)?;
        let version = match raw.get("format_version") {
            None => {
                return Err(file_err(
                    &mpath,
                    "no format_version: not an attnscope manifest",
                ))
            }
            Some(v) => v.as_u64().ok_or_else(|| {
                file_err(
                    &mpath,
                    format!("format_version {v} is not a version number"),
                )
            })?,
        };
        if version > u64::from(FORMAT_VERSION) {
            return Err(file_err(
                &mpath,
                format!(
                    "bundle format version {version} is newer than this attnscope reads \
                     ({FORMAT_VERSION}); upgrade attnscope (this is {} {})",
                    env!("CARGO_PKG_VERSION"),
                    GIT_REVISION
                ),
            ));
        }
        if version < 2 {
            return Err(file_err(
                &mpath,
                format!(
                    "bundle format version {version} (JSON tables) is no longer read; run \
                     `attnscope simulate` again"
                ),
            ));
        }
        let manifest: Manifest = serde_json::from_value(raw)
            .map_err(|e| file_err(&mpath, format!("invalid manifest: {e}")))?;
        check_manifest(&mpath, &manifest)?;
        let (results, tokens) = read_tables(
            dir,
            &manifest.tables,
            manifest.format,
            manifest.capture_block.max(1),
        )?;
        check_rows(&mpath, &manifest, &results)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            results,
            tokens,
            manifest,
        })
    }

    /// Reads the captured Q/K/V of input `input`, if the bundle has them.
    pub fn read_qkv(&self, input: usize) -> Result<Option<Vec<qkv::SavedLayer>>> {
        self.manifest
            .qkv
            .iter()
            .find(|q| q.input == input)
            .map(|q| qkv::read_qkv(&self.dir.join(&q.file)))
            .transpose()
    }
}

/// Refuses a manifest without the parts every reader needs: methods, budgets, simulated layers,
/// a capture block and the list of table files. An evaluation of dense attention alone (an eval
/// table, `eval --methods none`) has no methods.
fn check_manifest(path: &Path, m: &Manifest) -> Result<()> {
    let dense_eval = m.tables.iter().any(|t| t.name == "eval");
    let missing = [
        (m.methods.is_empty() && !dense_eval, "methods"),
        (m.budgets.is_empty(), "budgets"),
        (m.layers.is_empty(), "layers"),
        (m.capture_block == 0, "capture_block"),
        (m.tables.is_empty(), "tables"),
    ];
    if let Some((_, what)) = missing.iter().find(|x| x.0) {
        return Err(file_err(
            path,
            format!("lists no {what}: not a complete attnscope manifest"),
        ));
    }
    // Every file a manifest names lies in the bundle folder itself.
    let files = m
        .tables
        .iter()
        .map(|t| &t.file)
        .chain(m.qkv.iter().map(|q| &q.file));
    for f in files {
        let plain = Path::new(f).file_name().is_some_and(|n| n == f.as_str());
        if !plain || f.starts_with('.') {
            return Err(file_err(
                path,
                format!(
                    "names the file '{f}', which is not a plain file name in the bundle folder"
                ),
            ));
        }
    }
    Ok(())
}

/// Refuses rows that name a budget or method the manifest does not list.
fn check_rows(path: &Path, m: &Manifest, r: &SimResults) -> Result<()> {
    let known = |name: &str| m.methods.iter().any(|x| x.name == name);
    let budget = |b: usize| b < m.budgets.len();
    let bad = r
        .metrics
        .iter()
        .find(|x| !budget(x.budget) || !known(&x.method))
        .map(|x| (x.method.clone(), x.budget))
        .or_else(|| {
            r.iou
                .iter()
                .find(|x| !budget(x.budget) || !known(&x.method_a) || !known(&x.method_b))
                .map(|x| (format!("{} / {}", x.method_a, x.method_b), x.budget))
        })
        .or_else(|| {
            let dense =
                |x: &crate::results::EvalRow| x.method == crate::eval::DENSE && x.budget.is_none();
            r.eval
                .iter()
                .find(|x| !(dense(x) || (x.budget.is_some_and(budget) && known(&x.method))))
                .map(|x| (x.method.clone(), x.budget.unwrap_or(usize::MAX)))
        });
    match bad {
        Some((method, b)) => Err(file_err(
            path,
            format!(
                "the tables hold rows of method '{method}' at budget {b}, which the manifest \
                 does not list ({} methods, {} budgets)",
                m.methods.len(),
                m.budgets.len()
            ),
        )),
        None => Ok(()),
    }
}

/// The values tables repeat from a manifest.
pub fn context_of(m: &Manifest) -> TableContext {
    TableContext {
        run_id: m.run_id.clone(),
        params: m
            .methods
            .iter()
            .map(|x| {
                (
                    x.name.clone(),
                    serde_json::to_string(&x.params).unwrap_or_else(|_| "{}".into()),
                )
            })
            .collect(),
        budget_labels: m.budgets.iter().map(|b| b.label.clone()).collect(),
        block: m.map_block(),
    }
}

/// The file name of input `i`'s captured Q/K/V.
pub fn qkv_file_name(i: usize) -> String {
    format!("qkv-input{i}.safetensors")
}
