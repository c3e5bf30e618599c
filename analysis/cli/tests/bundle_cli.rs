//! Run bundles as a user makes them: `simulate` on the real SmolLM2 (fetched through the
//! registries when missing) over two seeds, read back by Rust and by pyarrow + pandas
//! (`scripts/check_bundle.py`, skipped with a notice when pyarrow is missing), an interrupted run
//! resumed, `report` in every format and across runs, and bad bundles named clearly.

mod common;

use common::attnscope_env as attnscope;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use attnscope_analysis::bundle::Bundle;

const RUN_ARGS: &[&str] = &[
    "simulate",
    "--model",
    "smollm2-135m",
    "--text",
    "alice29",
    "--len",
    "384",
    "--layers",
    "3,20",
    "--methods",
    "phsa,infllm-v2,streaming,oracle-topk",
    "--sparsity",
    "0.5,0.7",
    "--seeds",
    "0,1",
    "--selections",
    "all",
    "--save-qkv",
    "3",
    "--quiet",
];

fn simulate(out: &Path, extra: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = out.to_str().expect("utf-8 path");
    let mut args: Vec<&str> = RUN_ARGS.to_vec();
    args.extend(["--out", out]);
    args.extend(extra);
    attnscope(&args, env)
}

/// One bundle shared by the tests of this file (two seeds of alice29 on SmolLM2).
fn bundle() -> &'static Path {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DIR.get_or_init(|| {
        let tmp = tempfile::tempdir().expect("tempdir");
        let run = tmp.path().join("smol");
        let (ok, _, err) = simulate(&run, &[], &[]);
        assert!(ok, "simulate failed: {err}");
        (tmp, run)
    })
    .1
}

#[test]
fn bundle_has_every_table_and_a_complete_manifest() {
    let b = Bundle::read(bundle()).expect("read bundle");
    let m = &b.manifest;
    assert_eq!(m.format_version, 2);
    assert_eq!(m.data.inputs.len(), 2);
    assert_eq!(m.data.inputs[1].seed, 1);
    assert_eq!(m.n_tokens, 384);
    assert_eq!(m.model.files.len(), 1);
    assert_eq!(m.model.files[0].sha256.len(), 64);
    assert!(!m.tool.git_revision.is_empty());
    assert_eq!(m.timings.inputs_s.len(), 2);
    assert!(m.timings.total_s > 0.0 && m.methods.len() == 4);
    assert!(
        m.methods.iter().all(|x| !x.params.is_empty()),
        "{:?}",
        m.methods
    );
    // 2 inputs x 2 layers x 9 heads x 4 methods x 2 budgets.
    assert_eq!(b.results.metrics.len(), 2 * 2 * 9 * 4 * 2);
    assert_eq!(b.results.heads.len(), 2 * 2 * 9);
    assert_eq!(b.tokens.len(), 2 * 384);
    // Per-query-block selections of both budgets: 6 blocks of 64 per head.
    assert_eq!(b.results.selections.len(), 2 * 2 * 9 * 4 * 2);
    assert!(b.results.selections.iter().all(|s| s.n_query_blocks() == 6));
    // The two seeds are different paragraphs.
    let ids = |i: usize| -> Vec<u32> {
        b.tokens
            .iter()
            .filter(|t| t.input == i)
            .map(|t| t.id)
            .collect()
    };
    assert_ne!(ids(0), ids(1));
    assert!(b.tokens.iter().any(|t| t.is_punct) && b.tokens.iter().all(|t| t.char_start.is_some()));
    // Captured Q/K/V of layer 3 for both inputs.
    assert_eq!(m.qkv.len(), 2);
    let q = b.read_qkv(1).expect("qkv").expect("saved");
    assert_eq!(
        (q[0].layer, q[0].n_heads, q[0].n, q[0].head_dim),
        (3, 9, 384, 64)
    );
    assert_eq!(q[0].k.len(), 3 * 384 * 64);
    assert!(q[0].q.iter().all(|x| x.is_finite()));
}

