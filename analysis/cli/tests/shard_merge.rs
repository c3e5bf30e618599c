//! A sweep split over several processes: `simulate --shard K/N` for K = 1..4 and `merge` give the
//! bundle of the same sweep run whole, row for row in every table (and byte for byte in every
//! table file, the saved Q/K/V equal), with the same report; `merge` refuses parts of another configuration, another
//! model or another tool version, a part missing or given twice, and a bundle that is no part;
//! an interrupted part resumes as the same part; pyarrow reads the parts' tables as one
//! dataset equal to the whole run's.
//! Real SmolLM2 on the CPU (fetched through the registries when missing): 8 inputs (two texts x
//! four seeds) of 256 tokens, layers 3 and 20, four methods at two sparsities.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use attnscope_analysis::bundle::{Bundle, Manifest};
use common::attnscope;

const SWEEP: &[&str] = &[
    "simulate",
    "--model",
    "smollm2-135m",
    "--texts",
    "alice29,lcet10",
    "--seeds",
    "0,1,2,3",
    "--len",
    "256",
    "--layers",
    "3,20",
    "--methods",
    "phsa,infllm-v2,quest,oracle-topk",
    "--sparsity",
    "0.5,0.7",
    "--selections",
    "all",
    "--save-qkv",
    "3",
    "--run-id",
    "sweep",
    "--quiet",
];

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Runs the sweep into `out` with `extra` options.
fn sweep(out: &Path, extra: &[&str]) -> (bool, String, String) {
    let mut args = SWEEP.to_vec();
    args.extend(["--out", s(out)]);
    args.extend_from_slice(extra);
    attnscope(&args)
}

struct Runs {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    whole: PathBuf,
    parts: Vec<PathBuf>,
}

/// The sweep run whole and as four parts (shared by the tests of this file).
fn runs() -> &'static Runs {
    static RUNS: OnceLock<Runs> = OnceLock::new();
    RUNS.get_or_init(|| {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().to_path_buf();
        let whole = root.join("whole");
        let (ok, _, err) = sweep(&whole, &[]);
        assert!(ok, "whole sweep failed: {err}");
        let parts: Vec<PathBuf> = (1..=4).map(|k| root.join(format!("part{k}"))).collect();
        for (k, p) in parts.iter().enumerate() {
            let shard = format!("{}/4", k + 1);
            let (ok, _, err) = sweep(p, &["--shard", &shard]);
            assert!(ok, "--shard {shard} failed: {err}");
        }
        Runs {
            _tmp: tmp,
            root,
            whole,
            parts,
        }
    })
}

fn merge(parts: &[&Path], out: &Path, extra: &[&str]) -> (bool, String, String) {
    let mut args = vec!["merge"];
    args.extend(parts.iter().map(|p| s(p)));
    args.extend(["--out", s(out)]);
    args.extend_from_slice(extra);
    attnscope(&args)
}

/// The first row where two tables differ, for a readable failure.
fn same_rows<T: PartialEq + std::fmt::Debug>(table: &str, a: &[T], b: &[T]) {
    assert_eq!(a.len(), b.len(), "{table}: row counts differ");
    if let Some(i) = (0..a.len()).find(|&i| a[i] != b[i]) {
        panic!(
            "{table}: row {i} differs:\nmerged {:?}\nwhole  {:?}",
            a[i], b[i]
        );
    }
}

/// `report --json` without the bundle's path.
fn report_json(dir: &Path) -> serde_json::Value {
    let (ok, out, err) = attnscope(&["report", s(dir), "--json", "--bootstrap", "200"]);
    assert!(ok, "report failed: {err}");
    let mut v: serde_json::Value = serde_json::from_str(&out).expect("report json");
    v.as_object_mut().expect("object").remove("run");
    v
}

