//! Methods scored and measured on the device.
//!
//! On a GPU forward pass (`attnscope simulate --device cuda`) every method that declares a
//! [`DeviceScoring`] ([`crate::method::Selector::device_scoring`]) runs here instead of on the
//! host, without this module knowing which method it is:
//! - [`DeviceScoring::Representatives`]: the method's key-block representatives (O(n d), made on
//!   the host by the method's own code) are scored against every query on the device
//!   ([`DeviceLayer::block_select_measure`]), the forced blocks and the top-k others are kept, and
//!   each selection is measured against the exact dense attention (recall, output error, cosine,
//!   kept pairs per query). The kept pairs at top-k depend only on `n`, the block and the forced
//!   blocks ([`RowCounts`]), so the knob is calibrated on the host before the device runs.
//! - [`DeviceScoring::BlockMassTopK`] and [`DeviceScoring::TileMaxTopK`]: top-k key blocks of an
//!   exact statistic the device computes (the block mass `P[i, b]`, the tile maximum of the
//!   attention), with the knob calibrated from the method's own kept-pair count (`device/oracles.rs`).
//!
//! `tests/gpu_block_methods.rs` compares every device path with the host path. Set
//! `ATTNSCOPE_GPU_METHODS=0` to run every method on the host.

use attnscope_core::attention::{BlockScoring, DeviceLayer, LayerQkv};

use crate::budget::{sparsity_of_kept_scored, Budget};
use crate::method::{DeviceScoring, GroupQueries, HeadKeys, MethodRun, RepresentativeRule};
use crate::results::{MetricRow, SimResults};
use crate::selection::Queries;
use crate::selection::Selection;

pub mod bench;
mod counts;
mod measure;
mod oracles;

pub use counts::{calibrate_counted, resolve_counted, resolve_counted_scored, Chosen, RowCounts};
use measure::{group_outs, Shape};
pub use measure::{metric_row, selection_of, selection_of_scored};

/// False when `ATTNSCOPE_GPU_METHODS=0` asks for the host path.
pub fn enabled() -> bool {
    std::env::var("ATTNSCOPE_GPU_METHODS").map_or(true, |v| v != "0")
}

/// What a run asks of the device: its budgets, the query block of the per-block recalls, the
/// capture block (the block of the device's own `P[i, b]`) and the queries scored (the device
/// selects and measures every query; calibration, metrics and selections keep the scored ones).
#[derive(Debug, Clone, Copy)]
pub struct DevicePlan<'a> {
    pub budgets: &'a [Budget],
    pub query_block: usize,
    pub capture_block: usize,
    pub queries: Queries,
}

/// The device scoring of a configured method over `n` tokens within `plan`: its declaration,
/// except that block-mass top-k runs on the device only at the capture block (the device's `P`),
/// and the exact-statistic oracles (whose kept-pair counts cover every query) only when every
/// query is scored.
pub fn scoring_of(plan: &DevicePlan<'_>, run: &MethodRun, n: usize) -> Option<DeviceScoring> {
    let all = plan.queries == Queries::All;
    run.selector.device_scoring(n).filter(|s| match *s {
        DeviceScoring::BlockMassTopK { block, .. } => all && block == plan.capture_block.max(1),
        DeviceScoring::TileMaxTopK { .. } => all,
        _ => true,
    })
}

/// The device's block scoring of `rule` for representatives of `m` rows and head dim `d`.
pub fn block_scoring<'a>(
    rule: &RepresentativeRule,
    reps: &'a [f32],
    reps_min: Option<&'a [f32]>,
    m: usize,
    d: usize,
) -> BlockScoring<'a> {
    BlockScoring {
        reps,
        reps_min,
        m,
        query_weights: None,
        scale: if rule.scaled {
            1.0 / (d as f32).sqrt()
        } else {
            1.0
        },
        vis_window: rule.vis_window,
        vis_stride: rule.vis_stride,
        transform: rule.transform,
        group_shared: rule.group_shared,
        pool: rule.pool,
        block: rule.block,
        n_init: rule.n_init,
        local: rule.local,
        force_own: rule.force_own,
    }
}