#[test]
fn pyarrow_and_pandas_read_the_bundle() {
    let have = Command::new("python3")
        .args(["-c", "import pyarrow, pandas"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        println!("NOTICE: python3 with pyarrow and pandas not found; skipping the pyarrow check (pip install pyarrow pandas)");
        return;
    }
    let dir = bundle();
    let b = Bundle::read(dir).expect("read");
    let mut mean = serde_json::Map::new();
    for s in attnscope_analysis::results::summarize(&b.results.metrics) {
        mean.insert(format!("{}|{}", s.name, s.budget), s.info_loss.into());
    }
    let expect = serde_json::json!({
        "mean_info_loss": mean,
        "sink_mass_sum": b.results.heads.iter().map(|h| h.sink_mass).sum::<f64>(),
        "pieces": b.tokens.iter().take(12).map(|t| t.piece.clone()).collect::<Vec<_>>(),
        "kept_blocks_total": b.results.selections.iter().map(|s| s.blocks.len()).sum::<usize>(),
        "rows": b.manifest.tables.iter().map(|t| (t.name.clone(), serde_json::Value::from(t.rows))).collect::<serde_json::Map<_, _>>(),
    });
    let tmp = tempfile::tempdir().expect("tempdir");
    let exp = tmp.path().join("expect.json");
    std::fs::write(&exp, expect.to_string()).expect("write expect");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/check_bundle.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(dir)
        .arg("--expect")
        .arg(&exp)
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "check_bundle.py failed:\n{text}");
}

#[test]
fn interrupted_run_says_what_is_missing_then_resumes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let run = tmp.path().join("r");
    let run_s = run.to_str().expect("utf-8");
    let (ok, _, err) = simulate(&run, &[], &[("ATTNSCOPE_INTERRUPT_AFTER_INPUTS", "1")]);
    assert!(!ok && err.contains("interrupted"), "{err}");
    let (ok, _, err) = attnscope(&["report", run_s], &[]);
    assert!(
        !ok && err.contains("1 of 2 inputs")
            && err.contains("input(s) 1")
            && err.contains("--resume"),
        "{err}"
    );
    let (ok, _, err) = simulate(&run, &[], &[]);
    assert!(
        !ok && err.contains("--resume") && err.contains("--force"),
        "{err}"
    );
    let (ok, _, err) = simulate(&run, &["--resume", "--sparsity", "0.6"], &[]);
    assert!(!ok && err.contains("different options"), "{err}");
    let (ok, _, err) = simulate(&run, &["--resume"], &[]);
    assert!(ok, "resume failed: {err}");
    let resumed = Bundle::read(&run).expect("resumed bundle");
    let straight = Bundle::read(bundle()).expect("straight bundle");
    assert!(!run.join(".partial").exists());
    assert_eq!(
        resumed.results.metrics.len(),
        straight.results.metrics.len()
    );
    for (a, b) in resumed
        .results
        .metrics
        .iter()
        .zip(&straight.results.metrics)
    {
        assert_eq!(
            (a.input, a.layer, a.head, &a.method, a.budget),
            (b.input, b.layer, b.head, &b.method, b.budget)
        );
        assert!((a.info_loss - b.info_loss).abs() < 1e-9, "{a:?} vs {b:?}");
    }
    assert_eq!(resumed.tokens, straight.tokens);
    assert_eq!(resumed.manifest.qkv.len(), 2);
}

