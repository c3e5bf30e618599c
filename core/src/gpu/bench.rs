//! GPU timings for `attnscope bench --device cuda` (and BENCHMARKS.md): the whole forward pass,
//! the forward pass with full device-side capture, and the attention / capture kernels alone with
//! their FLOP and byte counts. Times are CUDA-event medians after a warm-up run.

use attnscope_kernels::cuda::{
    bf16, AttnKernel, AttnShape, DBuf, FlashTuning, GpuDevice, GpuFloat,
};
use serde_json::{json, Value};

use super::forward::GpuModel;
use crate::capture_stats::CaptureOptions;
use crate::device::Precision;
use crate::error::{CoreError, Result};

/// The median of `v` (NaN when empty).
pub(super) fn median(mut v: Vec<f32>) -> f32 {
    v.sort_by(f32::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f32::NAN)
}

/// Causal (query, key) pairs of `n` tokens.
fn pairs(n: usize) -> f64 {
    n as f64 * (n as f64 + 1.0) / 2.0
}

/// Times the model at each length: `forward` and (with `capture`) `capture` rows, then (with
/// `kernels`) the attention and capture kernels of one layer alone. `ids` must hold at least the
/// longest length.
pub fn bench(
    model: &GpuModel,
    ids: &[u32],
    lens: &[usize],
    repeats: usize,
    capture: bool,
    kernels: bool,
) -> Result<Vec<Value>> {
    let longest = lens.iter().copied().max().unwrap_or(1);
    if ids.is_empty() || longest > ids.len() {
        return Err(CoreError::Input(format!(
            "bench: {} token ids given, the longest length asks for {longest}",
            ids.len()
        )));
    }
    let dev = model.device().clone();
    let cfg = &model.config;
    let opts = CaptureOptions::default();
    let mut rows = Vec::new();
    // Warm-up: NVRTC compiles, cuBLAS picks kernels, the memory pool fills.
    let warm = &ids[..lens.iter().copied().min().unwrap_or(1).clamp(1, 512)];
    model.forward_device_capture(warm, None)?;
    model.forward_device_capture(warm, Some(&opts))?;
    let base = json!({
        "device": dev.label(),
        "precision": model.precision.to_string(),
        "layers": cfg.n_layers, "heads": cfg.n_heads, "kv_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim, "hidden": cfg.hidden,
    });
    let with = |extra: Value| {
        let mut v = base.clone();
        if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
            o.extend(e);
        }
        v
    };
    for &n in lens {
        let ids = &ids[..n];
        let reps = repeats.max(1);
        let mut fwd = Vec::new();
        for _ in 0..reps {
            fwd.push(model.forward_device_capture(ids, None)?.device_ms);
        }
        let f = median(fwd.clone());
        rows.push(with(
            json!({"tokens": n, "mode": "forward", "ms": f, "ms_all": fwd,
            "tokens_per_second": n as f64 / (f as f64 / 1e3)}),
        ));
        if capture {
            let mut cap = Vec::new();
            let mut last = None;
            for _ in 0..reps {
                let s = model.forward_device_capture(ids, Some(&opts))?;
                cap.push(s.device_ms);
                last = Some(s);
            }
            let c = median(cap.clone());
            // Invariant: `reps >= 1`, so the loop above ran and set `last`.
            let s = last.expect("at least one repeat");
            let sink: f64 = s.sink_mass.iter().flatten().sum::<f64>()
                / s.sink_mass.iter().map(Vec::len).sum::<usize>().max(1) as f64;
            rows.push(with(
                json!({"tokens": n, "mode": "capture", "ms": c, "ms_all": cap,
                "capture_over_forward": c / f, "kernel": format!("{:?}", s.kernel),
                "block": opts.block, "sink_tokens": opts.sink_tokens,
                "mean_sink_mass": sink,
                "capture_buffer_bytes_per_layer": s.plan.capture_layer,
                "planned_bytes": s.plan.run_bytes() + s.plan.weights}),
            ));
        }
        if kernels {
            let shape = AttnShape {
                n,
                heads: cfg.n_heads,
                kv_heads: cfg.n_kv_heads,
                head_dim: cfg.head_dim,
            };
            let k = match model.precision {
                Precision::F32 => time_kernels::<f32>(&dev, shape, opts.block, reps)?,
                Precision::Bf16 => time_kernels::<bf16>(&dev, shape, opts.block, reps)?,
            };
            rows.push(with(k));
        }
    }
    Ok(rows)
}

