//! Interrupted runs. While a run is in progress its bundle folder holds `.partial/pending.json`
//! (the run's options and planned inputs) and, for each finished input, `.partial/input-I/`
//! (its tables as Arrow IPC and `done.json`, written last). `manifest.json` is written only when
//! the whole bundle is complete, so a folder without it is never mistaken for a finished run;
//! `simulate --resume` picks up the finished inputs and runs the rest.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::io::{file_err, read_json, write_json, Format};
use super::manifest::{InputInfo, QkvFile, TableInfo};
use super::tables::TableContext;
use super::{read_tables, write_tables};
use crate::error::{AnalysisError, Result};
use crate::results::{SimResults, TokenRow};

const PARTIAL: &str = ".partial";

/// What a run was started with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    pub format_version: u32,
    /// The options that decide the results (compared on resume).
    pub fingerprint: serde_json::Value,
    /// Planned inputs (index, text, seed).
    pub inputs: Vec<InputInfo>,
}

/// One finished input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DoneInput {
    pub info: InputInfo,
    pub seconds: f64,
    pub method_s: BTreeMap<String, f64>,
    pub qkv: Option<QkvFile>,
    pub tables: Vec<TableInfo>,
    /// Settings fitted on calibration text (see `Manifest::fitted`).
    #[serde(default)]
    pub fitted: Vec<crate::results::FittedRow>,
}

/// The state of an output folder.
#[derive(Debug, Clone, PartialEq)]
pub enum DirState {
    /// No folder, or an empty one (a lock file aside).
    Free,
    /// A finished bundle (`manifest.json`).
    Complete,
    /// An interrupted run: the inputs finished and those still missing.
    Interrupted {
        done: Vec<usize>,
        missing: Vec<usize>,
    },
    /// Bundle files whose resume state is missing or unreadable.
    Damaged { why: String },
    /// A folder holding files that are not a bundle's.
    Foreign { files: usize },
}

/// True for the names of the files a bundle writes (tables, manifest, Q/K/V, temporaries).
fn is_bundle_file(name: &str) -> bool {
    let stem = name.trim_end_matches(".partial");
    stem == "manifest.json"
        || (stem.starts_with("qkv-input") && stem.ends_with(".safetensors"))
        || super::schema::Table::ALL.iter().any(|t| {
            stem == format!("{}.parquet", t.name()) || stem == format!("{}.arrow", t.name())
        })
}

/// Reads the state of `dir`.
pub fn dir_state(dir: &Path) -> DirState {
    if dir.join("manifest.json").is_file() {
        return DirState::Complete;
    }
    if dir.join(PARTIAL).exists() {
        return match Partial::open(dir) {
            Ok(Some(p)) => {
                let done = p.done();
                let missing = p
                    .pending
                    .inputs
                    .iter()
                    .map(|x| x.index)
                    .filter(|i| !done.contains(i))
                    .collect();
                DirState::Interrupted { done, missing }
            }
            Ok(None) => DirState::Damaged {
                why: format!("{} has no pending.json", dir.join(PARTIAL).display()),
            },
            Err(e) => DirState::Damaged { why: e.to_string() },
        };
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return DirState::Free;
    };
    let names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != super::lock::LOCK_FILE)
        .collect();
    if names.is_empty() {
        DirState::Free
    } else if names.iter().any(|n| is_bundle_file(n)) {
        DirState::Damaged {
            why: "bundle files without manifest.json or a resume state (.partial)".into(),
        }
    } else {
        DirState::Foreign { files: names.len() }
    }
}

/// Describes an interrupted run: what is done and what is missing.
pub fn describe_interrupted(dir: &Path, done: &[usize], missing: &[usize]) -> String {
    let total = done.len() + missing.len();
    let missing: Vec<String> = missing.iter().map(usize::to_string).collect();
    format!(
        "{} holds an interrupted run: {} of {total} inputs finished (kept in {}); missing: \
         input(s) {}, the tables and manifest.json",
        dir.display(),
        done.len(),
        dir.join(PARTIAL).display(),
        if missing.is_empty() {
            "none".to_string()
        } else {
            missing.join(", ")
        },
    )
}

/// The `.partial` folder of a run in progress.
#[derive(Debug)]
pub struct Partial {
    dir: PathBuf,
    pub pending: Pending,
}

impl Partial {
    /// Starts tracking a new run in `bundle_dir` (writes `.partial/pending.json`).
    pub fn begin(bundle_dir: &Path, pending: Pending) -> Result<Self> {
        let dir = bundle_dir.join(PARTIAL);
        std::fs::create_dir_all(&dir).map_err(|e| file_err(&dir, e))?;
        write_json(&dir.join("pending.json"), &pending)?;
        Ok(Self { dir, pending })
    }

    /// Opens the interrupted run in `bundle_dir`, if any.
    pub fn open(bundle_dir: &Path) -> Result<Option<Self>> {
        let dir = bundle_dir.join(PARTIAL);
        let p = dir.join("pending.json");
        if !p.is_file() {
            return Ok(None);
        }
        let pending: Pending = read_json(&p)?;
        Ok(Some(Self { dir, pending }))
    }

