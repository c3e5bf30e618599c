//! attnscope-core: model configuration, weight loading (Hugging Face safetensors folders and GGUF
//! files with dequantization), tokenizers, devices, an exact f32 forward pass and the attention
//! hook through which every layer's post-RoPE Q, K and V can be captured or sparsified.
//!
//! ```no_run
//! use attnscope_core::{Model, capture::{CaptureHook, CaptureOptions}};
//! # fn main() -> Result<(), attnscope_core::CoreError> {
//! let model = Model::load("SmolLM2-135M-Instruct.Q4_1.gguf".as_ref())?;
//! let ids = model.tokenizer()?.encode("Alice was beginning to get very tired.")?;
//! let mut hook = CaptureHook::new(CaptureOptions::default());
//! let hidden = model.forward(&ids, &mut hook)?;
//! let logits = model.logits(hidden.view())?;
//! println!("{} x {} logits, sink mass of layer 0 head 0: {:.3}", logits.nrows(), logits.ncols(),
//!          hook.layers[0].heads[0].mean_sink_mass());
//! # Ok(()) }
//! ```

pub mod attention;
pub mod capture;
pub mod capture_stats;
pub mod config;
pub mod contained;
pub mod device;
pub mod device_layer;
pub mod error;
pub mod exact_attention;
pub mod exact_exp;
pub mod gguf;
pub mod gpu;
pub mod model;
pub mod ops;
pub mod rng;
pub mod rope;
pub mod safetensors_io;
pub mod tensor;
pub mod tile_lists;
pub mod tokenizer;

pub use config::{Arch, ModelConfig};
pub use device::Device;
pub use error::{CoreError, Result};
pub use model::Model;
pub use tensor::{HostTensor, Weights};
