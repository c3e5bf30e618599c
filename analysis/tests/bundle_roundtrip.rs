//! Run bundles without a model: every table written and read back (Parquet and Arrow IPC),
//! temp-name-and-rename writes, overwrite refusal, interrupted runs, bad bundles named clearly,
//! captured Q/K/V, and the README schema table kept in sync with the schema module.

use std::path::Path;

use attnscope_analysis::bundle::partial::{DoneInput, Pending};
use attnscope_analysis::bundle::qkv::{read_qkv, write_qkv, SavedLayer};
use attnscope_analysis::bundle::{
    context_of, dir_state, prepare_out, schema, BudgetInfo, Bundle, DirState, Format, InputInfo,
    Manifest, ManifestMethod, Partial, Table, TableWriter,
};
use attnscope_analysis::results::{HeadRow, IouRow, MetricRow, SelectionRow, SimResults, TokenRow};
use attnscope_analysis::selection::Selection;
use attnscope_core::rng::Rng;

fn synthetic(dir: &Path, format: Format, n_inputs: usize) -> Bundle {
    let mut r = Rng::from_state(7);
    let methods = ["phsa", "infllm-v2", "streaming"];
    let (n, block, layers, heads) = (200usize, 64usize, [1usize, 4], 4usize);
    let nqb = n.div_ceil(block);
    let mut res = SimResults::default();
    for input in 0..n_inputs {
        for &layer in &layers {
            for head in 0..heads {
                for (mi, m) in methods.iter().enumerate() {
                    for budget in 0..2 {
                        let recall = 0.5 + 0.5 * r.unit();
                        res.metrics.push(MetricRow {
                            input,
                            layer,
                            head,
                            kv_head: head / 2,
                            method: m.to_string(),
                            budget,
                            knob: (mi * 10 + budget) as f64,
                            target_sparsity: 0.5 + 0.2 * budget as f64,
                            sparsity: r.unit(),
                            recall,
                            info_loss: 1.0 - recall,
                            kl: -recall.ln(),
                            out_rel_err: r.unit(),
                            cosine: r.unit(),
                            needle_recall: (mi == 1).then(|| r.unit()),
                            reached: mi != 2,
                            recall_by_query_block: (0..nqb).map(|_| r.unit() as f32).collect(),
                        });
                    }
                }
                let nb = nqb;
                res.heads.push(HeadRow {
                    input,
                    layer,
                    head,
                    kv_head: head / 2,
                    sink_mass: r.unit(),
                    energy_share: (0..32).map(|_| r.unit() as f32).collect(),
                    agreement: Vec::new(),
                    pooled: (0..nb * nb).map(|_| r.unit() as f32).collect(),
                    n_blocks: nb,
                    // The capture block: maps are stored at it below 256 blocks a side.
                    block: 64,
                });
                let mut b = Selection::builder(n, 1);
                for i in 0..n {
                    b.push_tokens([0, i / 2, i]);
                }
                res.selections.push(SelectionRow {
                    input,
                    ..SelectionRow::compact(
                        &b.finish(),
                        block,
                        (layer, head, head / 2),
                        methods[head % 3],
                        0,
                    )
                });
            }
            for kv in 0..heads / 2 {
                res.iou.push(IouRow {
                    input,
                    layer,
                    kv_head: kv,
                    budget: 1,
                    method_a: "phsa".into(),
                    method_b: "streaming".into(),
                    iou: r.unit(),
                });
            }
        }
    }
    let tokens = (0..n_inputs)
        .flat_map(|input| {
            (0..n).map(move |p| TokenRow {
                input,
                position: p,
                id: (p * 7) as u32,
                piece: ["Alice", " was", ",", "\n", " 「引用」", ""][p % 6].to_string(),
                is_punct: p % 6 == 2,
                is_newline: p % 6 == 3,
                char_start: (p % 5 != 0).then_some(p * 3),
                char_end: (p % 5 != 0).then_some(p * 3 + 2),
                is_needle: (50..60).contains(&p),
                is_needle_query: p > 190,
            })
        })
        .collect();
    Bundle {
        dir: dir.to_path_buf(),
        manifest: Manifest {
            run_id: "synthetic".into(),
            n_tokens: n,
            capture_block: block,
            format,
            methods: methods
                .iter()
                .map(|m| ManifestMethod {
                    name: m.to_string(),
                    kind: "published".into(),
                    params: [("top_k".to_string(), 3.0)].into_iter().collect(),
                })
                .collect(),
            budgets: (0..2)
                .map(|i| BudgetInfo {
                    index: i,
                    label: format!("sparsity=0.{}", 5 + 2 * i),
                    kind: "sparsity".into(),
                    value: 0.5 + 0.2 * i as f64,
                })
                .collect(),
            selection_budgets: vec![0],
            layers: layers.to_vec(),
            ..Manifest::default()
        },
        results: res,
        tokens,
    }
}