    /// Refuses to resume with options that differ from the interrupted run's.
    pub fn check_same(&self, fingerprint: &serde_json::Value, inputs: &[InputInfo]) -> Result<()> {
        let mut diff = Vec::new();
        if let (Some(a), Some(b)) = (
            self.pending.fingerprint.as_object(),
            fingerprint.as_object(),
        ) {
            for k in a.keys().chain(b.keys()) {
                if a.get(k) != b.get(k) && !diff.contains(k) {
                    diff.push(k.clone());
                }
            }
        } else if self.pending.fingerprint != *fingerprint {
            diff.push("options".into());
        }
        let plan = |v: &[InputInfo]| -> Vec<(String, u64)> {
            v.iter().map(|i| (i.text.clone(), i.seed)).collect()
        };
        if plan(&self.pending.inputs) != plan(inputs) {
            diff.push("inputs (--text/--texts, --seed/--seeds)".into());
        }
        if diff.is_empty() {
            return Ok(());
        }
        Err(AnalysisError::Input(format!(
            "cannot resume {}: it was started with different options ({}); run again with the \
             same options, or pass --force to start over",
            self.dir.display(),
            diff.join(", ")
        )))
    }

    fn input_dir(&self, i: usize) -> PathBuf {
        self.dir.join(format!("input-{i}"))
    }

    /// Finished inputs.
    pub fn done(&self) -> Vec<usize> {
        self.pending
            .inputs
            .iter()
            .map(|x| x.index)
            .filter(|&i| self.input_dir(i).join("done.json").is_file())
            .collect()
    }

    /// Saves a finished input (tables first, `done.json` last).
    pub fn save(
        &self,
        i: usize,
        results: &SimResults,
        tokens: &[TokenRow],
        ctx: &TableContext,
        mut done: DoneInput,
    ) -> Result<()> {
        let d = self.input_dir(i);
        std::fs::create_dir_all(&d).map_err(|e| file_err(&d, e))?;
        done.tables = write_tables(&d, results, tokens, ctx, Format::Ipc)?;
        write_json(&d.join("done.json"), &done)
    }

    /// Loads a finished input.
    pub fn load(&self, i: usize, block: usize) -> Result<(SimResults, Vec<TokenRow>, DoneInput)> {
        let d = self.input_dir(i);
        let done: DoneInput = read_json(&d.join("done.json"))?;
        let (results, tokens) = read_tables(&d, &done.tables, Format::Ipc, block)?;
        Ok((results, tokens, done))
    }

    /// Removes the `.partial` folder once the bundle is complete.
    pub fn finish(self) -> Result<()> {
        std::fs::remove_dir_all(&self.dir).map_err(|e| file_err(&self.dir, e))
    }
}

/// Removes the files of a bundle (and of an interrupted run) from `dir`, leaving anything else.
pub fn clear_bundle(dir: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for e in entries.flatten() {
        if is_bundle_file(&e.file_name().to_string_lossy()) {
            std::fs::remove_file(e.path()).map_err(|err| file_err(&e.path(), err))?;
        }
    }
    let p = dir.join(PARTIAL);
    if p.exists() {
        std::fs::remove_dir_all(&p).map_err(|e| file_err(&p, e))?;
    }
    Ok(())
}

/// Checks an output folder before a run, without touching it: refuses a finished bundle, an
/// interrupted or damaged run, or a folder of other files, unless `force` (then
/// [`prepare_out`] clears the bundle files and keeps the others) or, for an interrupted run,
/// `resume`. Returns the folder's state.
pub fn check_out(dir: &Path, force: bool, resume: bool) -> Result<DirState> {
    let refuse = |msg: String| Err(AnalysisError::Input(msg));
    let state = dir_state(dir);
    match &state {
        DirState::Interrupted { .. } if resume => {}
        DirState::Damaged { why } if !force => {
            return refuse(format!(
                "{}: holds a damaged run ({why}); it cannot be resumed. Pass --force to start \
                 over (bundle files are removed, other files kept)",
                dir.display()
            ))
        }
        _ if resume => {
            return refuse(format!(
                "{}: nothing to resume (no interrupted run there); run without --resume",
                dir.display()
            ))
        }
        DirState::Free => {}
        _ if force => {}
        DirState::Complete => {
            return Err(file_err(
                dir,
                "already holds a finished run (manifest.json); pass --force to overwrite it",
            ))
        }
        DirState::Interrupted { done, missing } => {
            return refuse(format!(
                "{}. Pass --resume to continue it with the same options, or --force to start over",
                describe_interrupted(dir, done, missing)
            ))
        }
        // Refused above unless --force, which the arm `_ if force` takes.
        DirState::Damaged { .. } => {}
        DirState::Foreign { files } => {
            return refuse(format!(
                "{}: holds {files} file(s) that are not an attnscope run; choose another --out, \
                 or pass --force to write the run beside them (only bundle files are written)",
                dir.display()
            ))
        }
    }
    Ok(state)
}

/// Prepares an output folder ([`check_out`]): the interrupted run when resuming, else a folder
/// cleared of bundle files (with `force`) or new; creates the folder.
pub fn prepare_out(dir: &Path, force: bool, resume: bool) -> Result<Option<Partial>> {
    match check_out(dir, force, resume)? {
        DirState::Interrupted { .. } if resume => return Partial::open(dir),
        DirState::Free => {}
        _ => clear_bundle(dir)?,
    }
    std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
    Ok(None)
}
