//! One layer's simulation as a self-contained job: the layer's Q/K/V per KV group, its exact
//! capture and dense output, owned, so that it can run on a worker thread while the forward pass
//! goes on to the next layers (see [`super::Simulation`]).

use attnscope_core::attention::LayerQkv;
use attnscope_core::capture::HeadCapture;
use ndarray::{s, Array2};

use super::group::{group_input, GroupTensors};
use super::replay::{calibrate_all, MethodOut};
use super::{Profile, SimConfig};
use crate::budget::{sparsity_of, Budget};
use crate::freq::freq_dominance;
use crate::input::SimInput;
use crate::method::GroupInput;
use crate::metrics::{evaluate_many, iou_pairs, kl, needle_recall, DenseHead, QueryMetrics};
use crate::results::{mean, HeadRow, IouRow, MetricRow, SelectionRow, SimResults};
use crate::selection::Selection;

/// What every layer job reads: the run's configuration and the input's masks and needles.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ctx<'a> {
    /// The origin of the [`super::Pipeline`] times.
    pub start: std::time::Instant,
    /// The calibration pass running beside the simulation, if any.
    pub gate: Option<&'a super::gate::CalibrationGate>,
    pub cfg: &'a SimConfig,
    pub input: &'a SimInput,
}

/// What a layer produced: its result rows and where its time went.
#[derive(Debug, Default)]
pub(crate) struct LayerOut {
    pub layer: usize,
    pub results: SimResults,
    pub profile: Profile,
    /// `(layer, handed over, started, finished)`, seconds from the simulation's start.
    pub span: (usize, f64, f64, f64),
}

impl LayerOut {
    /// Adds `wall` seconds of method `label` to the run's method times and the profile. With
    /// `alone` (the mark where the method started, when it ran by itself) the profile also gets
    /// the process CPU seconds since then.
    pub(crate) fn add_method_time(
        &mut self,
        label: &str,
        wall: f64,
        alone: Option<(std::time::Instant, f64)>,
    ) {
        *self
            .results
            .method_seconds
            .entry(label.to_string())
            .or_default() += wall;
        match alone {
            Some(mark) => self.profile.add(label, mark),
            None => self.profile.add_wall(label, wall),
        }
    }
}

/// One captured layer, owned.
pub(crate) struct LayerJob {
    layer: usize,
    n: usize,
    head_dim: usize,
    n_heads: usize,
    n_kv_heads: usize,
    groups: Vec<GroupTensors>,
    heads: Vec<HeadCapture>,
    /// Exact dense attention output `[n, n_heads * head_dim]`.
    dense: Array2<f32>,
    out: LayerOut,
    /// Methods already scored and measured on the device (see [`crate::device`]).
    gpu: Option<crate::device::DeviceLayerOut>,
}

impl LayerJob {
    /// Copies the layer's Q/K/V (per KV group, contiguous) beside its capture.
    pub fn new(
        qkv: &LayerQkv<'_>,
        heads: Vec<HeadCapture>,
        dense: Array2<f32>,
        start: std::time::Instant,
    ) -> Self {
        Self {
            layer: qkv.layer,
            n: qkv.len(),
            head_dim: qkv.head_dim,
            n_heads: qkv.n_heads,
            n_kv_heads: qkv.n_kv_heads,
            groups: (0..qkv.n_kv_heads)
                .map(|g| GroupTensors::new(qkv, g))
                .collect(),
            heads,
            dense,
            out: LayerOut {
                layer: qkv.layer,
                span: (qkv.layer, start.elapsed().as_secs_f64(), 0.0, 0.0),
                ..LayerOut::default()
            },
            gpu: None,
        }
    }

    /// Takes the results of the methods the device ran on this layer.
    pub fn with_gpu(mut self, gpu: Option<crate::device::DeviceLayerOut>) -> Self {
        self.gpu = gpu;
        self
    }

    /// Every method on every KV group of the layer.
    pub fn run(mut self, ctx: &Ctx<'_>) -> LayerOut {
        let mut out = std::mem::take(&mut self.out);
        // Methods that fit settings need this layer's calibration first. When that pass failed
        // the run stops with its error: nothing of this layer is kept.
        let fits = ctx
            .cfg
            .methods
            .iter()
            .any(|m| m.selector.needs_calibration());
        if let (true, Some(gate)) = (fits, ctx.gate) {
            if !gate.wait(self.layer) {
                return out;
            }
        }
        out.span.2 = ctx.start.elapsed().as_secs_f64();
        for g in 0..self.n_kv_heads {
            self.group(ctx, g, &mut out);
        }
        out.span.3 = ctx.start.elapsed().as_secs_f64();
        out
    }

