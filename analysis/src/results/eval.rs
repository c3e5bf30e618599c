//! The rows of the `eval` table ([`crate::eval`]).

/// One row of the `eval` table: one input under one (method, budget), or dense.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EvalRow {
    pub input: usize,
    /// Method label, or `dense` ([`crate::eval::DENSE`]).
    pub method: String,
    /// Budget index (`None` for dense).
    pub budget: Option<usize>,
    /// e.g. `sparsity=0.9`; `dense` for dense.
    pub budget_label: String,
    /// Tokens run.
    pub tokens: usize,
    /// Needle depth of a task's first target needle.
    pub depth: Option<f64>,
    /// Sparsity reached over the sparse layers: 1 - kept causal pairs / all causal pairs.
    pub sparsity: f64,
    /// Sparsity reached by each layer, in layer order (sparse layers only; empty for dense).
    pub sparsity_by_layer: Vec<f32>,
    /// Every layer's calibration came within the tolerance of the target.
    pub reached: bool,
    /// Mean recall over sparse layers, q-heads and queries (`None` without fidelity metrics).
    pub recall: Option<f64>,
    pub out_rel_err: Option<f64>,
    pub cosine: Option<f64>,
    /// Scored tokens.
    pub scored: usize,
    /// Mean NLL (nats) of the scored tokens.
    pub nll: f64,
    /// `exp(nll)`.
    pub ppl: f64,
    /// `ppl` minus the dense row's on the same input.
    pub delta_ppl: f64,
    /// Mean KL(sparse || dense) of the next-token distributions at the scored positions, nats.
    pub kl: f64,
    /// Share of scored tokens that are the argmax of their logits.
    pub token_accuracy: f64,
    /// Tasks: greedy decoding reproduces the whole reference answer.
    pub exact_match: Option<bool>,
}