/// The attention, capture and pooling kernels of one layer on random inputs: medians, FLOPs
/// (useful causal work: attention 4 d pairs per head, capture 2 d pairs), and the capture pass's
/// minimum bytes (Q, K, LSE read once; P and sink written once).
pub fn time_kernels<T: GpuFloat>(
    dev: &GpuDevice,
    s: AttnShape,
    block: usize,
    repeats: usize,
) -> Result<Value> {
    let (n, h, g, d) = (s.n, s.heads, s.kv_heads, s.head_dim);
    let nb = n.div_ceil(block);
    let mk = |len: usize, seed: u64| -> Result<DBuf<T>> {
        let mut b = dev.alloc::<T>(len, "bench input")?;
        dev.fill_uniform(&mut b, seed, 2.0, 0.0)?;
        Ok(b)
    };
    let (q, k, v) = (mk(h * n * d, 11)?, mk(g * n * d, 12)?, mk(g * n * d, 13)?);
    let mut out = dev.alloc::<T>(n * h * d, "bench out")?;
    let mut lse = dev.alloc::<f32>(h * n, "bench lse")?;
    let mut p = dev.alloc::<f32>(h * n * nb, "bench P")?;
    let mut sink = dev.alloc::<f32>(h * n, "bench sink")?;
    let mut pooled = dev.alloc::<f32>(h * nb * nb, "bench pooled")?;
    let kernel = AttnKernel::auto::<T>(dev, d, block, 4);
    let (mut ta, mut tc, mut tp) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 0..=repeats.max(1) {
        let t = dev.timer()?;
        dev.attention(&q, &k, &v, &mut out, &mut lse, s, kernel)?;
        let a = t.stop_ms(dev)?;
        let t = dev.timer()?;
        dev.capture(&q, &k, &lse, &mut p, &mut sink, s, block, 4, kernel)?;
        let c = t.stop_ms(dev)?;
        let t = dev.timer()?;
        dev.pool_rows(&p, &mut pooled, h, n, nb, block)?;
        let pl = t.stop_ms(dev)?;
        if rep > 0 {
            ta.push(a);
            tc.push(c);
            tp.push(pl);
        }
    }
    let (a, c, pl) = (median(ta), median(tc), median(tp));
    // The compiled shapes of the flash kernels, each timed alone.
    let mut variants = Vec::new();
    if kernel == AttnKernel::Flash {
        let mts: &[u32] = if d == 64 { &[1, 2] } else { &[1] };
        let fwds: &[(u32, bool)] = if d == 128 {
            &[(4, false), (8, false), (4, true), (8, true)]
        } else {
            &[(4, false), (8, false)]
        };
        for &(w, qsm) in fwds {
            for &mt in mts {
                FlashTuning::set(Some(FlashTuning {
                    fwd_warps: w,
                    capture_mtiles: mt,
                    fwd_q_smem: qsm,
                }));
                let (mut va, mut vc) = (Vec::new(), Vec::new());
                for rep in 0..=repeats.max(1) {
                    let t = dev.timer()?;
                    dev.attention(&q, &k, &v, &mut out, &mut lse, s, kernel)?;
                    let x = t.stop_ms(dev)?;
                    let t = dev.timer()?;
                    dev.capture(&q, &k, &lse, &mut p, &mut sink, s, block, 4, kernel)?;
                    let y = t.stop_ms(dev)?;
                    if rep > 0 {
                        va.push(x);
                        vc.push(y);
                    }
                }
                variants.push(
                    json!({"fwd_warps": w, "fwd_q_smem": qsm, "capture_mtiles": mt,
                    "attention_ms": median(va), "capture_ms": median(vc)}),
                );
            }
        }
        FlashTuning::set(None);
    }
    let pr = pairs(n) * h as f64;
    let attn_flops = 4.0 * d as f64 * pr;
    let cap_flops = 2.0 * d as f64 * pr;
    let tsz = std::mem::size_of::<T>() as f64;
    let cap_bytes = tsz * (h * n * d + g * n * d) as f64 + 4.0 * (h * n) as f64 * (2.0 + nb as f64);
    Ok(json!({
        "tokens": n, "mode": "kernels", "kernel": format!("{kernel:?}"), "block": block,
        "attention_ms": a, "capture_ms": c, "pool_ms": pl,
        "attention_tflops": attn_flops / (a as f64 * 1e9),
        "capture_tflops": cap_flops / (c as f64 * 1e9),
        "capture_exp_per_s": pr / (c as f64 * 1e-3),
        "capture_min_bytes": cap_bytes,
        "capture_gb_per_s": cap_bytes / (c as f64 * 1e6),
        "attention_flops": attn_flops, "capture_flops": cap_flops,
        "tuning": format!("{:?}", FlashTuning::for_shape(d, n)), "variants": variants,
    }))
}