/// What the device measured for one method, budget and KV group.
#[derive(Debug, Clone, Default)]
pub struct GroupOut {
    pub rows: Vec<MetricRow>,
    /// One per q-head of the group (for IoU, the selections table), when kept.
    pub selections: Vec<Selection>,
    /// Wall seconds of this part.
    pub seconds: f64,
}

/// One layer's device results: `out[method][budget][kv group]` for the methods it ran.
#[derive(Debug, Default)]
pub struct DeviceLayerOut {
    pub out: Vec<Option<Vec<Vec<GroupOut>>>>,
    /// The device, e.g. `cuda:0 (NVIDIA H100 80GB HBM3)`.
    pub device: String,
}

impl DeviceLayerOut {
    /// True when method `mi` ran on the device.
    pub fn handles(&self, mi: usize) -> bool {
        self.out.get(mi).is_some_and(Option::is_some)
    }

    /// Appends method `mi`'s rows of budget `bi`, group `g` to `results` and its selections to
    /// `sels` (the host runner's list for IoU and the selections table).
    pub fn take(
        &self,
        mi: usize,
        bi: usize,
        g: usize,
        label: &str,
        results: &mut SimResults,
        sels: &mut Vec<Vec<Selection>>,
    ) {
        let Some(Some(per_budget)) = self.out.get(mi) else {
            return;
        };
        let Some(o) = per_budget.get(bi).and_then(|b| b.get(g)) else {
            return;
        };
        results.metrics.extend(o.rows.iter().cloned());
        sels.push(o.selections.clone());
        *results.method_seconds.entry(label.to_string()).or_default() += o.seconds;
    }
}

/// True when the device can take a run's methods at all: top-p budgets and needle recall read
/// host selections.
fn device_budgets(plan: &DevicePlan<'_>, has_needles: bool) -> bool {
    enabled() && !has_needles && !plan.budgets.iter().any(|b| matches!(b, Budget::TopP(_)))
}

/// Runs every method of `methods` that has a device scoring on one captured layer (after
/// [`DeviceLayer::capture`]); `None` when none does, the budgets need the host (top-p), or the
/// run has needles.
pub fn run_layer(
    plan: &DevicePlan<'_>,
    methods: &[MethodRun],
    qkv: &LayerQkv<'_>,
    device: &mut dyn DeviceLayer,
    keys: (&[bool], &[bool]),
    has_needles: bool,
) -> attnscope_core::Result<Option<DeviceLayerOut>> {
    let n = qkv.len();
    if !device_budgets(plan, has_needles) {
        return Ok(None);
    }
    let scorings: Vec<Option<DeviceScoring>> =
        methods.iter().map(|m| scoring_of(plan, m, n)).collect();
    if scorings.iter().all(Option::is_none) {
        return Ok(None);
    }
    let mut layer = DeviceLayerOut {
        out: Vec::with_capacity(methods.len()),
        device: device.device(),
    };
    for (run, scoring) in methods.iter().zip(&scorings) {
        let out = match scoring {
            None => None,
            Some(s) => Some(run_method(plan, run, s, qkv, device, keys, true)?),
        };
        layer.out.push(out);
    }
    Ok(Some(layer))
}

