//! The simulation runner: an [`AttentionHook`] that, at every chosen layer, captures the exact
//! dense attention, replays every method on the same post-RoPE Q/K for every KV group, calibrates
//! each to the budget, and scores the selections with [`crate::metrics`]. The layer continues with
//! the exact dense output at once; its methods run as a layer job (`sim/layer.rs`) on a worker thread,
//! at most `layer_jobs` layers' data alive at a time (sized to the available memory).

use attnscope_core::attention::{AttentionHook, HookAction, LayerQkv};
use attnscope_core::capture::{capture_layer, CaptureOptions, HeadCapture};
use ndarray::Array2;
use serde::{Deserialize, Serialize};

use crate::budget::Budget;
use crate::error::Result;
use crate::method::{GroupInput, Selector};
use crate::registry::MethodInfo;

mod calibration;
mod layer;
mod memory;
mod timing;
use calibration::{CalibrationGate, CalibrationHook};
use layer::{Ctx, LayerJob, LayerOut};
pub use memory::{available_memory, layer_job_bytes, method_group_bytes};
use memory::{check_host_memory, layer_workers};
pub use timing::{cpu_seconds, Pipeline, Profile};

/// One method as configured for a run.
#[derive(Debug)]
pub struct MethodRun {
    /// The name in result rows: the method's name, or `name[param=value]` for sweep members.
    pub label: String,
    pub info: &'static MethodInfo,
    pub overrides: Vec<(String, f64)>,
    pub selector: Box<dyn Selector>,
}

/// A needle: a token span and the queries that must retrieve it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Needle {
    pub span: (usize, usize),
    pub queries: Vec<usize>,
}

/// What to simulate.
#[derive(Debug)]
pub struct SimConfig {
    pub methods: Vec<MethodRun>,
    pub budgets: Vec<Budget>,
    /// Layers to simulate (`None`: all).
    pub layers: Option<Vec<usize>>,
    /// Key block of the captured `P` and pooled maps.
    pub capture_block: usize,
    /// K of the frequency-chunk contextual agreement.
    pub freq_top_k: usize,
    /// Queries sampled per head for frequency dominance.
    pub freq_queries: usize,
    /// Query-block size of the per-query-block values kept for the viewer.
    pub query_block: usize,
    /// Budgets whose selections are compacted into `SimResults::selections`.
    pub selection_budgets: Vec<usize>,
    /// Layers whose post-RoPE Q/K/V are kept in `SimResults::qkv`.
    pub save_qkv: Vec<usize>,
    /// Calibration text for methods that fit settings (`None` when no method needs it).
    pub calibration: Option<CalibrationText>,
    /// Layers simulated at once on worker threads while the forward pass goes on (0: automatic,
    /// see [`simulate`]).
    pub layer_jobs: usize,
    /// Methods run side by side within a KV group (0: all of them; 1: one after another, which
    /// keeps each method's CPU seconds apart in a profile).
    pub method_jobs: usize,
}

/// Metrics of one (layer, q-head, method, budget).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricRow {
    /// Input index of a run over several inputs (0 for one input).
    #[serde(default)]
    pub input: usize,
    pub layer: usize,
    pub head: usize,
    pub kv_head: usize,
    pub method: String,
    pub budget: usize,
    pub knob: f64,
    pub target_sparsity: f64,
    pub sparsity: f64,
    pub recall: f64,
    pub info_loss: f64,
    pub kl: f64,
    pub out_rel_err: f64,
    pub cosine: f64,
    pub needle_recall: Option<f64>,
    pub reached: bool,
    /// Mean recall per query block (viewer).
    pub recall_by_query_block: Vec<f32>,
}

/// IoU of two methods' selections on one (layer, KV group), averaged over its q-heads and queries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IouRow {
    #[serde(default)]
    pub input: usize,
    pub layer: usize,
    pub kv_head: usize,
    pub budget: usize,
    pub method_a: String,
    pub method_b: String,
    pub iou: f64,
}

