//! Device memory: what is free, out-of-memory errors with the numbers, buffers, copies between
//! host and device, and fills.

use cudarc::driver::sys::CUresult;
use cudarc::driver::DeviceRepr;

use super::context::{grid_for, Arg, GpuDevice};
use super::error::{driver_err, GpuError, Result};
use super::sources::ELEMENTWISE;
use crate::cuda::buffer::{DBuf, GpuFloat};
use crate::cuda::units::human_bytes;

impl GpuDevice {
    /// `(free, total)` device memory in bytes.
    pub fn memory(&self) -> Result<(u64, u64)> {
        let (f, t) = self
            .ctx
            .mem_get_info()
            .map_err(driver_err("reading free memory"))?;
        Ok((f as u64, t as u64))
    }

    /// Bytes this process can still allocate: the driver's free memory plus what the
    /// stream-ordered pool holds unused (freed buffers are kept there for reuse).
    pub fn available_memory(&self) -> Result<u64> {
        let (free, _) = self.memory()?;
        let mut pooled_free = 0u64;
        if self.ctx.has_async_alloc() {
            unsafe {
                use cudarc::driver::sys::{
                    cuDeviceGetDefaultMemPool, cuMemPoolGetAttribute, CUmemPool_attribute as A,
                };
                let mut pool = std::ptr::null_mut();
                if cuDeviceGetDefaultMemPool(&mut pool, self.ctx.cu_device())
                    == CUresult::CUDA_SUCCESS
                {
                    let (mut reserved, mut used) = (0u64, 0u64);
                    let r1 = cuMemPoolGetAttribute(
                        pool,
                        A::CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT,
                        &mut reserved as *mut u64 as *mut std::ffi::c_void,
                    );
                    let r2 = cuMemPoolGetAttribute(
                        pool,
                        A::CU_MEMPOOL_ATTR_USED_MEM_CURRENT,
                        &mut used as *mut u64 as *mut std::ffi::c_void,
                    );
                    if r1 == CUresult::CUDA_SUCCESS && r2 == CUresult::CUDA_SUCCESS {
                        pooled_free = reserved.saturating_sub(used);
                    }
                }
            }
        }
        Ok(free + pooled_free)
    }

    /// The most bytes the stream-ordered pool has held in use at once (its high watermark:
    /// every buffer of this process, weights included), or `None` without async allocation.
    pub fn peak_pool_memory(&self) -> Option<u64> {
        if !self.ctx.has_async_alloc() {
            return None;
        }
        use cudarc::driver::sys::{
            cuDeviceGetDefaultMemPool, cuMemPoolGetAttribute, CUmemPool_attribute as A,
        };
        let mut pool = std::ptr::null_mut();
        let mut high = 0u64;
        // SAFETY: the out-pointers are valid for the calls' duration.
        let ok = unsafe {
            cuDeviceGetDefaultMemPool(&mut pool, self.ctx.cu_device()) == CUresult::CUDA_SUCCESS
                && cuMemPoolGetAttribute(
                    pool,
                    A::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
                    &mut high as *mut u64 as *mut std::ffi::c_void,
                ) == CUresult::CUDA_SUCCESS
        };
        ok.then_some(high)
    }

    /// An OOM error for `what` needing `need` bytes, with the device's free memory.
    pub fn oom(&self, what: &str, need: u64, suggestion: &str) -> GpuError {
        let (_, total) = self.memory().unwrap_or((0, 0));
        let free = self.available_memory().unwrap_or(0);
        GpuError::OutOfMemory(format!(
            "not enough GPU memory on {}: {what} needs {}, {} of {} are free. {suggestion}",
            self.label(),
            human_bytes(need),
            human_bytes(free),
            human_bytes(total)
        ))
    }

    /// Allocates `len` uninitialized elements (`what` names the buffer in errors).
    pub fn alloc<T: DeviceRepr>(&self, len: usize, what: &str) -> Result<DBuf<T>> {
        let s = unsafe { self.stream.alloc::<T>(len.max(1)) }.map_err(|e| {
            if e.0 == CUresult::CUDA_ERROR_OUT_OF_MEMORY {
                self.oom(
                    what,
                    (len * std::mem::size_of::<T>()) as u64,
                    "use a shorter input, fewer captured layers, or --device cpu",
                )
            } else {
                driver_err(format!("allocating {what}"))(e)
            }
        })?;
        Ok(DBuf { s })
    }

    /// Copies `data` to a new device buffer.
    pub fn upload<T: DeviceRepr>(&self, data: &[T], what: &str) -> Result<DBuf<T>> {
        let mut b = self.alloc::<T>(data.len(), what)?;
        if !data.is_empty() {
            self.stream
                .memcpy_htod(data, &mut b.s)
                .map_err(driver_err(format!("copying {what} to the device")))?;
        }
        Ok(b)
    }

    /// Copies `data` into the start of an existing buffer.
    pub fn write<T: DeviceRepr>(&self, data: &[T], dst: &mut DBuf<T>) -> Result<()> {
        if data.len() > dst.len() {
            return Err(GpuError::Invalid(format!(
                "writing {} elements into a buffer of {}",
                data.len(),
                dst.len()
            )));
        }
        let mut view = dst.s.slice_mut(0..data.len());
        self.stream
            .memcpy_htod(data, &mut view)
            .map_err(driver_err("copying to the device"))
    }

    /// Copies a whole buffer back to the host (waits for queued work).
    pub fn download<T: DeviceRepr + Default + Clone>(&self, b: &DBuf<T>) -> Result<Vec<T>> {
        self.download_range(b, 0, b.len())
    }

    /// Copies elements `start..start + len` back to the host.
    pub fn download_range<T: DeviceRepr + Default + Clone>(
        &self,
        b: &DBuf<T>,
        start: usize,
        len: usize,
    ) -> Result<Vec<T>> {
        if start + len > b.len() {
            return Err(GpuError::Invalid(format!(
                "reading {start}..{} of a buffer of {}",
                start + len,
                b.len()
            )));
        }
        let mut out = vec![T::default(); len];
        if len > 0 {
            let view = b.s.slice(start..start + len);
            self.stream
                .memcpy_dtoh(&view, &mut out)
                .map_err(driver_err("copying from the device"))?;
        }
        self.synchronize()?;
        Ok(out)
    }

    /// Fills `b` with NaN (poisoning outputs so that an unwritten element fails a test).
    pub fn poison<T: GpuFloat>(&self, b: &mut DBuf<T>) -> Result<()> {
        self.fill_bits(b, T::NAN_BITS)
    }

    /// Fills `b` with zeros.
    pub fn zero<T: GpuFloat>(&self, b: &mut DBuf<T>) -> Result<()> {
        self.fill_bits(b, 0)
    }

    fn fill_bits<T: GpuFloat>(&self, b: &mut DBuf<T>, bits: u32) -> Result<()> {
        let len = b.len() as i64;
        let (name, bits) = match std::mem::size_of::<T>() {
            4 => ("fill_u32", bits),
            2 => ("fill_u16", bits & 0xffff),
            s => return Err(GpuError::Invalid(format!("no fill for {s}-byte elements"))),
        };
        self.launch(
            &ELEMENTWISE,
            name,
            (grid_for(len as u64), 1, 1),
            256,
            0,
            &[Arg::P(b.ptr()), Arg::L(len), Arg::U(bits)],
        )
    }
}
