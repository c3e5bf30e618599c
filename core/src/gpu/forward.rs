//! [`GpuModel`]: the decoder forward pass on a GPU, step for step as
//! [`crate::model::decoder`], with the attention hook at the same place.

use std::sync::Arc;

use attnscope_kernels::cuda::{bf16, AttnKernel, AttnShape, DBuf, GpuDevice, GpuFloat, RowLayout};
use ndarray::Array2;

use super::plan::MemoryPlan;
use super::weights::{weight_bytes, GpuWeights};
use crate::attention::{sparse_attention, AttentionHook, DeviceLayer, HookAction, LayerQkv};
use crate::capture_stats::{CaptureOptions, HeadCapture};
use crate::config::ModelConfig;
use crate::device::{Device, Precision};
use crate::error::{CoreError, Result};
use crate::model::{DeviceModel, Model};

enum W {
    F32(GpuWeights<f32>),
    Bf16(GpuWeights<bf16>),
}

/// A model whose forward pass runs on a GPU. Build it with [`GpuModel::from_model`] (or
/// [`Model::to_device`], which keeps it inside the [`Model`]) or [`GpuModel::random`].
pub struct GpuModel {
    dev: Arc<GpuDevice>,
    pub config: ModelConfig,
    pub precision: Precision,
    w: W,
}

impl std::fmt::Debug for GpuModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "GpuModel({}, {}, {:?})",
            self.dev.label(),
            self.precision,
            self.config.arch
        )
    }
}

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

/// Per-forward activation buffers (one layer's worth, reused by every layer).
struct Bufs<T> {
    x: DBuf<f32>,
    xn: DBuf<T>,
    qkv: DBuf<T>,
    qh: DBuf<T>,
    kh: DBuf<T>,
    vh: DBuf<T>,
    attn: DBuf<T>,
    lse: DBuf<f32>,
    gu: DBuf<T>,
    act: DBuf<T>,
}

/// One layer's capture buffers.
struct CapBufs {
    block: usize,
    p: DBuf<f32>,
    sink: DBuf<f32>,
    pooled: DBuf<f32>,
}

enum Mode<'a> {
    Hook(&'a mut dyn AttentionHook),
    /// Capture the listed layers (all when `None`) on the device, keeping only sink masses.
    Device(Option<&'a CaptureOptions>, &'a mut Vec<(usize, DBuf<f32>)>),
}

impl GpuModel {
    /// Uploads `model`'s weights to CUDA device `ordinal` at `precision` (refused, with the
    /// numbers, when they do not fit).
    pub fn from_model(model: &Model, ordinal: usize, precision: Precision) -> Result<Self> {
        let dev = GpuDevice::open(ordinal)?;
        let cfg = model.config.clone();
        Self::check_weights_fit(&dev, &cfg, precision)?;
        let w = match precision {
            Precision::F32 => W::F32(GpuWeights::upload(&dev, model)?),
            Precision::Bf16 => W::Bf16(GpuWeights::upload(&dev, model)?),
        };
        dev.synchronize()?;
        Ok(Self {
            dev,
            config: cfg,
            precision,
            w,
        })
    }

    /// A model of shape `config` with random weights generated on the device from `seed`
    /// (see [`super::random_config`] for named shapes).
    pub fn random(
        config: ModelConfig,
        ordinal: usize,
        precision: Precision,
        seed: u64,
    ) -> Result<Self> {
        let dev = GpuDevice::open(ordinal)?;
        Self::check_weights_fit(&dev, &config, precision)?;
        let w = match precision {
            Precision::F32 => W::F32(GpuWeights::random(&dev, &config, seed)?),
            Precision::Bf16 => W::Bf16(GpuWeights::random(&dev, &config, seed)?),
        };
        dev.synchronize()?;
        Ok(Self {
            dev,
            config,
            precision,
            w,
        })
    }