/// Per-head statistics that do not depend on a method.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadRow {
    #[serde(default)]
    pub input: usize,
    pub layer: usize,
    pub head: usize,
    pub kv_head: usize,
    pub sink_mass: f64,
    pub energy_share: Vec<f32>,
    pub agreement: Vec<f32>,
    /// `[n_blocks * n_blocks]` row-major pooled map (mean P over each query block).
    pub pooled: Vec<f32>,
    pub n_blocks: usize,
}

/// Everything a run measured.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct SimResults {
    pub metrics: Vec<MetricRow>,
    pub iou: Vec<IouRow>,
    pub heads: Vec<HeadRow>,
    /// Compacted selections of the budgets in `SimConfig::selection_budgets` (bundle table).
    #[serde(default)]
    pub selections: Vec<crate::bundle::SelectionRow>,
    /// Captured Q/K/V of the layers in `SimConfig::save_qkv`.
    #[serde(skip)]
    pub qkv: Vec<crate::bundle::qkv::SavedLayer>,
    /// Wall seconds per method (scoring and calibration; on a GPU metrics too), summed over
    /// layers and groups. The host methods' metrics are the profile's `(metrics)` phase.
    #[serde(default)]
    pub method_seconds: std::collections::BTreeMap<String, f64>,
    /// Settings fitted on calibration text (methods labelled ours).
    #[serde(default)]
    pub fitted: Vec<FittedRow>,
    /// How the run's wall time was spent (not saved).
    #[serde(skip)]
    pub pipeline: Pipeline,
}

/// The hook that runs the simulation layer by layer.
pub struct SimHook<'a> {
    pub cfg: &'a SimConfig,
    pub punct: &'a [bool],
    pub newline: &'a [bool],
    pub needles: &'a [Needle],
    pub results: SimResults,
    /// Where the time went (benchmarks): methods by label, the rest by phase.
    pub profile: Profile,
    /// Layer jobs go to these workers when set (see [`simulate`]); else they run in the hook.
    jobs: Option<std::sync::mpsc::SyncSender<LayerJob>>,
    /// The simulation's start (the origin of [`Pipeline`] times).
    start: std::time::Instant,
    /// The calibration pass running beside the simulation, if any.
    gate: Option<&'a CalibrationGate>,
}

impl<'a> SimHook<'a> {
    /// A hook that simulates each layer inside the forward pass (no worker threads).
    pub fn new(
        cfg: &'a SimConfig,
        punct: &'a [bool],
        newline: &'a [bool],
        needles: &'a [Needle],
    ) -> Self {
        Self {
            cfg,
            punct,
            newline,
            needles,
            results: SimResults::default(),
            profile: Profile::default(),
            jobs: None,
            start: std::time::Instant::now(),
            gate: None,
        }
    }

    fn ctx(&self) -> Ctx<'a> {
        Ctx {
            start: self.start,
            gate: self.gate,
            cfg: self.cfg,
            punct: self.punct,
            newline: self.newline,
            needles: self.needles,
        }
    }

    /// Appends one layer's rows and times.
    fn absorb(&mut self, out: LayerOut) {
        let r = out.results;
        self.results.metrics.extend(r.metrics);
        self.results.iou.extend(r.iou);
        self.results.heads.extend(r.heads);
        self.results.selections.extend(r.selections);
        for (k, v) in r.method_seconds {
            *self.results.method_seconds.entry(k).or_default() += v;
        }
        for (k, (w, c)) in out.profile.seconds {
            let e = self.profile.seconds.entry(k).or_default();
            e.0 += w;
            e.1 += c;
        }
    }
}

impl std::fmt::Debug for SimHook<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHook").finish_non_exhaustive()
    }
}

/// Mean of `xs`, NaN when empty (the per-head and per-method aggregates of every table).
pub fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let (s, c) = xs.fold((0.0, 0usize), |(s, c), x| (s + x, c + 1));
    if c == 0 {
        f64::NAN
    } else {
        s / c as f64
    }
}

