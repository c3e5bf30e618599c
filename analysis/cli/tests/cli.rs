//! The `attnscope` binary as a user runs it: simulate + report on the real SmolLM2 (fetched
//! through the registries when missing), and clear errors for bad input.

mod common;

use common::{attnscope, attnscope_env};

#[test]
fn simulate_then_report_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = dir.path().join("run");
    let run_s = run.to_str().expect("utf-8 path");
    let (ok, _, err) = attnscope(&[
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
        "--sweep",
        "phsa.lambda=0,1",
        "--out",
        run_s,
        "--quiet",
    ]);
    assert!(ok, "simulate failed: {err}");
    let (ok, out, err) = attnscope(&["report", run_s, "--json"]);
    assert!(ok, "report failed: {err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("report --json is JSON");
    let methods = v["methods"].as_array().expect("methods array");
    assert_eq!(methods.len(), 6);
    assert!(methods.iter().any(|m| m["name"] == "phsa[lambda=0]"));
    for m in methods {
        for key in [
            "name",
            "sparsity",
            "recall",
            "info_loss",
            "kl",
            "out_rel_err",
        ] {
            assert!(!m[key].is_null(), "missing {key} in {m}");
        }
        let (r, il) = (
            m["recall"].as_f64().expect("recall"),
            m["info_loss"].as_f64().expect("il"),
        );
        assert!((r + il - 1.0).abs() < 1e-9 && (0.0..=1.0).contains(&r));
        assert!(
            (m["kl"].as_f64().expect("kl") + 1e-12) >= -(r.ln()) - 1e-6,
            "Jensen: mean -ln R >= -ln mean R"
        );
    }
    assert_eq!(v["iou"]["matrix"].as_array().expect("iou").len(), 6);
    assert!(v["method_comparison"]["relative_il_reduction"].is_number());
    assert_eq!(v["budgets"].as_array().expect("budgets").len(), 2);
    // The oracle keeps at least as much as any method at the same (reached) sparsity on average.
    let recall = |name: &str| {
        methods
            .iter()
            .find(|m| m["name"] == name)
            .and_then(|m| m["recall"].as_f64())
            .expect("recall")
    };
    assert!(recall("oracle-topk") + 1e-9 >= recall("streaming"));
    // A second run into the same directory is refused without --force.
    let (ok, _, err) = attnscope(&[
        "simulate",
        "--len",
        "64",
        "--methods",
        "streaming",
        "--layers",
        "0",
        "--out",
        run_s,
        "--quiet",
    ]);
    assert!(!ok && err.contains("--force"), "{err}");
}

#[test]
fn bad_input_is_named() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["simulate", "--methods", "phsa,nope", "--out", "/tmp/x"],
            "valid methods",
        ),
        (
            &[
                "simulate",
                "--methods",
                "phsa",
                "--param",
                "phsa.gamma=1",
                "--out",
                "/tmp/x",
            ],
            "unknown parameter 'gamma'",
        ),
        (
            &[
                "simulate",
                "--methods",
                "phsa",
                "--param",
                "phsa.lambda=3",
                "--out",
                "/tmp/x",
            ],
            "out of range",
        ),
        (
            &["simulate", "--sparsity", "1.5", "--out", "/tmp/x"],
            "outside [0, 1)",
        ),
        (
            &["simulate", "--layers", "99", "--out", "/tmp/x"],
            "out of range",
        ),
        (&["simulate", "--len", "9000", "--out", "/tmp/x"], "context"),
        (
            &["simulate", "--text", "/nonexistent.txt", "--out", "/tmp/x"],
            "/nonexistent.txt",
        ),
        (&["report", "/nonexistent-run"], "no manifest.json"),
        (
            &[
                "simulate",
                "--len",
                "64",
                "--budget-tokens",
                "100",
                "--out",
                "/tmp/x",
            ],
            "larger than the input",
        ),
        (
            &["info", "--model", "no-such-model"],
            "not a known model name",
        ),
    ];
    for (args, want) in cases {
        let (ok, _, err) = attnscope(args);
        assert!(!ok, "{args:?} should fail");
        assert!(err.contains(want), "{args:?}: expected '{want}' in: {err}");
    }
}

