//! `attnscope bench`: forward-pass throughput and peak memory at several lengths (the numbers
//! BENCHMARKS.md records), and the simulator's wall time.

use std::time::Instant;

use anyhow::{bail, Result};
use attnscope_core::attention::NoHook;
use attnscope_core::capture::{CaptureHook, CaptureOptions};
use serde_json::json;

use super::{input, model_arg};

mod simulate;

#[derive(clap::Args)]
pub struct Args {
    /// Model: a registry name, a HF folder, or a .gguf file.
    #[arg(long, default_value = "smollm2-135m")]
    model: String,
    /// Text to take the tokens from (file or corpus text name).
    #[arg(long, default_value = "alice29")]
    text: String,
    /// Lengths in tokens, comma-separated, ascending (peak memory is cumulative).
    #[arg(long, value_delimiter = ',', default_value = "512,2048,8192")]
    lens: Vec<usize>,
    /// Also time the forward pass with full capture (every layer and head).
    #[arg(long)]
    capture: bool,
    /// Print JSON lines.
    #[arg(long)]
    json: bool,
    /// The simulator's cost per method (`--simulate`; see `bench/simulate.rs`).
    #[command(flatten)]
    sim: simulate::SimArgs,
    /// Where the forward pass runs: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: attnscope_core::Device,
    /// Storage on the GPU: f32 (exact) or bf16 (fast).
    #[arg(long, default_value = "f32")]
    precision: attnscope_core::device::Precision,
    /// GPU only: random weights of a named shape (smollm2-135m, qwen2.5-0.5b, qwen2.5-1.5b,
    /// qwen2.5-7b, llama3.1-8b) generated on the device, random token ids; no model file is read.
    #[arg(long)]
    random_config: Option<String>,
    /// GPU only: timed repetitions per length (medians are reported).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// GPU only: also time the attention and capture kernels of one layer alone (TFLOP/s).
    #[arg(long)]
    kernels: bool,
    /// GPU only: time the device block methods (scoring, top-k and metrics) per layer instead:
    /// `all` (phsa, infllm-v2, nsa, moba, quest, seer-oracle, oracle-topk-block) or a
    /// comma-separated list.
    #[arg(long, num_args = 0..=1, default_missing_value = "all")]
    block_methods: Option<String>,
    /// Target sparsity of `--block-methods`.
    #[arg(long, default_value_t = 0.9)]
    block_sparsity: f64,
    /// GPU only: time the sparse attention kernel of `eval --device cuda` against the dense
    /// kernel of one layer, on random block selections at these sparsities (comma-separated).
    #[arg(long, value_delimiter = ',', num_args = 0.., default_missing_value = "0.9,0.95,0.973")]
    sparse_kernel: Option<Vec<f64>>,
}

/// Peak resident memory of this process so far, in bytes (Linux `VmHWM`).
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The run's peak device memory (the pool's high watermark) and peak host memory.
fn print_peaks(gm: &attnscope_core::gpu::GpuModel, json: bool) {
    let gib = |b: Option<u64>| b.map_or(f64::NAN, |b| b as f64 / (1u64 << 30) as f64);
    let (dev, host) = (gib(gm.device().peak_pool_memory()), gib(peak_rss_bytes()));
    if json {
        println!(
            "{}",
            json!({"mode": "peaks", "device_peak_gib": dev, "host_peak_gib": host})
        );
    } else {
        println!(
            "peak device memory {dev:.2} GiB (pool high watermark), peak host memory {host:.2} GiB"
        );
    }
}