/// Contiguous copies of one KV group's Q (per q-head), K and V: matrix products pack them
/// faster than strided views of the layer, and the values are the same.
struct GroupTensors {
    q: Vec<Array2<f32>>,
    k: Array2<f32>,
    v: Array2<f32>,
}

impl GroupTensors {
    fn new(qkv: &LayerQkv<'_>, g: usize) -> Self {
        let gs = qkv.n_heads / qkv.n_kv_heads;
        Self {
            q: (g * gs..(g + 1) * gs)
                .map(|h| qkv.q_head(h).as_standard_layout().into_owned())
                .collect(),
            k: qkv.k_head(g).as_standard_layout().into_owned(),
            v: qkv.v_head(g).as_standard_layout().into_owned(),
        }
    }
}

/// The method input of KV group `g` of a captured layer.
fn group_input<'a>(
    layer: usize,
    t: &'a GroupTensors,
    heads: &'a [HeadCapture],
    g: usize,
    punct: &'a [bool],
    newline: &'a [bool],
    capture_block: usize,
) -> GroupInput<'a> {
    let gs = t.q.len();
    GroupInput {
        layer,
        kv_head: g,
        q: t.q.iter().map(|q| q.view()).collect(),
        k: t.k.view(),
        v: t.v.view(),
        punct,
        newline,
        truth: heads[g * gs..(g + 1) * gs].iter().collect(),
        capture_block,
        cache: Default::default(),
    }
}

/// Text that methods which fit settings (ours) calibrate on before the run.
#[derive(Debug, Clone, Default)]
pub struct CalibrationText {
    /// Corpus text name or file.
    pub name: String,
    pub ids: Vec<u32>,
    pub punct: Vec<bool>,
    pub newline: Vec<bool>,
}

/// A setting a method fitted on calibration text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FittedRow {
    pub method: String,
    pub layer: usize,
    pub param: String,
    pub value: f64,
}

impl SimHook<'_> {
    fn wants(&self, l: usize) -> bool {
        self.cfg.layers.as_ref().is_none_or(|ls| ls.contains(&l))
    }

    fn capture_opts(&self) -> CaptureOptions {
        CaptureOptions {
            block: self.cfg.capture_block,
            ..CaptureOptions::default()
        }
    }
}

impl AttentionHook for SimHook<'_> {
    /// On a GPU forward pass the exact capture is computed on the device; the methods and
    /// metrics then run on the host exactly as in [`AttentionHook::on_layer`].
    fn on_layer_device(
        &mut self,
        qkv: &LayerQkv<'_>,
        device: &mut dyn attnscope_core::attention::DeviceLayer,
    ) -> attnscope_core::Result<HookAction> {
        if !self.wants(qkv.layer) {
            return Ok(HookAction::Dense);
        }
        let (heads, dense) = device.capture(&self.capture_opts())?;
        let gpu = crate::gpu_methods::run_layer(
            self.cfg,
            qkv,
            device,
            self.punct,
            self.newline,
            !self.needles.is_empty(),
        )?;
        self.replay(qkv, heads, dense, gpu)
    }

    fn inspects(&self, layer: usize) -> bool {
        self.wants(layer)
    }

    fn on_layer(&mut self, qkv: &LayerQkv<'_>) -> attnscope_core::Result<HookAction> {
        if self.gate.is_some_and(CalibrationGate::failed) {
            return Err(attnscope_core::CoreError::Input(
                "stopped: the calibration pass beside the simulation failed".into(),
            ));
        }
        if !self.wants(qkv.layer) {
            return Ok(HookAction::Dense);
        }
        let t = Profile::mark();
        let (heads, dense) = capture_layer(qkv, &self.capture_opts());
        self.profile.add("(capture)", t);
        self.replay(qkv, heads, dense, None)
    }
}

