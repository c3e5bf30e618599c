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

/// Storage type of weights and activations on a GPU. Arithmetic accumulates in f32 either way;
/// the residual stream is always f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// f32 weights and activations, cuBLAS SGEMM, the exact row-wise attention kernel: matches the
    /// CPU reference to ~1e-5 (the precision for fidelity checks and method replay).
    #[default]
    F32,
    /// bf16 weights and activations, bf16 x bf16 -> f32 GEMMs and the tensor-core flash kernels
    /// (the precision for speed; as PyTorch's bf16 path).
    Bf16,
}

impl FromStr for Precision {
    type Err = CoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "f32" | "fp32" | "float32" => Ok(Self::F32),
            "bf16" | "bfloat16" => Ok(Self::Bf16),
            _ => Err(CoreError::Device(format!(
                "unknown precision '{s}' (use f32 or bf16)"
            ))),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_and_precisions_parse() {
        assert_eq!("cpu".parse::<Device>().ok(), Some(Device::Cpu));
        assert_eq!("cuda".parse::<Device>().ok(), Some(Device::Cuda(0)));
        assert_eq!("cuda:1".parse::<Device>().ok(), Some(Device::Cuda(1)));
        assert!("tpu".parse::<Device>().is_err());
        assert_eq!("bf16".parse::<Precision>().ok(), Some(Precision::Bf16));
        assert!("f16".parse::<Precision>().is_err());
    }

    #[test]
    fn cuda_without_a_gpu_is_a_plain_error() {
        if attnscope_kernels::gpu_available() {
            return;
        }
        let e = Device::Cuda(0)
            .check_available()
            .expect_err("no GPU here")
            .to_string();
        assert!(e.starts_with("device: "), "{e}");
        assert!(e.contains("cpu"), "the message suggests the CPU: {e}");
    }
}
