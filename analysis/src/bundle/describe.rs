//! The manifest of a simulation before its first input: what [`Simulation`] will run, so that
//! a bundle records every setting that decides its numbers.

use super::manifest::{BudgetInfo, Manifest, ManifestMethod, ModelInfo, ToolInfo};
use super::FORMAT_VERSION;
use crate::budget::Budget;
use crate::method::MethodRun;
use crate::sim::Simulation;

impl BudgetInfo {
    /// Budget `index` of a run.
    pub fn of(index: usize, b: &Budget) -> Self {
        let (kind, value) = match *b {
            Budget::Tokens(k) => ("tokens", k as f64),
            Budget::Sparsity(s) => ("sparsity", s),
            Budget::TopP(p) => ("top_p", p),
        };
        Self {
            index,
            label: b.label(),
            kind: kind.into(),
            value,
        }
    }
}

impl ManifestMethod {
    /// A configured method with every parameter value (defaults and overrides).
    pub fn of(m: &MethodRun) -> Self {
        Self {
            name: m.label.clone(),
            kind: m.info.kind.as_str().into(),
            params: m
                .info
                .params(&m.overrides)
                .map(|p| p.iter().map(|(k, v)| (k.to_string(), v)).collect())
                .unwrap_or_default(),
        }
    }
}

impl ModelInfo {
    /// The model as loaded from `spec` (weights hashed later, by the bundle writer).
    pub fn of(model: &attnscope_core::Model, spec: &str) -> Self {
        let c = &model.config;
        Self {
            spec: spec.to_string(),
            source: model.source.display().to_string(),
            architecture: c.arch.name().to_string(),
            n_layers: c.n_layers,
            n_heads: c.n_heads,
            n_kv_heads: c.n_kv_heads,
            head_dim: c.head_dim,
            max_context: c.max_context,
            storage: model.storage.clone(),
            files: Vec::new(),
        }
    }
}

impl Manifest {
    /// Queries scored per input (`queries` `last:N`: `min(N, n_tokens)`; else every token).
    pub fn scored_queries(&self) -> usize {
        match self.queries.parse::<crate::selection::Queries>() {
            Ok(q) => q.of(self.n_tokens).len(),
            Err(_) => self.n_tokens,
        }
    }

    /// The manifest of `sim` over inputs of `n` tokens (with needles or not), for a model given
    /// as `model_spec`: tool, model, methods with parameters, budgets, layers, blocks, device and
    /// where each method runs. The caller adds the run id, command, data and format.
    pub fn for_simulation(
        sim: &Simulation<'_>,
        model_spec: &str,
        n: usize,
        has_needles: bool,
    ) -> Self {
        Self {
            method_devices: sim.method_devices(n, has_needles),
            ..Self::of_config(sim.model(), sim.config(), model_spec)
        }
    }

    /// The manifest of an end-to-end evaluation (`attnscope eval`): as a simulation's, its
    /// `layers` the layers made sparse and every query scored by the selection.
    pub fn for_eval(
        model: &attnscope_core::Model,
        cfg: &crate::eval::EvalConfig,
        model_spec: &str,
    ) -> Self {
        Self {
            selection_budgets: Vec::new(),
            ..Self::of_config(model, &cfg.sim, model_spec)
        }
    }

    /// What a configuration decides: tool, model, methods with parameters, budgets, layers,
    /// blocks, scored queries and device.
    fn of_config(
        model: &attnscope_core::Model,
        cfg: &crate::sim::SimConfig,
        model_spec: &str,
    ) -> Self {
        Self {
            format_version: FORMAT_VERSION,
            tool: ToolInfo::current(),
            model: ModelInfo::of(model, model_spec),
            methods: cfg.methods.iter().map(ManifestMethod::of).collect(),
            budgets: cfg
                .budgets
                .iter()
                .enumerate()
                .map(|(i, b)| BudgetInfo::of(i, b))
                .collect(),
            layers: cfg
                .layers
                .clone()
                .unwrap_or_else(|| (0..model.config.n_layers).collect()),
            capture_block: cfg.capture_block,
            freq_top_k: cfg.freq_top_k,
            freq_queries: cfg.freq_queries,
            queries: cfg.queries.to_string(),
            selection_budgets: cfg.selection_budgets.clone(),
            device: device_label(model),
            method_sources: cfg
                .methods
                .iter()
                .filter_map(|m| Some((m.label.clone(), m.selector.source()?)))
                .collect(),
            ..Manifest::default()
        }
    }
}

/// `cpu`, or the GPU with the storage precision of its weights, e.g. `cuda:0 bf16`.
fn device_label(model: &attnscope_core::Model) -> String {
    match model.device() {
        attnscope_core::Device::Cpu => "cpu".into(),
        #[cfg(feature = "cuda")]
        d => match model.gpu() {
            Some(g) => format!("{d} {}", g.precision),
            None => d.to_string(),
        },
        #[cfg(not(feature = "cuda"))]
        d => d.to_string(),
    }
}