#[test]
fn merged_parts_equal_the_whole_sweep() {
    let r = runs();
    // Round robin over the sweep's positions, each input keeping its index.
    for (k, p) in r.parts.iter().enumerate() {
        let m = Bundle::read(p).expect("part").manifest;
        let idx: Vec<usize> = m.data.inputs.iter().map(|x| x.index).collect();
        assert_eq!(idx, [k, k + 4], "part {}", k + 1);
        let shard = m.shard.expect("shard info");
        assert_eq!((shard.index, shard.count, shard.sweep.len()), (k + 1, 4, 8));
    }
    let out = r.root.join("merged").join("whole");
    // Given out of order: the merged tables are sorted by input all the same.
    let order = [&r.parts[2], &r.parts[0], &r.parts[3], &r.parts[1]];
    let (ok, _, err) = merge(&order.map(|p| p.as_path()), &out, &["--run-id", "sweep"]);
    assert!(ok, "merge failed: {err}");
    let (ok, _, err) = attnscope(&["verify", s(&out)]);
    assert!(ok, "verify of the merged bundle failed: {err}");

    let merged = Bundle::read(&out).expect("merged");
    let whole = Bundle::read(&r.whole).expect("whole");
    same_rows("metrics", &merged.results.metrics, &whole.results.metrics);
    same_rows("iou", &merged.results.iou, &whole.results.iou);
    same_rows("heads", &merged.results.heads, &whole.results.heads);
    same_rows(
        "selections",
        &merged.results.selections,
        &whole.results.selections,
    );
    same_rows("tokens", &merged.tokens, &whole.tokens);
    let (mm, wm) = (&merged.manifest, &whole.manifest);
    // Same rows in the same order, written the same way: the same bytes.
    assert_eq!(mm.tables, wm.tables);
    assert_eq!(mm.data, wm.data);
    assert_eq!(mm.qkv, wm.qkv);
    for q in &wm.qkv {
        let a = merged.read_qkv(q.input).expect("merged qkv");
        let b = whole.read_qkv(q.input).expect("whole qkv");
        assert!(a.is_some() && a == b, "{} differs", q.file);
    }
    assert_eq!(
        (&mm.methods, &mm.budgets, &mm.layers),
        (&wm.methods, &wm.budgets, &wm.layers)
    );
    assert!(mm.shard.is_none() && wm.merged.is_none());
    let info = mm.merged.as_ref().expect("merge record");
    let recorded: Vec<(usize, Vec<usize>, usize)> = info
        .shards
        .iter()
        .map(|x| (x.index, x.inputs.clone(), x.timings.inputs_s.len()))
        .collect();
    assert_eq!(
        recorded,
        (0..4)
            .map(|k| (k + 1, vec![k, k + 4], 2))
            .collect::<Vec<_>>()
    );
    assert_eq!(mm.timings.inputs_s.len(), 8);
    assert!(mm.command.iter().any(|a| a == "merge"), "{:?}", mm.command);
    assert_eq!(report_json(&out), report_json(&r.whole));
}

#[test]
fn sharded_tables_are_plain_parquet_readable_together() {
    let r = runs();
    let have = Command::new("python3")
        .args(["-c", "import pyarrow.dataset"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        println!("NOTICE: python3 with pyarrow not found; skipping the pyarrow check of the parts (pip install pyarrow)");
        return;
    }
    // The parts' metrics files read as one dataset hold the whole run's rows.
    let script = r#"
import sys, pyarrow.dataset as ds, pyarrow.compute as pc
parts = ds.dataset([p + "/metrics.parquet" for p in sys.argv[2:]], format="parquet").to_table()
whole = ds.dataset(sys.argv[1] + "/metrics.parquet", format="parquet").to_table()
key = lambda t: t.drop_columns(["run"]).sort_by([("input", "ascending"), ("layer", "ascending"), ("head", "ascending"), ("method", "ascending"), ("budget", "ascending")])
assert parts.num_rows == whole.num_rows, (parts.num_rows, whole.num_rows)
assert key(parts).equals(key(whole)), "rows differ"
print(parts.num_rows, sorted(pc.unique(parts["input"]).to_pylist()))
"#;
    let mut c = Command::new("python3");
    c.args(["-c", script, s(&r.whole)]);
    c.args(r.parts.iter().map(|p| s(p)));
    let o = c.output().expect("python3");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(text.contains("[0, 1, 2, 3, 4, 5, 6, 7]"), "{text}");
    // A part checked against the schema by pandas (its inputs are 1 and 5).
    let have = Command::new("python3")
        .args(["-c", "import pandas"])
        .output()
        .is_ok_and(|o| o.status.success());
    if have {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/check_bundle.py");
        let o = Command::new("python3")
            .arg(script)
            .arg(&r.parts[1])
            .output()
            .expect("python3");
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "check_bundle.py failed on part 2:\n{text}"
        );
    }
}

/// A copy of bundle `from` at `to` with its manifest changed by `edit`.
fn edited_copy(from: &Path, to: &Path, edit: impl FnOnce(&mut Manifest)) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("ls").flatten() {
        std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
    }
    let path = to.join("manifest.json");
    let mut m: Manifest =
        serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("manifest");
    edit(&mut m);
    std::fs::write(&path, serde_json::to_vec_pretty(&m).expect("json")).expect("write");
}

