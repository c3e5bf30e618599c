//! [`GpuDevice`]: opening a GPU (with plain errors when there is none), compiling and caching the
//! kernel modules, launching, memory, timing.
//!
//! One job per module, each depending only on those listed before it: `error` (the error type and
//! launcher checks), `sources` (kernel sources and NVRTC), `context` (the device, its modules and
//! launches), `memory` (free memory, buffers, copies) and `timer` (events).

mod context;
mod error;
mod memory;
mod sources;
mod timer;

pub use context::GpuDevice;
pub(crate) use context::{grid_for, i, Arg};
pub(crate) use error::need;
pub use error::{GpuError, Result};
#[cfg(test)]
pub(crate) use sources::{compile, sources};
pub(crate) use sources::{BLOCKSEL, ELEMENTWISE, FLASH, FLASH_SPARSE, ROWWISE, TOPK_ROWS};
pub use timer::{GpuMark, GpuTimer};
