//! Matrix products through cuBLAS: `y = x W^T` with PyTorch's `[out, in]` weights, bf16 or f32
//! operands, f32 accumulation (`CUBLAS_COMPUTE_32F`; no TF32: the default math mode keeps f32 exact).

use std::ffi::c_void;

use cudarc::cublas::result::gemm_ex;
use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t};

use super::buffer::{DBuf, GpuFloat};
use super::device::{GpuDevice, GpuError, Result};

impl GpuDevice {
    /// `y[n, out] = x[n, in] @ w[out, in]^T + beta * y`, row-major; `x`, `w` of type `TI`, `y`
    /// of type `TO` (bf16 x bf16 -> f32 lets the residual stream stay f32 with `beta = 1`).
    #[allow(clippy::too_many_arguments)]
    pub fn linear<TI: GpuFloat, TO: GpuFloat>(
        &self,
        x: &DBuf<TI>,
        w: &DBuf<TI>,
        y: &mut DBuf<TO>,
        n: usize,
        inp: usize,
        out: usize,
        beta: f32,
    ) -> Result<()> {
        if x.len() < n * inp || w.len() < out * inp || y.len() < n * out {
            return Err(GpuError::Invalid(format!(
                "linear: x {} (need {}), w {} (need {}), y {} (need {})",
                x.len(),
                n * inp,
                w.len(),
                out * inp,
                y.len(),
                n * out
            )));
        }
        let big = [n, inp, out].iter().any(|&v| v > i32::MAX as usize);
        if big {
            return Err(GpuError::Invalid("linear: a dimension exceeds i32".into()));
        }
        let alpha = 1.0f32;
        let blas = self.blas.lock().unwrap_or_else(|p| p.into_inner());
        // Column-major view: C[out, n] = W^T[out, in] (W row-major is col-major [in, out]) * X[in, n].
        unsafe {
            gemm_ex(
                *blas.handle(),
                cublasOperation_t::CUBLAS_OP_T,
                cublasOperation_t::CUBLAS_OP_N,
                out as i32,
                n as i32,
                inp as i32,
                &alpha as *const f32 as *const c_void,
                w.ptr() as *const c_void,
                TI::CUDA_TYPE,
                inp as i32,
                x.ptr() as *const c_void,
                TI::CUDA_TYPE,
                inp as i32,
                &beta as *const f32 as *const c_void,
                y.ptr() as *mut c_void,
                TO::CUDA_TYPE,
                out as i32,
                cublasComputeType_t::CUBLAS_COMPUTE_32F,
                cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| GpuError::Blas {
            what: format!(
                "gemm {n}x{inp} @ ({out}x{inp})^T ({} -> {})",
                TI::NAME,
                TO::NAME
            ),
            err: format!("{e:?}"),
        })
    }
}
