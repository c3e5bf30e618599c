//! [`DeviceLayer::export_qkv`] of the GPU forward pass: the current layer's queries, keys and
//! log-sum-exp copied to f32 device tensors that outlive the layer.
//!
//! [`DeviceLayer::export_qkv`]: crate::attention::DeviceLayer::export_qkv

use attnscope_kernels::cuda::{DBuf, GpuFloat};

use super::device_layer::LayerCtx;
use crate::attention::{DeviceLayer, DeviceTensor};
use crate::error::{CoreError, Result};

/// One exported tensor: its device buffer (freed on drop), shape and device.
struct Exported {
    buf: DBuf<f32>,
    shape: Vec<usize>,
    ordinal: usize,
}

impl DeviceTensor for Exported {
    fn device_ptr(&self) -> u64 {
        self.buf.ptr()
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn ordinal(&self) -> usize {
        self.ordinal
    }
}

impl<T: GpuFloat> LayerCtx<'_, T> {
    /// See [`DeviceLayer::export_qkv`].
    pub(super) fn export(&mut self) -> Result<[Box<dyn DeviceTensor>; 3]> {
        if !self.done {
            self.dense()?;
        }
        let dev = &*self.model.dev;
        let c = &self.model.config;
        let (nh, nkv, d) = (c.n_heads, c.n_kv_heads, c.head_dim);
        let n = self.b.lse.len() / nh;
        let copy = |x: &DBuf<T>, shape: Vec<usize>| -> Result<Box<dyn DeviceTensor>> {
            let len = shape.iter().product();
            let mut buf = dev.alloc::<f32>(len, "exported tensor")?;
            dev.to_f32_mode(x, &mut buf, len, 0)?;
            Ok(Box::new(Exported {
                buf,
                shape,
                ordinal: dev.ordinal(),
            }))
        };
        let q = copy(&self.b.qh, vec![nh, n, d])?;
        let k = copy(&self.b.kh, vec![nkv, n, d])?;
        let mut lse = dev.alloc::<f32>(nh * n, "exported log-sum-exp")?;
        dev.to_f32_mode(&self.b.lse, &mut lse, nh * n, 0)?;
        let lse: Box<dyn DeviceTensor> = Box::new(Exported {
            buf: lse,
            shape: vec![nh, n],
            ordinal: dev.ordinal(),
        });
        // Other frameworks read them on their own streams: the copies must be done.
        dev.synchronize().map_err(CoreError::from)?;
        Ok([q, k, lse])
    }
}
