//! The simulation runner ([`Simulation`]): a hook in the forward pass ([`SimHook`]) that, at
//! every chosen layer, captures the exact dense attention, replays every method on the same
//! post-RoPE Q/K for every KV group, calibrates each to the budget, and scores the selections with
//! [`crate::metrics`]. The layer continues with the exact dense output at once; its methods run as
//! a layer job (`sim/layer.rs`) on a worker thread, at most `layer_jobs` layers' data alive at a
//! time (sized to the available memory). Methods with a device scoring run on the GPU of a GPU
//! forward pass ([`crate::device`]).

use crate::budget::Budget;
use crate::error::Result;
use crate::input::SimInput;
pub use crate::method::MethodRun;
use crate::results::SimResults;
pub use crate::selection::{Queries, Scored};
pub use crate::timing::{cpu_seconds, Pipeline, Profile};

pub(crate) mod calibration;
mod gate;
pub(crate) mod group;
mod hook;
pub(crate) mod layer;
mod memory;
mod replay;
pub(crate) mod run;
pub use hook::SimHook;
pub use memory::{
    available_memory, capture_bytes, capture_stats_bytes, forward_bytes, layer_job_bytes,
    peak_host_bytes, MemoryPlan,
};

/// Set by [`request_stop`]: running simulations stop before their next layer.
static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Asks every simulation running in this process to stop before its next layer (an interrupt
/// from the user, or a failed rule defined outside the library): its run then returns
/// [`crate::AnalysisError::Stopped`], and the inputs a bundle writer already saved stay saved.
/// The request holds until [`clear_stop`].
pub fn request_stop() {
    STOP.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Withdraws [`request_stop`] (before a new run).
pub fn clear_stop() {
    STOP.store(false, std::sync::atomic::Ordering::SeqCst);
}

/// True after [`request_stop`], until [`clear_stop`].
pub fn stop_requested() -> bool {
    STOP.load(std::sync::atomic::Ordering::SeqCst)
}

/// What to simulate.
#[derive(Debug)]
pub struct SimConfig {
    pub methods: Vec<MethodRun>,
    pub budgets: Vec<Budget>,
    /// Layers to simulate (`None`: all).
    pub layers: Option<Vec<usize>>,
    /// Key block of the captured `P` and pooled maps.
    pub capture_block: usize,
    /// K of the frequency-chunk contextual agreement.
    pub freq_top_k: usize,
    /// Queries sampled per head for frequency dominance.
    pub freq_queries: usize,
    /// Query-block size of the per-query-block values kept for the viewer.
    pub query_block: usize,
    /// Budgets whose selections are compacted into `SimResults::selections`.
    pub selection_budgets: Vec<usize>,
    /// Layers whose post-RoPE Q/K/V are kept in `SimResults::qkv`.
    pub save_qkv: Vec<usize>,
    /// Calibration text for methods that fit settings (`None` when no method needs it).
    pub calibration: Option<SimInput>,
    /// Layers simulated at once on worker threads while the forward pass goes on (0: automatic,
    /// see [`Simulation`]).
    pub layer_jobs: usize,
    /// Methods run side by side within a KV group (0: all of them; 1: one after another, which
    /// keeps each method's CPU seconds apart in a profile).
    pub method_jobs: usize,
    /// The queries scored ([`Queries::All`]: every query, the causal-triangle average).
    pub queries: Queries,
}

impl SimConfig {
    /// `methods` at `budgets` on every layer, with the defaults of `attnscope simulate`: capture
    /// and query blocks of 64, frequency agreement at K = 64 over 256 sampled queries, the first
    /// budget's selections kept, no Q/K/V saved, no calibration text, automatic layer and method
    /// jobs.
    pub fn new(methods: Vec<MethodRun>, budgets: Vec<Budget>) -> Self {
        Self {
            methods,
            budgets,
            layers: None,
            capture_block: 64,
            freq_top_k: 64,
            freq_queries: 256,
            query_block: 64,
            selection_budgets: vec![0],
            save_qkv: Vec::new(),
            calibration: None,
            layer_jobs: 0,
            method_jobs: 0,
            queries: Queries::All,
        }
    }

    /// What the run asks of the device ([`crate::device`]).
    pub fn device_plan(&self) -> crate::device::DevicePlan<'_> {
        crate::device::DevicePlan {
            budgets: &self.budgets,
            query_block: self.query_block,
            capture_block: self.capture_block,
            queries: self.queries,
        }
    }
}

/// The checks of [`Simulation::new`]: layers in range, methods and budgets given, blocks of at
/// least one token, saved selections of existing budgets, attention the methods model, and
/// calibration text for the methods that fit settings.
pub fn check_config(model: &attnscope_core::Model, config: &SimConfig) -> Result<()> {
    let input_err = |m: String| Err(crate::AnalysisError::Input(m));
    if config.methods.is_empty() {
        return input_err("no methods to simulate".into());
    }
    check_settings(model, config)
}

/// [`check_config`] less its demand for methods (an evaluation of dense attention alone has
/// none).
pub fn check_settings(model: &attnscope_core::Model, config: &SimConfig) -> Result<()> {
    let input_err = |m: String| Err(crate::AnalysisError::Input(m));
    let n_layers = model.config.n_layers;
    if let Some(&bad) = config.layers.iter().flatten().find(|&&l| l >= n_layers) {
        return input_err(format!(
            "layer {bad} is out of range: the model has layers 0..{}",
            n_layers - 1
        ));
    }
    if config.budgets.is_empty() {
        return input_err("no budgets to simulate".into());
    }
    if config.capture_block == 0 || config.query_block == 0 {
        return input_err("capture and query blocks must be at least 1 token".into());
    }
    if let Some(&bad) = config
        .selection_budgets
        .iter()
        .find(|&&b| b >= config.budgets.len())
    {
        return input_err(format!(
            "selections of budget {bad}: the run has budgets 0..{}",
            config.budgets.len() - 1
        ));
    }
    run::check_attention_rule(model, config, None)?;
    let fits = config
        .methods
        .iter()
        .find(|m| m.selector.needs_calibration());
    if let (Some(m), None) = (fits, &config.calibration) {
        return input_err(format!(
            "method '{}' fits its settings on calibration text: pass --calibration-text",
            m.label
        ));
    }
    Ok(())
}

/// The main job: a model and a configuration, run over any number of inputs.
#[derive(Debug)]
pub struct Simulation<'m> {
    model: &'m attnscope_core::Model,
    config: SimConfig,
}

