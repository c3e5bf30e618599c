//! [`GpuModel`]: the decoder forward pass on a GPU, step for step as
//! [`crate::model::decoder`], with the attention hook at the same place.
//!
//! One job per module, each depending only on those listed before it: `model` (construction,
//! weights upload, properties and checks), `capture` (activation and capture buffers, the capture
//! of one layer), `device_layer` (the [`crate::attention::DeviceLayer`] handed to hooks), `export` (its
//! tensors handed out past the layer) and
//! `layers` (the forward entry points and the layer loop).

mod capture;
mod device_layer;
mod export;
mod layers;
mod model;

pub use layers::DeviceCaptureSummary;
pub use model::GpuModel;
