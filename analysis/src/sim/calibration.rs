//! The calibration pass of methods that fit settings (ours): a forward pass over the calibration
//! text, before the simulation or beside it ([`CalibrationGate`]).

use attnscope_core::attention::{AttentionHook, HookAction, LayerQkv};
use attnscope_core::capture::{capture_layer, CaptureOptions};

use super::hook::{group_input, GroupTensors};
use super::SimConfig;
use crate::budget::Budget;
use crate::input::SimInput;

/// The calibration pass: methods that fit settings (ours) see every chosen layer of the
/// calibration text, at the run's first budget.
pub(super) struct CalibrationHook<'a> {
    cfg: &'a SimConfig,
    punct: &'a [bool],
    newline: &'a [bool],
    /// Told of every layer passed, when the simulation runs beside this pass.
    gate: Option<&'a CalibrationGate>,
}

impl<'a> CalibrationHook<'a> {
    /// The pass over `text` for the fitting methods of `cfg`, telling `gate` of its progress.
    pub(super) fn new(
        cfg: &'a SimConfig,
        text: &'a SimInput,
        gate: Option<&'a CalibrationGate>,
    ) -> Self {
        Self {
            cfg,
            punct: &text.punct,
            newline: &text.newline,
            gate,
        }
    }
}

/// How far a calibration pass running beside the simulation has gone: a layer job of a method
/// that fits settings waits until the calibration text has been through its layer.
#[derive(Debug, Default)]
pub(crate) struct CalibrationGate {
    state: std::sync::Mutex<GateState>,
    changed: std::sync::Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    /// Layers `0..passed` are calibrated.
    passed: usize,
    finished: bool,
    failed: bool,
}

impl CalibrationGate {
    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Layer `layer` and those before it are calibrated.
    pub(crate) fn pass(&self, layer: usize) {
        let mut st = self.lock();
        st.passed = st.passed.max(layer + 1);
        self.changed.notify_all();
    }

    /// The pass ended (successfully or not).
    pub(crate) fn finish(&self, ok: bool) {
        let mut st = self.lock();
        st.finished = true;
        st.failed = !ok;
        self.changed.notify_all();
    }

    /// Waits until `layer` is calibrated or the pass ended; false when it failed.
    pub(crate) fn wait(&self, layer: usize) -> bool {
        let mut st = self.lock();
        while !st.finished && st.passed <= layer {
            st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        !st.failed
    }

    /// True once the pass failed.
    pub(crate) fn failed(&self) -> bool {
        self.lock().failed
    }
}

impl AttentionHook for CalibrationHook<'_> {
    fn on_layer(&mut self, qkv: &LayerQkv<'_>) -> attnscope_core::Result<HookAction> {
        if !self
            .cfg
            .layers
            .as_ref()
            .is_none_or(|ls| ls.contains(&qkv.layer))
        {
            if let Some(gate) = self.gate {
                gate.pass(qkv.layer);
            }
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
        if let Some(gate) = self.gate {
            gate.pass(qkv.layer);
        }
        Ok(HookAction::DenseOutput(dense))
    }
}