/// Layers simulated on several worker threads (`--layer-jobs`), and methods run one after another
/// instead of side by side (`--method-jobs 1`), give the same bundle numbers as one layer at a
/// time; phsa-fit with no `--calibration-text` fits on the default held-out text (in a pass beside
/// the simulation), which the manifest records.
#[test]
fn layer_jobs_and_vector_widths_do_not_change_results() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut reports = Vec::new();
    // Layer jobs, and the hot loops' vector builds (AVX-512 where the CPU has it, AVX2, none).
    for (jobs, simd, method_jobs) in [("1", "", "0"), ("3", "none", "0"), ("2", "avx2", "1")] {
        let run = dir.path().join(format!("run{jobs}"));
        let run_s = run.to_str().expect("utf-8 path");
        let (ok, _, err) = attnscope_env(
            &[
                "simulate",
                "--model",
                "smollm2-135m",
                "--text",
                "alice29",
                "--len",
                "320",
                "--layers",
                "0,4,9,15",
                "--methods",
                "phsa-fit,infllm-v2,h2o,oracle-topp,rtpurbo-proxy,oracle-topk",
                "--sparsity",
                "0.6",
                "--calibration-len",
                "256",
                "--layer-jobs",
                jobs,
                "--method-jobs",
                method_jobs,
                "--out",
                run_s,
                "--run-id",
                "same",
                "--quiet",
            ],
            &[("ATTNSCOPE_SIMD", simd)],
        );
        assert!(
            ok,
            "simulate --layer-jobs {jobs} (SIMD {simd:?}) failed: {err}"
        );
        let manifest: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(run.join("manifest.json")).expect("manifest"),
        )
        .expect("manifest is JSON");
        assert_eq!(manifest["calibration"]["text"], "plrabn12", "{manifest}");
        assert_eq!(manifest["calibration"]["n_tokens"], 256);
        let (ok, out, err) = attnscope(&["report", run_s, "--json"]);
        assert!(ok, "report failed: {err}");
        let mut v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
        v.as_object_mut().expect("object").remove("run");
        let b = attnscope_analysis::bundle::Bundle::read(&run).expect("read bundle");
        reports.push((v, b.results.metrics, b.results.iou, b.results.heads));
    }
    assert!(reports[0].0["methods"]
        .as_array()
        .is_some_and(|m| m.len() == 6));
    let layers: Vec<usize> = reports[0].1.iter().map(|r| r.layer).collect();
    assert!(
        layers.windows(2).all(|w| w[0] <= w[1]),
        "rows not in layer order"
    );
    // Row by row, in order: every table of the bundle, not only the report's averages.
    assert_eq!(
        reports[0], reports[1],
        "--layer-jobs 3 or no SIMD changed the results"
    );
    assert_eq!(
        reports[0], reports[2],
        "--layer-jobs 2, --method-jobs 1 or AVX2 changed the results"
    );
}

/// `--model ORG/NAME` finds the snapshot of a synthetic hub cache under `$HF_HOME/hub` (files as
/// symbolic links to blobs), `--revision` picks a ref, and what is missing is named.
#[test]
fn hugging_face_ids_resolve_in_the_local_hub_cache() {
    let home = tempfile::tempdir().expect("tempdir");
    let repo = home.path().join("hub/models--Org--Tiny");
    let commit = "a".repeat(40);
    let snap = repo.join("snapshots").join(&commit);
    std::fs::create_dir_all(repo.join("blobs")).expect("blobs");
    std::fs::create_dir_all(&snap).expect("snapshot");
    std::fs::create_dir_all(repo.join("refs")).expect("refs");
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../core/tests/fixtures/tiny/llama");
    for (i, name) in ["config.json", "model.safetensors"].iter().enumerate() {
        let blob = format!("{i:064x}");
        std::fs::copy(fixture.join(name), repo.join("blobs").join(&blob)).expect("copy");
        std::os::unix::fs::symlink(format!("../../blobs/{blob}"), snap.join(name)).expect("link");
    }
    std::fs::write(repo.join("refs/main"), &commit).expect("ref");
    let env = [("HF_HOME", home.path().to_str().expect("utf-8"))];
    let (ok, out, err) = attnscope_env(&["info", "--model", "Org/Tiny", "--json"], &env);
    assert!(ok, "{err}");
    assert!(out.contains("llama"), "{out}");
    let (ok, _, err) = attnscope_env(
        &["info", "--model", "Org/Tiny", "--revision", commit.as_str()],
        &env,
    );
    assert!(ok, "by commit: {err}");
    let (ok, _, err) = attnscope_env(&["info", "--model", "Org/Tiny", "--revision", "v2"], &env);
    assert!(
        !ok && err.contains("refs/v2") && err.contains("revision v2"),
        "{err}"
    );
    let (ok, _, err) = attnscope_env(&["info", "--model", "Org/Absent"], &env);
    assert!(
        !ok && err.contains("not in the Hugging Face cache")
            && err.contains("models--Org--Absent")
            && err.contains("$HF_HOME/hub"),
        "{err}"
    );
    let (ok, _, err) = attnscope_env(
        &["info", "--model", "smollm2-135m", "--revision", "main"],
        &env,
    );
    assert!(!ok && err.contains("only a Hugging Face id"), "{err}");
}

/// `info` says which layers attend within a sliding window, the soft-caps and the query scale.
#[test]
fn info_shows_windows_and_soft_capping() {
    let tiny =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../core/tests/fixtures/tiny");
    let gemma3 = tiny.join("gemma3/model.gguf");
    let (ok, out, err) = attnscope(&["info", "--model", gemma3.to_str().expect("utf-8")]);
    assert!(ok, "{err}");
    assert!(
        out.contains("sliding window of 8 keys on 5 of 6 layers, RoPE theta 10000 there"),
        "{out}"
    );
    let gemma2 = tiny.join("gemma2");
    let (ok, out, err) = attnscope(&["info", "--model", gemma2.to_str().expect("utf-8"), "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["local_layers"], serde_json::json!([0, 2]));
    assert_eq!(v["attention"]["attn_softcap"], 2.0);
    assert_eq!(v["attention"]["final_softcap"], 3.0);
}
