//! One forward pass with the simulation: the calibration pass first (on a GPU) or beside it (on
//! the CPU), layer jobs on worker threads while the forward pass goes on, and the rows of every
//! layer gathered in layer order.

use super::calibration::CalibrationHook;
use super::gate::CalibrationGate;
use super::hook::SimHook;
use super::layer::{LayerJob, LayerOut};
use super::memory::{check_host_memory, layer_workers};
use super::{Pipeline, SimConfig};
use crate::error::Result;
use crate::input::SimInput;
use crate::method::MethodRun;
use crate::results::{FittedRow, SimResults};

/// Checks an input before a run: tokens, and flags of the same length.
fn check_input(input: &SimInput) -> Result<()> {
    if input.ids.is_empty() {
        return Err(crate::AnalysisError::Input(format!(
            "input '{}' has no tokens",
            input.name
        )));
    }
    if input.punct.len() != input.ids.len() || input.newline.len() != input.ids.len() {
        return Err(crate::AnalysisError::Input(format!(
            "input '{}': punctuation flags do not match its {} tokens",
            input.name,
            input.ids.len()
        )));
    }
    Ok(())
}

/// The calibration text, when a method fits settings on one (an error when none was given).
fn calibration_text<'c>(cfg: &'c SimConfig, fits: &[&MethodRun]) -> Result<Option<&'c SimInput>> {
    match (fits.first(), &cfg.calibration) {
        (None, _) => Ok(None),
        (Some(_), Some(cal)) => Ok(Some(cal)),
        (Some(m), None) => Err(crate::AnalysisError::Input(format!(
            "method '{}' fits its settings on calibration text: pass --calibration-text",
            m.label
        ))),
    }
}

/// Refuses what the simulator does not model rather than give a silently wrong answer. On the
/// host every layer's [`ScoreRule`](attnscope_core::attention::ScoreRule) is modelled (scale,
/// soft-capping, a sliding window: the exact attention, the oracles, the metrics and sparsity
/// follow it). The device path (`--device cuda`: the device capture, device methods and their
/// metrics) computes plain causal attention scaled by `1 / sqrt(head_dim)` only, so a run on a
/// device is refused when a simulated layer soft-caps, scales otherwise or has a window shorter
/// than an `n`-token input. The message names the layers and what to do.
pub(crate) fn check_attention_rule(
    model: &attnscope_core::Model,
    cfg: &SimConfig,
    n: Option<usize>,
) -> Result<()> {
    if model.device() == attnscope_core::Device::Cpu {
        return Ok(());
    }
    let c = &model.config;
    let plain = attnscope_core::attention::ScoreRule::plain(c.head_dim);
    let layers: Vec<usize> = cfg
        .layers
        .clone()
        .unwrap_or_else(|| (0..c.n_layers).collect());
    let hides = |w: usize| n.is_some_and(|n| w < n);
    let odd: Vec<String> = layers
        .iter()
        .filter(|&&l| {
            let r = c.score_rule(l);
            r.softcap.is_some() || r.scale != plain.scale || r.window.is_some_and(hides)
        })
        .map(|l| l.to_string())
        .collect();
    if odd.is_empty() {
        return Ok(());
    }
    Err(crate::AnalysisError::Input(format!(
        "layers {} soft-cap their logits, scale q . k by other than 1/sqrt(head_dim) or attend \
         over a sliding window shorter than the input: the device path computes plain causal \
         attention only; run these layers on the CPU (--device cpu), or pass --layers without them",
        odd.join(",")
    )))
}

/// The first failure of a method defined outside the library ([`crate::method::Selector::failure`]).
fn check_methods(cfg: &SimConfig) -> Result<()> {
    for m in &cfg.methods {
        if let Some(msg) = m.selector.failure() {
            return Err(crate::AnalysisError::Method {
                method: m.label.clone(),
                msg,
            });
        }
    }
    Ok(())
}

