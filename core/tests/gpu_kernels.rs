//! GPU kernels against the CPU reference path on fresh random inputs (marked `gpu_`; each test
//! prints a SKIPPED notice and passes where no CUDA GPU exists). Outputs are poisoned with NaN
//! before every launch so an unwritten element fails. f32 paths: relative error <= 1e-4 (most land
//! near 1e-7); bf16 paths: <= 1e-2 against the CPU on the same bf16-rounded inputs.
#![cfg(feature = "cuda")]

mod gpu_util;

use attnscope_core::attention::{dense_attention, LayerQkv};
use attnscope_core::capture::{capture_layer, CaptureOptions};
use attnscope_core::gpu::rope_tables;
use attnscope_core::ops::{rms_norm, rms_norm_inplace, silu_mul, Rope};
use attnscope_kernels::cuda::{
    bf16, AttnKernel, AttnShape, FlashTuning, GpuDevice, GpuFloat, RowLayout,
};
use gpu_util::*;
use ndarray::{s, Array1, Array2};

fn arr(rows: usize, cols: usize, v: Vec<f32>) -> Array2<f32> {
    Array2::from_shape_vec((rows, cols), v).expect("shape")
}

fn elementwise<T: GpuFloat>(dev: &GpuDevice, rng: &mut Rng, tol: f64) {
    let tn = T::NAME;
    let rt = |v: &[f32]| -> Vec<f32> { v.iter().map(|&x| T::from_f32(x).to_f32()).collect() };
    let (n, h) = (37, 96);
    // Embedding gather (exact on the stored values).
    let vocab = 50;
    let table = rng.vec(vocab * h, 1.0);
    let ids: Vec<u32> = (0..n).map(|_| rng.below(vocab as u64) as u32).collect();
    let tb = up::<T>(dev, &table);
    let idb = dev.upload(&ids, "ids").expect("ids");
    let mut out = poisoned::<f32>(dev, n * h);
    dev.embed_gather(&tb, &idb, &mut out, n, h).expect("embed");
    let tr = rt(&table);
    let want: Vec<f32> = ids
        .iter()
        .flat_map(|&i| tr[i as usize * h..(i as usize + 1) * h].to_vec())
        .collect();
    check(&down(dev, &out), &want, 0.0, &format!("embed_gather {tn}"));

    // RMSNorm f32 -> T.
    let x = rng.vec(n * h, 3.0);
    let w = Array1::from_vec(rng.vec(h, 1.0));
    let xb = up::<f32>(dev, &x);
    let wb = up::<f32>(dev, w.as_slice().expect("w"));
    let mut y = poisoned::<T>(dev, n * h);
    dev.rms_norm(&xb, &mut y, &wb, n, h, 1e-6).expect("rms");
    let want = rms_norm(arr(n, h, x.clone()).view(), &w, 1e-6);
    check(
        &down(dev, &y),
        want.as_slice().expect("c"),
        tol,
        &format!("rms_norm f32->{tn}"),
    );

    // Fused QKV row [n, (H + 2G) d]: per-head norm of q, bias, RoPE of q and k, head-major split.
    let (nh, nkv, d) = (3, 1, 32);
    let (qd, kvd) = (nh * d, nkv * d);
    let wq = qd + 2 * kvd;
    let fused = rt(&rng.vec(n * wq, 2.0));
    let qn = Array1::from_vec(rng.vec(d, 1.0));
    let qnb = up::<f32>(dev, qn.as_slice().expect("qn"));
    let mut fb = up::<T>(dev, &fused);
    let lay = RowLayout {
        rows: n * nh,
        cols: d,
        per_row: nh,
        ld: wq,
        col_off: 0,
    };
    dev.rms_norm_inplace(&mut fb, &qnb, lay, 1e-6)
        .expect("head norm");
    let mut cpu = arr(n, wq, fused.clone());
    {
        let mut q = cpu.slice(s![.., ..qd]).to_owned();
        let mut rows = q
            .view_mut()
            .into_shape_with_order((n * nh, d))
            .expect("rows");
        rms_norm_inplace(rows.view_mut(), &qn, 1e-6);
        cpu.slice_mut(s![.., ..qd]).assign(&q);
    }
    check(
        &down(dev, &fb),
        cpu.as_slice().expect("c"),
        tol,
        &format!("rms_norm per head in place {tn}"),
    );

    let bias = rng.vec(wq, 0.5);
    let bb = up::<f32>(dev, &bias);
    dev.add_bias(&mut fb, &bb, n, wq, wq, 0).expect("bias");
    cpu += &Array1::from_vec(bias.clone());
    check(
        &down(dev, &fb),
        cpu.as_slice().expect("c"),
        tol,
        &format!("add_bias {tn}"),
    );

    let theta = 10_000.0;
    let (cs, sn) = rope_tables(d, theta, n);
    let (cb, sb) = (up::<f32>(dev, &cs), up::<f32>(dev, &sn));
    dev.rope(&mut fb, &cb, &sb, n, nh, d, wq, 0)
        .expect("rope q");
    dev.rope(&mut fb, &cb, &sb, n, nkv, d, wq, qd)
        .expect("rope k");
    let rope = Rope::new(d, theta, n);
    let mut q = cpu.slice(s![.., ..qd]).to_owned();
    let mut k = cpu.slice(s![.., qd..qd + kvd]).to_owned();
    rope.apply(q.view_mut()).expect("rope");
    rope.apply(k.view_mut()).expect("rope");
    cpu.slice_mut(s![.., ..qd]).assign(&q);
    cpu.slice_mut(s![.., qd..qd + kvd]).assign(&k);
    let got = down(dev, &fb);
    check(
        &got,
        cpu.as_slice().expect("c"),
        tol,
        &format!("rope (rotate-half) {tn}"),
    );

    let mut qh = poisoned::<T>(dev, n * qd);
    let mut vh = poisoned::<T>(dev, n * kvd);
    dev.to_head_major(&fb, &mut qh, n, nh, d, wq, 0)
        .expect("split q");
    dev.to_head_major(&fb, &mut vh, n, nkv, d, wq, qd + kvd)
        .expect("split v");
    let g = arr(n, wq, got);
    let want_q: Vec<f32> = (0..nh)
        .flat_map(|hh| {
            g.slice(s![.., hh * d..(hh + 1) * d])
                .iter()
                .copied()
                .collect::<Vec<_>>()
        })
        .collect();
    let want_v: Vec<f32> = g.slice(s![.., qd + kvd..]).iter().copied().collect();
    check(
        &down(dev, &qh),
        &want_q,
        0.0,
        &format!("to_head_major q {tn}"),
    );
    check(
        &down(dev, &vh),
        &want_v,
        0.0,
        &format!("to_head_major v {tn}"),
    );

    // SiLU-multiply of the fused [n, 2f] gate|up.
    let f = 70;
    let gu = rt(&rng.vec(n * 2 * f, 4.0));
    let gub = up::<T>(dev, &gu);
    let mut act = poisoned::<T>(dev, n * f);
    dev.silu_mul(&gub, &mut act, n, f).expect("silu");
    let gua = arr(n, 2 * f, gu);
    let mut gate = gua.slice(s![.., ..f]).to_owned();
    silu_mul(&mut gate, &gua.slice(s![.., f..]).to_owned());
    check(
        &down(dev, &act),
        gate.as_slice().expect("c"),
        tol,
        &format!("silu_mul {tn}"),
    );

    // Residual add and cast.
    let a = rng.vec(n * h, 1.0);
    let yv = rt(&rng.vec(n * h, 1.0));
    let mut ab = up::<f32>(dev, &a);
    let yb = up::<T>(dev, &yv);
    dev.add_into(&mut ab, &yb, n * h).expect("add");
    let want: Vec<f32> = a.iter().zip(&yv).map(|(p, q)| p + q).collect();
    check(
        &down(dev, &ab),
        &want,
        1e-7,
        &format!("residual add_into {tn}"),
    );
    let mut cst = poisoned::<T>(dev, n * h);
    dev.cast_from_f32(&ab, &mut cst, n * h).expect("cast");
    check(
        &down(dev, &cst),
        &rt(&want),
        0.0,
        &format!("cast_from_f32 {tn}"),
    );

    // Matrix products through cuBLAS: y = x W^T, then y += x2 W2^T into f32.
    let (m, kin, kout) = (45, 80, 72);
    let xv = rt(&rng.vec(m * kin, 1.0));
    let wv = rt(&rng.vec(kout * kin, 1.0));
    let (xb, wb) = (up::<T>(dev, &xv), up::<T>(dev, &wv));
    let mut yb = poisoned::<T>(dev, m * kout);
    dev.linear(&xb, &wb, &mut yb, m, kin, kout, 0.0)
        .expect("gemm");
    let want = arr(m, kin, xv.clone()).dot(&arr(kout, kin, wv.clone()).t());
    check(
        &down(dev, &yb),
        want.as_slice().expect("c"),
        tol,
        &format!("linear {tn} x {tn} -> {tn}"),
    );
    let base = rng.vec(m * kout, 1.0);
    let mut acc = up::<f32>(dev, &base);
    dev.linear(&xb, &wb, &mut acc, m, kin, kout, 1.0)
        .expect("gemm acc");
    let want: Vec<f32> = want.iter().zip(&base).map(|(p, q)| p + q).collect();
    check(
        &down(dev, &acc),
        &want,
        1e-5,
        &format!("linear {tn} x {tn} -> f32, beta 1"),
    );
    dev.synchronize().expect("sync");
}

