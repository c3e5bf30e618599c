//! Block scoring and sparse measurement on the device, for [`DeviceLayer`]s of a GPU
//! forward pass (see [`DeviceLayer::block_select_measure`]): representative logits by cuBLAS
//! (f32, one chunk of queries at a time), the row kernel (softmax or raw scores, group sum,
//! pooling, forced blocks, top-k), then the measurement kernel over the kept key blocks of every
//! (q-head, query) against the exact dense attention. Outputs are poisoned with NaN before every
//! launch, and a NaN that comes back is an error.
//!
//! [`DeviceLayer`]: crate::device_layer::DeviceLayer
//! [`DeviceLayer::block_select_measure`]: crate::device_layer::DeviceLayer::block_select_measure

use attnscope_kernels::cuda::{DBuf, GpuDevice, GpuFloat, RowPool, RowRule, RowTransform};

use crate::device_layer::{BlockLists, BlockPool, BlockScoring, RepTransform, SparseMeasure};
use crate::error::{CoreError, Result};

/// One layer's device tensors a measurement reads (head-major Q `[nh, n, d]`, K and V
/// `[nkv, n, d]`, LSE `[nh, n]`, dense output `[n, nh d]`).
pub(crate) struct LayerTensors<'a, T> {
    pub dev: &'a GpuDevice,
    pub q: &'a DBuf<T>,
    pub k: &'a DBuf<T>,
    pub v: &'a DBuf<T>,
    pub lse: &'a DBuf<f32>,
    pub dense: &'a DBuf<T>,
    pub nh: usize,
    pub nkv: usize,
    pub n: usize,
    pub d: usize,
}

/// Logit chunks stay under this many bytes.
const LOGIT_BYTES: usize = 1 << 30;

