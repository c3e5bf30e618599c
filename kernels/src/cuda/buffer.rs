//! Device buffers and the element types kernels are instantiated for.

use cudarc::cublas::sys::cudaDataType;
use cudarc::driver::{CudaSlice, DevicePtr, DeviceRepr, ValidAsZeroBits};
use half::bf16;

/// A storage type of activations and weights on the GPU: `f32` (the exact path) or `bf16`.
/// Kernels compute in f32 either way.
pub trait GpuFloat: DeviceRepr + ValidAsZeroBits + Copy + Default + Send + Sync + 'static {
    /// Kernel name suffix (`f32`, `bf16`).
    const NAME: &'static str;
    /// The cuBLAS data type.
    const CUDA_TYPE: cudaDataType;
    /// A quiet-NaN bit pattern (poisoning outputs before tests), as u32 (f32) or u16 (bf16).
    const NAN_BITS: u32;
    fn from_f32(x: f32) -> Self;
    fn to_f32(self) -> f32;
}

impl GpuFloat for f32 {
    const NAME: &'static str = "f32";
    const CUDA_TYPE: cudaDataType = cudaDataType::CUDA_R_32F;
    const NAN_BITS: u32 = 0x7fc0_0000;
    fn from_f32(x: f32) -> Self {
        x
    }
    fn to_f32(self) -> f32 {
        self
    }
}

impl GpuFloat for bf16 {
    const NAME: &'static str = "bf16";
    const CUDA_TYPE: cudaDataType = cudaDataType::CUDA_R_16BF;
    const NAN_BITS: u32 = 0x7fc0;
    fn from_f32(x: f32) -> Self {
        bf16::from_f32(x)
    }
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
}

/// A device allocation of `len` elements of `T`, freed on drop.
#[derive(Debug)]
pub struct DBuf<T> {
    pub(crate) s: CudaSlice<T>,
}

impl<T: DeviceRepr> DBuf<T> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.s.len()
    }

    /// True when the buffer holds no element.
    pub fn is_empty(&self) -> bool {
        self.s.len() == 0
    }

    /// Size in bytes.
    pub fn bytes(&self) -> u64 {
        (self.s.len() * std::mem::size_of::<T>()) as u64
    }

    /// The raw device address (kernel argument).
    pub fn ptr(&self) -> u64 {
        let (p, _sync) = self.s.device_ptr(self.s.stream());
        p
    }

    /// The device address of element `i`.
    pub fn ptr_at(&self, i: usize) -> u64 {
        self.ptr() + (i * std::mem::size_of::<T>()) as u64
    }
}
