//! The simulation runner: an [`AttentionHook`] that, at every chosen layer, captures the exact
//! dense attention, replays every method on the same post-RoPE Q/K for every KV group, calibrates
//! each to the budget, and scores the selections with [`crate::metrics`]. Only one layer's data is
//! alive at a time; the layer continues with the exact dense output.

use attnscope_core::attention::{AttentionHook, HookAction, LayerQkv};
use attnscope_core::capture::{capture_layer, CaptureOptions, HeadCapture};
use ndarray::{s, Array2};
use serde::{Deserialize, Serialize};

use crate::budget::{resolve, sparsity_of, Budget};
use crate::error::Result;
use crate::freq::freq_dominance;
use crate::method::{GroupInput, Selector};
use crate::metrics::{evaluate_with, iou_pairs, kl, needle_recall, DenseHead};
use crate::registry::MethodInfo;
use crate::selection::Selection;

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
    /// Wall seconds per method (scoring, calibration and metrics), summed over layers and groups.
    #[serde(default)]
    pub method_seconds: std::collections::BTreeMap<String, f64>,
    /// Settings fitted on calibration text (methods labelled ours).
    #[serde(default)]
    pub fitted: Vec<FittedRow>,
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
}

/// Process CPU seconds so far (user + system, every thread; Linux `/proc/self/stat`, 10 ms
/// ticks), 0 where unavailable.
pub fn cpu_seconds() -> f64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let Some(rest) = s.rfind(')').map(|p| &s[p + 2..]) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

/// Wall and process CPU seconds spent per method (by label) and per phase of the runner
/// (`(capture)`, `(exact attention)`, `(iou)`, `(selections table)`, `(frequency)`).
#[derive(Debug, Default, Clone)]
pub struct Profile {
    pub seconds: std::collections::BTreeMap<String, (f64, f64)>,
}

impl Profile {
    /// A start mark: now, in wall and CPU time.
    pub fn mark() -> (std::time::Instant, f64) {
        (std::time::Instant::now(), cpu_seconds())
    }

    /// Adds the time since `mark` to `name`; returns the wall seconds.
    pub fn add(&mut self, name: &str, mark: (std::time::Instant, f64)) -> f64 {
        let wall = mark.0.elapsed().as_secs_f64();
        let e = self.seconds.entry(name.to_string()).or_default();
        e.0 += wall;
        e.1 += cpu_seconds() - mark.1;
        wall
    }
}

impl std::fmt::Debug for SimHook<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHook").finish_non_exhaustive()
    }
}

fn mean(xs: impl Iterator<Item = f64>) -> f64 {
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

/// The calibration pass: methods that fit settings (ours) see every chosen layer of the
/// calibration text, at the run's first budget.
struct CalibrationHook<'a> {
    cfg: &'a SimConfig,
    punct: &'a [bool],
    newline: &'a [bool],
}

impl AttentionHook for CalibrationHook<'_> {
    fn on_layer(&mut self, qkv: &LayerQkv<'_>) -> attnscope_core::Result<HookAction> {
        if !self
            .cfg
            .layers
            .as_ref()
            .is_none_or(|ls| ls.contains(&qkv.layer))
        {
            return Ok(HookAction::Dense);
        }
        let opts = CaptureOptions {
            block: self.cfg.capture_block,
            ..CaptureOptions::default()
        };
        let (heads, dense) = capture_layer(qkv, &opts);
        let budget = self
            .cfg
            .budgets
            .first()
            .copied()
            .unwrap_or(Budget::Sparsity(0.9));
        for m in self
            .cfg
            .methods
            .iter()
            .filter(|m| m.selector.needs_calibration())
        {
            for g in 0..qkv.n_kv_heads {
                let tensors = GroupTensors::new(qkv, g);
                let input = group_input(
                    qkv.layer,
                    &tensors,
                    &heads,
                    g,
                    self.punct,
                    self.newline,
                    self.cfg.capture_block,
                );
                m.selector.calibrate(&input, budget);
            }
        }
        Ok(HookAction::DenseOutput(dense))
    }
}

/// Text that methods which fit settings (ours) calibrate on before the run.
#[derive(Debug, Clone, Default)]
pub struct CalibrationText {
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