pub fn run(a: Args) -> Result<()> {
    if a.sim.simulate {
        let n = a.lens.iter().copied().max().unwrap_or(2048);
        return simulate::run(&a.model, &a.text, n, a.json, &a.sim);
    }
    if a.device != attnscope_core::Device::Cpu {
        return gpu(a);
    }
    if a.random_config.is_some() {
        bail!("--random-config runs on the GPU only: add --device cuda");
    }
    let model = model_arg::load(&a.model, None, true)?;
    let path = input::text_path(&a.text, a.json)?;
    let text = std::fs::read_to_string(&path)?;
    let mut ids = model.tokenizer()?.encode(&text)?;
    let max = a.lens.iter().copied().max().unwrap_or(0);
    if ids.len() < max {
        // Repeat the text to reach the longest length (throughput does not depend on content).
        let base = ids.clone();
        while ids.len() < max {
            ids.extend_from_slice(&base);
        }
    }
    if max > model.config.max_context {
        bail!(
            "--lens {max} is above the model's context of {}",
            model.config.max_context
        );
    }
    let rate = matmul_gflops(&model.config);
    if !a.json {
        println!(
            "{} | {} threads | f32 matrix products {rate:.1} GFLOP/s | {}",
            model.source.display(),
            rayon::current_num_threads(),
            if a.capture {
                "forward, then forward + full capture"
            } else {
                "forward"
            }
        );
        println!(
            "{:>7} {:>10} {:>12} {:>12} {:>10} {:>10} {:>14}",
            "tokens", "mode", "seconds", "tokens/s", "GFLOP/s", "of matmul", "peak RSS MiB"
        );
    }
    for &n in &a.lens {
        let modes: &[bool] = if a.capture { &[false, true] } else { &[false] };
        for &capture in modes {
            let t = Instant::now();
            if capture {
                let mut hook = CaptureHook::new(CaptureOptions::default());
                model.forward(&ids[..n], &mut hook)?;
            } else {
                model.forward(&ids[..n], &mut NoHook)?;
            }
            let secs = t.elapsed().as_secs_f64();
            let rss = peak_rss_bytes().unwrap_or(0) as f64 / (1 << 20) as f64;
            let mode = if capture { "capture" } else { "forward" };
            let (products, attention) = model.config.forward_flops(n);
            let gflops = (products + attention) / secs / 1e9;
            if a.json {
                println!(
                    "{}",
                    json!({"tokens": n, "mode": mode, "seconds": secs,
                    "tokens_per_second": n as f64 / secs, "peak_rss_mib": rss,
                    "threads": rayon::current_num_threads(),
                    "matmul_flops": products, "attention_flops": attention,
                    "gflops": gflops, "matmul_rate_gflops": rate,
                    "fraction_of_matmul": gflops / rate})
                );
            } else {
                println!(
                    "{n:>7} {mode:>10} {secs:>12.2} {:>12.0} {gflops:>10.1} {:>9.0}% {rss:>14.0}",
                    n as f64 / secs,
                    100.0 * gflops / rate
                );
            }
        }
    }
    Ok(())
}

/// The machine's f32 matrix-product rate in GFLOP/s, measured here on the forward pass's own
/// kernel and largest shape (2,048 rows of hidden states times the MLP's up projection): the
/// best of five products.
fn matmul_gflops(c: &attnscope_core::ModelConfig) -> f64 {
    let (rows, h, m) = (2048, c.hidden, c.intermediate);
    let x = ndarray::Array2::from_shape_fn((rows, h), |(i, j)| ((i * 7 + j * 3) % 13) as f32 * 0.1);
    let w = ndarray::Array2::from_shape_fn((m, h), |(i, j)| ((i * 5 + j) % 11) as f32 * 0.1);
    let best = (0..5)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(attnscope_core::ops::matmul_t(x.view(), w.view()));
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    2.0 * (rows * h * m) as f64 / best / 1e9
}

