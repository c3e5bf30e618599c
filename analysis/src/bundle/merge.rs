//! Joining the bundles of a sweep's parts (`simulate --shard K/N`, [`crate::shard`]) into one
//! bundle: [`merge`] checks that the parts belong together ([`check_parts`]: one configuration,
//! one model, one tool version, every part once), concatenates their tables sorted by input
//! (each part's rows keep their input index, so the result is the whole run's tables row for
//! row), merges the manifests (each part's timings kept in `merged.shards`), copies the saved
//! Q/K/V files and writes the bundle as every writer does: tables under temporary names renamed
//! into place, checksums recomputed, `manifest.json` last, under the folder's lock.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{json, Value};

use super::io::{file_err, partial_name, write_json};
use super::lock::OutputLock;
use super::manifest::{now_unix, Manifest, MergeInfo, MergedShard, ShardInfo, Timings};
use super::partial::{check_out, dir_state, prepare_out, DirState};
use super::Bundle;
use crate::error::{AnalysisError, Result};
use crate::results::SimResults;

/// How [`merge`] writes its bundle.
#[derive(Debug, Clone, Default)]
pub struct MergeOptions {
    /// Run id of the merged bundle (`metrics.run`); default: the output folder's name, as
    /// `simulate` names a run.
    pub run_id: Option<String>,
    /// Overwrite a finished bundle in the output folder.
    pub force: bool,
    /// The command line recorded in the merged manifest.
    pub command: Vec<String>,
}

/// Reads the part bundles in `parts`, checks them ([`check_parts`]) and writes their union into
/// `out`. The merged tables hold the rows of every part sorted by input, so they equal the
/// tables of the same sweep run whole.
pub fn merge(parts: &[PathBuf], out: &Path, opts: &MergeOptions) -> Result<Bundle> {
    let started = Instant::now();
    if parts.is_empty() {
        return Err(AnalysisError::Merge(
            "no bundles to merge: give the bundle of every part of the sweep".into(),
        ));
    }
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    };
    if let Some(p) = parts.iter().find(|p| same(p, out)) {
        return Err(AnalysisError::Merge(format!(
            "{}: the output folder is one of the parts; merge into another folder",
            p.display()
        )));
    }
    let bundles = parts
        .iter()
        .map(|p| Bundle::read(p))
        .collect::<Result<Vec<_>>>()?;
    let listed: Vec<(&Path, &Manifest)> = bundles
        .iter()
        .map(|b| (b.dir.as_path(), &b.manifest))
        .collect();
    check_parts(&listed)?;
    let run_id = opts.run_id.clone().unwrap_or_else(|| {
        out.file_name()
            .map_or_else(|| "run".into(), |f| f.to_string_lossy().into_owned())
    });

    // The output folder: refused as `simulate` refuses it, then one writer at a time.
    if let DirState::Foreign { .. } = dir_state(out) {
        check_out(out, opts.force, false)?;
    }
    std::fs::create_dir_all(out).map_err(|e| file_err(out, e))?;
    let _lock = OutputLock::acquire(out)?;
    prepare_out(out, opts.force, false)?;

    let mut bundles = bundles;
    bundles.sort_by_key(|b| b.manifest.shard.as_ref().map_or(0, |s| s.index));
    let mut manifest = merged_manifest(&bundles, run_id, opts.command.clone());
    for b in &bundles {
        for q in &b.manifest.qkv {
            copy_atomic(&b.dir.join(&q.file), &out.join(&q.file))?;
        }
    }
    let mut results = SimResults::default();
    let mut tokens = Vec::new();
    for b in &mut bundles {
        results.append(&mut b.results);
        tokens.append(&mut b.tokens);
    }
    // Stable: the rows of one input keep the order the simulation wrote them in.
    results.metrics.sort_by_key(|r| r.input);
    results.iou.sort_by_key(|r| r.input);
    results.heads.sort_by_key(|r| r.input);
    results.selections.sort_by_key(|r| r.input);
    tokens.sort_by_key(|r| r.input);
    manifest.created_unix = now_unix();
    let mut bundle = Bundle {
        dir: out.to_path_buf(),
        manifest,
        results,
        tokens,
    };
    let t = Instant::now();
    bundle.write(false)?;
    bundle.manifest.timings.write_s = t.elapsed().as_secs_f64();
    bundle.manifest.timings.total_s += started.elapsed().as_secs_f64();
    // The manifest again, with the write time (the tables are unchanged).
    write_json(&out.join("manifest.json"), &bundle.manifest)?;
    Ok(bundle)
}

