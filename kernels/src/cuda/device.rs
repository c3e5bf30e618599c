//! [`GpuDevice`]: opening a GPU (with plain errors when there is none), compiling and caching the
//! kernel modules, launching, memory, timing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::cublas::CudaBlas;
use cudarc::driver::sys::{CUevent_flags, CUfunction_attribute, CUresult};
use cudarc::driver::{
    CudaContext, CudaEvent, CudaFunction, CudaModule, CudaStream, DeviceRepr, DriverError,
    LaunchConfig, PushKernelArg,
};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions};

use super::buffer::{DBuf, GpuFloat};
use super::units::human_bytes;

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

/// A count or offset as a kernel's `int` argument.
pub(crate) fn i(x: usize) -> Arg {
    Arg::I(x as i32)
}

pub(crate) fn driver_err(what: impl Into<String>) -> impl FnOnce(DriverError) -> GpuError {
    let what = what.into();
    move |e| GpuError::Driver {
        what,
        err: format!("{e:?}"),
    }
}

/// One kernel source file: its name and its text (the common header is prepended at compile).
pub(crate) struct Source {
    pub name: &'static str,
    pub code: &'static str,
    /// Lowest compute capability (major * 10 + minor) the source compiles for.
    pub min_cc: i32,
}

const COMMON: &str = include_str!("../../cu/common.cuh");
pub(crate) static ELEMENTWISE: Source = Source {
    name: "elementwise",
    code: include_str!("../../cu/elementwise.cu"),
    min_cc: 0,
};
pub(crate) static ROWWISE: Source = Source {
    name: "attention_rowwise",
    code: include_str!("../../cu/attention_rowwise.cu"),
    min_cc: 0,
};
pub(crate) static FLASH: Source = Source {
    name: "flash",
    code: include_str!("../../cu/flash.cu"),
    min_cc: 80,
};

pub(crate) static BLOCKSEL: Source = Source {
    name: "blocksel",
    code: include_str!("../../cu/blocksel.cu"),
    min_cc: 0,
};

/// Every kernel source, for compile checks.
pub(crate) fn sources() -> [&'static Source; 4] {
    [&ELEMENTWISE, &ROWWISE, &FLASH, &BLOCKSEL]
}

/// Compiles `src` to PTX for `arch` (e.g. `sm_90`): the NVRTC log is in the error.
pub(crate) fn compile(src: &Source, arch: &'static str) -> Result<cudarc::nvrtc::Ptx> {
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(GpuError::Unavailable(
            "NVRTC (libnvrtc.so) was not found; it ships with the CUDA toolkit: add its folder \
             (e.g. /usr/local/cuda/lib64) to LD_LIBRARY_PATH"
                .into(),
        ));
    }
    let code = format!("{COMMON}\n{}", src.code);
    let opts = CompileOptions {
        arch: Some(arch),
        name: Some(format!("{}.cu", src.name)),
        ..Default::default()
    };
    compile_ptx_with_opts(code, opts).map_err(|e| match e {
        cudarc::nvrtc::CompileError::CompileError { nvrtc, log, .. } => GpuError::Compile {
            module: src.name,
            arch: arch.to_string(),
            err: format!("{nvrtc:?}"),
            log: log.to_string_lossy().into_owned(),
        },
        other => GpuError::Compile {
            module: src.name,
            arch: arch.to_string(),
            err: format!("{other:?}"),
            log: String::new(),
        },
    })
}

/// A kernel argument.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Arg {
    /// A device pointer or any 64-bit value.
    P(u64),
    I(i32),
    L(i64),
    U(u32),
    F(f32),
}

/// One GPU: context, stream, cuBLAS handle and the compiled kernel modules. Open it with
/// [`GpuDevice::open`]; it is shared per process and ordinal.
pub struct GpuDevice {
    pub(crate) ordinal: usize,
    pub(crate) ctx: Arc<CudaContext>,
    pub(crate) stream: Arc<CudaStream>,
    pub(crate) blas: Mutex<CudaBlas>,
    name: String,
    cc: (i32, i32),
    arch: &'static str,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    funcs: Mutex<HashMap<(&'static str, String), CudaFunction>>,
}

impl std::fmt::Debug for GpuDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "GpuDevice(cuda:{} {} sm_{}{})",
            self.ordinal, self.name, self.cc.0, self.cc.1
        )
    }
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}

