//! The hook that runs the simulation inside the forward pass: at every chosen layer it captures
//! the exact dense attention (on the host, or on the device with the device methods run there),
//! hands the layer to a layer job ([`super::layer`]) and continues with the exact dense output.

use attnscope_core::attention::{AttentionHook, HookAction, LayerQkv};
use attnscope_core::capture::{capture_layer, CaptureOptions, HeadCapture};
use ndarray::Array2;

use super::gate::CalibrationGate;
use super::layer::{Ctx, LayerJob, LayerOut};
use super::{Profile, SimConfig};
use crate::input::SimInput;
use crate::results::SimResults;

/// The hook that runs the simulation layer by layer.
pub struct SimHook<'a> {
    pub cfg: &'a SimConfig,
    pub input: &'a SimInput,
    pub results: SimResults,
    /// Where the time went (benchmarks): methods by label, the rest by phase.
    pub profile: Profile,
    /// Layer jobs go to these workers when set (see [`super::run::simulate`]); else they run in
    /// the hook.
    pub(super) jobs: Option<std::sync::mpsc::SyncSender<LayerJob>>,
    /// The simulation's start (the origin of [`Pipeline`] times).
    pub(super) start: std::time::Instant,
    /// The calibration pass running beside the simulation, if any.
    pub(super) gate: Option<&'a CalibrationGate>,
}

impl<'a> SimHook<'a> {
    /// A hook that simulates each layer inside the forward pass (no worker threads).
    pub fn new(cfg: &'a SimConfig, input: &'a SimInput) -> Self {
        Self {
            cfg,
            input,
            results: SimResults::default(),
            profile: Profile::default(),
            jobs: None,
            start: std::time::Instant::now(),
            gate: None,
        }
    }

    pub(super) fn ctx(&self) -> Ctx<'a> {
        Ctx {
            start: self.start,
            gate: self.gate,
            cfg: self.cfg,
            input: self.input,
        }
    }

    /// Appends one layer's rows and times.
    pub(super) fn absorb(&mut self, out: LayerOut) {
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

impl SimHook<'_> {
    fn wants(&self, l: usize) -> bool {
        self.cfg.layers.as_ref().is_none_or(|ls| ls.contains(&l))
    }

    /// Key blocks of `capture_block` tokens; block masses of the scored queries only.
    fn capture_opts(&self, n: usize) -> CaptureOptions {
        CaptureOptions {
            block: self.cfg.capture_block,
            block_mass_from: self.cfg.queries.of(n).first,
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
        stop_check(qkv.layer)?;
        if !self.wants(qkv.layer) {
            return Ok(HookAction::Dense);
        }
        let (heads, dense) = device.capture(&self.capture_opts(qkv.len()))?;
        let plan = self.cfg.device_plan();
        let gpu = crate::device::run_layer(
            &plan,
            &self.cfg.methods,
            qkv,
            device,
            (&self.input.punct, &self.input.newline),
            !self.input.needles.is_empty(),
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
        stop_check(qkv.layer)?;
        if !self.wants(qkv.layer) {
            return Ok(HookAction::Dense);
        }
        let t = Profile::mark();
        let (heads, dense) = capture_layer(qkv, &self.capture_opts(qkv.len()));
        self.profile.add("(capture)", t);
        self.replay(qkv, heads, dense, None)
    }
}

/// The error that ends the forward pass at `layer` once a stop was asked for
/// ([`super::request_stop`]).
fn stop_check(layer: usize) -> attnscope_core::Result<()> {
    if super::stop_requested() {
        return Err(attnscope_core::CoreError::Input(format!(
            "stopped before layer {layer}: interrupted"
        )));
    }
    Ok(())
}

impl SimHook<'_> {
    /// Replays every method on one captured layer and continues with the exact dense output.
    fn replay(
        &mut self,
        qkv: &LayerQkv<'_>,
        heads: Vec<HeadCapture>,
        dense: Array2<f32>,
        gpu: Option<crate::device::DeviceLayerOut>,
    ) -> attnscope_core::Result<HookAction> {
        if self.cfg.save_qkv.contains(&qkv.layer) {
            self.results
                .qkv
                .push(crate::results::SavedLayer::from_layer(qkv));
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
