//! What a run measured, as rows: per (layer, q-head, method, budget) metrics, IoU between methods,
//! per-head statistics, compacted selections, tokens, fitted settings and saved Q/K/V. The
//! simulator ([`crate::sim`]) produces them; the bundle ([`crate::bundle`]) stores and reads them.

use serde::{Deserialize, Serialize};

mod eval;
pub mod maps;
mod qkv;
mod selections;
mod summary;
pub use eval::EvalRow;
pub use qkv::SavedLayer;
pub use selections::SelectionRow;
pub use summary::{mean, summarize, MethodSummary};

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
    /// `[n_blocks * n_blocks]` row-major pooled map (mean P over each query block), at the
    /// run's map block ([`maps::stored_map`]).
    pub pooled: Vec<f32>,
    pub n_blocks: usize,
    /// Tokens per block of `pooled` (0: the run's capture block, as in bundles written before
    /// maps were pooled further, [`maps::map_block`]).
    #[serde(default)]
    pub block: usize,
}

/// Everything a run measured.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct SimResults {
    pub metrics: Vec<MetricRow>,
    pub iou: Vec<IouRow>,
    pub heads: Vec<HeadRow>,
    /// Compacted selections of the budgets in `SimConfig::selection_budgets` (bundle table).
    #[serde(default)]
    pub selections: Vec<SelectionRow>,
    /// Captured Q/K/V of the layers in `SimConfig::save_qkv`.
    #[serde(skip)]
    pub qkv: Vec<SavedLayer>,
    /// Wall seconds per method (scoring and calibration; on a GPU metrics too), summed over
    /// layers and groups. The host methods' metrics are the profile's `(metrics)` phase.
    #[serde(default)]
    pub method_seconds: std::collections::BTreeMap<String, f64>,
    /// Settings fitted on calibration text (methods labelled ours).
    #[serde(default)]
    pub fitted: Vec<FittedRow>,
    /// End-to-end evaluation rows ([`crate::eval`]; empty for a simulation).
    #[serde(default)]
    pub eval: Vec<EvalRow>,
    /// How the run's wall time was spent (not saved).
    #[serde(skip)]
    pub pipeline: crate::timing::Pipeline,
}

impl SimResults {
    /// Tags every row with input index `i`.
    pub fn tag_input(&mut self, i: usize) {
        self.metrics.iter_mut().for_each(|x| x.input = i);
        self.iou.iter_mut().for_each(|x| x.input = i);
        self.heads.iter_mut().for_each(|x| x.input = i);
        self.selections.iter_mut().for_each(|x| x.input = i);
    }

    /// Moves the table rows of `other` (metrics, IoU, heads, selections) behind this one's.
    pub fn append(&mut self, other: &mut SimResults) {
        self.metrics.append(&mut other.metrics);
        self.iou.append(&mut other.iou);
        self.heads.append(&mut other.heads);
        self.selections.append(&mut other.selections);
    }
}

/// Per-token data of an input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenRow {
    pub input: usize,
    pub position: usize,
    pub id: u32,
    pub piece: String,
    pub is_punct: bool,
    pub is_newline: bool,
    pub char_start: Option<usize>,
    pub char_end: Option<usize>,
    pub is_needle: bool,
    pub is_needle_query: bool,
}

/// A setting a method fitted on calibration text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FittedRow {
    pub method: String,
    pub layer: usize,
    pub param: String,
    pub value: f64,
}