impl GpuDevice {
    /// Opens CUDA device `ordinal` (once per process; later calls share it). Fails with a plain
    /// message when there is no driver, no such GPU, or no cuBLAS / NVRTC library.
    pub fn open(ordinal: usize) -> Result<Arc<Self>> {
        static DEVICES: OnceLock<Mutex<HashMap<usize, Arc<GpuDevice>>>> = OnceLock::new();
        let map = DEVICES.get_or_init(|| Mutex::new(HashMap::new()));
        let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = map.get(&ordinal) {
            return Ok(d.clone());
        }
        // cudarc panics when a library is missing at first use; the checks below come first,
        // and the catch is a last guard so that a missing symbol is an error, never an abort.
        let dev = std::panic::catch_unwind(|| Self::open_uncached(ordinal))
            .map_err(|p| GpuError::Unavailable(format!("cuda:{ordinal}: {}", panic_text(p))))??;
        let dev = Arc::new(dev);
        map.insert(ordinal, dev.clone());
        Ok(dev)
    }

    fn open_uncached(ordinal: usize) -> Result<Self> {
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(GpuError::Unavailable(format!(
                "cuda:{ordinal} requested, but no NVIDIA driver was found on this machine \
                 (libcuda.so is missing); use --device cpu"
            )));
        }
        if let Err(e) = cudarc::driver::result::init() {
            return Err(GpuError::Unavailable(format!(
                "cuda:{ordinal} requested, but the NVIDIA driver found no usable GPU ({e:?}); \
                 use --device cpu"
            )));
        }
        let count = CudaContext::device_count().map_err(driver_err("counting devices"))?;
        if ordinal >= count.max(0) as usize {
            return Err(GpuError::Unavailable(format!(
                "cuda:{ordinal} requested, but this machine has {count} CUDA device(s){}",
                if count > 0 {
                    format!(" (use cuda:0..cuda:{})", count - 1)
                } else {
                    "; use --device cpu".into()
                }
            )));
        }
        if !unsafe { cudarc::cublas::sys::is_culib_present() } {
            return Err(GpuError::Unavailable(
                "cuBLAS (libcublas.so.13) was not found; add the CUDA library folder to \
                 LD_LIBRARY_PATH (e.g. LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/local/nvidia/lib64)"
                    .into(),
            ));
        }
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            return Err(GpuError::Unavailable(
                "NVRTC (libnvrtc.so.13) was not found; add the CUDA library folder to \
                 LD_LIBRARY_PATH (e.g. LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/local/nvidia/lib64)"
                    .into(),
            ));
        }
        let ctx = CudaContext::new(ordinal).map_err(driver_err("creating the context"))?;
        // One stream, launches in order: cudarc's per-buffer events are not needed.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(driver_err("creating a stream"))?;
        if ctx.has_async_alloc() {
            // Keep freed blocks in the stream-ordered pool (the default releases them at every
            // synchronize, so each forward pass would pay for fresh allocations).
            unsafe {
                let mut pool = std::ptr::null_mut();
                if cudarc::driver::sys::cuDeviceGetDefaultMemPool(&mut pool, ctx.cu_device())
                    == CUresult::CUDA_SUCCESS
                {
                    let mut keep = u64::MAX;
                    let _ = cudarc::driver::sys::cuMemPoolSetAttribute(
                        pool,
                        cudarc::driver::sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                        &mut keep as *mut u64 as *mut std::ffi::c_void,
                    );
                }
            }
        }
        let blas = CudaBlas::new(stream.clone()).map_err(|e| GpuError::Blas {
            what: "creating the handle".into(),
            err: format!("{e:?}"),
        })?;
        let name = ctx.name().map_err(driver_err("reading the device name"))?;
        let cc = ctx
            .compute_capability()
            .map_err(driver_err("reading the compute capability"))?;
        let arch: &'static str = Box::leak(format!("sm_{}{}", cc.0, cc.1).into_boxed_str());
        Ok(Self {
            ordinal,
            ctx,
            stream,
            blas: Mutex::new(blas),
            name,
            cc,
            arch,
            modules: Mutex::new(HashMap::new()),
            funcs: Mutex::new(HashMap::new()),
        })
    }

    /// The device's name (e.g. `NVIDIA H100 80GB HBM3`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The ordinal this device was opened with.
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    /// Compute capability `(major, minor)`.
    pub fn compute_capability(&self) -> (i32, i32) {
        self.cc
    }

    /// The NVRTC target, e.g. `sm_90`.
    pub fn arch(&self) -> &'static str {
        self.arch
    }

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

    /// `cuda:N (name)`.
    pub fn label(&self) -> String {
        format!("cuda:{} ({})", self.ordinal, self.name)
    }

    /// Waits for all queued work; asynchronous kernel errors surface here.
    pub fn synchronize(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(driver_err("running kernels (synchronize)"))
    }

    /// Compiles every kernel source for this device now (normally done at first use).
    pub fn compile_all(&self) -> Result<()> {
        for s in sources() {
            if self.cc.0 * 10 + self.cc.1 >= s.min_cc {
                self.module(s)?;
            }
        }
        Ok(())
    }

    fn module(&self, src: &'static Source) -> Result<Arc<CudaModule>> {
        let mut mods = self.modules.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = mods.get(src.name) {
            return Ok(m.clone());
        }
        if self.cc.0 * 10 + self.cc.1 < src.min_cc {
            return Err(GpuError::Invalid(format!(
                "kernels/cu/{}.cu needs compute capability {}.{} or later; {} is {}.{}",
                src.name,
                src.min_cc / 10,
                src.min_cc % 10,
                self.name,
                self.cc.0,
                self.cc.1
            )));
        }
        let ptx = compile(src, self.arch)?;
        let m = self
            .ctx
            .load_module(ptx)
            .map_err(driver_err(format!("loading the {} module", src.name)))?;
        mods.insert(src.name, m.clone());
        Ok(m)
    }

    pub(crate) fn func(&self, src: &'static Source, name: &str) -> Result<CudaFunction> {
        let key = (src.name, name.to_string());
        if let Some(f) = self
            .funcs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(f.clone());
        }
        let m = self.module(src)?;
        let f = m
            .load_function(name)
            .map_err(driver_err(format!("loading kernel {name}")))?;
        self.funcs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, f.clone());
        Ok(f)
    }

    /// Launches `src::name` on the device's stream.
    pub(crate) fn launch(
        &self,
        src: &'static Source,
        name: &str,
        grid: (u32, u32, u32),
        block: u32,
        smem: u32,
        args: &[Arg],
    ) -> Result<()> {
        let f = self.func(src, name)?;
        if smem > 48 * 1024 {
            f.set_attribute(
                CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                smem as i32,
            )
            .map_err(driver_err(format!(
                "raising {name}'s shared memory to {smem} bytes"
            )))?;
        }
        let mut b = self.stream.launch_builder(&f);
        for a in args {
            match a {
                Arg::P(p) => b.arg(p),
                Arg::I(i) => b.arg(i),
                Arg::L(l) => b.arg(l),
                Arg::U(u) => b.arg(u),
                Arg::F(x) => b.arg(x),
            };
        }
        let cfg = LaunchConfig {
            grid_dim: grid,
            block_dim: (block, 1, 1),
            shared_mem_bytes: smem,
        };
        unsafe { b.launch(cfg) }.map_err(driver_err(format!("launching {name}")))?;
        Ok(())
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

    /// Starts a timer on the device's stream (CUDA events).
    pub fn timer(&self) -> Result<GpuTimer> {
        let mk = || {
            self.ctx
                .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
                .map_err(driver_err("creating an event"))
        };
        let (start, end) = (mk()?, mk()?);
        start
            .record(&self.stream)
            .map_err(driver_err("recording an event"))?;
        Ok(GpuTimer { start, end })
    }

    /// Records an event on the device's stream now (for stage profiles: the elapsed time
    /// between two marks is read later with [`GpuMark::ms_since`], without synchronizing).
    pub fn mark(&self) -> Result<GpuMark> {
        let e = self
            .ctx
            .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(driver_err("creating an event"))?;
        e.record(&self.stream)
            .map_err(driver_err("recording an event"))?;
        Ok(GpuMark(e))
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

/// Blocks of 256 threads for a grid-stride loop over `total` elements.
pub(crate) fn grid_for(total: u64) -> u32 {
    total.div_ceil(256).clamp(1, 1 << 20) as u32
}

/// Elapsed device time between [`GpuDevice::timer`] and [`GpuTimer::stop_ms`].
pub struct GpuTimer {
    start: CudaEvent,
    end: CudaEvent,
}

impl std::fmt::Debug for GpuTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GpuTimer")
    }
}

impl GpuTimer {
    /// Records the end on `dev`'s stream, waits, and returns milliseconds since the start.
    pub fn stop_ms(self, dev: &GpuDevice) -> Result<f32> {
        self.end
            .record(&dev.stream)
            .map_err(driver_err("recording an event"))?;
        self.start
            .elapsed_ms(&self.end)
            .map_err(driver_err("timing (kernels failed?)"))
    }
}

/// A recorded point on the device's stream (see [`GpuDevice::mark`]).
pub struct GpuMark(CudaEvent);

impl std::fmt::Debug for GpuMark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GpuMark")
    }
}

impl GpuMark {
    /// Milliseconds from `earlier` to this mark (waits for both).
    pub fn ms_since(&self, earlier: &GpuMark) -> Result<f32> {
        earlier
            .0
            .elapsed_ms(&self.0)
            .map_err(driver_err("timing (kernels failed?)"))
    }
}
