//! [`BundleWriter`]: writes a run bundle input by input, shaped like arrow-rs writers
//! (`try_new`, `write_input`, `close`). It owns the manifest, the input numbering, the resume
//! state (`.partial`, see [`super::partial`]) and the hashing of the model's weights.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Instant;

use super::io::file_err;
use super::io::write_json;
use super::lock::OutputLock;
use super::manifest::{
    hash_weights, now_unix, FileHash, InputInfo, Manifest, QkvFile, FORMAT_VERSION,
};
use super::partial::{check_out, dir_state, prepare_out, DirState, DoneInput, Partial, Pending};
use super::qkv::write_qkv;
use super::{context_of, qkv_file_name, Bundle, TableContext};
use crate::error::{AnalysisError, Result};
use crate::input::SimInput;
use crate::results::{SimResults, TokenRow};

/// What to do with an output folder that already holds a bundle or an interrupted run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutMode {
    /// Refuse it.
    #[default]
    Fresh,
    /// Overwrite it.
    Force,
    /// Continue the interrupted run in it (the options must match).
    Resume,
}

/// One input written in this process: its rows, tokens and record.
type Written = (SimResults, Vec<TokenRow>, DoneInput);

/// Writes a bundle input by input. The manifest given to [`BundleWriter::try_new`] describes the
/// run (model, methods, budgets, layers, device, format); the writer adds the inputs, timings,
/// fitted settings, weight hashes and the table list.
#[derive(Debug)]
pub struct BundleWriter {
    dir: PathBuf,
    manifest: Manifest,
    plan: Vec<InputInfo>,
    partial: Partial,
    ctx: TableContext,
    /// Inputs finished by an earlier, interrupted process.
    resumed: Vec<usize>,
    written: BTreeMap<usize, Written>,
    hasher: Option<JoinHandle<(Result<Vec<FileHash>>, f64)>>,
    started: Instant,
    /// Held until the writer is closed or dropped.
    _lock: OutputLock,
}

impl BundleWriter {
    /// Opens `dir` for a run of `plan`: the inputs, numbered 0, 1, ... in order, or, for a part
    /// of a sweep ([`crate::shard`]), the part's inputs with their indices in the sweep
    /// (increasing). `fingerprint` holds the options that decide the results: a resumed run must
    /// have the same ones and the same plan. Hashing the weights of `manifest.model.source`
    /// starts at once, on a thread.
    pub fn try_new(
        dir: &Path,
        manifest: Manifest,
        plan: Vec<InputInfo>,
        fingerprint: serde_json::Value,
        mode: OutMode,
    ) -> Result<Self> {
        if plan.is_empty() {
            return Err(AnalysisError::Input(
                "no inputs: a run needs at least one".into(),
            ));
        }
        if plan.windows(2).any(|w| w[0].index >= w[1].index) {
            return Err(AnalysisError::Input(
                "inputs must be numbered in increasing order (0, 1, ... for a whole run)".into(),
            ));
        }
        let (force, resume) = (mode == OutMode::Force, mode == OutMode::Resume);
        // A folder of other files is refused before it is touched; then one writer at a time
        // (a run in progress is named as such), and the folder's state is checked under the lock.
        if let DirState::Foreign { .. } = dir_state(dir) {
            check_out(dir, force, resume)?;
        }
        std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
        let lock = OutputLock::acquire(dir)?;
        let partial = match prepare_out(dir, force, resume)? {
            Some(p) => {
                p.check_same(&fingerprint, &plan)?;
                p
            }
            None => Partial::begin(
                dir,
                Pending {
                    format_version: FORMAT_VERSION,
                    fingerprint,
                    inputs: plan.clone(),
                },
            )?,
        };
        let source = PathBuf::from(&manifest.model.source);
        let hasher = std::thread::spawn(move || {
            let t = Instant::now();
            (hash_weights(&source), t.elapsed().as_secs_f64())
        });
        Ok(Self {
            dir: dir.to_path_buf(),
            ctx: context_of(&manifest),
            resumed: partial.done(),
            manifest,
            plan,
            partial,
            written: BTreeMap::new(),
            hasher: Some(hasher),
            started: Instant::now(),
            _lock: lock,
        })
    }

    /// The planned inputs.
    pub fn plan(&self) -> &[InputInfo] {
        &self.plan
    }

    /// True when input `index` is finished (in this process or an earlier one).
    pub fn is_done(&self, index: usize) -> bool {
        self.resumed.contains(&index) || self.written.contains_key(&index)
    }

    /// Inputs finished by an earlier, interrupted process.
    pub fn resumed(&self) -> &[usize] {
        &self.resumed
    }

