//! The calibration pass of methods that fit settings (ours): a forward pass over the calibration
//! text, before the simulation or beside it ([`super::gate::CalibrationGate`]).

use attnscope_core::attention::{AttentionHook, HookAction, LayerQkv};

use super::gate::CalibrationGate;
use super::group::CapturedLayer;
use super::SimConfig;
use crate::budget::Budget;
use crate::input::SimInput;

/// The calibration pass: methods that fit settings (ours) see every chosen layer of the
/// calibration text, at the run's first budget.
pub(crate) struct CalibrationHook<'a> {
    cfg: &'a SimConfig,
    punct: &'a [bool],
    newline: &'a [bool],
    /// Told of every layer passed, when the simulation runs beside this pass.
    gate: Option<&'a CalibrationGate>,
}

impl<'a> CalibrationHook<'a> {
    /// The pass over `text` for the fitting methods of `cfg`, telling `gate` of its progress.
    pub(crate) fn new(
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
        let scored = self.cfg.queries.of(qkv.len());
        let layer = CapturedLayer::new(qkv, self.cfg.capture_block, scored);
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
                let input = layer.input(g, (self.punct, self.newline), scored);
                m.selector.calibrate(&input, budget);
            }
        }
        if let Some(gate) = self.gate {
            gate.pass(qkv.layer);
        }
        Ok(HookAction::DenseOutput(layer.dense))
    }
}
