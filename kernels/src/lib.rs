//! attnscope-kernels: CUDA C sources and their launchers, compiled with NVRTC at first use.
//!
//! Without the `cuda` feature this crate compiles to a stub whose device check fails with a
//! clear message, so every other crate builds and runs on machines without CUDA.
//!
//! ```
//! // On a build without the `cuda` feature the check explains what is missing.
//! let r = attnscope_kernels::check_cuda_device(0);
//! assert!(cfg!(feature = "cuda") || r.is_err());
//! ```

/// Checks that CUDA device `ordinal` can be used; the error says why not.
pub fn check_cuda_device(ordinal: usize) -> Result<(), String> {
    if cfg!(feature = "cuda") {
        Err(format!(
            "cuda:{ordinal}: the CUDA path is not implemented yet in this build; use --device cpu"
        ))
    } else {
        Err(format!(
            "cuda:{ordinal} requested, but this attnscope was built without the `cuda` feature \
             (rebuild with `cargo build --release --features cuda`) ; use --device cpu"
        ))
    }
}