/// One method on one layer: `[budget][kv group]`.
pub fn run_method(
    plan: &DevicePlan<'_>,
    run: &MethodRun,
    scoring: &DeviceScoring,
    qkv: &LayerQkv<'_>,
    device: &mut dyn DeviceLayer,
    (punct, newline): (&[bool], &[bool]),
    keep_selections: bool,
) -> attnscope_core::Result<Vec<Vec<GroupOut>>> {
    let t = std::time::Instant::now();
    let mut out = match *scoring {
        DeviceScoring::Representatives(rule) => representatives(
            plan,
            run,
            &rule,
            qkv,
            device,
            (punct, newline),
            keep_selections,
        )?,
        DeviceScoring::Static { n_init } => {
            static_window(plan, run, n_init, qkv, device, keep_selections)?
        }
        DeviceScoring::BlockMassTopK { block, kept } => {
            oracles::block_mass_topk(plan, run, block, kept, qkv, device, keep_selections)?
        }
        DeviceScoring::TileMaxTopK { block, rank, kept } => {
            oracles::tile_max_topk(plan, run, (block, rank, kept), qkv, device, keep_selections)?
        }
    };
    // Wall time split evenly over budgets and groups (the runner adds it per group).
    let share = t.elapsed().as_secs_f64() / (out.len() * qkv.n_kv_heads).max(1) as f64;
    for groups in out.iter_mut() {
        for o in groups.iter_mut() {
            o.seconds = share;
        }
    }
    Ok(out)
}

/// A representative rule on one layer: the method's representatives of every KV head, the knob
/// calibrated on counted pairs, then scoring, top-k and measurement on the device.
fn representatives(
    plan: &DevicePlan<'_>,
    run: &MethodRun,
    rule: &RepresentativeRule,
    qkv: &LayerQkv<'_>,
    device: &mut dyn DeviceLayer,
    (punct, newline): (&[bool], &[bool]),
    keep_selections: bool,
) -> attnscope_core::Result<Vec<Vec<GroupOut>>> {
    let t = std::time::Instant::now();
    let (n, d) = (qkv.len(), qkv.head_dim);
    let (nkv, gs) = (qkv.n_kv_heads, qkv.n_heads / qkv.n_kv_heads);
    let (mut reps, mut mins, mut m) = (Vec::new(), Vec::new(), 0);
    for g in 0..nkv {
        let k = qkv.k_head(g).as_standard_layout().into_owned();
        let keys = HeadKeys {
            k: k.view(),
            punct,
            newline,
        };
        let r = run.selector.representatives(&keys).ok_or_else(|| {
            attnscope_core::CoreError::Input(format!(
                "{}: declares a representative rule but gives no representatives",
                run.label
            ))
        })?;
        m = r.reps.nrows();
        reps.extend(r.reps.iter().copied());
        if let Some(lo) = r.minima {
            mins.extend(lo.iter().copied());
        }
    }
    let weights = query_weights(run, qkv);
    let mut spec = block_scoring(rule, &reps, (!mins.is_empty()).then_some(&mins[..]), m, d);
    spec.query_weights = weights.as_deref();
    let counts = RowCounts::new(&spec, n);
    let min = run.selector.knob().min.max(0.0);
    let scored = plan.queries.of(n);
    let sparsity = |x: f64| {
        let k = x.max(min).round() as usize;
        sparsity_of_kept_scored(counts.kept_from(k, scored.first) * gs as u64, gs, scored)
    };
    let chosen: Vec<Chosen> = plan
        .budgets
        .iter()
        .map(|&b| resolve_counted_scored(run.selector.as_ref(), b, scored, &sparsity))
        .collect::<Option<_>>()
        .ok_or_else(top_p_on_host)?;
    let ks: Vec<usize> = chosen
        .iter()
        .map(|c| c.knob.max(min).round() as usize)
        .collect();
    let host_ms = t.elapsed().as_secs_f64() * 1e3;
    let td = std::time::Instant::now();
    let measured = device.block_select_measure(&spec, &ks, keep_selections)?;
    if std::env::var_os("ATTNSCOPE_GPU_PROFILE").is_some() {
        eprintln!(
            "{} layer {}: host representatives + calibration {host_ms:.2} ms, device call \
             {:.2} ms",
            run.label,
            qkv.layer,
            td.elapsed().as_secs_f64() * 1e3
        );
    }
    Ok(measured
        .iter()
        .zip(&chosen)
        .enumerate()
        .map(|(bi, (m, ch))| {
            let shape = Shape::of(qkv, plan, rule.block, bi);
            group_outs(
                m,
                &shape,
                &run.label,
                |_| ch,
                spec.group_shared,
                keep_selections,
            )
        })
        .collect())
}