#[test]
fn gpu_elementwise_and_gemm_kernels_match_cpu() {
    let Some(dev) = device("gpu_elementwise_and_gemm_kernels_match_cpu") else {
        return;
    };
    let mut rng = Rng::from_state(seed("gpu_elementwise"));
    elementwise::<f32>(&dev, &mut rng, 1e-5);
    elementwise::<bf16>(&dev, &mut rng, 1e-2);

    // Pooled block map: mean over each query block of P.
    let (heads, n, block) = (3usize, 150usize, 32usize);
    let nb = n.div_ceil(block);
    let p = rng.vec(heads * n * nb, 1.0);
    let pb = up::<f32>(&dev, &p);
    let mut pooled = poisoned::<f32>(&dev, heads * nb * nb);
    dev.pool_rows(&pb, &mut pooled, heads, n, nb, block)
        .expect("pool");
    let mut want = vec![0f32; heads * nb * nb];
    for h in 0..heads {
        for qb in 0..nb {
            let rows = (qb * block..((qb + 1) * block).min(n)).collect::<Vec<_>>();
            for b in 0..nb {
                let s: f32 = rows.iter().map(|&r| p[(h * n + r) * nb + b]).sum();
                want[(h * nb + qb) * nb + b] = s / rows.len() as f32;
            }
        }
    }
    check(&down(&dev, &pooled), &want, 1e-6, "pool_rows");
}

