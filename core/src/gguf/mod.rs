//! GGUF (v2/v3) reading: metadata, tensor directory, and dequantization of every
//! ggml block type we support to f32. See the submodules for each part.

pub mod dequant;
pub mod model;
pub mod reader;
pub mod value;

pub use dequant::{dequantize, GgmlType};
pub use model::load_gguf_model;
pub use reader::{GgufFile, GgufTensorInfo};
pub use value::{GgufMetadata, GgufValue};