fn assert_same(a: &Bundle, b: &Bundle) {
    assert_eq!(a.results.metrics, b.results.metrics, "metrics");
    assert_eq!(a.results.iou, b.results.iou, "iou");
    assert_eq!(a.results.heads, b.results.heads, "heads + maps");
    assert_eq!(a.results.selections, b.results.selections, "selections");
    assert_eq!(a.tokens, b.tokens, "tokens");
}

#[test]
fn every_table_round_trips_in_both_formats() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for format in [Format::Parquet, Format::Ipc] {
        let dir = tmp.path().join(format!("{format:?}"));
        let mut b = synthetic(&dir, format, 2);
        b.write(false).expect("write");
        let back = Bundle::read(&dir).expect("read");
        assert_same(&b, &back);
        assert_eq!(back.manifest.tables.len(), Table::ALL.len());
        for t in &back.manifest.tables {
            assert!(dir.join(&t.file).is_file() && t.bytes > 0, "{t:?}");
            assert!(t.file.ends_with(format.ext()));
        }
        assert_eq!(back.manifest.tool.name, "attnscope");
        // No temporary files are left behind.
        let stray: Vec<_> = std::fs::read_dir(&dir)
            .expect("ls")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
            .collect();
        assert!(stray.is_empty(), "{stray:?}");
        // A finished bundle is not overwritten without force; with force it is.
        let err = b.write(false).expect_err("refused").to_string();
        assert!(err.contains("--force"), "{err}");
        b.write(true).expect("forced");
    }
}

#[test]
fn a_writer_dropped_before_close_leaves_no_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("metrics.parquet");
    let b = synthetic(tmp.path(), Format::Parquet, 1);
    let batch = attnscope_analysis::bundle::tables::metrics_batch(
        &b.results.metrics,
        &context_of(&b.manifest),
    )
    .expect("batch");
    {
        let mut w = TableWriter::try_new(&path, schema::schema(Table::Metrics), Format::Parquet)
            .expect("writer");
        w.write(&batch).expect("write");
        assert!(
            !path.exists(),
            "only the .partial file exists while writing"
        );
    }
    assert!(!path.exists() && std::fs::read_dir(tmp.path()).expect("ls").count() == 0);
    let mut w = TableWriter::try_new(&path, schema::schema(Table::Metrics), Format::Parquet)
        .expect("writer");
    w.write(&batch).expect("write");
    assert_eq!(w.close().expect("close"), b.results.metrics.len());
    assert!(path.is_file());
}

#[test]
fn bad_bundles_are_named() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let err = |dir: &Path| Bundle::read(dir).expect_err("should fail").to_string();
    // No folder, no manifest.
    assert!(err(&tmp.path().join("nope")).contains("no manifest.json"));
    let dir = tmp.path().join("b");
    synthetic(&dir, Format::Parquet, 1)
        .write(false)
        .expect("write");
    // A changed table: its SHA-256 differs from the manifest's.
    let m = dir.join("metrics.parquet");
    let bytes = std::fs::read(&m).expect("read");
    std::fs::write(&m, &bytes[..bytes.len() / 2]).expect("truncate");
    let e = err(&dir);
    assert!(
        e.contains("metrics.parquet") && e.contains("SHA-256"),
        "{e}"
    );
    // Without checksums (a bundle of an earlier version) the readers themselves name it.
    let mpath = dir.join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&mpath).expect("manifest")).expect("json");
    for t in manifest["tables"].as_array_mut().expect("tables") {
        t.as_object_mut().expect("table").remove("sha256");
    }
    std::fs::write(
        &mpath,
        serde_json::to_string_pretty(&manifest).expect("json"),
    )
    .expect("write manifest");
    let e = err(&dir);
    assert!(
        e.contains("metrics.parquet") && e.contains("truncated"),
        "{e}"
    );
    std::fs::write(&m, &bytes).expect("restore");
    Bundle::read(&dir).expect("restored bundle reads");
    // Missing table.
    std::fs::rename(dir.join("iou.parquet"), tmp.path().join("iou")).expect("mv");
    let e = err(&dir);
    assert!(e.contains("iou.parquet") && e.contains("missing"), "{e}");
    std::fs::rename(tmp.path().join("iou"), dir.join("iou.parquet")).expect("mv back");
    // A table replaced by another with fewer rows.
    let mut small = synthetic(&tmp.path().join("small"), Format::Parquet, 1);
    small.results.heads.truncate(2);
    small.write(false).expect("write small");
    std::fs::copy(small.dir.join("heads.parquet"), dir.join("heads.parquet")).expect("cp");
    let e = err(&dir);
    assert!(e.contains("heads.parquet") && e.contains("rows"), "{e}");
    std::fs::copy(dir.join("maps.parquet"), dir.join("heads.parquet")).expect("cp");
    let e = err(&dir);
    assert!(e.contains("heads.parquet") && e.contains("column"), "{e}");
    // A manifest from a newer version.
    let text = std::fs::read_to_string(&mpath).expect("manifest");
    std::fs::write(
        &mpath,
        text.replace("\"format_version\": 2", "\"format_version\": 99"),
    )
    .expect("edit");
    let e = err(&dir);
    assert!(e.contains("manifest.json") && e.contains("newer"), "{e}");
    std::fs::write(&mpath, "{\"format_version\": 2, \"tables\": [").expect("truncate manifest");
    let e = err(&dir);
    assert!(
        e.contains("manifest.json") && e.contains("truncated"),
        "{e}"
    );
}