/// Checks that `parts` (bundle folder, manifest) are the parts of one sweep, each once: every
/// one written with `--shard`, with the same part count, tool version and git revision, model
/// weights (SHA-256), sweep inputs, options, methods, budgets, layers, device and table format;
/// each holding exactly the inputs its part K/N holds. The error names the bundles and the field
/// that differs, or the parts missing or given twice.
pub fn check_parts(parts: &[(&Path, &Manifest)]) -> Result<()> {
    let mut infos = Vec::with_capacity(parts.len());
    for (dir, m) in parts {
        let s = m.shard.as_ref().ok_or_else(|| {
            AnalysisError::Merge(format!(
                "{}: not the bundle of a part of a sweep (it was written without `simulate \
                 --shard K/N`); merge joins the parts of one sharded sweep",
                dir.display()
            ))
        })?;
        infos.push(s);
    }
    let (d0, m0) = parts[0];
    let shared0 = shared_fields(m0, infos[0]);
    for ((dir, m), s) in parts.iter().zip(&infos).skip(1) {
        if !m0.model.same_weights(&m.model) {
            return Err(AnalysisError::Merge(format!(
                "cannot merge {} and {}: they used different model weights ({} vs {}); the \
                 parts of one sweep must use one model",
                d0.display(),
                dir.display(),
                m0.model.identity(),
                m.model.identity()
            )));
        }
        let shared = shared_fields(m, s);
        let names = shared0.keys().chain(shared.keys());
        for name in names {
            let (a, b) = (field(&shared0, name), field(&shared, name));
            if a != b {
                return Err(AnalysisError::Merge(format!(
                    "cannot merge {} and {}: their {name} differ ({} vs {}); the parts of one \
                     sweep must share one configuration",
                    d0.display(),
                    dir.display(),
                    short(&a),
                    short(&b)
                )));
            }
        }
    }
    let count = infos[0].count;
    let mut by_index: BTreeMap<usize, &Path> = BTreeMap::new();
    for ((dir, _), s) in parts.iter().zip(&infos) {
        if let Some(other) = by_index.insert(s.index, dir) {
            return Err(AnalysisError::Merge(format!(
                "{} and {} are both part {}/{count} of the sweep; give each part once",
                other.display(),
                dir.display(),
                s.index
            )));
        }
    }
    let missing: Vec<String> = (1..=count)
        .filter(|k| !by_index.contains_key(k))
        .map(|k| k.to_string())
        .collect();
    if !missing.is_empty() {
        let given: Vec<String> = by_index
            .iter()
            .map(|(k, d)| format!("{k} ({})", d.display()))
            .collect();
        return Err(AnalysisError::Merge(format!(
            "part(s) {} of {count} missing (given: {}); run `attnscope simulate ... --shard \
             K/{count}` with the same options for each, then merge all {count}",
            missing.join(", "),
            given.join(", ")
        )));
    }
    for ((dir, m), s) in parts.iter().zip(&infos) {
        check_part_inputs(dir, m, s)?;
    }
    Ok(())
}