impl<'m> Simulation<'m> {
    /// Checks `config` against `model` (layers in range, budgets, blocks, calibration text for the
    /// methods that fit settings) before anything runs.
    pub fn new(model: &'m attnscope_core::Model, config: SimConfig) -> Result<Self> {
        check_config(model, &config)?;
        Ok(Self { model, config })
    }

    /// The configuration.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// The model.
    pub fn model(&self) -> &'m attnscope_core::Model {
        self.model
    }

    /// Simulates one input: every method on every chosen layer, all metrics.
    pub fn run(&self, input: &SimInput) -> Result<SimResults> {
        self.run_with_progress(input, &mut |_| {})
    }

    /// [`Simulation::run`], calling `progress` with each layer the forward pass finishes.
    pub fn run_with_progress(
        &self,
        input: &SimInput,
        progress: &mut dyn FnMut(usize),
    ) -> Result<SimResults> {
        run::simulate(self.model, input, &self.config, progress)
    }

    /// Host memory of a run on an input of `n` tokens: one layer job's peak and how many run at
    /// once ([`MemoryPlan`]).
    pub fn memory_plan(&self, n: usize) -> MemoryPlan {
        MemoryPlan::of(&self.config, self.model, n)
    }

    /// Where each method runs on an input of `n` tokens (with needles or not): `cuda` or `cpu`,
    /// by label.
    pub fn method_devices(
        &self,
        n: usize,
        has_needles: bool,
    ) -> std::collections::BTreeMap<String, String> {
        let gpu = self.model.device() != attnscope_core::Device::Cpu;
        crate::device::method_devices(
            &self.config.device_plan(),
            &self.config.methods,
            n,
            gpu,
            has_needles,
        )
    }
}
