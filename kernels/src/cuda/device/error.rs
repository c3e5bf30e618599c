//! [`GpuError`], the [`Result`] alias of the GPU layer, and the small checks every launcher uses.

use cudarc::driver::DriverError;

use crate::cuda::buffer::DBuf;

/// Errors of the GPU path. Every message says what failed and, where it can, what to do.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// No driver, no GPU, or a CUDA library that cannot be found.
    #[error("{0}")]
    Unavailable(String),
    /// A driver call failed.
    #[error("CUDA error while {what}: {err}")]
    Driver { what: String, err: String },
    /// A cuBLAS call failed.
    #[error("cuBLAS error while {what}: {err}")]
    Blas { what: String, err: String },
    /// NVRTC rejected a kernel source; `log` is the compiler's log.
    #[error("NVRTC could not compile kernels/cu/{module}.cu for {arch}: {err}\n{log}")]
    Compile {
        module: &'static str,
        arch: String,
        err: String,
        log: String,
    },
    /// Not enough device memory (planned before the run where possible): what needs how much,
    /// what is free, and a suggestion.
    #[error("{0}")]
    OutOfMemory(String),
    /// Arguments a kernel cannot take (shapes, sizes).
    #[error("{0}")]
    Invalid(String),
}

/// Result alias of the GPU layer.
pub type Result<T, E = GpuError> = std::result::Result<T, E>;

/// A launcher's size check: `b` must hold at least `len` elements, else an error naming `what`
/// (a wrong shape is an error, never an out-of-bounds access).
pub(crate) fn need<T: cudarc::driver::DeviceRepr>(
    b: &DBuf<T>,
    len: usize,
    what: &str,
) -> Result<()> {
    if b.len() < len {
        return Err(GpuError::Invalid(format!(
            "{what}: buffer of {} elements, {len} needed",
            b.len()
        )));
    }
    Ok(())
}

pub(crate) fn driver_err(what: impl Into<String>) -> impl FnOnce(DriverError) -> GpuError {
    let what = what.into();
    move |e| GpuError::Driver {
        what,
        err: format!("{e:?}"),
    }
}