    /// Simulates KV group `g` of the layer: every method prepared once, then per budget the
    /// calibrated selections, their metrics, the selections table and IoU; then the per-head
    /// statistics.
    fn group(&self, ctx: &Ctx<'_>, g: usize, out: &mut LayerOut) {
        let cfg = ctx.cfg;
        let d = self.head_dim;
        let gs = self.n_heads / self.n_kv_heads;
        let hs: Vec<usize> = (g * gs..(g + 1) * gs).collect();
        // Declared before `input` so that it outlives the scores it prepares from it.
        let oracle_topp = cfg
            .budgets
            .iter()
            .any(|b| matches!(b, Budget::TopP(_)))
            .then(|| crate::registry::top_p_reference().ok())
            .flatten();
        let tensors = &self.groups[g];
        let input = group_input(
            self.layer,
            tensors,
            &self.heads,
            g,
            &ctx.input.punct,
            &ctx.input.newline,
            cfg.capture_block,
            cfg.queries.of(self.n),
        );
        let dense_heads: Vec<DenseHead<'_>> = hs
            .iter()
            .enumerate()
            .map(|(hi, &h)| DenseHead {
                q: tensors.q[hi].view(),
                k: tensors.k.view(),
                v: tensors.v.view(),
                lse: &self.heads[h].lse,
                dense_out: self.dense.slice(s![.., h * d..(h + 1) * d]),
                rule: tensors.rule,
            })
            .collect();
        let gpu = self.gpu.as_ref();
        let on_gpu = |mi: usize| gpu.is_some_and(|x| x.handles(mi));
        // The exact attention of every q-head, computed once: the oracles rank it and every
        // method's metrics read it (not counted in any method's time).
        let t = Profile::mark();
        let probs = if (0..cfg.methods.len()).all(on_gpu) {
            &[][..]
        } else {
            // The raw scores and the exact attention from one set of products, shared by every
            // method scoring all pairs (the memory plan counts them). Everything the group
            // caches is built here, before the methods run side by side: none of them then
            // waits on another's first use.
            input.kt();
            input.exact_attention().1
        };
        out.profile.add("(exact attention)", t);
        let top_p: Vec<Option<f64>> = cfg
            .budgets
            .iter()
            .map(|&b| top_p_target(b, oracle_topp.as_deref(), &input))
            .collect();
        let by_budget = calibrate_all(cfg, &input, &on_gpu, &top_p, out);
        for (bi, done) in by_budget.into_iter().enumerate() {
            let run = MethodRunCtx {
                cfg,
                ctx,
                layer: self.layer,
                g,
                hs: &hs,
                bi,
                dense_heads: &dense_heads,
                probs,
            };
            let sels = run.selections_and_metrics(done, gpu, out);
            run.selection_rows(&sels, out);
            run.iou_rows(&sels, out);
        }
        self.head_rows(ctx, g, &input, out);
    }

    /// Sink mass, frequency dominance and the pooled map of every q-head of group `g`.
    fn head_rows(&self, ctx: &Ctx<'_>, g: usize, input: &GroupInput<'_>, out: &mut LayerOut) {
        let cfg = ctx.cfg;
        let gs = self.n_heads / self.n_kv_heads;
        let t = Profile::mark();
        for (hi, h) in (g * gs..(g + 1) * gs).enumerate() {
            let f = freq_dominance(input.q[hi], input.k, cfg.freq_top_k, cfg.freq_queries);
            let hc = &self.heads[h];
            let (pooled, n_blocks) =
                crate::results::maps::stored_map(hc.pooled.view(), cfg.capture_block, self.n);
            out.results.heads.push(HeadRow {
                input: 0,
                layer: self.layer,
                head: h,
                kv_head: g,
                sink_mass: hc.mean_sink_mass() as f64,
                energy_share: f.energy_share,
                agreement: f.agreement,
                pooled,
                n_blocks,
                block: crate::results::maps::map_block(cfg.capture_block, self.n),
            });
        }
        out.profile.add("(frequency)", t);
    }
}

/// The sparsity a top-p budget asks for: what exact top-p (`reference`) reaches on the group.
pub(crate) fn top_p_target<'a>(
    budget: Budget,
    reference: Option<&'a dyn crate::method::Selector>,
    input: &'a GroupInput<'a>,
) -> Option<f64> {
    let Budget::TopP(p) = budget else {
        return None;
    };
    reference.map(|o| {
        let prep = o.prepare(input);
        match crate::budget::counts_pairs(input.scored)
            .then(|| prep.kept_pairs_at(p))
            .flatten()
        {
            Some((kept, heads)) => {
                crate::budget::sparsity_of_kept_scored(kept, heads, input.scored)
            }
            None => {
                let sels: Vec<Selection> = prep
                    .select(p)
                    .into_iter()
                    .map(|s| s.restricted(input.scored))
                    .collect();
                sparsity_of(&sels)
            }
        }
    })
}

/// What one method's run on one budget of a KV group reads.
struct MethodRunCtx<'r, 'a> {
    cfg: &'r SimConfig,
    ctx: &'r Ctx<'a>,
    layer: usize,
    g: usize,
    hs: &'r [usize],
    bi: usize,
    dense_heads: &'r [DenseHead<'r>],
    probs: &'r [crate::metrics::TrueProbs],
}

