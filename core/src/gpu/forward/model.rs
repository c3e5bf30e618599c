//! [`GpuModel`] itself: building it (weights uploaded from a loaded [`Model`], or random weights
//! generated on the device), its properties, and the checks made before a run (inputs, memory).

use std::sync::Arc;

use attnscope_kernels::cuda::{bf16, AttnKernel, DBuf, GpuDevice, GpuFloat};

use crate::capture_stats::CaptureOptions;
use crate::config::ModelConfig;
use crate::device::Precision;
use crate::error::{CoreError, Result};
use crate::gpu::plan::MemoryPlan;
use crate::gpu::weights::{weight_bytes, GpuWeights};
use crate::model::Model;

/// The weights at the model's precision.
pub(super) enum W {
    F32(GpuWeights<f32>),
    Bf16(GpuWeights<bf16>),
}

/// A model whose forward pass runs on a GPU. Build it with [`GpuModel::from_model`] (or
/// [`Model::to_device`], which keeps it inside the [`Model`]) or [`GpuModel::random`].
pub struct GpuModel {
    pub(super) dev: Arc<GpuDevice>,
    pub config: ModelConfig,
    pub precision: Precision,
    pub(super) w: W,
}

impl std::fmt::Debug for GpuModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "GpuModel({}, {}, {:?})",
            self.dev.label(),
            self.precision,
            self.config.arch
        )
    }
}

impl GpuModel {
    /// Uploads `model`'s weights to CUDA device `ordinal` at `precision` (refused, with the
    /// numbers, when they do not fit).
    pub fn from_model(model: &Model, ordinal: usize, precision: Precision) -> Result<Self> {
        let dev = GpuDevice::open(ordinal)?;
        let cfg = model.config.clone();
        Self::check_weights_fit(&dev, &cfg, precision)?;
        let w = match precision {
            Precision::F32 => W::F32(GpuWeights::upload(&dev, model)?),
            Precision::Bf16 => W::Bf16(GpuWeights::upload(&dev, model)?),
        };
        dev.synchronize()?;
        Ok(Self {
            dev,
            config: cfg,
            precision,
            w,
        })
    }

    /// A model of shape `config` with random weights generated on the device from `seed`
    /// (see [`crate::gpu::random_config`] for named shapes).
    pub fn random(
        config: ModelConfig,
        ordinal: usize,
        precision: Precision,
        seed: u64,
    ) -> Result<Self> {
        let dev = GpuDevice::open(ordinal)?;
        Self::check_weights_fit(&dev, &config, precision)?;
        let w = match precision {
            Precision::F32 => W::F32(GpuWeights::random(&dev, &config, seed)?),
            Precision::Bf16 => W::Bf16(GpuWeights::random(&dev, &config, seed)?),
        };
        dev.synchronize()?;
        Ok(Self {
            dev,
            config,
            precision,
            w,
        })
    }

    fn check_weights_fit(dev: &GpuDevice, cfg: &ModelConfig, precision: Precision) -> Result<()> {
        let need = match precision {
            Precision::F32 => weight_bytes::<f32>(cfg),
            Precision::Bf16 => weight_bytes::<bf16>(cfg),
        };
        let free = dev.available_memory()?;
        if need + (256 << 20) > free {
            let hint = if precision == Precision::F32 {
                "load with --precision bf16 (half the bytes), or use --device cpu"
            } else {
                "use a GPU with more memory, or --device cpu"
            };
            return Err(dev
                .oom(&format!("the {precision} weights"), need, hint)
                .into());
        }
        Ok(())
    }

    /// The device the model lives on.
    pub fn device(&self) -> &Arc<GpuDevice> {
        &self.dev
    }

    /// Bytes of the weights on the device.
    pub fn weight_bytes(&self) -> u64 {
        match self.precision {
            Precision::F32 => weight_bytes::<f32>(&self.config),
            Precision::Bf16 => weight_bytes::<bf16>(&self.config),
        }
    }

    /// The memory plan of a forward at `n` tokens (`capture`: the capture options when layers are
    /// captured; `kept_layers`: layers whose results stay on the device).
    pub fn plan(
        &self,
        n: usize,
        capture: Option<&CaptureOptions>,
        kept_layers: usize,
    ) -> MemoryPlan {
        MemoryPlan::new(
            &self.config,
            self.precision,
            self.weight_bytes(),
            n,
            capture,
            kept_layers,
        )
    }

    /// The attention kernel this model uses for capture options `opts`.
    pub fn attention_kernel(&self, opts: &CaptureOptions) -> AttnKernel {
        let d = self.config.head_dim;
        match self.precision {
            Precision::F32 => AttnKernel::auto::<f32>(&self.dev, d, opts.block, opts.sink_tokens),
            Precision::Bf16 => AttnKernel::auto::<bf16>(&self.dev, d, opts.block, opts.sink_tokens),
        }
    }

    pub(super) fn check_ids(&self, ids: &[u32]) -> Result<()> {
        if ids.is_empty() {
            return Err(CoreError::Input("empty input: no tokens to run".into()));
        }
        if ids.len() > self.config.max_context {
            return Err(CoreError::Input(format!(
                "{} tokens is more than the model's context of {}",
                ids.len(),
                self.config.max_context
            )));
        }
        if self.config.rope_scaling.depends_on_length(ids.len()) {
            return Err(CoreError::Input(format!(
                "{} tokens: dynamic NTK RoPE past the original length is implemented on the CPU \
                 only (use --device cpu or a shorter input)",
                ids.len()
            )));
        }
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= self.config.vocab) {
            return Err(CoreError::Input(format!(
                "token id {bad} is outside the vocabulary of {} ids",
                self.config.vocab
            )));
        }
        Ok(())
    }

    pub(super) fn check_plan(&self, plan: &MemoryPlan) -> Result<()> {
        let free = self.dev.available_memory()?;
        if plan.run_bytes() > free {
            return Err(self
                .dev
                .oom(
                    &format!("a run of {}", plan.describe()),
                    plan.run_bytes(),
                    "use a shorter input (--len), capture fewer layers (--layers), or --device cpu",
                )
                .into());
        }
        Ok(())
    }

    pub(super) fn alloc<T: GpuFloat>(&self, len: usize, what: &str) -> Result<DBuf<T>> {
        self.dev.alloc::<T>(len, what).map_err(CoreError::from)
    }
}