    /// Simulates one KV group of a layer.
    fn group(&mut self, qkv: &LayerQkv<'_>, heads: &[HeadCapture], dense: &Array2<f32>, g: usize) {
        let cfg = self.cfg;
        let (n, d) = (qkv.len(), qkv.head_dim);
        let gs = qkv.n_heads / qkv.n_kv_heads;
        let hs: Vec<usize> = (g * gs..(g + 1) * gs).collect();
        // Declared before `input` so that it outlives the scores it prepares from it.
        let oracle_topp = cfg
            .budgets
            .iter()
            .any(|b| matches!(b, Budget::TopP(_)))
            .then(|| crate::registry::find("oracle-topp").ok())
            .flatten()
            .and_then(|info| info.build_with(&[]).ok());
        let tensors = GroupTensors::new(qkv, g);
        let input = group_input(
            qkv.layer,
            &tensors,
            heads,
            g,
            self.punct,
            self.newline,
            cfg.capture_block,
        );
        let dense_heads: Vec<DenseHead<'_>> = hs
            .iter()
            .enumerate()
            .map(|(hi, &h)| DenseHead {
                q: tensors.q[hi].view(),
                k: tensors.k.view(),
                v: tensors.v.view(),
                lse: &heads[h].lse,
                dense_out: dense.slice(s![.., h * d..(h + 1) * d]),
            })
            .collect();
        // The exact attention of every q-head, computed once: the oracles rank it and every
        // method's metrics read it (not counted in any method's time).
        let t = Profile::mark();
        let probs = input.true_probs();
        self.profile.add("(exact attention)", t);
        let mut prepared = Vec::with_capacity(cfg.methods.len());
        for m in &cfg.methods {
            let t = Profile::mark();
            prepared.push(m.selector.prepare(&input));
            *self
                .results
                .method_seconds
                .entry(m.label.clone())
                .or_default() += self.profile.add(&m.label, t);
        }
        for (bi, &budget) in cfg.budgets.iter().enumerate() {
            let top_p_sparsity = match budget {
                Budget::TopP(p) => oracle_topp.as_ref().map(|o| {
                    let prep = o.prepare(&input);
                    match prep.kept_pairs_at(p) {
                        Some((kept, heads)) => crate::budget::sparsity_of_kept(kept, heads, n),
                        None => sparsity_of(&prep.select(p), n),
                    }
                }),
                _ => None,
            };
            let mut sels: Vec<Vec<Selection>> = Vec::new();
            for (m, prep) in cfg.methods.iter().zip(&prepared) {
                let t = Profile::mark();
                let cal = resolve(
                    m.selector.as_ref(),
                    prep.as_ref(),
                    budget,
                    n,
                    top_p_sparsity,
                );
                for (hi, &h) in hs.iter().enumerate() {
                    let sel = &cal.selections[hi];
                    let qm = evaluate_with(&dense_heads[hi], &probs[hi], sel);
                    let needle = mean(self.needles.iter().flat_map(|nd| {
                        nd.queries
                            .iter()
                            .filter_map(|&i| needle_recall(&dense_heads[hi], sel, i, nd.span))
                    }));
                    let qb = cfg.query_block.max(1);
                    self.results.metrics.push(MetricRow {
                        input: 0,
                        layer: qkv.layer,
                        head: h,
                        kv_head: g,
                        method: m.label.clone(),
                        budget: bi,
                        knob: cal.knob,
                        target_sparsity: cal.target,
                        sparsity: sparsity_of(std::slice::from_ref(sel), n),
                        recall: mean(qm.recall.iter().map(|&r| r as f64)),
                        info_loss: mean(qm.recall.iter().map(|&r| 1.0 - r as f64)),
                        kl: mean(qm.recall.iter().map(|&r| kl(r.max(f32::MIN_POSITIVE)))),
                        out_rel_err: mean(qm.out_rel_err.iter().map(|&e| e as f64)),
                        cosine: mean(qm.cosine.iter().map(|&c| c as f64)),
                        needle_recall: (!needle.is_nan()).then_some(needle),
                        reached: cal.reached,
                        recall_by_query_block: qm
                            .recall
                            .chunks(qb)
                            .map(|c| c.iter().sum::<f32>() / c.len() as f32)
                            .collect(),
                    });
                }
                sels.push(cal.selections);
                *self
                    .results
                    .method_seconds
                    .entry(m.label.clone())
                    .or_default() += self.profile.add(&m.label, t);
            }
            let t = Profile::mark();
            if cfg.selection_budgets.contains(&bi) {
                use rayon::prelude::*;
                let tasks: Vec<(usize, usize)> = (0..sels.len())
                    .flat_map(|m| (0..hs.len()).map(move |hi| (m, hi)))
                    .collect();
                let rows: Vec<crate::bundle::SelectionRow> = tasks
                    .par_iter()
                    .map(|&(m, hi)| {
                        crate::bundle::SelectionRow::compact(
                            &sels[m][hi],
                            cfg.capture_block,
                            (qkv.layer, hs[hi], g),
                            &cfg.methods[m].label,
                            bi,
                        )
                    })
                    .collect();
                self.results.selections.extend(rows);
            }
            self.profile.add("(selections table)", t);
            let t = Profile::mark();
            // IoU of every pair of methods, per q-head, then averaged over the group's q-heads.
            let per_head: Vec<Vec<f64>> = (0..gs)
                .map(|h| iou_pairs(&sels.iter().map(|s| &s[h]).collect::<Vec<_>>()))
                .collect();
            let mut p = 0;
            for a in 0..sels.len() {
                for b in a + 1..sels.len() {
                    let v = mean(per_head.iter().map(|x| x[p]));
                    p += 1;
                    self.results.iou.push(IouRow {
                        input: 0,
                        layer: qkv.layer,
                        kv_head: g,
                        budget: bi,
                        method_a: cfg.methods[a].label.clone(),
                        method_b: cfg.methods[b].label.clone(),
                        iou: v,
                    });
                }
            }
            self.profile.add("(iou)", t);
        }
        let t = Profile::mark();
        for (hi, &h) in hs.iter().enumerate() {
            let f = freq_dominance(input.q[hi], input.k, cfg.freq_top_k, cfg.freq_queries);
            let hc = &heads[h];
            self.results.heads.push(HeadRow {
                input: 0,
                layer: qkv.layer,
                head: h,
                kv_head: g,
                sink_mass: hc.mean_sink_mass() as f64,
                energy_share: f.energy_share,
                agreement: f.agreement,
                pooled: hc.pooled.iter().copied().collect(),
                n_blocks: hc.pooled.nrows(),
            });
        }
        self.profile.add("(frequency)", t);
    }
}