/// One attention + capture case against `dense_attention` and `capture_layer` on the CPU.
struct Case {
    n: usize,
    heads: usize,
    kv: usize,
    d: usize,
    block: usize,
    sink: usize,
}

fn attention_case<T: GpuFloat>(
    dev: &GpuDevice,
    rng: &mut Rng,
    c: &Case,
    kernel: AttnKernel,
    tol: f64,
) {
    let (n, d) = (c.n, c.d);
    let rt = |v: Vec<f32>| -> Vec<f32> { v.iter().map(|&x| T::from_f32(x).to_f32()).collect() };
    // Scores of spread ~3: peaked rows as in real heads.
    let q = arr(n, c.heads * d, rt(rng.vec(n * c.heads * d, 2.0)));
    let k = arr(n, c.kv * d, rt(rng.vec(n * c.kv * d, 2.0)));
    let v = arr(n, c.kv * d, rt(rng.vec(n * c.kv * d, 1.0)));
    let qkv = LayerQkv {
        layer: 0,
        n_heads: c.heads,
        n_kv_heads: c.kv,
        head_dim: d,
        q: q.view(),
        k: k.view(),
        v: v.view(),
        rule: attnscope_core::attention::ScoreRule::plain(d),
    };
    let opts = CaptureOptions {
        block: c.block,
        sink_tokens: c.sink,
        ..CaptureOptions::default()
    };
    let dense = dense_attention(&qkv);
    let (heads, _) = capture_layer(&qkv, &opts);
    let qb = up::<T>(dev, &head_major(&q, c.heads, d));
    let kb = up::<T>(dev, &head_major(&k, c.kv, d));
    let vb = up::<T>(dev, &head_major(&v, c.kv, d));
    let shape = AttnShape {
        n,
        heads: c.heads,
        kv_heads: c.kv,
        head_dim: d,
    };
    let nb = n.div_ceil(c.block);
    let mut out = poisoned::<T>(dev, n * c.heads * d);
    let mut lse = poisoned::<f32>(dev, c.heads * n);
    let mut p = poisoned::<f32>(dev, c.heads * n * nb);
    let mut sink = poisoned::<f32>(dev, c.heads * n);
    let mut pooled = poisoned::<f32>(dev, c.heads * nb * nb);
    dev.attention(&qb, &kb, &vb, &mut out, &mut lse, shape, kernel)
        .expect("attention");
    dev.capture(
        &qb, &kb, &lse, &mut p, &mut sink, shape, c.block, c.sink, kernel,
    )
    .expect("capture");
    dev.pool_rows(&p, &mut pooled, c.heads, n, nb, c.block)
        .expect("pool");
    let label = format!(
        "{kernel:?} {} n={n} H={}/{} d={d} block={} sink={}",
        T::NAME,
        c.heads,
        c.kv,
        c.block,
        c.sink
    );
    println!(" {label}");
    check(
        &down(dev, &out),
        dense.as_slice().expect("c"),
        tol,
        "  attention output",
    );
    let cat = |f: &dyn Fn(usize) -> Vec<f32>| (0..c.heads).flat_map(f).collect::<Vec<f32>>();
    let lse_cpu = cat(&|h| heads[h].lse.clone());
    let lse_gpu = down(dev, &lse);
    let e = max_abs(&lse_gpu, &lse_cpu, "lse");
    println!("  {:<48} max abs err {e:.2e}", "log-sum-exp");
    assert!(e <= tol * 10.0, "{label}: lse max abs err {e}");
    check(
        &down(dev, &p),
        &cat(&|h| heads[h].block_mass.iter().copied().collect()),
        tol,
        "  block mass P[i, b]",
    );
    check(
        &down(dev, &sink),
        &cat(&|h| heads[h].sink_mass.clone()),
        tol,
        "  sink mass",
    );
    check(
        &down(dev, &pooled),
        &cat(&|h| heads[h].pooled.iter().copied().collect()),
        tol,
        "  pooled block map",
    );
}

