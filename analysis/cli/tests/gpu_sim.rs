//! The same simulation on the CPU and on the GPU (marked `gpu_`; SKIPPED notice without a GPU or
//! without the real model): `attnscope simulate` on real SmolLM2 weights at 2048 tokens with
//! `--device cpu` and with `--device cuda` (f32; the exact capture computed on the device), then
//! every method's recall (and every other number `report --json` prints) agrees to 1e-3.
//! ATTNSCOPE_GPU_MODEL names the GGUF (scripts/gpu_truncate_gguf.py makes a small one),
//! ATTNSCOPE_GPU_TEXT the text (default: alice29 from the cache), ATTNSCOPE_BIN the binary.
#![cfg(feature = "cuda")]

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn bin() -> PathBuf {
    std::env::var_os("ATTNSCOPE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_attnscope")))
}

fn attnscope(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin())
        .args(args)
        .output()
        .expect("run attnscope");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every (json path, number) under objects that have a "recall".
fn numbers(v: &Value, path: String, out: &mut Vec<(String, f64)>) {
    match v {
        Value::Object(m) => {
            let key = m
                .get("name")
                .and_then(Value::as_str)
                .map(|s| format!("{path}/{s}"))
                .unwrap_or(path.clone());
            for (k, x) in m {
                if let Some(f) = x.as_f64() {
                    if m.contains_key("recall") && k != "seconds" {
                        out.push((format!("{key}.{k}"), f));
                    }
                } else {
                    numbers(x, format!("{key}/{k}"), out);
                }
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                numbers(x, format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Every registered method but phsa-fit (which fits on separate calibration text).
const METHODS: &str = "phsa,infllm-v2,streaming,nsa,moba,quest,xattention,seer-oracle,dsa-proxy,\
    hisa-proxy,h2o,rtpurbo-proxy,fasa,flexprefill,minference-vs,a-shape,snapkv,blasst,oracle-topk,\
    oracle-topp";

#[test]
fn gpu_simulation_matches_cpu_on_real_smollm2() {
    if let Err(e) = attnscope_core::Device::Cuda(0).check_available() {
        println!("SKIPPED gpu_simulation_matches_cpu_on_real_smollm2: {e}");
        return;
    }
    let Some(model) = std::env::var("ATTNSCOPE_GPU_MODEL").ok() else {
        println!("SKIPPED gpu_simulation_matches_cpu_on_real_smollm2: set ATTNSCOPE_GPU_MODEL");
        return;
    };
    let text = std::env::var("ATTNSCOPE_GPU_TEXT").unwrap_or_else(|_| "alice29".into());
    let dir = tempfile::tempdir().expect("tempdir");
    let mut reports = Vec::new();
    for device in ["cpu", "cuda"] {
        let out = dir.path().join(device);
        let out_s = out.to_str().expect("utf-8");
        let t = std::time::Instant::now();
        let (ok, _, err) = attnscope(&[
            "simulate",
            "--model",
            &model,
            "--text",
            &text,
            "--len",
            "2048",
            "--methods",
            METHODS,
            "--sparsity",
            "0.9",
            "--device",
            device,
            "--precision",
            "f32",
            "--out",
            out_s,
            "--quiet",
        ]);
        assert!(ok, "simulate --device {device} failed: {err}");
        println!(
            "simulate --device {device}: {:.1} s",
            t.elapsed().as_secs_f64()
        );
        let (ok, rep, err) = attnscope(&["report", out_s, "--json"]);
        assert!(ok, "report failed: {err}");
        let v: Value = serde_json::from_str(&rep).expect("report --json");
        let mut nums = Vec::new();
        numbers(&v, String::new(), &mut nums);
        reports.push(nums);
    }
    let (cpu, gpu) = (&reports[0], &reports[1]);
    assert!(!cpu.is_empty(), "no numbers in the report");
    assert_eq!(cpu.len(), gpu.len(), "the two reports differ in shape");
    let mut worst = (0.0f64, String::new());
    let mut recalls = 0;
    for ((kc, c), (kg, g)) in cpu.iter().zip(gpu) {
        assert_eq!(kc, kg, "report entries differ");
        let d = (c - g).abs();
        if kc.ends_with(".recall") {
            recalls += 1;
            assert!(d <= 1e-3, "{kc}: cpu {c} vs cuda {g}");
        }
        if d > worst.0 && !kc.ends_with("seconds") {
            worst = (d, kc.clone());
        }
    }
    println!(
        "{recalls} recalls agree to 1e-3; largest difference of any number: {:.2e} ({})",
        worst.0, worst.1
    );
    assert!(recalls >= 10, "only {recalls} recalls compared");
}