impl MethodRunCtx<'_, '_> {
    /// Every host method's metrics on this budget from its calibrated selections (`done`, in
    /// method order, [`calibrate_all`]) in one pass, device methods' rows taken from `gpu`; the
    /// selections of every method, in method order, per q-head.
    fn selections_and_metrics(
        &self,
        done: Vec<Option<MethodOut>>,
        gpu: Option<&crate::device::DeviceLayerOut>,
        out: &mut LayerOut,
    ) -> Vec<Vec<Selection>> {
        let cfg = self.cfg;
        // Every host method's metrics in one pass per q-head, query by query (the
        // query's exact probabilities are read once for all methods).
        let t = Profile::mark();
        let metrics = self.metrics(&done);
        out.profile.add("(metrics)", t);
        let mut sels: Vec<Vec<Selection>> = Vec::with_capacity(done.len());
        for (mi, (m, (res, rows))) in cfg
            .methods
            .iter()
            .zip(done.into_iter().zip(metrics))
            .enumerate()
        {
            match res {
                Some(r) => {
                    out.results.metrics.extend(rows);
                    sels.push(r.cal.selections);
                }
                None => {
                    if let Some(x) = gpu {
                        x.take(mi, self.bi, self.g, &m.label, &mut out.results, &mut sels);
                    }
                }
            }
        }
        sels
    }

    /// The selections table's rows of this budget, when it is one of `selection_budgets`.
    fn selection_rows(&self, sels: &[Vec<Selection>], out: &mut LayerOut) {
        use rayon::prelude::*;
        let cfg = self.cfg;
        let t = Profile::mark();
        if cfg.selection_budgets.contains(&self.bi) {
            let tasks: Vec<(usize, usize)> = (0..sels.len())
                .flat_map(|m| (0..self.hs.len()).map(move |hi| (m, hi)))
                .collect();
            let rows: Vec<SelectionRow> = tasks
                .par_iter()
                .map(|&(m, hi)| {
                    SelectionRow::compact(
                        &sels[m][hi],
                        cfg.capture_block,
                        (self.layer, self.hs[hi], self.g),
                        &cfg.methods[m].label,
                        self.bi,
                    )
                })
                .collect();
            out.results.selections.extend(rows);
        }
        out.profile.add("(selections table)", t);
    }

    /// IoU of every pair of methods, per q-head, then averaged over the group's q-heads.
    fn iou_rows(&self, sels: &[Vec<Selection>], out: &mut LayerOut) {
        let t = Profile::mark();
        let per_head: Vec<Vec<f64>> = (0..self.hs.len())
            .map(|h| iou_pairs(&sels.iter().map(|s| &s[h]).collect::<Vec<_>>()))
            .collect();
        let mut p = 0;
        for a in 0..sels.len() {
            for b in a + 1..sels.len() {
                let v = mean(per_head.iter().map(|x| x[p]));
                p += 1;
                out.results.iou.push(IouRow {
                    input: 0,
                    layer: self.layer,
                    kv_head: self.g,
                    budget: self.bi,
                    method_a: self.cfg.methods[a].label.clone(),
                    method_b: self.cfg.methods[b].label.clone(),
                    iou: v,
                });
            }
        }
        out.profile.add("(iou)", t);
    }

    /// The metric rows of every method that ran on the host (`done`, in method order; empty
    /// for the others), each q-head's selections evaluated together ([`evaluate_many`]).
    fn metrics(&self, done: &[Option<MethodOut>]) -> Vec<Vec<MetricRow>> {
        let ran: Vec<(usize, &crate::budget::Calibrated)> = done
            .iter()
            .enumerate()
            .filter_map(|(mi, r)| r.as_ref().map(|r| (mi, &r.cal)))
            .collect();
        let mut rows: Vec<Vec<MetricRow>> = done.iter().map(|_| Vec::new()).collect();
        if ran.is_empty() {
            // Every method ran on the device: there are no host probabilities to read.
            return rows;
        }
        for hi in 0..self.hs.len() {
            let sels: Vec<&Selection> = ran.iter().map(|(_, cal)| &cal.selections[hi]).collect();
            let all = evaluate_many(&self.dense_heads[hi], &self.probs[hi], &sels);
            for ((&(mi, cal), qm), sel) in ran.iter().zip(all).zip(sels) {
                rows[mi].push(self.row(mi, hi, cal, sel, &qm));
            }
        }
        rows
    }

    /// Method `mi`'s row of the group's q-head `hi` from its per-query metrics.
    fn row(
        &self,
        mi: usize,
        hi: usize,
        cal: &crate::budget::Calibrated,
        sel: &Selection,
        qm: &QueryMetrics,
    ) -> MetricRow {
        let dh = &self.dense_heads[hi];
        let input = self.ctx.input;
        let needle = mean(input.needles.iter().flat_map(|nd| {
            let span = (nd.tokens.start, nd.tokens.end);
            input
                .question
                .iter()
                .filter_map(move |&i| needle_recall(dh, sel, i, span))
        }));
        let qb = self.cfg.query_block.max(1);
        MetricRow {
            input: 0,
            layer: self.layer,
            head: self.hs[hi],
            kv_head: self.g,
            method: self.cfg.methods[mi].label.clone(),
            budget: self.bi,
            knob: cal.knob,
            target_sparsity: cal.target,
            sparsity: sparsity_of(std::slice::from_ref(sel)),
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
        }
    }
}
