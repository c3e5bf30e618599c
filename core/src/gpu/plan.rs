//! Device memory planning: the bytes a run needs, computed before it starts, so that a run that
//! cannot fit is refused with the numbers and a suggestion instead of dying inside an allocation.

use attnscope_kernels::cuda::human_bytes;

use crate::capture_stats::CaptureOptions;
use crate::config::ModelConfig;
use crate::device::Precision;

/// Device bytes of one forward pass at `n` tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryPlan {
    pub tokens: usize,
    /// Weights already on the device.
    pub weights: u64,
    /// Activations of one layer (reused by every layer), the residual stream and the output.
    pub activations: u64,
    /// Capture buffers of one layer: `P [heads, n, n_blocks]`, sink mass, pooled map, LSE.
    pub capture_layer: u64,
    /// Capture results kept on the device for every captured layer (device-side capture only).
    pub capture_kept: u64,
    /// Headroom for cuBLAS workspaces and the allocator.
    pub headroom: u64,
}

impl MemoryPlan {
    /// The plan for `cfg` at `n` tokens with weights of `weights` bytes; `capture` when layers are
    /// captured, `kept_layers` of them keeping their results on the device.
    pub fn new(
        cfg: &ModelConfig,
        precision: Precision,
        weights: u64,
        n: usize,
        capture: Option<&CaptureOptions>,
        kept_layers: usize,
    ) -> Self {
        let t: u64 = match precision {
            Precision::F32 => 4,
            Precision::Bf16 => 2,
        };
        let n64 = n as u64;
        let (h, d, f) = (
            cfg.hidden as u64,
            cfg.head_dim as u64,
            cfg.intermediate as u64,
        );
        let (heads, kv) = (cfg.n_heads as u64, cfg.n_kv_heads as u64);
        let wq = (heads + 2 * kv) * d;
        let activations = 4 * n64                 // ids
            + 2 * 4 * n64 * h                     // residual stream, final output
            + t * n64 * h                         // normed input
            + 2 * t * n64 * wq                    // fused qkv, head-major q/k/v
            + t * n64 * heads * d                 // attention output
            + 4 * heads * n64                     // lse
            + 3 * t * n64 * f; // gate|up, activation
        let (capture_layer, capture_kept) = match capture {
            Some(o) => {
                let b = o.block.max(1) as u64;
                let nb = n64.div_ceil(b);
                let per = 4 * heads * (n64 * nb + n64 + nb * nb);
                (per, kept_layers as u64 * 4 * heads * (n64 + nb * nb))
            }
            None => (0, 0),
        };
        Self {
            tokens: n,
            weights,
            activations,
            capture_layer,
            capture_kept,
            headroom: 256 << 20,
        }
    }

    /// Bytes the run still needs to allocate (everything but the weights).
    pub fn run_bytes(&self) -> u64 {
        self.activations + self.capture_layer + self.capture_kept + self.headroom
    }

    /// One line: `weights 1.2 GiB + activations ... = ...`.
    pub fn describe(&self) -> String {
        format!(
            "{} tokens: weights {} (loaded) + activations {} + capture {} per layer + kept capture {} + headroom {}",
            self.tokens,
            human_bytes(self.weights),
            human_bytes(self.activations),
            human_bytes(self.capture_layer),
            human_bytes(self.capture_kept),
            human_bytes(self.headroom)
        )
    }
}