/// Runs the simulation of `cfg` over `input` with `model`.
pub(super) fn simulate(
    model: &attnscope_core::Model,
    input: &SimInput,
    cfg: &SimConfig,
    progress: &mut dyn FnMut(usize),
) -> Result<SimResults> {
    check_input(input)?;
    check_attention_rule(model, cfg, Some(input.len()))?;
    if let Some(c) = &cfg.calibration {
        check_attention_rule(model, cfg, Some(c.len()))?;
    }
    check_host_memory(cfg, model, input.len())?;
    let start = std::time::Instant::now();
    let fits: Vec<&MethodRun> = cfg
        .methods
        .iter()
        .filter(|m| m.selector.needs_calibration())
        .collect();
    let calibration = calibration_text(cfg, &fits)?;
    // On the CPU the calibration pass runs beside the simulation (layer jobs of a fitting method
    // wait for their layer's calibration); on a GPU it runs first.
    let gate = CalibrationGate::default();
    let beside = calibration.filter(|_| model.device() == attnscope_core::Device::Cpu);
    if let (Some(cal), None) = (calibration, beside) {
        model.forward(&cal.ids, &mut CalibrationHook::new(cfg, cal, None))?;
    }
    let mut hook = SimHook::new(cfg, input);
    hook.start = start;
    if beside.is_some() {
        hook.gate = Some(&gate);
    }
    let workers = layer_workers(cfg, model, input.len());
    let mut pipeline = Pipeline {
        workers,
        calibration_s: start.elapsed().as_secs_f64(),
        ..Pipeline::default()
    };
    let outs = forward_with_workers(model, &mut hook, beside, &gate, &mut pipeline, progress);
    check_methods(cfg)?;
    if super::stop_requested() {
        return Err(crate::AnalysisError::Stopped(format!(
            "input '{}' was interrupted before it finished",
            input.name
        )));
    }
    let mut outs = outs?;
    outs.sort_by_key(|o| o.layer);
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

/// The forward pass with `hook`, its layer jobs on `pipeline.workers` worker threads and the
/// calibration pass (`beside`) on a thread of its own; the layers' outputs, in finishing order.
/// The forward pass hands each captured layer to a free worker and goes on with the next layer;
/// a rendezvous channel bounds the layers alive at once to `workers` (+ the one being captured).
/// Each worker's methods still run in parallel on rayon's pool.
fn forward_with_workers(
    model: &attnscope_core::Model,
    hook: &mut SimHook<'_>,
    beside: Option<&SimInput>,
    gate: &CalibrationGate,
    pipeline: &mut Pipeline,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<LayerOut>> {
    let (cfg, start, ctx) = (hook.cfg, hook.start, hook.ctx());
    let (tx, rx) = std::sync::mpsc::sync_channel::<LayerJob>(0);
    let rx = std::sync::Mutex::new(rx);
    std::thread::scope(|scope| -> Result<Vec<LayerOut>> {
        let calibrating = beside.map(|cal| {
            scope.spawn(move || -> Result<f64> {
                calibrate_beside(model, cfg, cal, gate)?;
                Ok(start.elapsed().as_secs_f64())
            })
        });
        let handles: Vec<_> = (0..pipeline.workers)
            .map(|_| {
                let (rx, ctx) = (&rx, ctx);
                scope.spawn(move || {
                    let mut outs = Vec::new();
                    while let Ok(Ok(job)) = rx.lock().map(|r| r.recv()) {
                        outs.push(job.run(&ctx));
                    }
                    outs
                })
            })
            .collect();
        hook.jobs = Some(tx);
        let forward = model.forward_with_progress(&hook.input.ids, hook, progress);
        hook.jobs = None;
        pipeline.forward_end_s = start.elapsed().as_secs_f64();
        let mut outs = Vec::new();
        for h in handles {
            match h.join() {
                Ok(o) => outs.extend(o),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        if let Some(c) = calibrating {
            match c.join() {
                Ok(r) => pipeline.calibration_s = r?,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        forward?;
        Ok(outs)
    })
}

/// The calibration pass beside the simulation, on its own few threads (in the shared pool its
/// parallel loops would queue behind the layer jobs', while the first layer jobs wait for it);
/// `gate` learns of every layer and of the end.
fn calibrate_beside(
    model: &attnscope_core::Model,
    cfg: &SimConfig,
    cal: &SimInput,
    gate: &CalibrationGate,
) -> Result<()> {
    let r = rayon::ThreadPoolBuilder::new()
        .num_threads((rayon::current_num_threads() / 4).max(1))
        .build()
        .map_err(|e| {
            crate::AnalysisError::Input(format!("no threads for the calibration pass: {e}"))
        })
        .and_then(|pool| {
            let mut hook = CalibrationHook::new(cfg, cal, Some(gate));
            pool.install(|| model.forward(&cal.ids, &mut hook))?;
            Ok(())
        });
    gate.finish(r.is_ok());
    r
}
