//! The GPU forward pass against the CPU reference (marked `gpu_`; SKIPPED notice without a GPU):
//! the tiny transformers fixtures of every architecture, a random Qwen2-shaped model with head
//! dim 64 (the flash path in bf16), real SmolLM2 weights and activations when
//! ATTNSCOPE_GPU_MODEL names a GGUF (e.g. gpu-inputs/smollm2-4l.gguf from
//! scripts/gpu_truncate_gguf.py; ATTNSCOPE_GPU_TEXT names the text), and the memory plan's refusal.
#![cfg(feature = "cuda")]

mod gpu_util;

use std::path::{Path, PathBuf};

use attnscope_core::attention::NoHook;
use attnscope_core::capture::{CaptureHook, CaptureOptions, LayerCapture};
use attnscope_core::config::{Arch, ModelConfig};
use attnscope_core::device::Precision;
use attnscope_core::gpu::{random_config, GpuModel};
use attnscope_core::tensor::{HostTensor, Weights};
use attnscope_core::{Device, Model};
use attnscope_kernels::cuda::{AttnKernel, AttnShape};
use gpu_util::*;

fn fixtures() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    if p.exists() {
        p
    } else {
        PathBuf::from("core/tests/fixtures")
    }
}

fn flat(a: &ndarray::Array2<f32>) -> Vec<f32> {
    a.iter().copied().collect()
}

/// Compares two capture runs layer by layer.
fn check_captures(gpu: &[LayerCapture], cpu: &[LayerCapture], tol: f64, what: &str) {
    assert_eq!(gpu.len(), cpu.len(), "{what}: captured layers");
    for (g, c) in gpu.iter().zip(cpu) {
        assert_eq!(g.layer, c.layer);
        let cat =
            |lc: &LayerCapture, f: &dyn Fn(&attnscope_core::capture::HeadCapture) -> Vec<f32>| {
                lc.heads.iter().flat_map(f).collect::<Vec<f32>>()
            };
        let l = g.layer;
        check(
            &cat(g, &|h| h.lse.clone()),
            &cat(c, &|h| h.lse.clone()),
            tol,
            &format!("{what} layer {l} lse"),
        );
        check(
            &cat(g, &|h| flat(&h.block_mass)),
            &cat(c, &|h| flat(&h.block_mass)),
            tol,
            &format!("{what} layer {l} P[i, b]"),
        );
        check(
            &cat(g, &|h| h.sink_mass.clone()),
            &cat(c, &|h| h.sink_mass.clone()),
            tol,
            &format!("{what} layer {l} sink"),
        );
        check(
            &cat(g, &|h| flat(&h.pooled)),
            &cat(c, &|h| flat(&h.pooled)),
            tol,
            &format!("{what} layer {l} pooled"),
        );
        check(
            &flat(&g.dense_out),
            &flat(&c.dense_out),
            tol,
            &format!("{what} layer {l} dense out"),
        );
    }
}

/// Forward + capture on the CPU and on the GPU at `precision`; hidden states and captures agree.
fn compare(cpu: &Model, gpu: &Model, ids: &[u32], opts: &CaptureOptions, tol: f64, what: &str) {
    assert_eq!(gpu.device(), Device::Cuda(0));
    let t = std::time::Instant::now();
    let mut hc = CaptureHook::new(opts.clone());
    let h_cpu = cpu.forward(ids, &mut hc).expect("cpu forward");
    let cpu_s = t.elapsed().as_secs_f64();
    let t = std::time::Instant::now();
    let mut hg = CaptureHook::new(opts.clone());
    let h_gpu = gpu.forward(ids, &mut hg).expect("gpu forward");
    let gpu_s = t.elapsed().as_secs_f64();
    println!(
        " {what}: {} tokens, cpu {cpu_s:.2} s, gpu {gpu_s:.2} s (capture copied back)",
        ids.len()
    );
    check(
        &flat(&h_gpu),
        &flat(&h_cpu),
        tol,
        &format!("{what} final hidden"),
    );
    check_captures(&hg.layers, &hc.layers, tol, what);
    // Without a hook the layers go through the plain dense kernels.
    let h2 = gpu.forward(ids, &mut NoHook).expect("gpu forward, no hook");
    check(
        &flat(&h2),
        &flat(&h_cpu),
        tol,
        &format!("{what} final hidden (no hook)"),
    );
}

