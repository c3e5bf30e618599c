//! The CUDA device layer: one [`GpuDevice`] per GPU and process (context, stream, cuBLAS handle,
//! NVRTC-compiled modules), [`DBuf`] device buffers of [`GpuFloat`] elements, and launchers for
//! every kernel in `kernels/cu/`. Launchers are asynchronous on the device's one stream; errors of
//! a launch surface at the next [`GpuDevice::synchronize`] or download.

mod attention;
mod blas;
mod blocksel;
mod buffer;
mod device;
mod ops;
mod sparse;
mod topk_rows;
mod units;

pub use attention::{AttnKernel, AttnShape, FlashTuning};
pub use blocksel::{RowPool, RowRule, RowTransform, SORT_SMEM};
pub use buffer::{DBuf, GpuFloat};
pub use device::{GpuDevice, GpuError, GpuMark, GpuTimer, Result};
pub use half::bf16;
pub use ops::RowLayout;
pub use units::human_bytes;

#[cfg(test)]
mod tests {
    /// Every kernel source compiles with NVRTC (needs only libnvrtc, no GPU: skipped without it).
    #[test]
    fn kernels_compile_with_nvrtc() {
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            eprintln!("skipped: NVRTC (libnvrtc.so) not found on this machine");
            return;
        }
        for s in super::device::sources() {
            if let Err(e) = super::device::compile(s, "sm_90") {
                panic!("{e}");
            }
        }
    }
}
