//! Devices a forward pass can run on. The CPU f32 path is the reference.

use std::fmt;
use std::str::FromStr;

use crate::error::CoreError;

/// Where a forward pass runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    /// Host f32, multi-threaded (rayon + matrixmultiply). The reference path.
    #[default]
    Cpu,
    /// A CUDA GPU by ordinal (needs the `cuda` feature and a driver).
    Cuda(usize),
}

impl FromStr for Device {
    type Err = CoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| {
                    CoreError::Device(format!("unknown device '{s}' (use cpu, cuda or cuda:N)"))
                }),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => write!(f, "cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl Device {
    /// Checks that the device can be used in this build and on this machine.
    pub fn check_available(self) -> Result<(), CoreError> {
        match self {
            Self::Cpu => Ok(()),
            Self::Cuda(n) => attnscope_kernels::check_cuda_device(n).map_err(CoreError::Device),
        }
    }
}
