//! The PHSA paper's protocol on the real SmolLM2: `simulate --queries last:N` records the query
//! set, the report states the accounting, and with a per-query token budget the scored queries'
//! recalls are the last rows of a run that scores every query (the same keys, the same bits);
//! `--preset phsa-paper` sets the paper's values, each recorded with its source, and explicit
//! options win over it.

mod common;

use attnscope_analysis::bundle::Bundle;
use common::{attnscope, simulate_smollm2};

fn run(out: &std::path::Path, queries: &str) {
    let extra = [
        "--budget-tokens",
        "128",
        "--capture-block",
        "32",
        "--queries",
        queries,
        "--out",
        out.to_str().expect("utf-8 path"),
    ];
    let methods = "phsa,infllm-v2,quest,oracle-topk,streaming";
    let (ok, _, err) = simulate_smollm2("320", "2,5", methods, &extra);
    assert!(ok, "simulate --queries {queries}: {err}");
}

#[test]
fn the_last_queries_score_as_in_a_run_of_every_query() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (all, last) = (tmp.path().join("all"), tmp.path().join("last"));
    run(&all, "all");
    run(&last, "last:96");
    let (a, l) = (
        Bundle::read(&all).expect("read all"),
        Bundle::read(&last).expect("read last"),
    );
    assert_eq!(a.manifest.queries, "all");
    assert_eq!(l.manifest.queries, "last:96");
    assert_eq!(a.results.metrics.len(), l.results.metrics.len());
    let mut compared = 0;
    for (ra, rl) in a.results.metrics.iter().zip(&l.results.metrics) {
        assert_eq!(
            (ra.layer, ra.head, &ra.method, ra.knob),
            (rl.layer, rl.head, &rl.method, rl.knob)
        );
        // Queries 224..320: the last three blocks of 32 queries.
        let tail = &ra.recall_by_query_block[7..];
        assert_eq!(
            rl.recall_by_query_block, tail,
            "{} L{} H{}",
            ra.method, ra.layer, ra.head
        );
        let mean = rl
            .recall_by_query_block
            .iter()
            .map(|&x| x as f64)
            .sum::<f64>()
            / 3.0;
        assert!(
            (rl.recall - mean).abs() < 1e-6,
            "{}: {} vs {mean}",
            rl.method,
            rl.recall
        );
        // Later queries see more keys: the same 128 keys are a larger share skipped.
        assert!(rl.sparsity > ra.sparsity, "{}", ra.method);
        compared += 1;
    }
    assert!(compared >= 5 * 2 * 9, "{compared} rows");
    let (ok, text, err) = attnscope(&["report", last.to_str().expect("utf-8")]);
    assert!(ok, "{err}");
    assert!(
        text.contains("queries last:96 scored (decode accounting)"),
        "{text}"
    );
    let (ok, json, err) = attnscope(&["report", last.to_str().expect("utf-8"), "--json"]);
    assert!(ok, "{err}");
    assert!(json.contains("\"queries\": \"last:96\""), "{json}");
    // Any two methods compared by label: A's and B's information loss as in the table.
    let (ok, json, err) = attnscope(&[
        "report",
        last.to_str().expect("utf-8"),
        "--json",
        "--compare",
        "quest,oracle-topk",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    let c = &v["method_comparison"];
    assert_eq!(c["method_a"], "quest");
    let il = |name: &str| {
        let m = v["methods"].as_array().expect("methods");
        let m = m.iter().find(|m| m["name"] == name).expect("method row");
        m["info_loss"].as_f64().expect("info loss")
    };
    let (a, b) = (il("quest"), il("oracle-topk"));
    assert!((c["info_loss_a"].as_f64().expect("a") - a).abs() < 1e-9);
    assert!((c["info_loss_b"].as_f64().expect("b") - b).abs() < 1e-9);
    let r = c["relative_il_reduction"].as_f64().expect("r");
    assert!((r - (b - a) / b).abs() < 1e-9, "{r}");
    // The oracle keeps the most attention of any per-query top-k at the same keys.
    assert!(r < 0.0, "{r}");
}

#[test]
fn the_phsa_paper_preset_sets_its_values_and_explicit_options_win() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("paper");
    let paper = |extra: &[&str]| {
        let mut args = vec!["--preset", "phsa-paper"];
        args.extend_from_slice(extra);
        simulate_smollm2("2048", "4", "phsa,infllm-v2", &args)
    };
    let (ok, _, err) = paper(&["--out", out.to_str().expect("utf-8")]);
    assert!(ok, "{err}");
    let b = Bundle::read(&out).expect("read");
    let m = &b.manifest;
    assert_eq!(m.queries, "last:512");
    assert_eq!(m.budgets[0].label, "tokens=896");
    let preset = m.preset.as_ref().expect("preset recorded");
    assert_eq!(preset.name, "phsa-paper");
    assert!(preset
        .values
        .iter()
        .all(|v| v.applied && !v.source.is_empty()));
    for method in &m.methods {
        assert_eq!(method.params["block"], 16.0, "{}", method.name);
        assert_eq!(method.params["init_blocks"], 8.0, "{}", method.name);
        assert_eq!(method.params["local_blocks"], 31.0, "{}", method.name);
    }
    for r in &b.results.metrics {
        // 896 keys = 40 forced blocks of 16 + 16 selected, of i + 1 for the last 512 queries of
        // 2048: 1 - 896 * 512 / (1537 + ... + 2048) = 0.5001 (a little more where the query's
        // own block is partial).
        assert_eq!(r.knob, 16.0, "{}", r.method);
        assert!(
            r.sparsity >= 0.5 && r.sparsity < 0.52,
            "{}: {}",
            r.method,
            r.sparsity
        );
    }

    let out2 = tmp.path().join("mine");
    let (ok, _, err) = paper(&[
        "--param",
        "phsa.lambda=1",
        "--queries",
        "all",
        "--sparsity",
        "0.5",
        "--out",
        out2.to_str().expect("utf-8"),
    ]);
    assert!(ok, "{err}");
    let m = Bundle::read(&out2).expect("read").manifest;
    assert_eq!(m.queries, "all");
    assert_eq!(m.budgets[0].label, "sparsity=0.5");
    let phsa = m.methods.iter().find(|x| x.name == "phsa").expect("phsa");
    assert_eq!(phsa.params["lambda"], 1.0);
    assert_eq!(phsa.params["block"], 16.0);
    let preset = m.preset.expect("preset recorded");
    let not_applied: Vec<&str> = preset
        .values
        .iter()
        .filter(|v| !v.applied)
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(not_applied, ["phsa.lambda", "budget_tokens", "queries"]);

    let (ok, text, _) = attnscope(&["methods", "--params"]);
    assert!(ok);
    assert!(text.contains("preset phsa-paper") && text.contains("PHSA paper: block size 16"));
    let (ok, _, err) = attnscope(&["simulate", "--preset", "nope", "--out", "x", "--len", "64"]);
    assert!(!ok && err.contains("unknown preset 'nope'"), "{err}");
}