#[test]
fn merge_refuses_parts_that_do_not_belong_together() {
    let r = runs();
    let p: Vec<&Path> = r.parts.iter().map(PathBuf::as_path).collect();
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("out");
    let refused = |parts: &[&Path], want: &[&str]| {
        let (ok, _, err) = merge(parts, &out, &[]);
        assert!(!ok, "merge of {parts:?} was accepted");
        for w in want {
            assert!(err.contains(w), "missing '{w}' in: {err}");
        }
        assert!(!out.join("manifest.json").exists(), "wrote a bundle");
    };
    let name = |p: &Path| p.display().to_string();

    refused(
        &[p[0], p[1], p[3]],
        &["part(s) 3 of 4 missing", &name(p[0]), "--shard"],
    );
    refused(
        &[p[0], p[1], p[1], p[2], p[3]],
        &[&name(p[1]), "both part 2/4", "once"],
    );
    refused(
        &[p[0], &r.whole, p[2], p[3]],
        &[&name(&r.whole), "not the bundle of a part", "--shard"],
    );

    // Another configuration: part 4 of the same sweep with another capture block.
    let other = tmp.path().join("part4-other-block");
    let (ok, _, err) = sweep(&other, &["--shard", "4/4", "--capture-block", "32"]);
    assert!(ok, "{err}");
    refused(
        &[p[0], p[1], p[2], &other],
        &[
            &name(p[0]),
            &name(&other),
            "capture blocks differ",
            "one configuration",
        ],
    );

    // Another model: the same part with other weights.
    let model = tmp.path().join("part4-other-model");
    edited_copy(p[3], &model, |m| m.model.files[0].sha256 = "ab".repeat(32));
    refused(
        &[p[0], p[1], p[2], &model],
        &[&name(&model), "different model weights", "abababab"],
    );
    // Another attnscope.
    let tool = tmp.path().join("part4-other-tool");
    edited_copy(p[3], &tool, |m| m.tool.version = "0.0.1".into());
    refused(
        &[p[0], p[1], p[2], &tool],
        &[&name(&tool), "tool versions differ", "0.0.1"],
    );
    // Another split of the sweep.
    let count = tmp.path().join("part4-of-5");
    edited_copy(p[3], &count, |m| {
        m.shard.as_mut().expect("shard").count = 5;
    });
    refused(
        &[p[0], p[1], p[2], &count],
        &[&name(&count), "part counts differ", "(4 vs 5)"],
    );

    // The output folder: never one of the parts, and a finished bundle only with --force.
    let (ok, _, err) = merge(&p, p[0], &[]);
    assert!(!ok && err.contains("one of the parts"), "{err}");
    let (ok, _, err) = merge(&p, &out, &[]);
    assert!(ok, "{err}");
    let (ok, _, err) = merge(&p, &out, &[]);
    assert!(
        !ok && err.contains("already holds a finished run") && err.contains("--force"),
        "{err}"
    );
    let (ok, _, err) = merge(&p, &out, &["--force"]);
    assert!(ok, "{err}");
}

#[test]
fn bad_shard_options_name_the_option_and_the_range() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("x");
    for (shard, want) in [
        ("5/4", "does not exist"),
        ("0/4", "does not exist"),
        ("1/0", "at least 1 part"),
        ("2", "not a part K/N"),
        ("two/4", "not a part K/N"),
        ("9/9", "8 input(s)"),
    ] {
        let (ok, _, err) = sweep(&out, &["--shard", shard]);
        assert!(
            !ok && err.contains("--shard") && err.contains(want),
            "--shard {shard}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    assert!(!out.exists(), "a refused run wrote {}", out.display());
}

#[test]
fn an_interrupted_part_resumes_as_the_same_part() {
    let r = runs();
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("part2");
    let mut args = SWEEP.to_vec();
    args.extend(["--shard", "2/4", "--out", s(&out)]);
    let (ok, _, err) = common::attnscope_env(&args, &[("ATTNSCOPE_INTERRUPT_AFTER_INPUTS", "1")]);
    assert!(!ok && err.contains("interrupted"), "{err}");
    // Part 2 of 4 holds inputs 1 and 5: input 5 is missing.
    let (ok, _, err) = attnscope(&["report", s(&out)]);
    assert!(
        !ok && err.contains("1 of 2 inputs") && err.contains("missing: input(s) 5"),
        "{err}"
    );
    let (ok, _, err) = sweep(&out, &["--shard", "3/4", "--resume"]);
    assert!(
        !ok && err.contains("different options") && err.contains("shard"),
        "{err}"
    );
    let (ok, _, err) = sweep(&out, &["--shard", "2/4", "--resume"]);
    assert!(ok, "resume failed: {err}");
    let resumed = Bundle::read(&out).expect("resumed");
    let straight = Bundle::read(&r.parts[1]).expect("part 2");
    assert_eq!(resumed.manifest.tables, straight.manifest.tables);
    assert_eq!(resumed.manifest.shard, straight.manifest.shard);
}