#[test]
fn gpu_forward_matches_cpu_on_tiny_fixtures() {
    let Some(_dev) = device("gpu_forward_matches_cpu_on_tiny_fixtures") else {
        return;
    };
    for arch in ["llama", "qwen2", "qwen3"] {
        let dir = fixtures().join("tiny").join(arch);
        let cpu = Model::load(&dir).expect("load");
        let ids: Vec<u32> = (0..200u32)
            .map(|i| (i * 37 + 11) % cpu.config.vocab as u32)
            .collect();
        let ids = &ids[..cpu.config.max_context.min(200)];
        let opts = CaptureOptions {
            block: 8,
            ..CaptureOptions::default()
        };
        let mut g = Model::load(&dir).expect("load");
        g.to_device(Device::Cuda(0), Precision::F32)
            .expect("to cuda f32");
        compare(&cpu, &g, ids, &opts, 1e-4, &format!("{arch} f32"));
        g.to_device(Device::Cuda(0), Precision::Bf16)
            .expect("to cuda bf16");
        compare(&cpu, &g, ids, &opts, 5e-2, &format!("{arch} bf16"));
        g.to_device(Device::Cpu, Precision::F32)
            .expect("back to cpu");
        assert_eq!(g.device(), Device::Cpu);
    }
}

fn random_model(cfg: &ModelConfig, rng: &mut Rng) -> Model {
    let mut w = Weights::new(Path::new("random"));
    let mut put = |name: String, shape: Vec<usize>, scale: f32, offset: f32| {
        let n = shape.iter().product();
        let data = rng.vec(n, scale).into_iter().map(|x| x + offset).collect();
        w.tensors
            .insert(name, HostTensor::new(shape, data).expect("shape"));
    };
    let (h, d, f) = (cfg.hidden, cfg.head_dim, cfg.intermediate);
    let (qd, kvd) = (cfg.n_heads * d, cfg.n_kv_heads * d);
    put(
        "model.embed_tokens.weight".into(),
        vec![cfg.vocab, h],
        1.0,
        0.0,
    );
    put("model.norm.weight".into(), vec![h], 0.2, 1.0);
    for l in 0..cfg.n_layers {
        let p = format!("model.layers.{l}");
        let s = |inp: usize| 1.7 / (inp as f32).sqrt();
        put(format!("{p}.input_layernorm.weight"), vec![h], 0.2, 1.0);
        put(
            format!("{p}.post_attention_layernorm.weight"),
            vec![h],
            0.2,
            1.0,
        );
        put(
            format!("{p}.self_attn.q_proj.weight"),
            vec![qd, h],
            s(h),
            0.0,
        );
        put(
            format!("{p}.self_attn.k_proj.weight"),
            vec![kvd, h],
            s(h),
            0.0,
        );
        put(
            format!("{p}.self_attn.v_proj.weight"),
            vec![kvd, h],
            s(h),
            0.0,
        );
        put(format!("{p}.self_attn.q_proj.bias"), vec![qd], 0.3, 0.0);
        put(format!("{p}.self_attn.k_proj.bias"), vec![kvd], 0.3, 0.0);
        put(format!("{p}.self_attn.v_proj.bias"), vec![kvd], 0.3, 0.0);
        put(
            format!("{p}.self_attn.o_proj.weight"),
            vec![h, qd],
            s(qd),
            0.0,
        );
        put(format!("{p}.mlp.gate_proj.weight"), vec![f, h], s(h), 0.0);
        put(format!("{p}.mlp.up_proj.weight"), vec![f, h], s(h), 0.0);
        put(format!("{p}.mlp.down_proj.weight"), vec![h, f], s(f), 0.0);
    }
    Model::from_weights(cfg.clone(), w).expect("random model")
}