#[test]
fn interrupted_runs_say_what_is_missing_and_resume() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("run");
    let full = synthetic(&dir, Format::Parquet, 2);
    assert!(prepare_out(&dir, false, false).expect("fresh").is_none());
    let inputs: Vec<InputInfo> = (0..2)
        .map(|i| InputInfo {
            index: i,
            text: "alice29".into(),
            seed: i as u64,
            ..InputInfo::default()
        })
        .collect();
    let fp = serde_json::json!({ "len": 200 });
    let p = Partial::begin(
        &dir,
        Pending {
            format_version: 2,
            fingerprint: fp.clone(),
            inputs: inputs.clone(),
        },
    )
    .expect("begin");
    // Input 0 finished.
    let mut r0 = full.results.clone();
    r0.metrics.retain(|r| r.input == 0);
    r0.iou.retain(|r| r.input == 0);
    r0.heads.retain(|r| r.input == 0);
    r0.selections.retain(|r| r.input == 0);
    let t0: Vec<TokenRow> = full
        .tokens
        .iter()
        .filter(|t| t.input == 0)
        .cloned()
        .collect();
    let done = DoneInput {
        info: inputs[0].clone(),
        seconds: 1.0,
        method_s: Default::default(),
        qkv: None,
        tables: Vec::new(),
        fitted: Vec::new(),
    };
    p.save(0, &r0, &t0, &context_of(&full.manifest), done)
        .expect("save");
    assert_eq!(
        dir_state(&dir),
        DirState::Interrupted {
            done: vec![0],
            missing: vec![1]
        }
    );
    let e = Bundle::read(&dir).expect_err("interrupted").to_string();
    assert!(
        e.contains("interrupted")
            && e.contains("1 of 2")
            && e.contains("input(s) 1")
            && e.contains("--resume"),
        "{e}"
    );
    let e = prepare_out(&dir, false, false)
        .expect_err("refused")
        .to_string();
    assert!(e.contains("--resume") && e.contains("--force"), "{e}");
    let p = prepare_out(&dir, false, true)
        .expect("resume")
        .expect("partial");
    assert!(p
        .check_same(&serde_json::json!({ "len": 300 }), &inputs)
        .expect_err("different options")
        .to_string()
        .contains("len"));
    p.check_same(&fp, &inputs).expect("same options");
    let (back, toks, _) = p.load(0, 64).expect("load");
    assert_eq!(back.metrics, r0.metrics);
    assert_eq!(back.selections, r0.selections);
    assert_eq!(toks, t0);
    // --force clears the interrupted run.
    assert!(prepare_out(&dir, true, false).expect("force").is_none());
    assert_eq!(dir_state(&dir), DirState::Free);
}

#[test]
fn captured_qkv_round_trips() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut r = Rng::from_state(3);
    let layers: Vec<SavedLayer> = [2usize, 5]
        .iter()
        .map(|&layer| SavedLayer {
            layer,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 8,
            n: 10,
            q: (0..4 * 10 * 8).map(|_| r.unit() as f32).collect(),
            k: (0..2 * 10 * 8).map(|_| r.unit() as f32).collect(),
            v: (0..2 * 10 * 8).map(|_| r.unit() as f32).collect(),
        })
        .collect();
    let path = tmp.path().join("qkv-input0.safetensors");
    write_qkv(&path, 0, &layers).expect("write");
    assert_eq!(read_qkv(&path).expect("read"), layers);
    std::fs::write(&path, b"not safetensors").expect("corrupt");
    let e = read_qkv(&path).expect_err("bad").to_string();
    assert!(e.contains("qkv-input0.safetensors"), "{e}");
}

#[test]
fn readme_documents_the_schema() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let table = schema::markdown();
    assert!(
        readme.contains(&table),
        "README.md's run-bundle schema table is out of date; replace it with:\n{table}"
    );
}
