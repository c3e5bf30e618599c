//! The kernel sources (`kernels/cu/*.cu`, with `flash_tiles.cuh` before the flash kernels;
//! embedded at build time) and their NVRTC compile.

use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions};

use super::error::{GpuError, Result};

/// One kernel source file: its name and its text (the common header is prepended at compile).
pub(crate) struct Source {
    pub name: &'static str,
    pub code: &'static str,
    /// Lowest compute capability (major * 10 + minor) the source compiles for.
    pub min_cc: i32,
}

const COMMON: &str = include_str!("../../../cu/common.cuh");
pub(crate) static ELEMENTWISE: Source = Source {
    name: "elementwise",
    code: include_str!("../../../cu/elementwise.cu"),
    min_cc: 0,
};
pub(crate) static ROWWISE: Source = Source {
    name: "attention_rowwise",
    code: include_str!("../../../cu/attention_rowwise.cu"),
    min_cc: 0,
};
pub(crate) static FLASH: Source = Source {
    name: "flash",
    code: concat!(
        include_str!("../../../cu/flash_tiles.cuh"),
        include_str!("../../../cu/flash.cu")
    ),
    min_cc: 80,
};
pub(crate) static FLASH_SPARSE: Source = Source {
    name: "flash_sparse",
    code: concat!(
        include_str!("../../../cu/flash_tiles.cuh"),
        include_str!("../../../cu/flash_sparse.cu")
    ),
    min_cc: 80,
};

pub(crate) static BLOCKSEL: Source = Source {
    name: "blocksel",
    code: include_str!("../../../cu/blocksel.cu"),
    min_cc: 0,
};

pub(crate) static TOPK_ROWS: Source = Source {
    name: "topk_rows",
    code: include_str!("../../../cu/topk_rows.cu"),
    min_cc: 0,
};

/// Every kernel source, for compile checks.
pub(crate) fn sources() -> [&'static Source; 6] {
    [
        &ELEMENTWISE,
        &ROWWISE,
        &FLASH,
        &FLASH_SPARSE,
        &BLOCKSEL,
        &TOPK_ROWS,
    ]
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
