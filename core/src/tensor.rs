//! Host tensors: the f32 form every weight takes after loading.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{CoreError, Result};

/// A dense row-major f32 tensor in host memory.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Shape, outermost first (PyTorch order: a linear layer's weight is `[out, in]`).
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl HostTensor {
    /// Builds a tensor, checking that `data` has `shape`'s element count.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Option<Self> {
        (shape.iter().product::<usize>() == data.len()).then_some(Self { shape, data })
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True when the tensor holds no element.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// All weights of a model under their Hugging Face names
/// (`model.layers.0.self_attn.q_proj.weight`, ...), already converted to f32.
#[derive(Debug, Clone, Default)]
pub struct Weights {
    /// The file or folder the weights came from (used in error messages).
    pub source: PathBuf,
    pub tensors: BTreeMap<String, HostTensor>,
    /// Storage types seen at load with their tensor counts, e.g. `{"Q4_1": 180, "F32": 61}`.
    pub dtypes: BTreeMap<String, usize>,
    /// Norm weights already hold the multiplier `1 + w` of architectures that apply norms as
    /// `1 + w` (Gemma GGUF files: llama.cpp's converter adds the 1).
    pub norms_plus_one: bool,
}

impl Weights {
    /// An empty set of weights read from `source`.
    pub fn new(source: &Path) -> Self {
        Self {
            source: source.to_path_buf(),
            ..Self::default()
        }
    }

    /// Takes a tensor out by name, checking its shape.
    pub fn take(&mut self, name: &str, shape: &[usize]) -> Result<HostTensor> {
        let t = self
            .tensors
            .remove(name)
            .ok_or_else(|| CoreError::format(&self.source, format!("missing tensor '{name}'")))?;
        if t.shape != shape {
            return Err(CoreError::format(
                &self.source,
                format!(
                    "tensor '{name}' has shape {:?}, the config implies {:?}",
                    t.shape, shape
                ),
            ));
        }
        if let Some(i) = t.data.iter().position(|x| !x.is_finite()) {
            return Err(CoreError::format(
                &self.source,
                format!(
                    "tensor '{name}' has a non-finite value ({}) at element {i}",
                    t.data[i]
                ),
            ));
        }
        Ok(t)
    }

    /// Takes an optional tensor (a bias, a tied head): `None` when absent.
    pub fn take_opt(&mut self, name: &str, shape: &[usize]) -> Result<Option<HostTensor>> {
        if self.tensors.contains_key(name) {
            self.take(name, shape).map(Some)
        } else {
            Ok(None)
        }
    }
}