/// The preset's phsa and infllm-v2 on real SmolLM2 at 2k tokens, recomputed by an independent
/// numpy implementation from the bundle's saved Q/K/V (scripts/ref_protocol.py): every q-head's
/// recall (overall and per block of scored queries) and sparsity within 1e-5.
#[test]
fn the_preset_agrees_with_an_independent_numpy_reference() {
    let py = std::process::Command::new("python3")
        .args(["-c", "import numpy, pyarrow"])
        .status();
    if !py.is_ok_and(|s| s.success()) {
        println!(
            "NOTICE: python3 with numpy and pyarrow not found; skipping (pip install pyarrow)"
        );
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("ref");
    let out_s = out.to_str().expect("utf-8");
    let extra = ["--preset", "phsa-paper", "--save-qkv", "3", "--out", out_s];
    let (ok, _, err) = simulate_smollm2("2048", "3", "phsa,infllm-v2", &extra);
    assert!(ok, "{err}");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/ref_protocol.py");
    let res = std::process::Command::new("python3")
        .args([script, out_s])
        .output()
        .expect("run python3");
    let text =
        String::from_utf8_lossy(&res.stdout).into_owned() + &String::from_utf8_lossy(&res.stderr);
    println!("{text}");
    assert!(res.status.success(), "ref_protocol.py:\n{text}");
    assert!(text.contains("queries last:512, 2048 tokens: OK"), "{text}");
}