#[test]
fn report_in_every_format_and_across_runs() {
    let dir = bundle();
    let d = dir.to_str().expect("utf-8");
    let (ok, out, err) = attnscope(&["report", d, "--json"], &[]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["methods"].as_array().expect("methods").len(), 4);
    assert_eq!(v["inputs"], 2);
    let head = &v["method_comparison"];
    assert_eq!(
        (head["method_a"].as_str(), head["method_b"].as_str()),
        (Some("phsa"), Some("infllm-v2"))
    );
    assert!(head["relative_il_reduction"].is_number());
    let ci = head["ci95"].as_array().expect("ci95");
    let r = head["relative_il_reduction"].as_f64().expect("r");
    let (lo, hi) = (ci[0].as_f64().expect("lo"), ci[1].as_f64().expect("hi"));
    assert!(lo <= r + 1e-12 && r <= hi + 1e-12, "{lo} {r} {hi}");
    assert_eq!(head["bootstrap"]["units"], 2 * 2 * 9);
    let (ok, out, err) = attnscope(
        &["report", d, "--markdown", "--bootstrap-unit", "query-block"],
        &[],
    );
    assert!(ok, "{err}");
    assert!(
        out.contains("| method |") && out.contains("|---|") && out.contains("query-blocks"),
        "{out}"
    );
    let (ok, out, err) = attnscope(&["report", d, "--latex"], &[]);
    assert!(ok, "{err}");
    assert!(
        out.contains("\\begin{tabular}")
            && out.contains("\\toprule")
            && out.contains("info\\_loss")
    );
    // Two runs: a copy with another model hash is compared, with a warning naming its manifest.
    let tmp = tempfile::tempdir().expect("tempdir");
    let other = tmp.path().join("other");
    std::fs::create_dir(&other).expect("mkdir");
    for e in std::fs::read_dir(dir).expect("ls").flatten() {
        if e.path().is_file() {
            std::fs::copy(e.path(), other.join(e.file_name())).expect("cp");
        }
    }
    let m = other.join("manifest.json");
    let mut man: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&m).expect("manifest")).expect("json");
    man["model"]["files"][0]["sha256"] = "00".repeat(32).into();
    man["run_id"] = "other".into();
    std::fs::write(&m, man.to_string()).expect("write");
    let o = other.to_str().expect("utf-8");
    let (ok, out, err) = attnscope(&["report", d, o, "--json", "--bootstrap", "200"], &[]);
    assert!(ok, "{err}");
    assert!(
        err.contains("different models") && err.contains(&m.display().to_string()),
        "{err}"
    );
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["runs"].as_array().expect("runs").len(), 2);
    assert!(!v["comparison"].as_array().expect("comparison").is_empty());
    let (ok, out, _) = attnscope(&["report", d, o], &[]);
    assert!(
        ok && out.contains("run-to-run comparison") && out.contains("change other"),
        "{out}"
    );
}

#[test]
fn bad_bundles_and_options_are_named() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let bad = tmp.path().join("bad");
    std::fs::create_dir(&bad).expect("mkdir");
    for e in std::fs::read_dir(bundle()).expect("ls").flatten() {
        if e.path().is_file() {
            std::fs::copy(e.path(), bad.join(e.file_name())).expect("cp");
        }
    }
    let b = bad.to_str().expect("utf-8");
    std::fs::write(bad.join("tokens.parquet"), b"PAR1").expect("truncate");
    let (ok, _, err) = attnscope(&["report", b], &[]);
    assert!(!ok && err.contains("tokens.parquet"), "{err}");
    std::fs::remove_file(bad.join("tokens.parquet")).expect("rm");
    let (ok, _, err) = attnscope(
        &[
            "figures",
            b,
            "--out",
            tmp.path().join("f").to_str().expect("utf-8"),
        ],
        &[],
    );
    assert!(
        !ok && err.contains("tokens.parquet") && err.contains("missing"),
        "{err}"
    );
    let (ok, _, err) = attnscope(
        &[
            "report",
            bundle().to_str().expect("utf-8"),
            "--bootstrap-unit",
            "layer",
        ],
        &[],
    );
    assert!(!ok && err.contains("head or query-block"), "{err}");
    let x = tmp.path().join("x");
    let x = x.to_str().expect("utf-8");
    let cases: &[(&[&str], &str)] = &[
        (&["--selections", "5"], "--selections 5"),
        (&["--format", "csv"], "parquet or ipc"),
        (&["--layers", "3", "--save-qkv", "4"], "not simulated"),
    ];
    for (extra, want) in cases {
        let mut args = vec![
            "simulate",
            "--len",
            "64",
            "--methods",
            "streaming",
            "--out",
            x,
        ];
        args.extend_from_slice(extra);
        let (ok, _, err) = attnscope(&args, &[]);
        assert!(
            !ok && err.contains(want),
            "{args:?}: expected '{want}' in {err}"
        );
    }
}