#[test]
fn gpu_forward_matches_cpu_on_a_random_qwen2_with_flash_shapes() {
    let Some(_dev) = device("gpu_forward_matches_cpu_on_a_random_qwen2_with_flash_shapes") else {
        return;
    };
    let mut rng = Rng::from_state(seed("gpu_random_qwen2"));
    for (d, heads, block) in [(64usize, 4usize, 64usize), (128, 2, 128)] {
        let cfg = ModelConfig {
            arch: Arch::Qwen2,
            n_layers: 2,
            n_heads: heads,
            n_kv_heads: 2,
            head_dim: d,
            hidden: 256,
            intermediate: 384,
            vocab: 300,
            rms_eps: 1e-6,
            rope_theta: 1_000_000.0,
            rope_scaling: Default::default(),
            max_context: 1024,
            tie_embeddings: true,
            bos_token_id: None,
            eos_token_id: None,
            attention: Default::default(),
        };
        // Models are not Clone: draw the same weights twice.
        let wseed = rng.next_u64();
        let cpu = random_model(&cfg, &mut Rng::from_state(wseed));
        let mut g = random_model(&cfg, &mut Rng::from_state(wseed));
        let ids: Vec<u32> = (0..700).map(|_| rng.below(300) as u32).collect();
        let opts = CaptureOptions {
            block,
            ..CaptureOptions::default()
        };
        g.to_device(Device::Cuda(0), Precision::F32)
            .expect("to cuda f32");
        compare(
            &cpu,
            &g,
            &ids,
            &opts,
            1e-4,
            &format!("random qwen2 d={d} f32"),
        );
        g.to_device(Device::Cuda(0), Precision::Bf16)
            .expect("to cuda bf16");
        let gm = g.gpu().expect("gpu twin");
        assert_eq!(gm.attention_kernel(&opts), AttnKernel::Flash);
        compare(
            &cpu,
            &g,
            &ids,
            &opts,
            5e-2,
            &format!("random qwen2 d={d} bf16 (flash)"),
        );
    }
}

/// Real SmolLM2 weights (a GGUF truncated to its first layers) at 2048 tokens of real text: the
/// GPU f32 forward and capture against the CPU, then every attention kernel on the real post-RoPE
/// activations of each layer (f32 row-wise to 1e-4, bf16 flash on the rounded activations to 1e-2).
#[test]
fn gpu_real_smollm2_matches_cpu() {
    let Some(dev) = device("gpu_real_smollm2_matches_cpu") else {
        return;
    };
    let Some(path) = std::env::var_os("ATTNSCOPE_GPU_MODEL").map(PathBuf::from) else {
        println!("SKIPPED gpu_real_smollm2_matches_cpu: set ATTNSCOPE_GPU_MODEL to a SmolLM2 GGUF");
        return;
    };
    let cpu = Model::load(&path).expect("load gguf");
    let text = match std::env::var_os("ATTNSCOPE_GPU_TEXT") {
        Some(p) => std::fs::read_to_string(p).expect("read text"),
        None => "Alice was beginning to get very tired of sitting by her sister on the bank, and \
                 of having nothing to do: once or twice she had peeped into the book her sister \
                 was reading. "
            .repeat(80),
    };
    let mut ids = cpu
        .tokenizer()
        .expect("tokenizer")
        .encode(&text)
        .expect("encode");
    ids.truncate(2048);
    assert_eq!(ids.len(), 2048, "the text is long enough");
    let opts = CaptureOptions {
        keep_qkv: true,
        ..CaptureOptions::default()
    };
    let mut g = Model::load(&path).expect("load gguf");
    g.to_device(Device::Cuda(0), Precision::F32)
        .expect("to cuda");
    compare(&cpu, &g, &ids, &opts, 1e-4, "smollm2 f32");

    // Kernels on the real activations of every layer.
    let mut hook = CaptureHook::new(opts.clone());
    cpu.forward(&ids, &mut hook).expect("cpu forward");
    let c = &cpu.config;
    let shape = AttnShape {
        n: ids.len(),
        heads: c.n_heads,
        kv_heads: c.n_kv_heads,
        head_dim: c.head_dim,
    };
    for lc in &hook.layers {
        let qkv = lc.qkv.as_ref().expect("kept qkv");
        real_layer_kernels(&dev, lc, qkv, shape);
    }
}

