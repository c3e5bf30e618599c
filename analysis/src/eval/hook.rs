//! The sparse prefill: a hook that, at every layer, runs one method on that layer's own
//! post-RoPE Q/K (every KV group, as `simulate` does), calibrates its knob to the budget on them,
//! and makes the layer attend only to the selected keys. Errors compound through the layers as in
//! a deployed model: each layer's Q/K already carry the earlier layers' sparse outputs.

use attnscope_core::attention::{AttentionHook, HookAction, LayerQkv, TokenSelection};
use attnscope_core::capture::HeadCapture;
use ndarray::{s, Array2};

use super::EvalConfig;
use crate::budget::{resolve, sparsity_of, Budget, Calibrated};
use crate::input::SimInput;
use crate::method::{GroupInput, MethodRun};
use crate::metrics::{evaluate_many, DenseHead};
use crate::results::mean;
use crate::selection::{Scored, Selection};
use crate::sim::group::CapturedLayer;
use crate::sim::layer::top_p_target;

/// What one layer of a sparse run did: the sparsity its selection reached and, when asked for,
/// the selection-fidelity metrics of `simulate` on the layer's own Q/K (means over q-heads and
/// queries).
#[derive(Debug, Clone, PartialEq)]
pub struct LayerEval {
    pub layer: usize,
    /// 1 - kept causal pairs / all causal pairs, over the layer's q-heads.
    pub sparsity: f64,
    /// Every KV group's calibration came within the tolerance of the target.
    pub reached: bool,
    /// Mean attention mass kept (`None` without fidelity metrics).
    pub recall: Option<f64>,
    /// Mean relative L2 error of the attention output.
    pub out_rel_err: Option<f64>,
    /// Mean cosine of sparse vs dense attention output.
    pub cosine: Option<f64>,
}

/// The hook of one (method, budget) sparse prefill.
pub struct SparseHook<'a> {
    cfg: &'a EvalConfig,
    method: &'a MethodRun,
    budget: Budget,
    input: &'a SimInput,
    /// Exact top-p, whose sparsity a top-p budget matches.
    top_p_reference: Option<Box<dyn crate::method::Selector>>,
    /// One entry per sparsified layer, in layer order.
    pub layers: Vec<LayerEval>,
}

impl std::fmt::Debug for SparseHook<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SparseHook")
            .field("method", &self.method.label)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

impl<'a> SparseHook<'a> {
    /// The sparse prefill of `method` at `budget` over `input`.
    pub fn new(
        cfg: &'a EvalConfig,
        method: &'a MethodRun,
        budget: Budget,
        input: &'a SimInput,
    ) -> Self {
        Self {
            cfg,
            method,
            budget,
            input,
            top_p_reference: matches!(budget, Budget::TopP(_))
                .then(|| crate::registry::top_p_reference().ok())
                .flatten(),
            layers: Vec::new(),
        }
    }

    fn wants(&self, layer: usize) -> bool {
        self.cfg
            .sim
            .layers
            .as_ref()
            .is_none_or(|ls| ls.contains(&layer))
    }
}

impl AttentionHook for SparseHook<'_> {
    fn on_layer(&mut self, qkv: &LayerQkv<'_>) -> attnscope_core::Result<HookAction> {
        if crate::sim::stop_requested() {
            return Err(attnscope_core::CoreError::Input(format!(
                "stopped before layer {}: interrupted",
                qkv.layer
            )));
        }
        if !self.wants(qkv.layer) {
            return Ok(HookAction::Dense);
        }
        let layer = CapturedLayer::new(qkv, self.cfg.sim.capture_block, Scored::all(qkv.len()));
        let gs = qkv.n_heads / qkv.n_kv_heads;
        let mut sels: Vec<Selection> = Vec::with_capacity(qkv.n_heads);
        let mut fidelity = Fidelity::default();
        let mut reached = true;
        let masks = (&self.input.punct[..], &self.input.newline[..]);
        for g in 0..qkv.n_kv_heads {
            let input = layer.input(g, masks, Scored::all(qkv.len()));
            let cal = self.select_group(&input);
            reached &= cal.reached;
            if self.cfg.fidelity {
                let hs = g * gs..(g + 1) * gs;
                fidelity.add(
                    &input,
                    &layer.heads[hs.clone()],
                    &layer.dense,
                    hs.start,
                    &cal.selections,
                );
            }
            sels.extend(cal.selections);
        }
        self.layers.push(LayerEval {
            layer: qkv.layer,
            sparsity: sparsity_of(&sels),
            reached,
            recall: fidelity.mean(|m| m.0),
            out_rel_err: fidelity.mean(|m| m.1),
            cosine: fidelity.mean(|m| m.2),
        });
        // A selection that keeps every visible key is dense attention: the layer runs the dense
        // computation itself (the sparse kernel sums in another order).
        if sels
            .iter()
            .all(|s| s.kept_pairs() == s.scored().visible_pairs())
        {
            return Ok(HookAction::Dense);
        }
        Ok(HookAction::Sparse(token_selection(&sels, qkv.len())))
    }
}

impl SparseHook<'_> {
    /// The method's selections on one KV group, its knob calibrated to the budget on this
    /// group's own Q/K (the one calibrator, [`resolve`]).
    fn select_group<'i>(&'i self, input: &'i GroupInput<'i>) -> Calibrated {
        let selector = self.method.selector.as_ref();
        let top_p = top_p_target(self.budget, self.top_p_reference.as_deref(), input);
        let prep = selector.prepare(input);
        resolve(selector, prep.as_ref(), self.budget, input.scored, top_p)
    }
}

/// Per-query fidelity metrics of a layer's q-heads, gathered group by group.
#[derive(Default)]
struct Fidelity {
    /// `(recall, relative output error, cosine)` of every (q-head, query).
    values: Vec<(f64, f64, f64)>,
}

impl Fidelity {
    /// Scores the group's selections against its exact dense attention ([`evaluate_many`], as
    /// `simulate` does); `first_head` is the group's first q-head.
    fn add(
        &mut self,
        input: &GroupInput<'_>,
        heads: &[HeadCapture],
        dense: &Array2<f32>,
        first_head: usize,
        sels: &[Selection],
    ) {
        let d = input.head_dim();
        let probs = input.true_probs();
        for (hi, sel) in sels.iter().enumerate() {
            let h = first_head + hi;
            let head = DenseHead {
                q: input.q[hi],
                k: input.k,
                v: input.v,
                lse: &heads[hi].lse,
                dense_out: dense.slice(s![.., h * d..(h + 1) * d]),
                rule: input.rule,
            };
            for qm in evaluate_many(&head, &probs[hi], &[sel]) {
                self.values.extend(
                    qm.recall
                        .iter()
                        .zip(&qm.out_rel_err)
                        .zip(&qm.cosine)
                        .map(|((&r, &e), &c)| (r as f64, e as f64, c as f64)),
                );
            }
        }
    }

    fn mean(&self, f: impl Fn(&(f64, f64, f64)) -> f64) -> Option<f64> {
        (!self.values.is_empty()).then(|| mean(self.values.iter().map(f)))
    }
}

/// The layer's selection as the forward pass takes it: q-head `h`'s kept visible keys of every
/// query (`sels` holds one selection per q-head, in head order).
fn token_selection(sels: &[Selection], n: usize) -> TokenSelection {
    TokenSelection::from_fn(sels.len(), n, |h, i| {
        sels[h]
            .keys_of(i)
            .flat_map(|(a, b)| a..b)
            .collect::<Vec<u32>>()
    })
}