#[test]
fn gpu_attention_and_capture_f32_match_cpu() {
    let Some(dev) = device("gpu_attention_and_capture_f32_match_cpu") else {
        return;
    };
    let mut rng = Rng::from_state(seed("gpu_attention_f32"));
    for c in [
        Case {
            n: 200,
            heads: 6,
            kv: 2,
            d: 64,
            block: 64,
            sink: 4,
        },
        Case {
            n: 77,
            heads: 4,
            kv: 4,
            d: 32,
            block: 16,
            sink: 4,
        },
        Case {
            n: 130,
            heads: 2,
            kv: 1,
            d: 128,
            block: 128,
            sink: 70,
        },
        Case {
            n: 1,
            heads: 3,
            kv: 1,
            d: 64,
            block: 64,
            sink: 4,
        },
        Case {
            n: 513,
            heads: 4,
            kv: 2,
            d: 16,
            block: 64,
            sink: 4,
        },
    ] {
        attention_case::<f32>(&dev, &mut rng, &c, AttnKernel::Rowwise, 1e-4);
    }
}

#[test]
fn gpu_attention_and_capture_bf16_match_cpu() {
    let Some(dev) = device("gpu_attention_and_capture_bf16_match_cpu") else {
        return;
    };
    let mut rng = Rng::from_state(seed("gpu_attention_bf16"));
    let (ma, _) = dev.compute_capability();
    if ma >= 8 {
        assert_eq!(AttnKernel::auto::<bf16>(&dev, 64, 64, 4), AttnKernel::Flash);
        assert_eq!(
            AttnKernel::auto::<bf16>(&dev, 128, 128, 4),
            AttnKernel::Flash
        );
    }
    assert_eq!(
        AttnKernel::auto::<f32>(&dev, 64, 64, 4),
        AttnKernel::Rowwise
    );
    let cases = [
        Case {
            n: 1000,
            heads: 4,
            kv: 2,
            d: 64,
            block: 64,
            sink: 4,
        },
        Case {
            n: 128,
            heads: 2,
            kv: 1,
            d: 64,
            block: 64,
            sink: 64,
        },
        Case {
            n: 1,
            heads: 2,
            kv: 2,
            d: 64,
            block: 64,
            sink: 4,
        },
        Case {
            n: 333,
            heads: 6,
            kv: 2,
            d: 128,
            block: 128,
            sink: 4,
        },
        Case {
            n: 1100,
            heads: 2,
            kv: 1,
            d: 128,
            block: 64,
            sink: 1,
        },
    ];
    for c in &cases {
        if AttnKernel::auto::<bf16>(&dev, c.d, c.block, c.sink) == AttnKernel::Flash {
            // Every compiled shape of the flash kernels (another test running meanwhile may pick
            // up a non-default shape: all of them are exact).
            for (w, mt, qsm) in [(4, 2, false), (8, 1, false), (4, 1, true), (8, 2, true)] {
                FlashTuning::set(Some(FlashTuning {
                    fwd_warps: w,
                    capture_mtiles: mt,
                    fwd_q_smem: qsm,
                }));
                println!(" flash tuning {:?}", FlashTuning::current(c.d));
                attention_case::<bf16>(&dev, &mut rng, c, AttnKernel::Flash, 1e-2);
            }
            FlashTuning::set(None);
        }
        attention_case::<bf16>(&dev, &mut rng, c, AttnKernel::Rowwise, 1e-2);
    }
    // Row-wise bf16 on a head dim the flash kernel does not take.
    let c = Case {
        n: 300,
        heads: 4,
        kv: 1,
        d: 32,
        block: 32,
        sink: 4,
    };
    attention_case::<bf16>(&dev, &mut rng, &c, AttnKernel::Rowwise, 1e-2);
}