fn real_layer_kernels(
    dev: &attnscope_kernels::cuda::GpuDevice,
    lc: &LayerCapture,
    qkv: &attnscope_core::capture::CapturedQkv,
    s: AttnShape,
) {
    use attnscope_core::attention::LayerQkv;
    use attnscope_core::capture::capture_layer;
    use attnscope_kernels::cuda::{bf16, GpuFloat};
    let (n, d) = (s.n, s.head_dim);
    let nb = n.div_ceil(64);
    fn run<T: GpuFloat>(
        dev: &attnscope_kernels::cuda::GpuDevice,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        s: AttnShape,
        kernel: AttnKernel,
    ) -> [Vec<f32>; 4] {
        let nb = s.n.div_ceil(64);
        let (qb, kb, vb) = (up::<T>(dev, q), up::<T>(dev, k), up::<T>(dev, v));
        let mut out = poisoned::<T>(dev, s.n * s.heads * s.head_dim);
        let mut lse = poisoned::<f32>(dev, s.heads * s.n);
        let mut p = poisoned::<f32>(dev, s.heads * s.n * nb);
        let mut sink = poisoned::<f32>(dev, s.heads * s.n);
        dev.attention(&qb, &kb, &vb, &mut out, &mut lse, s, kernel)
            .expect("attention");
        dev.capture(&qb, &kb, &lse, &mut p, &mut sink, s, 64, 4, kernel)
            .expect("capture");
        [
            down(dev, &out),
            down(dev, &lse),
            down(dev, &p),
            down(dev, &sink),
        ]
    }
    let cat = |f: &dyn Fn(&attnscope_core::capture::HeadCapture) -> Vec<f32>| {
        lc.heads.iter().flat_map(f).collect::<Vec<f32>>()
    };
    let (q, k, v) = (
        head_major(&qkv.q, s.heads, d),
        head_major(&qkv.k, s.kv_heads, d),
        head_major(&qkv.v, s.kv_heads, d),
    );
    let l = lc.layer;
    let [out, lse, p, sink] = run::<f32>(dev, &q, &k, &v, s, AttnKernel::Rowwise);
    check(
        &out,
        &flat(&lc.dense_out),
        1e-4,
        &format!("real layer {l} f32 attention"),
    );
    check(
        &lse,
        &cat(&|h| h.lse.clone()),
        1e-4,
        &format!("real layer {l} f32 lse"),
    );
    check(
        &p,
        &cat(&|h| flat(&h.block_mass)),
        1e-4,
        &format!("real layer {l} f32 P"),
    );
    check(
        &sink,
        &cat(&|h| h.sink_mass.clone()),
        1e-4,
        &format!("real layer {l} f32 sink"),
    );
    // bf16: the CPU reference on the same bf16-rounded activations.
    let (qr, kr, vr) = (round_bf16(&q), round_bf16(&k), round_bf16(&v));
    let tm = |x: &[f32], heads: usize| -> ndarray::Array2<f32> {
        let mut a = ndarray::Array2::zeros((n, heads * d));
        for h in 0..heads {
            for i in 0..n {
                for c in 0..d {
                    a[[i, h * d + c]] = x[(h * n + i) * d + c];
                }
            }
        }
        a
    };
    let (qa, ka, va) = (tm(&qr, s.heads), tm(&kr, s.kv_heads), tm(&vr, s.kv_heads));
    let lq = LayerQkv {
        layer: l,
        n_heads: s.heads,
        n_kv_heads: s.kv_heads,
        head_dim: d,
        q: qa.view(),
        k: ka.view(),
        v: va.view(),
        rule: attnscope_core::attention::ScoreRule::plain(d),
    };
    let (heads, dense) = capture_layer(&lq, &CaptureOptions::default());
    let kernel = AttnKernel::auto::<bf16>(dev, d, 64, 4);
    let [out, lse, p, sink] = run::<bf16>(dev, &qr, &kr, &vr, s, kernel);
    let cat2 = |f: &dyn Fn(&attnscope_core::capture::HeadCapture) -> Vec<f32>| {
        heads.iter().flat_map(f).collect::<Vec<f32>>()
    };
    check(
        &out,
        &flat(&dense),
        1e-2,
        &format!("real layer {l} bf16 {kernel:?} attention"),
    );
    check(
        &lse,
        &cat2(&|h| h.lse.clone()),
        1e-2,
        &format!("real layer {l} bf16 {kernel:?} lse"),
    );
    check(
        &p,
        &cat2(&|h| flat(&h.block_mass)),
        1e-2,
        &format!("real layer {l} bf16 {kernel:?} P"),
    );
    check(
        &sink,
        &cat2(&|h| h.sink_mass.clone()),
        1e-2,
        &format!("real layer {l} bf16 {kernel:?} sink"),
    );
    let _ = nb;
}

