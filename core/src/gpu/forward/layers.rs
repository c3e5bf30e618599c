//! The forward pass proper: [`GpuModel::forward`] (the hook at every layer, as on the CPU),
//! [`GpuModel::forward_device_capture`] (capture kept on the device, for timing) and the layer loop
//! they share, with its optional stage profile.

use attnscope_kernels::cuda::{AttnKernel, DBuf, GpuDevice, GpuFloat, RowLayout};
use ndarray::Array2;

use super::capture::CapBufs;
use super::device_layer::LayerCtx;
use super::model::{GpuModel, W};
use crate::attention::{sparse_attention, AttentionHook, HookAction, LayerQkv};
use crate::capture_stats::CaptureOptions;
use crate::device::{Device, Precision};
use crate::error::{CoreError, Result};
use crate::gpu::plan::MemoryPlan;
use crate::gpu::weights::GpuWeights;
use crate::model::DeviceModel;
use crate::tile_lists::TileLists;

impl DeviceModel for GpuModel {
    fn device(&self) -> Device {
        Device::Cuda(self.dev.ordinal())
    }

    fn forward(
        &self,
        ids: &[u32],
        hook: &mut dyn AttentionHook,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Array2<f32>> {
        GpuModel::forward(self, ids, hook, progress)
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// What a device-side capture run measured (see [`GpuModel::forward_device_capture`]).
#[derive(Debug, Clone)]
pub struct DeviceCaptureSummary {
    pub tokens: usize,
    /// Captured layers (empty for a plain forward).
    pub layers: Vec<usize>,
    /// Mean sink mass per captured layer and q-head.
    pub sink_mass: Vec<Vec<f64>>,
    /// Device time of the whole pass (embedding to final norm), milliseconds.
    pub device_ms: f32,
    /// The attention kernel used.
    pub kernel: AttnKernel,
    /// The memory plan of the run.
    pub plan: MemoryPlan,
}

/// Stage times of a forward pass (`ATTNSCOPE_GPU_PROFILE=1`): device events between steps,
/// summed over layers and printed to stderr at the end.
struct Profile {
    marks: Vec<(&'static str, attnscope_kernels::cuda::GpuMark)>,
}

impl Profile {
    fn new(dev: &GpuDevice) -> Option<Self> {
        std::env::var_os("ATTNSCOPE_GPU_PROFILE")?;
        let m = dev.mark().ok()?;
        Some(Self {
            marks: vec![("start", m)],
        })
    }

    fn mark(p: &mut Option<Self>, dev: &GpuDevice, stage: &'static str) {
        if let Some(p) = p {
            if let Ok(m) = dev.mark() {
                p.marks.push((stage, m));
            }
        }
    }

    fn report(self, n: usize) {
        let mut sums: Vec<(&'static str, f64)> = Vec::new();
        for w in self.marks.windows(2) {
            let ms = w[1].1.ms_since(&w[0].1).unwrap_or(f32::NAN) as f64;
            match sums.iter_mut().find(|(k, _)| *k == w[1].0) {
                Some(e) => e.1 += ms,
                None => sums.push((w[1].0, ms)),
            }
        }
        let total: f64 = sums.iter().map(|e| e.1).sum();
        eprintln!("GPU stage profile, {n} tokens: {total:.2} ms");
        for (k, ms) in sums {
            eprintln!("  {k:<28} {ms:>9.2} ms {:>5.1}%", 100.0 * ms / total);
        }
    }
}

/// How the layer loop attends: through the hook, or capturing on the device.
enum Mode<'a> {
    Hook(&'a mut dyn AttentionHook),
    /// Capture the listed layers (all when `None`) on the device, keeping only sink masses.
    Device(Option<&'a CaptureOptions>, &'a mut Vec<(usize, DBuf<f32>)>),
}

impl GpuModel {
    /// Runs the model over `ids` on the GPU; returns the final normed hidden states
    /// `[n, hidden]` (f32, on the host). The hook is called at every layer as on the CPU.
    pub fn forward(
        &self,
        ids: &[u32],
        hook: &mut dyn AttentionHook,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Array2<f32>> {
        self.check_ids(ids)?;
        let hidden = match &self.w {
            W::F32(w) => self.run(w, ids, Mode::Hook(hook), progress)?,
            W::Bf16(w) => self.run(w, ids, Mode::Hook(hook), progress)?,
        };
        let v = self.dev.download(&hidden)?;
        Array2::from_shape_vec((ids.len(), self.config.hidden), v)
            .map_err(|e| CoreError::Device(format!("hidden states: {e}")))
    }

    /// A forward pass that captures every layer in `capture` (all layers when its `layers` is
    /// `None`; no capture when `capture` is `None`) on the device, copying back only the mean
    /// sink mass per (layer, head): for timing full capture without host copies. The device time
    /// covers embedding to final norm.
    pub fn forward_device_capture(
        &self,
        ids: &[u32],
        capture: Option<&CaptureOptions>,
    ) -> Result<DeviceCaptureSummary> {
        self.check_ids(ids)?;
        let n = ids.len();
        let layers: Vec<usize> = match capture {
            None => vec![],
            Some(o) => o
                .layers
                .clone()
                .unwrap_or_else(|| (0..self.config.n_layers).collect()),
        };
        let plan = self.plan(n, capture, layers.len());
        self.check_plan(&plan)?;
        let mut kept = Vec::new();
        let timer = self.dev.timer()?;
        let mode = Mode::Device(capture, &mut kept);
        match &self.w {
            W::F32(w) => self.run(w, ids, mode, &mut |_| {})?,
            W::Bf16(w) => self.run(w, ids, mode, &mut |_| {})?,
        };
        let device_ms = timer.stop_ms(&self.dev)?;
        let heads = self.config.n_heads;
        let mut sink_mass = Vec::new();
        for (_, b) in &kept {
            let v = self.dev.download(b)?;
            sink_mass.push(
                v.chunks(n)
                    .take(heads)
                    .map(|c| c.iter().map(|&x| x as f64).sum::<f64>() / n as f64)
                    .collect(),
            );
        }
        let opts = capture.cloned().unwrap_or_default();
        Ok(DeviceCaptureSummary {
            tokens: n,
            layers: kept.iter().map(|(l, _)| *l).collect(),
            sink_mass,
            device_ms,
            kernel: self.attention_kernel(&opts),
            plan,
        })
    }

    /// The decoder, steps numbered as in `model/decoder.rs`. Returns the final hidden states on
    /// the device.
    fn run<T: GpuFloat>(
        &self,
        w: &GpuWeights<T>,
        ids: &[u32],
        mut mode: Mode<'_>,
        progress: &mut dyn FnMut(usize),
    ) -> Result<DBuf<f32>> {
        let dev = &*self.dev;
        let c = &self.config;
        let n = ids.len();
        let (h, d, f) = (c.hidden, c.head_dim, c.intermediate);
        let (nh, nkv) = (c.n_heads, c.n_kv_heads);
        let (qd, kvd) = (nh * d, nkv * d);
        let wq = qd + 2 * kvd;
        if let Mode::Hook(_) = mode {
            self.check_plan(&self.plan(n, None, 0))?;
        }
        let ids_d = dev.upload(ids, "token ids")?;
        let mut b = self.bufs::<T>(n)?;
        let mut cap: Option<CapBufs> = None;
        let shape = self.shape(n);
        let dense_kernel = match self.precision {
            Precision::F32 => AttnKernel::Rowwise,
            Precision::Bf16 => AttnKernel::auto::<T>(dev, d, 64, 0),
        };
        let mut prof = Profile::new(dev);
        // 1. Token embeddings.
        dev.embed_gather(&w.embed, &ids_d, &mut b.x, n, h)?;
        for (l, lw) in w.layers.iter().enumerate() {
            Profile::mark(&mut prof, dev, "embedding, other");
            // 2. Pre-attention RMSNorm.
            dev.rms_norm(&b.x, &mut b.xn, &lw.attn_norm, n, h, c.rms_eps)?;
            Profile::mark(&mut prof, dev, "rms norms");
            // 3. Q, K, V projections (one fused product), with biases where the architecture has them.
            dev.linear(&b.xn, &lw.wqkv, &mut b.qkv, n, h, wq, 0.0)?;
            Profile::mark(&mut prof, dev, "qkv gemm");
            if let Some(bias) = &lw.bqkv {
                dev.add_bias(&mut b.qkv, bias, n, wq, wq, 0)?;
            }
            // 4. Per-head q/k RMSNorm (Qwen3).
            if let (Some(qn), Some(kn)) = (&lw.q_norm, &lw.k_norm) {
                let lay = |heads, off| RowLayout {
                    rows: n * heads,
                    cols: d,
                    per_row: heads,
                    ld: wq,
                    col_off: off,
                };
                dev.rms_norm_inplace(&mut b.qkv, qn, lay(nh, 0), c.rms_eps)?;
                dev.rms_norm_inplace(&mut b.qkv, kn, lay(nkv, qd), c.rms_eps)?;
            }
            // 5. Rotary position embedding of q and k; then head-major copies for attention.
            dev.rope(&mut b.qkv, &w.cos, &w.sin, n, nh, d, wq, 0)?;
            dev.rope(&mut b.qkv, &w.cos, &w.sin, n, nkv, d, wq, qd)?;
            dev.to_head_major(&b.qkv, &mut b.qh, n, nh, d, wq, 0)?;
            dev.to_head_major(&b.qkv, &mut b.kh, n, nkv, d, wq, qd)?;
            dev.to_head_major(&b.qkv, &mut b.vh, n, nkv, d, wq, qd + kvd)?;
            Profile::mark(&mut prof, dev, "bias, q/k norm, rope, split");
            // 6. Attention through the hook: dense, sparse, or the hook's exact output.
            match &mut mode {
                Mode::Hook(hook) if hook.inspects(l) => {
                    let host = dev.download(&b.qkv)?;
                    let host: Vec<f32> = host.into_iter().map(GpuFloat::to_f32).collect();
                    let all = Array2::from_shape_vec((n, wq), host)
                        .map_err(|e| CoreError::Device(format!("qkv: {e}")))?;
                    let q = all.slice(ndarray::s![.., ..qd]).to_owned();
                    let k = all.slice(ndarray::s![.., qd..qd + kvd]).to_owned();
                    let v = all.slice(ndarray::s![.., qd + kvd..]).to_owned();
                    let qkv = LayerQkv {
                        layer: l,
                        n_heads: nh,
                        n_kv_heads: nkv,
                        head_dim: d,
                        q: q.view(),
                        k: k.view(),
                        v: v.view(),
                        rule: crate::attention::ScoreRule::plain(d),
                    };
                    let mut ctx = LayerCtx {
                        model: self,
                        b: &mut b,
                        cap: &mut cap,
                        done: false,
                        captured: false,
                    };
                    let action = hook.on_layer_device(&qkv, &mut ctx)?;
                    let done = ctx.done;
                    match action {
                        HookAction::Dense => {
                            if !done {
                                dev.attention(
                                    &b.qh,
                                    &b.kh,
                                    &b.vh,
                                    &mut b.attn,
                                    &mut b.lse,
                                    shape,
                                    dense_kernel,
                                )?;
                            }
                        }
                        HookAction::DenseOutput(out) => {
                            if !done {
                                self.upload_attn(&out, &mut b.attn, n)?;
                            }
                        }
                        HookAction::Sparse(sel) => self.sparse_on_device(&qkv, &sel, &mut b)?,
                    }
                }
                Mode::Device(Some(opts), kept)
                    if opts.layers.as_ref().is_none_or(|ls| ls.contains(&l)) =>
                {
                    let block = opts.block.max(1);
                    if cap.as_ref().is_none_or(|cb| cb.block != block) {
                        cap = Some(self.cap_bufs(n, block)?);
                    }
                    let cb = cap
                        .as_mut()
                        .ok_or_else(|| CoreError::Device("capture buffers".into()))?;
                    self.capture_layer(&mut b, cb, opts)?;
                    let mut keep = self.alloc::<f32>(nh * n, "kept sink mass")?;
                    // A device-to-device copy of the sink mass (zeroed buffer + add).
                    dev.zero(&mut keep)?;
                    dev.add_into(&mut keep, &cb.sink, nh * n)?;
                    kept.push((l, keep));
                }
                _ => {
                    dev.attention(
                        &b.qh,
                        &b.kh,
                        &b.vh,
                        &mut b.attn,
                        &mut b.lse,
                        shape,
                        dense_kernel,
                    )?;
                }
            }
            Profile::mark(&mut prof, dev, "attention (+capture)");
            // 7. Output projection and residual (accumulated into the f32 stream by the GEMM).
            dev.linear(&b.attn, &lw.wo, &mut b.x, n, qd, h, 1.0)?;
            Profile::mark(&mut prof, dev, "o gemm + residual");
            // 8. Post-attention RMSNorm, SiLU-gated MLP, residual.
            dev.rms_norm(&b.x, &mut b.xn, &lw.mlp_norm, n, h, c.rms_eps)?;
            Profile::mark(&mut prof, dev, "rms norms");
            dev.linear(&b.xn, &lw.wgu, &mut b.gu, n, h, 2 * f, 0.0)?;
            Profile::mark(&mut prof, dev, "gate|up gemm");
            dev.silu_mul(&b.gu, &mut b.act, n, f)?;
            Profile::mark(&mut prof, dev, "silu-mul");
            dev.linear(&b.act, &lw.wdown, &mut b.x, n, f, h, 1.0)?;
            Profile::mark(&mut prof, dev, "down gemm + residual");
            progress(l);
        }
        // 9. Final RMSNorm.
        let mut out = self.alloc::<f32>(n * h, "final hidden states")?;
        dev.rms_norm(&b.x, &mut out, &w.norm, n, h, c.rms_eps)?;
        Profile::mark(&mut prof, dev, "embedding, other");
        if let Some(p) = prof {
            p.report(n);
        }
        Ok(out)
    }

    /// The attention of a hook's selection: on the device for plain causal layers, on the host
    /// otherwise (windows and soft-capping: [`sparse_attention`]). On the device, bf16 storage
    /// with head dim 64 or 128 on sm_80+ takes the block-sparse tensor-core kernel
    /// (`flash_sparse`, the selection as [`TileLists`]); other cases the row-wise `sparse_rows`
    /// (the selection's compressed rows). `ATTNSCOPE_GPU_SPARSE=0` computes on the host,
    /// `=rows` forces `sparse_rows`.
    fn sparse_on_device<T: GpuFloat>(
        &self,
        qkv: &LayerQkv<'_>,
        sel: &crate::attention::TokenSelection,
        b: &mut super::capture::Bufs<T>,
    ) -> Result<()> {
        let n = qkv.len();
        let choice = std::env::var("ATTNSCOPE_GPU_SPARSE").unwrap_or_default();
        if !qkv.rule.is_plain_causal() || choice == "0" {
            let out = sparse_attention(qkv, sel)?;
            return self.upload_attn(&out, &mut b.attn, n);
        }
        sel.validate(qkv.n_heads, n)?;
        let shape = self.shape(n);
        if choice != "rows"
            && AttnKernel::auto::<T>(&self.dev, shape.head_dim, 64, 0) == AttnKernel::Flash
        {
            let lists = TileLists::new(sel, qkv.n_heads, n);
            let offsets = self.dev.upload(&lists.offsets, "sparse tile offsets")?;
            let keys = self.dev.upload(&lists.keys, "sparse tile keys")?;
            let mask = self.dev.upload(&lists.mask, "sparse tile masks")?;
            return self
                .dev
                .flash_sparse_attention(
                    &b.qh,
                    &b.kh,
                    &b.vh,
                    &offsets,
                    &keys,
                    &mask,
                    shape,
                    &mut b.attn,
                )
                .map_err(CoreError::from);
        }
        let (offsets, keys) = sel.csr();
        let offsets: Vec<u64> = offsets.iter().map(|&o| o as u64).collect();
        let offsets = self.dev.upload(&offsets, "sparse selection offsets")?;
        let keys = self.dev.upload(keys, "sparse selection keys")?;
        self.dev
            .sparse_attention(&b.qh, &b.kh, &b.vh, &offsets, &keys, shape, &mut b.attn)
            .map_err(CoreError::from)
    }

    fn upload_attn<T: GpuFloat>(
        &self,
        out: &Array2<f32>,
        dst: &mut DBuf<T>,
        n: usize,
    ) -> Result<()> {
        let qd = self.config.n_heads * self.config.head_dim;
        if out.dim() != (n, qd) {
            return Err(CoreError::Input(format!(
                "the hook returned an attention output of shape {:?}, the layer needs [{n}, {qd}]",
                out.dim()
            )));
        }
        let flat: Vec<f32> = out.iter().copied().collect();
        let tmp = self.dev.upload(&flat, "hook attention output")?;
        self.dev
            .cast_from_f32(&tmp, dst, n * qd)
            .map_err(CoreError::from)
    }
}