impl SimHook<'_> {
    /// Replays every method on one captured layer and continues with the exact dense output.
    fn replay(
        &mut self,
        qkv: &LayerQkv<'_>,
        heads: Vec<HeadCapture>,
        dense: Array2<f32>,
        gpu: Option<crate::gpu_methods::GpuLayer>,
    ) -> attnscope_core::Result<HookAction> {
        if self.cfg.save_qkv.contains(&qkv.layer) {
            self.results
                .qkv
                .push(crate::bundle::qkv::SavedLayer::from_layer(qkv));
        }
        let job = LayerJob::new(qkv, heads, dense.clone(), self.start).with_gpu(gpu);
        match &self.jobs {
            Some(tx) => {
                // A closed channel means a worker died; its panic surfaces when it is joined.
                let _ = tx.send(job);
            }
            None => {
                let out = job.run(&self.ctx());
                self.absorb(out);
            }
        }
        Ok(HookAction::DenseOutput(dense))
    }
}

/// Per-method overall means over every (layer, q-head) of one budget (each head has the same
/// number of queries, so this weighs every (layer, q-head, query) equally).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodSummary {
    pub name: String,
    pub budget: usize,
    pub target_sparsity: f64,
    pub sparsity: f64,
    pub recall: f64,
    pub info_loss: f64,
    pub kl: f64,
    pub out_rel_err: f64,
    pub cosine: f64,
    pub needle_recall: Option<f64>,
    /// Fraction of (layer, KV group) calibrations that reached the target within tolerance.
    pub reached: f64,
}

/// Aggregates metric rows per (method, budget), in first-seen method order.
pub fn summarize(rows: &[MetricRow]) -> Vec<MethodSummary> {
    let mut keys: Vec<(String, usize)> = Vec::new();
    for r in rows {
        if !keys.iter().any(|(m, b)| *m == r.method && *b == r.budget) {
            keys.push((r.method.clone(), r.budget));
        }
    }
    keys.sort_by_key(|k| k.1);
    keys.into_iter()
        .map(|(name, budget)| {
            let rs: Vec<&MetricRow> = rows
                .iter()
                .filter(|r| r.method == name && r.budget == budget)
                .collect();
            let needle = mean(rs.iter().filter_map(|r| r.needle_recall));
            MethodSummary {
                target_sparsity: mean(rs.iter().map(|r| r.target_sparsity)),
                sparsity: mean(rs.iter().map(|r| r.sparsity)),
                recall: mean(rs.iter().map(|r| r.recall)),
                info_loss: mean(rs.iter().map(|r| r.info_loss)),
                kl: mean(rs.iter().map(|r| r.kl)),
                out_rel_err: mean(rs.iter().map(|r| r.out_rel_err)),
                cosine: mean(rs.iter().map(|r| r.cosine)),
                needle_recall: (!needle.is_nan()).then_some(needle),
                reached: mean(rs.iter().map(|r| if r.reached { 1.0 } else { 0.0 })),
                name,
                budget,
            }
        })
        .collect()
}

