//! `attnscope bench`: forward-pass throughput and peak memory at several lengths (the numbers
//! BENCHMARKS.md records), and the simulator's wall time.

use std::time::Instant;

use anyhow::{bail, Result};
use attnscope_core::attention::NoHook;
use attnscope_core::capture::{CaptureHook, CaptureOptions};
use serde_json::json;

use super::{input, model_arg};

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
}

/// Peak resident memory of this process so far, in bytes (Linux `VmHWM`).
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

pub fn run(a: Args) -> Result<()> {
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
    if !a.json {
        println!(
            "{} | {} threads | {}",
            model.source.display(),
            rayon::current_num_threads(),
            if a.capture {
                "forward, then forward + full capture"
            } else {
                "forward"
            }
        );
        println!(
            "{:>7} {:>10} {:>12} {:>12} {:>14}",
            "tokens", "mode", "seconds", "tokens/s", "peak RSS MiB"
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
            if a.json {
                println!(
                    "{}",
                    json!({"tokens": n, "mode": mode, "seconds": secs,
                    "tokens_per_second": n as f64 / secs, "peak_rss_mib": rss,
                    "threads": rayon::current_num_threads()})
                );
            } else {
                println!(
                    "{n:>7} {mode:>10} {secs:>12.2} {:>12.0} {rss:>14.0}",
                    n as f64 / secs
                );
            }
        }
    }
    Ok(())
}
