//! How much host memory a layer job needs, and how many layer jobs the machine holds.

use super::SimConfig;
use crate::error::Result;
use crate::method::packed_pair_bytes;

/// Host bytes one layer job needs at its peak on the CPU path: the raw scores and the exact
/// attention of a KV group's q-heads over the scored queries (`n (n + 1) / 2` floats each when
/// every query is scored, [`crate::logits`]) plus, alive
/// beside them, the methods' own buffers ([`crate::method::Selector::pair_bytes`]; of the
/// largest wave of `method_jobs` methods side by side) and a margin of one more packed
/// buffer for the others' chunked scores; and the layer's capture ([`capture_stats_bytes`]).
pub fn layer_job_bytes(cfg: &SimConfig, c: &attnscope_core::ModelConfig, n: usize) -> u64 {
    let gs = (c.n_heads / c.n_kv_heads.max(1)).max(1);
    let scored = cfg.queries.of(n);
    // Prepared states live while their wave of `method_jobs` methods runs (super::replay).
    let mut per: Vec<u64> = cfg
        .methods
        .iter()
        .map(|m| m.selector.pair_bytes(scored, gs))
        .collect();
    per.sort_unstable_by(|a, b| b.cmp(a));
    let methods: u64 = per.iter().take(super::replay::wave(cfg)).sum();
    3 * packed_pair_bytes(scored) * gs as u64 + methods + capture_stats_bytes(cfg, c, n)
}

/// Host bytes of one layer's capture statistics: per q-head the block masses `P` of the scored
/// queries (`scored x n / block` floats), the pooled map (`(n / block)^2`) and the per-query
/// LSE and sink mass.
pub fn capture_stats_bytes(cfg: &SimConfig, c: &attnscope_core::ModelConfig, n: usize) -> u64 {
    let blocks = n.div_ceil(cfg.capture_block.max(1)) as u64;
    let scored = cfg.queries.of(n).len() as u64;
    c.n_heads as u64 * (scored * blocks + blocks * blocks + 2 * n as u64) * 4
}

/// Host bytes of the CPU forward pass itself over `n` tokens, beside the layer jobs: the weights
/// as `f32` (the embeddings; a separate output head is released before a simulation,
/// [`attnscope_core::Model::release_output_head`]) and one layer's activations (hidden states,
/// Q/K/V, attention output, and the MLP's intermediate rows of one chunk,
/// [`attnscope_core::model::decoder::mlp_chunk_rows`]). An upper estimate: quantized weights may
/// stay smaller.
pub fn forward_bytes(c: &attnscope_core::ModelConfig) -> impl Fn(usize) -> u64 + '_ {
    move |n: usize| {
        let (h, d) = (c.hidden as u64, c.head_dim as u64);
        let attn = h * (c.n_heads as u64 * d) * 2 + h * (c.n_kv_heads as u64 * d) * 2;
        let mlp = 3 * h * c.intermediate as u64;
        let embed = c.vocab as u64 * h;
        let weights = (c.n_layers as u64 * (attn + mlp) + embed) * 4;
        let row = 5 * h + (c.n_heads + 2 * c.n_kv_heads) as u64 * d;
        let mlp_rows = n.min(attnscope_core::model::decoder::mlp_chunk_rows()) as u64;
        weights + (n as u64 * row + mlp_rows * 2 * c.intermediate as u64) * 4
    }
}

/// Host bytes of the layer the forward pass captures while the layer jobs run (the rendezvous
/// hand-over keeps one more layer alive than there are jobs): its capture statistics
/// ([`capture_stats_bytes`]), its exact dense output and its copy of Q, K and V.
pub fn capture_bytes(cfg: &SimConfig, c: &attnscope_core::ModelConfig, n: usize) -> u64 {
    let d = c.head_dim as u64;
    let out = n as u64 * c.n_heads as u64 * d;
    let qkv = n as u64 * (c.n_heads + 2 * c.n_kv_heads) as u64 * d;
    capture_stats_bytes(cfg, c, n) + (out + qkv) * 4
}

/// Layers simulated at once: `cfg.layer_jobs`, or when 0 half the rayon threads (at least 2, so
/// that a method's serial stretches on one layer leave no core idle; at most 4), fewer when the
/// machine's available memory, less the forward pass's ([`forward_bytes`]) and the layer it
/// captures meanwhile ([`capture_bytes`]), would not hold that
/// many layer jobs ([`layer_job_bytes`]).
pub(super) fn layer_workers(cfg: &SimConfig, model: &attnscope_core::Model, n: usize) -> usize {
    if cfg.layer_jobs > 0 {
        return cfg.layer_jobs;
    }
    let per_layer = layer_job_bytes(cfg, &model.config, n);
    let forward = forward_bytes(&model.config)(n) + capture_bytes(cfg, &model.config, n);
    let by_threads = (rayon::current_num_threads() / 2).clamp(2, 4);
    let by_memory = available_memory()
        .map_or(1, |m| {
            (m.saturating_sub(forward) * 3 / 4 / per_layer.max(1)) as usize
        })
        .max(1);
    by_threads.min(by_memory)
}

/// Refuses a CPU run whose one layer job would not fit in the available memory (rather than
/// letting the system kill it hours in).
pub(super) fn check_host_memory(
    cfg: &SimConfig,
    model: &attnscope_core::Model,
    n: usize,
) -> Result<()> {
    if model.device() != attnscope_core::Device::Cpu {
        return Ok(());
    }
    let need = layer_job_bytes(cfg, &model.config, n);
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    match available_memory() {
        Some(have) if need > have => Err(crate::AnalysisError::Input(format!(
            "simulating {n} tokens on the CPU needs about {:.1} GiB per layer (the exact attention of \
             a KV group's {} q-heads and the methods' per-pair buffers); {:.1} GiB are available. \
             Use a shorter --len, fewer token-level methods (rtpurbo-proxy and the oracles need the \
             most), or --device cuda",
            gib(need),
            model.config.n_heads / model.config.n_kv_heads.max(1),
            gib(have)
        ))),
        _ => Ok(()),
    }
}

/// How a run uses host memory on an input of `n` tokens ([`super::Simulation::memory_plan`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemoryPlan {
    /// Peak bytes of one layer job ([`layer_job_bytes`]).
    pub per_layer_job: u64,
    /// Layer jobs alive at once.
    pub layer_jobs: usize,
    /// The layer captured while the jobs run ([`capture_bytes`]).
    pub capture: u64,
    /// The forward pass's own bytes beside them ([`forward_bytes`], an upper estimate).
    pub forward: u64,
    /// Available memory when planned (`MemAvailable`), if readable.
    pub available: Option<u64>,
}

impl MemoryPlan {
    pub(super) fn of(cfg: &SimConfig, model: &attnscope_core::Model, n: usize) -> Self {
        Self {
            per_layer_job: layer_job_bytes(cfg, &model.config, n),
            layer_jobs: layer_workers(cfg, model, n),
            capture: capture_bytes(cfg, &model.config, n),
            forward: forward_bytes(&model.config)(n),
            available: available_memory(),
        }
    }

    /// Every part together: the layer jobs, the layer being captured and the forward pass.
    pub fn total(&self) -> u64 {
        self.per_layer_job * self.layer_jobs as u64 + self.capture + self.forward
    }
}

/// Peak resident memory of this process in bytes (`VmHWM` of `/proc/self/status`, Linux).
pub fn peak_host_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// `MemAvailable` of `/proc/meminfo` in bytes (Linux), if readable.
pub fn available_memory() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
