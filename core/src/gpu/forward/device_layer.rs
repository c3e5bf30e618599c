//! [`LayerCtx`], the [`DeviceLayer`] handed to hooks during the GPU forward pass: capture, dense
//! attention, block selection and sparse measurement on the current layer's device tensors.

use attnscope_kernels::cuda::GpuFloat;
use ndarray::Array2;

use super::capture::{Bufs, CapBufs};
use super::model::GpuModel;
use crate::attention::DeviceLayer;
use crate::capture_stats::{CaptureOptions, HeadCapture};
use crate::error::{CoreError, Result};

/// The [`DeviceLayer`] handed to hooks: captures the current layer on the device.
pub(super) struct LayerCtx<'a, T> {
    pub(super) model: &'a GpuModel,
    pub(super) b: &'a mut Bufs<T>,
    pub(super) cap: &'a mut Option<CapBufs>,
    pub(super) done: bool,
    /// `cap.p` holds this layer's block mass (at `cap.block`).
    pub(super) captured: bool,
}

impl<T: GpuFloat> DeviceLayer for LayerCtx<'_, T> {
    fn capture(&mut self, opts: &CaptureOptions) -> Result<(Vec<HeadCapture>, Array2<f32>)> {
        let m = self.model;
        let dev = &*m.dev;
        let (nh, d) = (m.config.n_heads, m.config.head_dim);
        let n = self.b.lse.len() / nh;
        let block = opts.block.max(1);
        if self.cap.as_ref().is_none_or(|cb| cb.block != block) {
            *self.cap = Some(m.cap_bufs(n, block)?);
        }
        let cb = self
            .cap
            .as_mut()
            .ok_or_else(|| CoreError::Device("capture buffers".into()))?;
        m.capture_layer(self.b, cb, opts)?;
        self.done = true;
        self.captured = true;
        let nb = n.div_ceil(block);
        let lse = dev.download(&self.b.lse)?;
        let from = opts.block_mass_from.min(n);
        let rows = n - from;
        let sink = dev.download(&cb.sink)?;
        let pooled = dev.download(&cb.pooled)?;
        let out: Vec<f32> = dev
            .download(&self.b.attn)?
            .into_iter()
            .map(GpuFloat::to_f32)
            .collect();
        let heads = (0..nh)
            .map(|h| {
                // Only the kept rows of `P` come back to the host.
                let p = dev.download_range(&cb.p, (h * n + from) * nb, rows * nb)?;
                let bm = Array2::from_shape_vec((rows, nb), p);
                let pm = Array2::from_shape_vec(
                    (nb, nb),
                    pooled[h * nb * nb..(h + 1) * nb * nb].to_vec(),
                );
                match (bm, pm) {
                    (Ok(block_mass), Ok(pooled)) => Ok(HeadCapture {
                        lse: lse[h * n..(h + 1) * n].to_vec(),
                        block_mass,
                        block_mass_from: from,
                        sink_mass: sink[h * n..(h + 1) * n].to_vec(),
                        pooled,
                    }),
                    _ => Err(CoreError::Device("capture shapes".into())),
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let out = Array2::from_shape_vec((n, nh * d), out)
            .map_err(|e| CoreError::Device(format!("attention output: {e}")))?;
        Ok((heads, out))
    }

    fn device(&self) -> String {
        self.model.dev.label()
    }

    fn export_qkv(&mut self) -> Result<[Box<dyn crate::attention::DeviceTensor>; 3]> {
        self.export()
    }

    fn dense(&mut self) -> Result<()> {
        let m = self.model;
        let s = m.shape(self.b.lse.len() / m.config.n_heads);
        let kernel = m.attention_kernel(&CaptureOptions::default());
        m.dev.attention(
            &self.b.qh,
            &self.b.kh,
            &self.b.vh,
            &mut self.b.attn,
            &mut self.b.lse,
            s,
            kernel,
        )?;
        self.done = true;
        // Waits, so that callers timing what follows do not count the attention.
        m.dev.synchronize().map_err(CoreError::from)
    }

    fn block_select_measure(
        &mut self,
        spec: &crate::device_layer::BlockScoring<'_>,
        top_k: &[usize],
        keep_blocks: bool,
    ) -> Result<Vec<crate::device_layer::SparseMeasure>> {
        self.tensors()?.select_measure(spec, top_k, keep_blocks)
    }

    fn measure_blocks(
        &mut self,
        lists: &crate::device_layer::BlockLists<'_>,
    ) -> Result<crate::device_layer::SparseMeasure> {
        self.tensors()?.measure_lists(lists)
    }

    fn block_tile_max(&mut self, block: usize) -> Result<Vec<f32>> {
        self.tensors()?.block_tile_max(block)
    }

    fn block_mass_ranks(&mut self, block: usize) -> Result<Vec<u32>> {
        self.block_mass(block)?;
        let cb = self
            .cap
            .as_ref()
            .ok_or_else(|| CoreError::Device("capture buffers".into()))?;
        self.tensors()?.block_mass_ranks(&cb.p, cb.block)
    }

    fn block_mass_select_measure(
        &mut self,
        block: usize,
        top_k: &[Vec<usize>],
        keep_blocks: bool,
    ) -> Result<Vec<crate::device_layer::SparseMeasure>> {
        self.block_mass(block)?;
        let cb = self
            .cap
            .as_ref()
            .ok_or_else(|| CoreError::Device("capture buffers".into()))?;
        self.tensors()?
            .block_mass_select_measure(&cb.p, cb.block, top_k, keep_blocks)
    }
}

impl<T: GpuFloat> LayerCtx<'_, T> {
    /// Makes `cap.p` hold this layer's block mass at `block`: the capture's when it ran at that
    /// block, else the capture pass alone on the device (the LSE of [`DeviceLayer::dense`] or
    /// [`DeviceLayer::capture`]).
    fn block_mass(&mut self, block: usize) -> Result<()> {
        let block = block.max(1);
        if !self.done {
            return Err(CoreError::Device(
                "block mass needs the layer's attention first (DeviceLayer::capture or dense)"
                    .into(),
            ));
        }
        if self.captured && self.cap.as_ref().is_some_and(|cb| cb.block == block) {
            return Ok(());
        }
        let m = self.model;
        let n = self.b.lse.len() / m.config.n_heads;
        if self.cap.as_ref().is_none_or(|cb| cb.block != block) {
            *self.cap = Some(m.cap_bufs(n, block)?);
        }
        let cb = self
            .cap
            .as_mut()
            .ok_or_else(|| CoreError::Device("capture buffers".into()))?;
        let opts = CaptureOptions {
            block,
            ..CaptureOptions::default()
        };
        m.dev.capture(
            &self.b.qh,
            &self.b.kh,
            &self.b.lse,
            &mut cb.p,
            &mut cb.sink,
            m.shape(n),
            block,
            opts.sink_tokens,
            m.attention_kernel(&opts),
        )?;
        self.captured = true;
        Ok(())
    }

    /// The layer's device tensors, once [`DeviceLayer::capture`] has computed the LSE and the
    /// dense output.
    fn tensors(&self) -> Result<crate::gpu::blocks::LayerTensors<'_, T>> {
        if !self.done {
            return Err(CoreError::Device(
                "sparse measurement needs the layer's capture first (DeviceLayer::capture)".into(),
            ));
        }
        let c = &self.model.config;
        Ok(crate::gpu::blocks::LayerTensors {
            dev: &self.model.dev,
            q: &self.b.qh,
            k: &self.b.kh,
            v: &self.b.vh,
            lse: &self.b.lse,
            dense: &self.b.attn,
            nh: c.n_heads,
            nkv: c.n_kv_heads,
            n: self.b.lse.len() / c.n_heads,
            d: c.head_dim,
        })
    }
}