/// The device rule of a static pattern at window `x` (rounded, at least 1): one-token blocks, the
/// first `n_init` tokens and the `x` most recent keys forced, nothing scored.
pub fn static_rule(n_init: usize, x: f64) -> BlockScoring<'static> {
    BlockScoring {
        reps: &[],
        reps_min: None,
        m: 0,
        query_weights: None,
        scale: 1.0,
        vis_window: 1,
        vis_stride: 1,
        transform: attnscope_core::attention::RepTransform::Raw,
        group_shared: true,
        pool: attnscope_core::attention::BlockPool::Identity,
        block: 1,
        n_init,
        local: (x.max(1.0).round() as usize) - 1,
        force_own: true,
    }
}

/// The method's query weights of every q-head of the layer (`[n_heads, head_dim]`), when it
/// declares them.
pub fn query_weights(run: &MethodRun, qkv: &LayerQkv<'_>) -> Option<Vec<f32>> {
    let gs = qkv.n_heads / qkv.n_kv_heads;
    let mut all = Vec::new();
    for g in 0..qkv.n_kv_heads {
        let q: Vec<_> = (g * gs..(g + 1) * gs).map(|h| qkv.q_head(h)).collect();
        let group = GroupQueries {
            layer: qkv.layer,
            kv_head: g,
            q,
            k: qkv.k_head(g),
        };
        all.extend(run.selector.query_weights(&group)?.iter().copied());
    }
    Some(all)
}

/// A static pattern on one layer: per budget, the window calibrated on counted pairs, then the
/// first `n_init` tokens and the window kept and measured on the device (nothing scored).
fn static_window(
    plan: &DevicePlan<'_>,
    run: &MethodRun,
    n_init: usize,
    qkv: &LayerQkv<'_>,
    device: &mut dyn DeviceLayer,
    keep_selections: bool,
) -> attnscope_core::Result<Vec<Vec<GroupOut>>> {
    let (n, gs) = (qkv.len(), qkv.n_heads / qkv.n_kv_heads);
    let spec = |x: f64| static_rule(n_init, x);
    let scored = plan.queries.of(n);
    let sparsity = |x: f64| {
        let kept = RowCounts::new(&spec(x), n).kept_from(0, scored.first);
        sparsity_of_kept_scored(kept * gs as u64, gs, scored)
    };
    let mut out = Vec::with_capacity(plan.budgets.len());
    for (bi, &b) in plan.budgets.iter().enumerate() {
        let ch = resolve_counted_scored(run.selector.as_ref(), b, scored, &sparsity)
            .ok_or_else(top_p_on_host)?;
        let m = device.block_select_measure(&spec(ch.knob), &[0], keep_selections)?;
        let m = m.first().ok_or_else(|| {
            attnscope_core::CoreError::Device("static pattern: no measurement".into())
        })?;
        let shape = Shape::of(qkv, plan, 1, bi);
        out.push(group_outs(
            m,
            &shape,
            &run.label,
            |_| &ch,
            true,
            keep_selections,
        ));
    }
    Ok(out)
}

/// The error of a top-p budget reaching the device (the runner keeps those on the host).
fn top_p_on_host() -> attnscope_core::CoreError {
    attnscope_core::CoreError::Input("top-p budgets run on the host".into())
}

/// Where each method runs over `n` tokens: `cuda` for the methods [`run_layer`] takes on a GPU
/// forward pass (`gpu` true), else `cpu`; by label.
pub fn method_devices(
    plan: &DevicePlan<'_>,
    methods: &[MethodRun],
    n: usize,
    gpu: bool,
    has_needles: bool,
) -> std::collections::BTreeMap<String, String> {
    let on = gpu && device_budgets(plan, has_needles);
    methods
        .iter()
        .map(|m| {
            let d = if on && scoring_of(plan, m, n).is_some() {
                "cuda"
            } else {
                "cpu"
            };
            (m.label.clone(), d.to_string())
        })
        .collect()
}