/// `bench --device cuda`: device-event timings of the forward pass, full device-side capture and
/// (with --kernels) the attention kernels alone; see attnscope_core::gpu::bench.
fn gpu(a: Args) -> Result<()> {
    use attnscope_core::gpu::{bench, random_config, GpuModel, RANDOM_CONFIGS};
    let attnscope_core::Device::Cuda(ordinal) = a.device else {
        bail!("not a GPU device");
    };
    a.device.check_available()?;
    let max = a.lens.iter().copied().max().unwrap_or(0);
    let (name, loaded, random, ids);
    if let Some(rc) = &a.random_config {
        let Some(cfg) = random_config(rc) else {
            bail!(
                "--random-config {rc}: unknown (known: {})",
                RANDOM_CONFIGS.join(", ")
            );
        };
        if max > cfg.max_context {
            bail!(
                "--lens {max} is above the context of {rc} ({})",
                cfg.max_context
            );
        }
        let vocab = cfg.vocab as u64;
        ids = (0..max as u64)
            .map(|i| ((i.wrapping_mul(2_654_435_761) ^ (i >> 7)) % vocab) as u32)
            .collect::<Vec<u32>>();
        name = format!("random {rc}");
        random = Some(GpuModel::random(cfg, ordinal, a.precision, 1)?);
        loaded = None;
    } else {
        let mut model = model_arg::load(&a.model, None, true)?;
        if max > model.config.max_context {
            bail!(
                "--lens {max} is above the model's context of {}",
                model.config.max_context
            );
        }
        let text = std::fs::read_to_string(input::text_path(&a.text, a.json)?)?;
        let mut t = model.tokenizer()?.encode(&text)?;
        let base = t.clone();
        while t.len() < max && !base.is_empty() {
            t.extend_from_slice(&base);
        }
        ids = t;
        name = model.source.display().to_string();
        model.to_device(a.device, a.precision)?;
        loaded = Some(model);
        random = None;
    }
    let gm = match (&random, &loaded) {
        (Some(g), _) => g,
        (None, Some(m)) => m
            .gpu()
            .ok_or_else(|| anyhow::anyhow!("model not on the GPU"))?,
        _ => bail!("no model"),
    };
    if let Some(list) = &a.block_methods {
        let names: Vec<String> = match list.as_str() {
            "all" => Vec::new(),
            l => l.split(',').map(|x| x.trim().to_string()).collect(),
        };
        let label = format!("{name} | {} | {}", gm.device().label(), a.precision);
        attnscope_analysis::device::bench::print(
            gm,
            &ids,
            &a.lens,
            a.block_sparsity,
            &names,
            &label,
            a.json,
        )?;
        print_peaks(gm, a.json);
        return Ok(());
    }
    if let Some(sparsities) = &a.sparse_kernel {
        return sparse_kernel(gm, &a, sparsities, &name);
    }
    if !a.json {
        println!(
            "{name} | {} | {} | CUDA-event medians of {} runs",
            gm.device().label(),
            a.precision,
            a.repeat
        );
        println!(
            "{:>7} {:>10} {:>10} {:>12} {:>9}",
            "tokens", "mode", "ms", "tokens/s", "x forward"
        );
    }
    let rows = bench::bench(gm, &ids, &a.lens, a.repeat, a.capture, a.kernels)?;
    print_peaks(gm, a.json);
    for mut r in rows {
        if a.json {
            r["model"] = json!(name);
            println!("{r}");
            continue;
        }
        let n = r["tokens"].as_u64().unwrap_or(0);
        match r["mode"].as_str().unwrap_or("") {
            "kernels" => println!(
                "{n:>7} {:>10} attention {:.2} ms ({:.0} TFLOP/s), capture {:.2} ms ({:.0} TFLOP/s), pool {:.2} ms, per layer [{}]",
                "kernels",
                r["attention_ms"].as_f64().unwrap_or(f64::NAN),
                r["attention_tflops"].as_f64().unwrap_or(f64::NAN),
                r["capture_ms"].as_f64().unwrap_or(f64::NAN),
                r["capture_tflops"].as_f64().unwrap_or(f64::NAN),
                r["pool_ms"].as_f64().unwrap_or(f64::NAN),
                r["kernel"].as_str().unwrap_or("")
            ),
            mode => {
                let ms = r["ms"].as_f64().unwrap_or(f64::NAN);
                println!(
                    "{n:>7} {mode:>10} {ms:>10.1} {:>12.0} {:>9}",
                    n as f64 / (ms / 1e3),
                    r["capture_over_forward"]
                        .as_f64()
                        .map(|x| format!("{x:.2}"))
                        .unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}

/// `bench --device cuda --sparse-kernel`: the sparse attention kernels (row-wise `sparse_rows`;
/// in bf16 also the block-sparse flash kernel) against the dense one per length and sparsity
/// (attnscope_core::gpu::bench_sparse).
fn sparse_kernel(
    gm: &attnscope_core::gpu::GpuModel,
    a: &Args,
    sparsities: &[f64],
    name: &str,
) -> Result<()> {
    use attnscope_core::gpu::bench_sparse::time_sparse_layer;
    if let Some(s) = sparsities.iter().find(|s| !(0.0..1.0).contains(*s)) {
        bail!("--sparse-kernel {s}: a sparsity is in [0, 1)");
    }
    let c = &gm.config;
    if !a.json {
        println!(
            "{name} | {} | {} | one layer ({} q-heads, {} KV heads, head dim {}) | CUDA-event medians of {} runs",
            gm.device().label(), a.precision, c.n_heads, c.n_kv_heads, c.head_dim, a.repeat
        );
        println!(
            "{:>7} {:>9} {:>10} {:>10} {:>12} {:>11} {:>10} {:>11} {:>11}",
            "tokens",
            "sparsity",
            "dense ms",
            "rows ms",
            "rows/dense",
            "vs density",
            "flash ms",
            "flash/dense",
            "vs density"
        );
    }
    for &n in &a.lens {
        let rows = time_sparse_layer(gm, n, sparsities, a.repeat)?;
        for mut r in rows {
            if a.json {
                r["model"] = json!(name);
                println!("{r}");
                continue;
            }
            let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
            // The flash columns exist in bf16 only.
            let g = |k: &str| r[k].as_f64().map_or("-".to_string(), |x| format!("{x:.2}"));
            println!(
                "{n:>7} {:>9.3} {:>10.2} {:>10.2} {:>12.2} {:>11.2} {:>10} {:>11} {:>11}",
                f("sparsity"),
                f("dense_ms"),
                f("sparse_ms"),
                f("sparse_over_dense"),
                f("vs_density"),
                g("flash_sparse_ms"),
                g("flash_sparse_over_dense"),
                g("flash_vs_density")
            );
        }
    }
    print_peaks(gm, a.json);
    Ok(())
}