    fn check_weights_fit(dev: &GpuDevice, cfg: &ModelConfig, precision: Precision) -> Result<()> {
        let need = match precision {
            Precision::F32 => weight_bytes::<f32>(cfg),
            Precision::Bf16 => weight_bytes::<bf16>(cfg),
        };
        let free = dev.available_memory()?;
        if need + (256 << 20) > free {
            let hint = if precision == Precision::F32 {
                "load with --precision bf16 (half the bytes), or use --device cpu"
            } else {
                "use a GPU with more memory, or --device cpu"
            };
            return Err(dev
                .oom(&format!("the {precision} weights"), need, hint)
                .into());
        }
        Ok(())
    }

    /// The device the model lives on.
    pub fn device(&self) -> &Arc<GpuDevice> {
        &self.dev
    }

    /// Bytes of the weights on the device.
    pub fn weight_bytes(&self) -> u64 {
        match self.precision {
            Precision::F32 => weight_bytes::<f32>(&self.config),
            Precision::Bf16 => weight_bytes::<bf16>(&self.config),
        }
    }

    /// The memory plan of a forward at `n` tokens (`capture`: the capture options when layers are
    /// captured; `kept_layers`: layers whose results stay on the device).
    pub fn plan(
        &self,
        n: usize,
        capture: Option<&CaptureOptions>,
        kept_layers: usize,
    ) -> MemoryPlan {
        MemoryPlan::new(
            &self.config,
            self.precision,
            self.weight_bytes(),
            n,
            capture,
            kept_layers,
        )
    }

    /// The attention kernel this model uses for capture options `opts`.
    pub fn attention_kernel(&self, opts: &CaptureOptions) -> AttnKernel {
        let d = self.config.head_dim;
        match self.precision {
            Precision::F32 => AttnKernel::auto::<f32>(&self.dev, d, opts.block, opts.sink_tokens),
            Precision::Bf16 => AttnKernel::auto::<bf16>(&self.dev, d, opts.block, opts.sink_tokens),
        }
    }