impl SimHook<'_> {
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
        self.replay(qkv, heads, dense)
    }

    fn inspects(&self, layer: usize) -> bool {
        self.wants(layer)
    }

    fn on_layer(&mut self, qkv: &LayerQkv<'_>) -> attnscope_core::Result<HookAction> {
        if !self.wants(qkv.layer) {
            return Ok(HookAction::Dense);
        }
        let t = Profile::mark();
        let (heads, dense) = capture_layer(qkv, &self.capture_opts());
        self.profile.add("(capture)", t);
        self.replay(qkv, heads, dense)
    }
}

impl SimHook<'_> {
    /// Replays every method on one captured layer and continues with the exact dense output.
    fn replay(
        &mut self,
        qkv: &LayerQkv<'_>,
        heads: Vec<HeadCapture>,
        dense: Array2<f32>,
    ) -> attnscope_core::Result<HookAction> {
        if self.cfg.save_qkv.contains(&qkv.layer) {
            self.results
                .qkv
                .push(crate::bundle::qkv::SavedLayer::from_layer(qkv));
        }
        for g in 0..qkv.n_kv_heads {
            self.group(qkv, &heads, &dense, g);
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
    let fits: Vec<&MethodRun> = cfg
        .methods
        .iter()
        .filter(|m| m.selector.needs_calibration())
        .collect();
    if let Some(m) = fits.first() {
        let Some(cal) = &cfg.calibration else {
            return Err(crate::AnalysisError::Input(format!(
                "method '{}' fits its settings on calibration text: pass --calibration-text",
                m.label
            )));
        };
        let mut hook = CalibrationHook {
            cfg,
            punct: &cal.punct,
            newline: &cal.newline,
        };
        model.forward(&cal.ids, &mut hook)?;
    }
    let mut hook = SimHook {
        cfg,
        punct,
        newline,
        needles,
        results: SimResults::default(),
        profile: Profile::default(),
    };
    model.forward_with_progress(ids, &mut hook, progress)?;
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
    Ok(hook.results)
}