impl<T: GpuFloat> LayerTensors<'_, T> {
    fn shape(&self) -> (usize, usize, usize, usize) {
        (self.nh, self.nkv, self.n, self.d)
    }

    /// See [`crate::device_layer::DeviceLayer::block_select_measure`].
    pub fn select_measure(
        &self,
        spec: &BlockScoring<'_>,
        top_k: &[usize],
        keep_blocks: bool,
    ) -> Result<Vec<SparseMeasure>> {
        let dev = self.dev;
        let (nh, nkv, n, d) = self.shape();
        let m = spec.m;
        let g = nh / nkv.max(1);
        if spec.reps.len() != nkv * m * d
            || spec.reps_min.is_some_and(|r| r.len() != nkv * m * d)
            || spec.block == 0
            || spec.vis_stride == 0
        {
            return Err(CoreError::Input(format!(
                "block scoring: {} representative values for {nkv} kv heads x {m} x {d}",
                spec.reps.len()
            )));
        }
        if n == 0 {
            return Ok(top_k.iter().map(|_| SparseMeasure::default()).collect());
        }
        let prof = std::env::var_os("ATTNSCOPE_GPU_PROFILE").is_some();
        let mark = |what: &'static str, marks: &mut Vec<(&'static str, _)>| {
            if prof {
                if let Ok(m) = dev.mark() {
                    marks.push((what, m));
                }
            }
        };
        let mut marks = Vec::new();
        mark("start", &mut marks);
        let reps = dev.upload(spec.reps, "block representatives")?;
        let reps_min = match spec.reps_min {
            Some(r) => Some(dev.upload(r, "block minima")?),
            None => None,
        };
        // f32 queries (with element-wise bounds: their positive and negative parts).
        let (mut qa, mut qb) = if reps_min.is_some() {
            let mut pos = dev.alloc::<f32>(nh * n * d, "q+ (f32)")?;
            let mut neg = dev.alloc::<f32>(nh * n * d, "q- (f32)")?;
            dev.to_f32_mode(self.q, &mut pos, nh * n * d, 1)?;
            dev.to_f32_mode(self.q, &mut neg, nh * n * d, 2)?;
            (pos, Some(neg))
        } else {
            let mut q = dev.alloc::<f32>(nh * n * d, "q (f32)")?;
            dev.to_f32_mode(self.q, &mut q, nh * n * d, 0)?;
            (q, None)
        };
        if let Some(w) = spec.query_weights {
            if w.len() != nh * d {
                return Err(CoreError::Input(format!(
                    "block scoring: {} query weights for {nh} heads x {d}",
                    w.len()
                )));
            }
            let w = dev.upload(w, "query weights")?;
            dev.scale_query_dims(&mut qa, &w, (nh, n, d))?;
            if let Some(qb) = qb.as_mut() {
                dev.scale_query_dims(qb, &w, (nh, n, d))?;
            }
        }
        mark("upload, f32 q", &mut marks);
        let (sel_heads, hps) = if spec.group_shared { (nkv, g) } else { (nh, 1) };
        let nb = n.div_ceil(spec.block);
        let rule = RowRule {
            m,
            scale: spec.scale,
            vis_window: spec.vis_window,
            vis_stride: spec.vis_stride,
            transform: match spec.transform {
                RepTransform::Raw => RowTransform::Raw,
                RepTransform::Softmax => RowTransform::Softmax,
                RepTransform::Relu => RowTransform::Relu,
            },
            pool: match spec.pool {
                BlockPool::Identity => RowPool::Identity,
                BlockPool::Max(p) => RowPool::Max(p.max(1)),
                BlockPool::Sum(p) => RowPool::Sum(p.max(1)),
            },
            block: spec.block,
            n_init: spec.n_init,
            local: spec.local,
            force_own: spec.force_own,
        };
        let widths: Vec<usize> = top_k
            .iter()
            .map(|&k| (rule.max_forced() + k).min(nb).max(1))
            .collect();
        let mut sels: Vec<DBuf<u32>> = widths
            .iter()
            .map(|&w| dev.alloc::<u32>(sel_heads * n * w, "kept blocks"))
            .collect::<std::result::Result<_, _>>()?;
        let per_row = hps * m.max(1) * 4;
        let nq = (LOGIT_BYTES / per_row).clamp(1, n);
        let logits = dev.alloc::<f32>(hps * nq * m.max(1), "representative logits")?;
        let radix = rule.by_radix(n);
        let mut scratch = match radix {
            true => Some(dev.alloc::<f32>(nq * m.max(1), "combined scores")?),
            false => None,
        };
        for sh in 0..sel_heads {
            for i0 in (0..n).step_by(nq) {
                let rows = nq.min(n - i0);
                for hh in 0..hps {
                    let h = sh * hps + hh;
                    let kv = h / g;
                    let y = logits.ptr_at(hh * rows * m);
                    let x = qa.ptr_at((h * n + i0) * d);
                    dev.sgemm_nt_raw(x, reps.ptr_at(kv * m * d), y, rows, d, m, 0.0)?;
                    if let (Some(neg), Some(mins)) = (&qb, &reps_min) {
                        let x = neg.ptr_at((h * n + i0) * d);
                        dev.sgemm_nt_raw(x, mins.ptr_at(kv * m * d), y, rows, d, m, 1.0)?;
                    }
                }
                for ((sel, &w), &k) in sels.iter_mut().zip(&widths).zip(top_k) {
                    let off = sh * n * w;
                    match scratch.as_mut() {
                        Some(s) => dev.select_rows_radix(
                            &logits, 0, hps, rows, i0, &rule, k, w, n, s, sel, off,
                        )?,
                        None => {
                            dev.block_rows(&logits, 0, hps, rows, i0, &rule, k, w, n, sel, off)?
                        }
                    }
                }
            }
        }
        drop((logits, scratch));
        mark("logits gemm + rows (top-k)", &mut marks);
        let mut out = Vec::with_capacity(top_k.len());
        for (sel, &w) in sels.iter().zip(&widths) {
            let mut r = self.measure(sel, w, spec.block, 1, hps)?;
            mark("measure + copies", &mut marks);
            if keep_blocks {
                r.blocks = Some(dev.download(sel)?);
            }
            out.push(r);
        }
        if prof {
            let parts: Vec<String> = marks
                .windows(2)
                .map(|w| {
                    format!(
                        "{} {:.2} ms",
                        w[1].0,
                        w[1].1.ms_since(&w[0].1).unwrap_or(f32::NAN)
                    )
                })
                .collect();
            eprintln!("block scoring n {n} m {m}: {}", parts.join(", "));
        }
        Ok(out)
    }

    /// Measures selections already on the device.
    fn measure(
        &self,
        sel: &DBuf<u32>,
        width: usize,
        unit: usize,
        qblock: usize,
        heads_per_sel: usize,
    ) -> Result<SparseMeasure> {
        let dev = self.dev;
        let len = self.nh * self.n;
        let mut bufs: Vec<DBuf<f32>> = (0..4)
            .map(|_| dev.alloc::<f32>(len, "per-query metrics"))
            .collect::<std::result::Result<_, _>>()?;
        for b in bufs.iter_mut() {
            dev.poison(b)?;
        }
        let [r, e, c, k] = &mut bufs[..] else {
            return Err(CoreError::Device("metric buffers".into()));
        };
        dev.measure_blocks(
            self.q,
            self.k,
            self.v,
            self.lse,
            self.dense,
            sel,
            self.shape(),
            width,
            unit,
            qblock,
            heads_per_sel,
            (r, e, c, k),
        )?;
        let recall = dev.download(&bufs[0])?;
        let out_rel_err = dev.download(&bufs[1])?;
        let cosine = dev.download(&bufs[2])?;
        let kept: Vec<u32> = dev
            .download(&bufs[3])?
            .into_iter()
            .map(f32::to_bits)
            .collect();
        let unwritten = recall
            .iter()
            .chain(&out_rel_err)
            .chain(&cosine)
            .any(|x| x.is_nan())
            || kept.contains(&0x7fc0_0000);
        if unwritten {
            return Err(CoreError::Device(
                "sparse measurement left NaN or unwritten per-query metrics".into(),
            ));
        }
        Ok(SparseMeasure {
            recall,
            out_rel_err,
            cosine,
            kept,
            blocks: None,
            width,
        })
    }

    /// See [`crate::device_layer::DeviceLayer::measure_blocks`].
    pub fn measure_lists(&self, lists: &BlockLists<'_>) -> Result<SparseMeasure> {
        let sel = self.dev.upload(lists.blocks, "block lists")?;
        self.measure(
            &sel,
            lists.width,
            lists.unit,
            lists.qblock,
            lists.heads_per_sel,
        )
    }

    /// See [`crate::device_layer::DeviceLayer::block_mass_ranks`]; `p` is the layer's capture at
    /// `block` (`[nh, n, nb]`).
    pub fn block_mass_ranks(&self, p: &DBuf<f32>, block: usize) -> Result<Vec<u32>> {
        let len = self.nh * self.n;
        let mut r = self.dev.alloc::<f32>(len, "own block ranks")?;
        self.dev.poison(&mut r)?;
        self.dev
            .own_block_ranks(p, self.nh, self.n, block, &mut r)?;
        let ranks: Vec<u32> = self
            .dev
            .download(&r)?
            .into_iter()
            .map(f32::to_bits)
            .collect();
        if ranks.contains(&0x7fc0_0000) {
            return Err(CoreError::Device("own block ranks left unwritten".into()));
        }
        Ok(ranks)
    }

    /// See [`crate::device_layer::DeviceLayer::block_mass_select_measure`]; `p` is the layer's
    /// capture at `block` (`[nh, n, nb]`).
    pub fn block_mass_select_measure(
        &self,
        p: &DBuf<f32>,
        block: usize,
        top_k: &[Vec<usize>],
        keep_blocks: bool,
    ) -> Result<Vec<SparseMeasure>> {
        let dev = self.dev;
        let (nh, n) = (self.nh, self.n);
        let block = block.max(1);
        let nb = n.div_ceil(block);
        if top_k.iter().any(|ks| ks.len() != nh) {
            return Err(CoreError::Input(format!(
                "block mass top-k: one k per q-head ({nh}) for every selection"
            )));
        }
        if n == 0 {
            return Ok(top_k.iter().map(|_| SparseMeasure::default()).collect());
        }
        // P itself is the score: no scaling, no softmax, every causal block (the own one too)
        // a candidate, nothing forced.
        let rule = RowRule {
            m: nb,
            scale: 1.0,
            vis_window: 1,
            vis_stride: block,
            transform: RowTransform::Raw,
            pool: RowPool::Identity,
            block,
            n_init: 0,
            local: 0,
            force_own: false,
        };
        let mut out = Vec::with_capacity(top_k.len());
        for ks in top_k {
            let w = ks.iter().copied().max().unwrap_or(1).min(nb).max(1);
            let mut sel = dev.alloc::<u32>(nh * n * w, "kept blocks")?;
            for (h, &k) in ks.iter().enumerate() {
                dev.block_rows(p, h * n * nb, 1, n, 0, &rule, k, w, n, &mut sel, h * n * w)?;
            }
            let mut r = self.measure(&sel, w, block, 1, 1)?;
            if keep_blocks {
                r.blocks = Some(dev.download(&sel)?);
            }
            out.push(r);
        }
        Ok(out)
    }

    /// See [`crate::device_layer::DeviceLayer::block_tile_max`].
    pub fn block_tile_max(&self, block: usize) -> Result<Vec<f32>> {
        let nb = self.n.div_ceil(block.max(1));
        let mut g = self.dev.alloc::<f32>(self.nh * nb * nb, "pooled truth")?;
        self.dev.zero(&mut g)?;
        self.dev
            .block_tile_max(self.q, self.k, self.lse, &mut g, self.shape(), block)?;
        let v = self.dev.download(&g)?;
        if v.iter().any(|x| x.is_nan()) {
            return Err(CoreError::Device("pooled truth has NaN".into()));
        }
        Ok(v)
    }
}