    fn check_ids(&self, ids: &[u32]) -> Result<()> {
        if ids.is_empty() {
            return Err(CoreError::Input("empty input: no tokens to run".into()));
        }
        if ids.len() > self.config.max_context {
            return Err(CoreError::Input(format!(
                "{} tokens is more than the model's context of {}",
                ids.len(),
                self.config.max_context
            )));
        }
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= self.config.vocab) {
            return Err(CoreError::Input(format!(
                "token id {bad} is outside the vocabulary of {} ids",
                self.config.vocab
            )));
        }
        Ok(())
    }

    fn check_plan(&self, plan: &MemoryPlan) -> Result<()> {
        let free = self.dev.available_memory()?;
        if plan.run_bytes() > free {
            return Err(self
                .dev
                .oom(
                    &format!("a run of {}", plan.describe()),
                    plan.run_bytes(),
                    "use a shorter input (--len), capture fewer layers (--layers), or --device cpu",
                )
                .into());
        }
        Ok(())
    }

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

    fn alloc<T: GpuFloat>(&self, len: usize, what: &str) -> Result<DBuf<T>> {
        self.dev.alloc::<T>(len, what).map_err(CoreError::from)
    }

    fn bufs<T: GpuFloat>(&self, n: usize) -> Result<Bufs<T>> {
        let c = &self.config;
        let (h, d) = (c.hidden, c.head_dim);
        let (qd, kvd) = (c.n_heads * d, c.n_kv_heads * d);
        Ok(Bufs {
            x: self.alloc(n * h, "residual stream")?,
            xn: self.alloc(n * h, "normed input")?,
            qkv: self.alloc(n * (qd + 2 * kvd), "fused qkv")?,
            qh: self.alloc(n * qd, "head-major q")?,
            kh: self.alloc(n * kvd, "head-major k")?,
            vh: self.alloc(n * kvd, "head-major v")?,
            attn: self.alloc(n * qd, "attention output")?,
            lse: self.alloc(c.n_heads * n, "log-sum-exp")?,
            gu: self.alloc(n * 2 * c.intermediate, "gate|up")?,
            act: self.alloc(n * c.intermediate, "mlp activation")?,
        })
    }

    fn cap_bufs(&self, n: usize, block: usize) -> Result<CapBufs> {
        let heads = self.config.n_heads;
        let block = block.max(1);
        let nb = n.div_ceil(block);
        let need = 4 * heads as u64 * (n as u64 * nb as u64 + n as u64 + (nb * nb) as u64);
        let free = self.dev.available_memory()?;
        if need + (64 << 20) > free {
            return Err(self
                .dev
                .oom(
                    &format!("capturing a layer at {n} tokens with block {block}"),
                    need,
                    "use a larger capture block, a shorter input (--len), or --device cpu",
                )
                .into());
        }
        Ok(CapBufs {
            block,
            p: self.alloc(heads * n * nb, "block mass P")?,
            sink: self.alloc(heads * n, "sink mass")?,
            pooled: self.alloc(heads * nb * nb, "pooled map")?,
        })
    }

    fn shape(&self, n: usize) -> AttnShape {
        AttnShape {
            n,
            heads: self.config.n_heads,
            kv_heads: self.config.n_kv_heads,
            head_dim: self.config.head_dim,
        }
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
                        HookAction::Sparse(sel) => {
                            let out = sparse_attention(&qkv, &sel)?;
                            self.upload_attn(&out, &mut b.attn, n)?;
                        }
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

    /// Attention (output + LSE), then the capture pass and the pooled map, all on the device.
    fn capture_layer<T: GpuFloat>(
        &self,
        b: &mut Bufs<T>,
        cb: &mut CapBufs,
        opts: &CaptureOptions,
    ) -> Result<()> {
        let dev = &*self.dev;
        let s = self.shape(b.lse.len() / self.config.n_heads);
        let kernel = self.attention_kernel(opts);
        let block = opts.block.max(1);
        dev.attention(&b.qh, &b.kh, &b.vh, &mut b.attn, &mut b.lse, s, kernel)?;
        dev.capture(
            &b.qh,
            &b.kh,
            &b.lse,
            &mut cb.p,
            &mut cb.sink,
            s,
            block,
            opts.sink_tokens,
            kernel,
        )?;
        dev.pool_rows(
            &cb.p,
            &mut cb.pooled,
            s.heads,
            s.n,
            s.n.div_ceil(block),
            block,
        )
        .map_err(CoreError::from)
    }
}

/// The [`DeviceLayer`] handed to hooks: captures the current layer on the device.
struct LayerCtx<'a, T> {
    model: &'a GpuModel,
    b: &'a mut Bufs<T>,
    cap: &'a mut Option<CapBufs>,
    done: bool,
    /// `cap.p` holds this layer's block mass (at `cap.block`).
    captured: bool,
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
        let p = dev.download(&cb.p)?;
        let sink = dev.download(&cb.sink)?;
        let pooled = dev.download(&cb.pooled)?;
        let out: Vec<f32> = dev
            .download(&self.b.attn)?
            .into_iter()
            .map(GpuFloat::to_f32)
            .collect();
        let heads = (0..nh)
            .map(|h| {
                let bm = Array2::from_shape_vec((n, nb), p[h * n * nb..(h + 1) * n * nb].to_vec());
                let pm = Array2::from_shape_vec(
                    (nb, nb),
                    pooled[h * nb * nb..(h + 1) * nb * nb].to_vec(),
                );
                match (bm, pm) {
                    (Ok(block_mass), Ok(pooled)) => Ok(HeadCapture {
                        lse: lse[h * n..(h + 1) * n].to_vec(),
                        block_mass,
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
    fn tensors(&self) -> Result<super::blocks::LayerTensors<'_, T>> {
        if !self.done {
            return Err(CoreError::Device(
                "sparse measurement needs the layer's capture first (DeviceLayer::capture)".into(),
            ));
        }
        let c = &self.model.config;
        Ok(super::blocks::LayerTensors {
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