/// A run that cannot fit is refused before it starts, with the plan and a suggestion.
#[test]
fn gpu_memory_plan_refuses_runs_that_do_not_fit() {
    let Some(_dev) = device("gpu_memory_plan_refuses_runs_that_do_not_fit") else {
        return;
    };
    let cfg = random_config("qwen2.5-0.5b").expect("preset");
    let m = GpuModel::random(cfg, 0, Precision::Bf16, 1).expect("random model");
    let ids: Vec<u32> = (0..32768u32).map(|i| i % 1000).collect();
    // Block 1 keeps an n x n map per head and layer on the device: terabytes.
    let opts = CaptureOptions {
        block: 1,
        ..CaptureOptions::default()
    };
    let plan = m.plan(ids.len(), Some(&opts), 24);
    println!(" plan: {}", plan.describe());
    let e = m
        .forward_device_capture(&ids, Some(&opts))
        .expect_err("refused")
        .to_string();
    println!(" refused: {e}");
    assert!(e.contains("not enough GPU memory"), "{e}");
    assert!(e.contains("shorter input"), "{e}");
    // A run that fits goes through (and the model still works after the refusal).
    let ok = m
        .forward_device_capture(&ids[..4096], Some(&CaptureOptions::default()))
        .expect("4k capture");
    assert_eq!(ok.sink_mass.len(), 24);
    assert!(ok
        .sink_mass
        .iter()
        .flatten()
        .all(|s| s.is_finite() && *s >= 0.0 && *s <= 1.0 + 1e-4));
    println!(
        " 4096 tokens, full device capture: {:.1} ms ({:?})",
        ok.device_ms, ok.kernel
    );
}

/// Every layer attends to a selection (first 4 tokens, the 32 most recent, and every fifth key
/// offset by the head), as an end-to-end sparse prefill does.
struct SparseEveryLayer;

impl attnscope_core::attention::AttentionHook for SparseEveryLayer {
    fn on_layer(
        &mut self,
        qkv: &attnscope_core::attention::LayerQkv<'_>,
    ) -> attnscope_core::Result<attnscope_core::attention::HookAction> {
        let sel =
            attnscope_core::attention::TokenSelection::from_fn(qkv.n_heads, qkv.len(), |h, i| {
                (0..=i as u32)
                    .filter(|&j| j < 4 || j as usize + 32 > i || (j as usize + h).is_multiple_of(5))
                    .collect()
            });
        Ok(attnscope_core::attention::HookAction::Sparse(sel))
    }
}

/// The device's sparse attention (`sparse_rows`) in a whole forward pass of real SmolLM2 layers
/// against the CPU's (`sparse_attention`), f32: the final hidden states agree.
#[test]
fn gpu_sparse_prefill_matches_cpu() {
    if device("gpu_sparse_prefill_matches_cpu").is_none() {
        return;
    }
    let Some(path) = std::env::var_os("ATTNSCOPE_GPU_MODEL").map(PathBuf::from) else {
        println!(
            "SKIPPED gpu_sparse_prefill_matches_cpu: set ATTNSCOPE_GPU_MODEL to a SmolLM2 GGUF"
        );
        return;
    };
    let cpu = Model::load(&path).expect("load gguf");
    let text = "Alice was beginning to get very tired of sitting by her sister on the bank, and \
                of having nothing to do. "
        .repeat(40);
    let mut ids = cpu
        .tokenizer()
        .expect("tokenizer")
        .encode(&text)
        .expect("encode");
    ids.truncate(700);
    let want = cpu
        .forward(&ids, &mut SparseEveryLayer)
        .expect("cpu forward");
    let mut g = Model::load(&path).expect("load gguf");
    g.to_device(Device::Cuda(0), Precision::F32)
        .expect("to cuda");
    let got = g.forward(&ids, &mut SparseEveryLayer).expect("gpu forward");
    let dense = g.forward(&ids, &mut NoHook).expect("gpu dense forward");
    assert_eq!(got.dim(), want.dim());
    let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
    let diff = got
        .iter()
        .zip(&want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    let from_dense = dense
        .iter()
        .zip(&want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    println!(
        "sparse prefill, {} tokens: largest |gpu - cpu| {diff:.2e} (max |x| {scale:.2e}); the \
         dense forward differs by {from_dense:.2e}",
        ids.len()
    );
    assert!(
        diff <= 1e-4 * scale.max(1.0),
        "gpu sparse prefill differs by {diff}"
    );
    assert!(
        from_dense > 100.0 * diff,
        "the selection must change the output"
    );
}
