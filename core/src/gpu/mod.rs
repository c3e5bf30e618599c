//! The GPU forward pass (feature `cuda`): the same numbered steps as [`crate::model::decoder`],
//! with weights on the device (f32 or bf16, see [`Precision`]), cuBLAS products and the kernels of
//! `attnscope-kernels`; the attention hook contract is kept, and capturing hooks get their
//! statistics computed on the device ([`crate::attention::DeviceLayer`]).
//!
//! Two ways in:
//! - [`Model::to_device`]: uploads a loaded model's weights; afterwards [`Model::forward`] (and
//!   everything built on it: perplexity, capture, simulation) runs on the GPU, and
//!   [`Model::logits`] stays on the host. `to_device(Device::Cpu, ..)` returns to the CPU.
//! - [`GpuModel`] directly, e.g. [`GpuModel::random`] for a named shape with random weights
//!   generated on the device (benchmarks without files).
//!
//! ```no_run
//! use attnscope_core::{Device, Model, device::Precision};
//! use attnscope_core::capture::{CaptureHook, CaptureOptions};
//! # fn main() -> Result<(), attnscope_core::CoreError> {
//! let mut model = Model::load("SmolLM2-135M-Instruct.Q4_1.gguf".as_ref())?;
//! model.to_device(Device::Cuda(0), Precision::F32)?;   // plain error without a GPU
//! let ids = model.tokenizer()?.encode("Alice was beginning to get very tired.")?;
//! let mut hook = CaptureHook::new(CaptureOptions::default());
//! let hidden = model.forward(&ids, &mut hook)?;         // capture computed on the GPU
//! # Ok(()) }
//! ```
//!
//! Memory is planned before each run ([`GpuModel::plan`]); a run that does not fit is refused
//! with the numbers and a suggestion instead of failing inside an allocation.

mod presets;
pub use presets::{random_config, RANDOM_CONFIGS};

#[cfg(feature = "cuda")]
pub mod bench;
#[cfg(feature = "cuda")]
pub mod bench_sparse;
#[cfg(feature = "cuda")]
mod blocks;
#[cfg(feature = "cuda")]
mod forward;
#[cfg(feature = "cuda")]
mod plan;
#[cfg(feature = "cuda")]
mod weights;

#[cfg(feature = "cuda")]
pub use forward::{DeviceCaptureSummary, GpuModel};
#[cfg(feature = "cuda")]
pub use plan::MemoryPlan;
#[cfg(feature = "cuda")]
pub use weights::rope_tables;

use crate::device::{Device, Precision};
use crate::error::Result;
use crate::model::Model;

impl Model {
    /// Moves the forward pass to `device`: for `Device::Cuda(n)` the weights are uploaded at
    /// `precision` and later forward passes run there; `Device::Cpu` drops the GPU copy.
    /// Without the `cuda` feature, a driver or a GPU this is a plain [`crate::CoreError::Device`].
    pub fn to_device(&mut self, device: Device, precision: Precision) -> Result<()> {
        match device {
            Device::Cpu => {
                self.on_device = None;
                Ok(())
            }
            Device::Cuda(ordinal) => {
                self.check_device_forward()?;
                device.check_available()?;
                #[cfg(feature = "cuda")]
                {
                    let g = GpuModel::from_model(self, ordinal, precision)?;
                    self.on_device = Some(std::sync::Arc::new(g));
                    Ok(())
                }
                #[cfg(not(feature = "cuda"))]
                {
                    let _ = (ordinal, precision);
                    Err(crate::error::CoreError::Device(
                        "this build has no CUDA path; use --device cpu".into(),
                    ))
                }
            }
        }
    }

    /// The CUDA forward pass covers the Llama, Qwen2 and Qwen3 layer under plain causal
    /// attention; other architectures (and sliding windows) run on the CPU only for now.
    fn check_device_forward(&self) -> Result<()> {
        use crate::config::Arch;
        let cfg = &self.config;
        let plain_layer = matches!(
            cfg.arch,
            Arch::Llama | Arch::Mistral | Arch::Qwen2 | Arch::Qwen3
        );
        if plain_layer && cfg.attention == Default::default() {
            return Ok(());
        }
        Err(crate::error::CoreError::Device(format!(
            "{}: the CUDA forward pass does not cover {} layers{} yet; use --device cpu",
            self.source.display(),
            cfg.arch.name(),
            match cfg.attention.sliding_window {
                Some(w) => format!(" with a sliding window of {w}"),
                None => String::new(),
            }
        )))
    }

    /// The GPU twin of this model, when [`Model::to_device`] moved it to a GPU.
    #[cfg(feature = "cuda")]
    pub fn gpu(&self) -> Option<&GpuModel> {
        self.on_device
            .as_deref()
            .and_then(|twin| twin.as_any().downcast_ref::<GpuModel>())
    }
}