/// Refuses a part whose inputs are not those its K/N holds in the sweep.
fn check_part_inputs(dir: &Path, m: &Manifest, s: &ShardInfo) -> Result<()> {
    let part = crate::shard::Shard::new(s.index, s.count).map_err(|e| {
        AnalysisError::Merge(format!(
            "{}: shard {}/{}: {e}",
            dir.display(),
            s.index,
            s.count
        ))
    })?;
    let want: Vec<(usize, &str, u64)> = part
        .part(&s.sweep)
        .into_iter()
        .map(|x| (x.index, x.text.as_str(), x.seed))
        .collect();
    let have: Vec<(usize, &str, u64)> = m
        .data
        .inputs
        .iter()
        .map(|x| (x.index, x.text.as_str(), x.seed))
        .collect();
    if want != have {
        let idx = |v: &[(usize, &str, u64)]| -> String {
            v.iter()
                .map(|x| x.0.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(AnalysisError::Merge(format!(
            "{}: part {part} of its sweep should hold inputs [{}] but holds [{}]",
            dir.display(),
            idx(&want),
            idx(&have)
        )));
    }
    Ok(())
}

/// The values every part of one sweep shares, by the name an error gives them. The model's
/// paths (`--model`, the weights file) may differ between hosts: the weights are compared by
/// their SHA-256 instead.
fn shared_fields(m: &Manifest, s: &ShardInfo) -> BTreeMap<String, Value> {
    let sweep: Vec<Value> = s
        .sweep
        .iter()
        .map(|x| json!([x.index, x.text, x.seed]))
        .collect();
    let mut f: BTreeMap<String, Value> = [
        ("part counts", json!(s.count)),
        ("tool versions", json!(m.tool.version)),
        ("tool git revisions", json!(m.tool.git_revision)),
        ("bundle format versions", json!(m.format_version)),
        ("sweep inputs (--texts, --seeds)", json!(sweep)),
        ("methods", json!(m.methods)),
        ("budgets", json!(m.budgets)),
        ("layers", json!(m.layers)),
        ("capture blocks", json!(m.capture_block)),
        ("frequency settings", json!([m.freq_top_k, m.freq_queries])),
        ("scored queries", json!(m.queries)),
        ("selection budgets", json!(m.selection_budgets)),
        ("table formats", json!(m.format)),
        ("devices", json!(m.device)),
        ("method devices", json!(m.method_devices)),
        ("datasets", json!(m.data.dataset)),
        ("lengths", json!(m.data.len)),
        ("depths", json!(m.data.depth)),
        ("calibration texts", json!(m.calibration)),
        ("presets", json!(m.preset)),
        ("method sources", json!(m.method_sources)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    if let Some(o) = s.options.as_object() {
        for (k, v) in o
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "model" | "weights"))
        {
            f.insert(format!("options ({k})"), v.clone());
        }
    }
    f
}

fn field(fields: &BTreeMap<String, Value>, name: &str) -> Value {
    fields.get(name).cloned().unwrap_or(Value::Null)
}

/// A value for a message, cut to a readable length.
fn short(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(160) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s,
    }
}

/// The manifest of the merged bundle: the first part's description of the run, every part's
/// inputs, saved Q/K/V and warnings, and its timings (each part's own under `merged.shards`;
/// the top-level ones are those of the slowest part, per-input and per-method seconds of all).
fn merged_manifest(parts: &[Bundle], run_id: String, command: Vec<String>) -> Manifest {
    let mut m = parts[0].manifest.clone();
    m.run_id = run_id;
    m.command = command;
    m.shard = None;
    m.tables.clear();
    m.data.inputs.clear();
    m.qkv.clear();
    m.warnings.clear();
    let mut inputs_s = Vec::new();
    let mut t = Timings::default();
    let mut shards = Vec::new();
    for b in parts {
        let p = &b.manifest;
        let pt = &p.timings;
        m.data.inputs.extend(p.data.inputs.iter().cloned());
        m.qkv.extend(p.qkv.iter().cloned());
        for w in &p.warnings {
            if !m.warnings.contains(w) {
                m.warnings.push(w.clone());
            }
        }
        let indices = p.data.inputs.iter().map(|x| x.index);
        inputs_s.extend(indices.clone().zip(pt.inputs_s.iter().copied()));
        for (k, s) in &pt.method_s {
            *t.method_s.entry(k.clone()).or_default() += s;
        }
        t.pipeline.extend(pt.pipeline.iter().cloned());
        t.layer_spans.extend(pt.layer_spans.iter().copied());
        t.load_s = t.load_s.max(pt.load_s);
        t.hash_s = t.hash_s.max(pt.hash_s);
        t.total_s = t.total_s.max(pt.total_s);
        t.peak_host_bytes = t.peak_host_bytes.max(pt.peak_host_bytes);
        shards.push(MergedShard {
            index: p.shard.as_ref().map_or(0, |s| s.index),
            dir: b.dir.display().to_string(),
            run_id: p.run_id.clone(),
            inputs: indices.collect(),
            device: p.device.clone(),
            created_unix: p.created_unix,
            command: p.command.clone(),
            timings: pt.clone(),
        });
    }
    m.data.inputs.sort_by_key(|x| x.index);
    m.qkv.sort_by_key(|q| q.input);
    inputs_s.sort_by_key(|x| x.0);
    t.inputs_s = inputs_s.into_iter().map(|x| x.1).collect();
    t.layer_spans.sort_by(|a, b| a[0].total_cmp(&b[0]));
    m.timings = t;
    m.merged = Some(MergeInfo { shards });
    m
}

/// Copies `from` to `to` through a temporary name and a rename.
fn copy_atomic(from: &Path, to: &Path) -> Result<()> {
    let tmp = partial_name(to);
    std::fs::copy(from, &tmp)
        .map_err(|e| file_err(from, format!("copying to {}: {e}", to.display())))?;
    std::fs::rename(&tmp, to).map_err(|e| file_err(to, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::InputInfo;
    use crate::shard::Shard;

    /// The manifests of parts `1..=n` of a sweep of `inputs` inputs (two texts x seeds).
    fn parts(n: usize, inputs: usize) -> Vec<(PathBuf, Manifest)> {
        let texts = ["alice29", "lcet10"];
        let sweep: Vec<InputInfo> = (0..inputs)
            .map(|index| {
                let (text, seed) = (texts[index / (inputs / 2).max(1) % 2], index as u64 % 4);
                InputInfo {
                    index,
                    text: text.into(),
                    seed,
                    ..InputInfo::default()
                }
            })
            .collect();
        (1..=n)
            .map(|k| {
                let mut m = Manifest::default();
                let shard = Shard::new(k, n).expect("shard");
                m.data.inputs = shard.part(&sweep).into_iter().cloned().collect();
                m.shard = Some(ShardInfo {
                    index: k,
                    count: n,
                    sweep: sweep.clone(),
                    options: json!({ "len": 256, "model": format!("/host{k}/model.gguf") }),
                });
                (PathBuf::from(format!("part-{k}")), m)
            })
            .collect()
    }

    fn check(p: &[(PathBuf, Manifest)]) -> Result<()> {
        let listed: Vec<(&Path, &Manifest)> = p.iter().map(|(d, m)| (d.as_path(), m)).collect();
        check_parts(&listed)
    }

    #[test]
    fn the_parts_of_one_sweep_pass_in_any_order() {
        let mut p = parts(3, 8);
        p.reverse();
        check(&p).expect("one sweep");
        check(&parts(1, 2)).expect("one part of one");
    }

    #[test]
    fn a_part_holding_other_inputs_is_named() {
        let mut p = parts(3, 8);
        p[1].1.data.inputs.pop();
        let e = check(&p).expect_err("short part").to_string();
        assert!(
            e.contains("part-2") && e.contains("[1, 4, 7]") && e.contains("[1, 4]"),
            "{e}"
        );
    }

    #[test]
    fn differing_options_are_named_but_model_paths_are_not_compared() {
        let mut p = parts(2, 4);
        p[1].1.shard.as_mut().expect("shard").options["len"] = json!(512);
        let e = check(&p).expect_err("other length").to_string();
        assert!(
            e.contains("part-1")
                && e.contains("part-2")
                && e.contains("options (len) differ (256 vs 512)"),
            "{e}"
        );
    }
}