    /// Records input `index`'s results, saving them at once so that an interrupted run can
    /// resume: rows are tagged with the index, its Q/K/V (if saved) go to
    /// `qkv-input{index}.safetensors`, `seconds` is its simulation time.
    pub fn write_input(
        &mut self,
        index: usize,
        input: &SimInput,
        mut results: SimResults,
        seconds: f64,
    ) -> Result<()> {
        let planned = self.plan.iter().find(|p| p.index == index).ok_or_else(|| {
            AnalysisError::Input(format!("input {index} is not in the run's plan"))
        })?;
        if self.is_done(index) {
            return Err(AnalysisError::Input(format!(
                "input {index} is already written"
            )));
        }
        results.tag_input(index);
        check_finite(index, &results)?;
        let tokens = input.token_rows(index);
        let qkv = if results.qkv.is_empty() {
            None
        } else {
            let file = qkv_file_name(index);
            write_qkv(&self.dir.join(&file), index, &results.qkv)?;
            Some(QkvFile {
                input: index,
                file,
                layers: results.qkv.iter().map(|l| l.layer).collect(),
            })
        };
        results.qkv.clear();
        let done = DoneInput {
            info: InputInfo {
                index,
                name: input.name.clone(),
                text: planned.text.clone(),
                seed: planned.seed,
                n_tokens: input.len(),
                n_needles: input.needles.len(),
                start_char: input.start_char,
                repeated: input.repeated,
                ids_sha256: crate::input::ids_sha256(&input.ids),
            },
            seconds,
            method_s: results.method_seconds.clone(),
            qkv,
            tables: Vec::new(),
            fitted: std::mem::take(&mut results.fitted),
        };
        self.manifest
            .timings
            .pipeline
            .push(results.pipeline.summary());
        self.manifest.timings.layer_spans.extend(
            results
                .pipeline
                .layers
                .iter()
                .map(|&(l, h, s, f)| [index as f64, l as f64, h, s, f]),
        );
        self.partial
            .save(index, &results, &tokens, &self.ctx, done.clone())?;
        self.written.insert(index, (results, tokens, done));
        Ok(())
    }

    /// Writes the tables and `manifest.json` once every planned input is finished (inputs of an
    /// interrupted process are read back from `.partial`), and removes the resume state.
    pub fn close(mut self) -> Result<Bundle> {
        if let Some(missing) = self.plan.iter().find(|p| !self.is_done(p.index)) {
            return Err(AnalysisError::Input(format!(
                "input {} of the plan was not written",
                missing.index
            )));
        }
        let mut all = SimResults::default();
        let mut tokens = Vec::new();
        let block = self.manifest.capture_block;
        let indices: Vec<usize> = self.plan.iter().map(|p| p.index).collect();
        for i in indices {
            let (mut results, toks, d) = match self.written.remove(&i) {
                Some(w) => w,
                None => self.partial.load(i, block)?,
            };
            all.append(&mut results);
            tokens.extend(toks);
            self.add_input(i, d);
        }
        self.finish_manifest();
        let t = Instant::now();
        let mut bundle = Bundle {
            dir: self.dir.clone(),
            manifest: self.manifest,
            results: all,
            tokens,
        };
        bundle.manifest.timings.total_s = self.started.elapsed().as_secs_f64();
        bundle.manifest.timings.peak_host_bytes = crate::sim::peak_host_bytes().unwrap_or(0);
        bundle.write(false)?;
        bundle.manifest.timings.write_s = t.elapsed().as_secs_f64();
        bundle.manifest.timings.total_s = self.started.elapsed().as_secs_f64();
        // The manifest again, with the write time (the tables are unchanged).
        write_json(&self.dir.join("manifest.json"), &bundle.manifest)?;
        self.partial.finish()?;
        Ok(bundle)
    }

    /// Adds one finished input's record to the manifest.
    fn add_input(&mut self, i: usize, d: DoneInput) {
        let t = &mut self.manifest.timings;
        for (m, s) in &d.method_s {
            *t.method_s.entry(m.clone()).or_default() += s;
        }
        t.inputs_s.push(if self.resumed.contains(&i) {
            0.0
        } else {
            d.seconds
        });
        self.manifest.qkv.extend(d.qkv);
        // The calibration pass is the same for every input: keep one copy.
        if self.manifest.fitted.is_empty() {
            self.manifest.fitted = d.fitted;
        }
        self.manifest.data.inputs.push(d.info);
    }

    /// Token count, weight hashes and creation time.
    fn finish_manifest(&mut self) {
        let m = &mut self.manifest;
        m.n_tokens = m.data.inputs.first().map_or(0, |x| x.n_tokens);
        m.map_block = crate::results::maps::map_block(m.capture_block, m.n_tokens);
        match self.hasher.take().map(JoinHandle::join) {
            Some(Ok((Ok(files), s))) => {
                m.model.files = files;
                m.timings.hash_s = s;
            }
            Some(Ok((Err(e), _))) => m.warnings.push(format!("weights not hashed: {e}")),
            _ => m
                .warnings
                .push("weights not hashed: hashing thread failed".into()),
        }
        m.created_unix = now_unix();
    }
}

/// Refuses rows holding a non-finite number: no NaN reaches a bundle or a printed table. The
/// error names the input, layer, head, method and column of the first one.
fn check_finite(index: usize, r: &SimResults) -> Result<()> {
    for m in &r.metrics {
        let cols = [
            ("knob", m.knob),
            ("sparsity", m.sparsity),
            ("recall", m.recall),
            ("info_loss", m.info_loss),
            ("kl", m.kl),
            ("out_rel_err", m.out_rel_err),
            ("cosine", m.cosine),
            ("needle_recall", m.needle_recall.unwrap_or(0.0)),
        ];
        if let Some((col, v)) = cols.iter().find(|c| !c.1.is_finite()) {
            return Err(AnalysisError::Input(format!(
                "input {index}, layer {}, head {}, method {}: {col} is {v}; the run stops here \
                 rather than write it",
                m.layer, m.head, m.method
            )));
        }
    }
    let heads = r.heads.iter().find(|h| {
        !h.sink_mass.is_finite()
            || h.energy_share
                .iter()
                .chain(&h.agreement)
                .chain(&h.pooled)
                .any(|x| !x.is_finite())
    });
    if let Some(h) = heads {
        return Err(AnalysisError::Input(format!(
            "input {index}, layer {}, head {}: non-finite head statistics (sink mass {}); the run \
             stops here rather than write them",
            h.layer, h.head, h.sink_mass
        )));
    }
    Ok(())
}
