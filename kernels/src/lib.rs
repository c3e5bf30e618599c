//! attnscope-kernels: the CUDA C kernels of attnscope (`cu/*.cu`, embedded with `include_str!`)
//! and their launchers, compiled with NVRTC for the device's architecture at first use and cached
//! per process; cuBLAS for the matrix products.
//!
//! With the `cuda` feature the [`cuda`] module holds the device layer: [`cuda::GpuDevice`]
//! (context, stream, cuBLAS handle, compiled modules), device buffers ([`cuda::DBuf`]) and one
//! launcher per kernel: embedding gather, RMSNorm, rotate-half RoPE, bias add, head-major split,
//! SiLU-multiply, residual add, causal GQA attention (a tensor-core flash kernel in bf16 with f32
//! accumulation, and an exact row-wise kernel for f32), sparse attention over a selection (a
//! block-sparse tensor-core kernel over per-query-tile key lists in bf16, a row-wise one for f32)
//! and the capture pass (per-query LSE, key-block mass `P[i, b]`, sink mass, pooled block map)
//! that never writes an `n x n` score matrix.
//! cudarc loads the driver, cuBLAS and NVRTC dynamically, so a `cuda` build compiles and runs (on
//! the CPU) on machines without CUDA; asking for the GPU there gives a plain error.
//! Without the feature this crate is a stub whose device check says how to get the GPU path.
//!
//! ```
//! // Everywhere: a clear answer, never a panic, whether or not a GPU is present.
//! match attnscope_kernels::check_cuda_device(0) {
//!     Ok(()) => println!("cuda:0 is usable"),
//!     Err(why) => println!("no GPU path here: {why}"),
//! }
//! ```

#[cfg(feature = "cuda")]
pub mod cuda;

/// True when this build includes the CUDA path (the `cuda` feature).
pub const CUDA_BUILD: bool = cfg!(feature = "cuda");

/// Checks that CUDA device `ordinal` can be used (opening it when it can); the error says why not.
pub fn check_cuda_device(ordinal: usize) -> Result<(), String> {
    #[cfg(feature = "cuda")]
    {
        cuda::GpuDevice::open(ordinal)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
    #[cfg(not(feature = "cuda"))]
    {
        Err(format!(
            "cuda:{ordinal} requested, but this attnscope was built without the `cuda` feature \
             (rebuild with `cargo build --release --workspace --features attnscope-analysis/cuda`); \
             use --device cpu"
        ))
    }
}

/// True when a CUDA GPU can be used here (driver, device, cuBLAS and NVRTC present).
/// GPU tests call this and skip with a printed notice when it is false.
pub fn gpu_available() -> bool {
    check_cuda_device(0).is_ok()
}
