//! What the UI asks for and gets back: the request ([`LiveRequest`], [`LiveBudget`]), the result
//! ([`LiveResult`], one [`LiveHead`] per q-head) and what the worker reads besides the request
//! ([`LiveSource`]).

use std::path::PathBuf;

use attnscope_analysis::budget::Budget;
use attnscope_analysis::registry;
use attnscope_analysis::results::mean;
use attnscope_analysis::results::SelectionRow;

/// The budget of a live re-selection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LiveBudget {
    Sparsity(f64),
    Tokens(usize),
}

impl LiveBudget {
    pub(super) fn budget(self) -> Budget {
        match self {
            LiveBudget::Sparsity(s) => Budget::Sparsity(s),
            LiveBudget::Tokens(t) => Budget::Tokens(t),
        }
    }

    /// e.g. `sparsity=0.9`.
    pub fn label(self) -> String {
        match self {
            LiveBudget::Sparsity(s) => format!("sparsity={s:.3}"),
            LiveBudget::Tokens(t) => format!("tokens={t}"),
        }
    }
}

/// What to recompute.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveRequest {
    pub input: usize,
    pub layer: usize,
    /// Registry name of the method.
    pub method: String,
    pub overrides: Vec<(String, f64)>,
    pub budget: LiveBudget,
}

impl LiveRequest {
    /// e.g. `phsa[lambda=0.3] @ sparsity=0.900`: the parameters that differ from the method's
    /// defaults.
    pub fn label(&self) -> String {
        let info = registry::find(&self.method).ok();
        let knob = info
            .and_then(|i| i.build_with(&[]).ok())
            .map(|m| m.knob().name);
        let params: Vec<String> = self
            .overrides
            .iter()
            .filter(|(k, v)| {
                Some(k.as_str()) != knob
                    && info
                        .and_then(|i| i.params.iter().find(|p| p.name == k))
                        .is_none_or(|p| p.default != *v)
            })
            .map(|(k, v)| format!("{k}={}", crate::colormap::fmt_value(*v)))
            .collect();
        if params.is_empty() {
            format!("{} @ {}", self.method, self.budget.label())
        } else {
            format!(
                "{}[{}] @ {}",
                self.method,
                params.join(","),
                self.budget.label()
            )
        }
    }
}

/// One q-head of a live result.
#[derive(Debug, Clone)]
pub struct LiveHead {
    pub head: usize,
    pub kv_head: usize,
    pub knob: f64,
    pub sparsity: f64,
    pub recall: f64,
    pub reached: bool,
    /// Mean recall of each query block (of the run's block size).
    pub recall_by_query_block: Vec<f32>,
    /// The selection compacted to the run's blocks (for the head-map overlay).
    pub selection: SelectionRow,
}

/// The outcome of a [`LiveRequest`].
#[derive(Debug, Clone)]
pub struct LiveResult {
    pub request: LiveRequest,
    /// Sequence number of the request (increasing).
    pub seq: u64,
    pub heads: Vec<LiveHead>,
    /// Wall seconds of the computation (capture excluded when cached).
    pub seconds: f64,
    /// Wall seconds of reading Q/K/V and the exact capture (0 when cached).
    pub capture_seconds: f64,
    /// Of `capture_seconds`, the wall seconds of reading Q/K/V from the bundle.
    pub read_seconds: f64,
}

impl LiveResult {
    /// Mean recall over the layer's q-heads.
    pub fn mean_recall(&self) -> f64 {
        mean(self.heads.iter().map(|h| h.recall))
    }

    /// Mean achieved sparsity over the layer's q-heads.
    pub fn mean_sparsity(&self) -> f64 {
        mean(self.heads.iter().map(|h| h.sparsity))
    }

    /// The result of one q-head.
    pub fn head(&self, h: usize) -> Option<&LiveHead> {
        self.heads.iter().find(|x| x.head == h)
    }
}

/// Everything the worker needs besides the request.
#[derive(Debug, Clone)]
pub struct LiveSource {
    pub dir: PathBuf,
    /// `qkv-input{I}.safetensors` per input index (None: not captured).
    pub qkv_files: Vec<Option<String>>,
    pub punct: Vec<Vec<bool>>,
    pub newline: Vec<Vec<bool>>,
    /// Capture block of the run.
    pub block: usize,
}

impl LiveSource {
    /// The source of a loaded run.
    pub fn of(run: &crate::data::RunData) -> Self {
        let mut qkv_files = vec![None; run.n_inputs];
        for q in &run.manifest.qkv {
            if q.input < qkv_files.len() {
                qkv_files[q.input] = Some(q.file.clone());
            }
        }
        Self {
            dir: run.dir.clone(),
            qkv_files,
            punct: run
                .tokens
                .iter()
                .map(|t| t.iter().map(|r| r.is_punct).collect())
                .collect(),
            newline: run
                .tokens
                .iter()
                .map(|t| t.iter().map(|r| r.is_newline).collect())
                .collect(),
            block: run.block,
        }
    }
}
