//! [`GpuDevice`]: opening a GPU (with plain errors when there is none), its properties, the
//! compiled kernel modules and their functions, and launching a kernel on the device's stream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::cublas::CudaBlas;
use cudarc::driver::sys::{CUfunction_attribute, CUresult};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaStream, LaunchConfig, PushKernelArg,
};

use super::error::{driver_err, GpuError, Result};
use super::sources::{compile, sources, Source};

/// A count or offset as a kernel's `int` argument.
pub(crate) fn i(x: usize) -> Arg {
    Arg::I(x as i32)
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
}

/// Blocks of 256 threads for a grid-stride loop over `total` elements.
pub(crate) fn grid_for(total: u64) -> u32 {
    total.div_ceil(256).clamp(1, 1 << 20) as u32
}