/// Runs the simulation over `ids` with `model`.
pub fn simulate(
    model: &attnscope_core::Model,
    ids: &[u32],
    punct: &[bool],
    newline: &[bool],
    needles: &[Needle],
    cfg: &SimConfig,
    progress: &mut dyn FnMut(usize),
) -> Result<SimResults> {
    if let Some(ls) = &cfg.layers {
        if let Some(&bad) = ls.iter().find(|&&l| l >= model.config.n_layers) {
            return Err(crate::AnalysisError::Input(format!(
                "layer {bad} is out of range: the model has layers 0..{}",
                model.config.n_layers - 1
            )));
        }
    }
    if punct.len() != ids.len() || newline.len() != ids.len() {
        return Err(crate::AnalysisError::Input(
            "punctuation masks do not match the token count".into(),
        ));
    }
    check_host_memory(cfg, model, ids.len())?;
    let start = std::time::Instant::now();
    let fits: Vec<&MethodRun> = cfg
        .methods
        .iter()
        .filter(|m| m.selector.needs_calibration())
        .collect();
    let calibration = match fits.first() {
        Some(m) => match &cfg.calibration {
            Some(cal) => Some(cal),
            None => {
                return Err(crate::AnalysisError::Input(format!(
                    "method '{}' fits its settings on calibration text: pass --calibration-text",
                    m.label
                )))
            }
        },
        None => None,
    };
    // On the CPU the calibration pass runs beside the simulation (layer jobs of a fitting method
    // wait for their layer's calibration); on a GPU it runs first.
    let gate = CalibrationGate::default();
    let beside = calibration.filter(|_| model.device() == attnscope_core::Device::Cpu);
    if let (Some(cal), None) = (calibration, beside) {
        model.forward(&cal.ids, &mut CalibrationHook::new(cfg, cal, None))?;
    }
    let mut calibration_s = start.elapsed().as_secs_f64();
    let mut hook = SimHook::new(cfg, punct, newline, needles);
    hook.start = start;
    if beside.is_some() {
        hook.gate = Some(&gate);
    }
    let workers = layer_workers(cfg, model, ids.len());
    let ctx = hook.ctx();
    // The forward pass hands each captured layer to a free worker and goes on with the next
    // layer; a rendezvous channel bounds the layers alive at once to `workers` (+ the one being
    // captured). Each worker's methods still run in parallel on rayon's pool.
    let mut forward_end_s = 0.0;
    let (tx, rx) = std::sync::mpsc::sync_channel::<LayerJob>(0);
    let rx = std::sync::Mutex::new(rx);
    let outs = std::thread::scope(|scope| -> Result<Vec<LayerOut>> {
        let calibrating = beside.map(|cal| {
            let gate = &gate;
            scope.spawn(move || -> Result<f64> {
                // Its own few threads: in the shared pool its parallel loops would queue behind
                // the layer jobs', while the first layer jobs wait for it.
                let r = rayon::ThreadPoolBuilder::new()
                    .num_threads((rayon::current_num_threads() / 4).max(1))
                    .build()
                    .map_err(|e| {
                        crate::AnalysisError::Input(format!(
                            "no threads for the calibration pass: {e}"
                        ))
                    })
                    .and_then(|pool| {
                        let mut hook = CalibrationHook::new(cfg, cal, Some(gate));
                        pool.install(|| model.forward(&cal.ids, &mut hook))?;
                        Ok(())
                    });
                gate.finish(r.is_ok());
                r?;
                Ok(start.elapsed().as_secs_f64())
            })
        });
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                let (rx, ctx) = (&rx, ctx);
                scope.spawn(move || {
                    let mut outs = Vec::new();
                    loop {
                        let job = match rx.lock() {
                            Ok(r) => r.recv(),
                            Err(_) => break,
                        };
                        match job {
                            Ok(job) => outs.push(job.run(&ctx)),
                            Err(_) => break,
                        }
                    }
                    outs
                })
            })
            .collect();
        hook.jobs = Some(tx);
        let forward = model.forward_with_progress(ids, &mut hook, progress);
        hook.jobs = None;
        forward_end_s = start.elapsed().as_secs_f64();
        let mut outs = Vec::new();
        for h in handles {
            match h.join() {
                Ok(o) => outs.extend(o),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        if let Some(c) = calibrating {
            match c.join() {
                Ok(r) => calibration_s = r?,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        forward?;
        Ok(outs)
    })?;
    let mut outs = outs;
    outs.sort_by_key(|o| o.layer);
    let mut pipeline = Pipeline {
        workers,
        calibration_s,
        forward_end_s,
        ..Pipeline::default()
    };
    for o in outs {
        pipeline.layers.push(o.span);
        hook.absorb(o);
    }
    for m in fits {
        hook.results.fitted.extend(
            m.selector
                .fitted()
                .into_iter()
                .map(|(layer, param, value)| FittedRow {
                    method: m.label.clone(),
                    layer,
                    param,
                    value,
                }),
        );
    }
    pipeline.end_s = start.elapsed().as_secs_f64();
    hook.results.pipeline = pipeline;
    Ok(hook.results)
}
