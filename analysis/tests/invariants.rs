//! The invariant matrix: every registered method, on random and on real Q/K, at two sparsity
//! budgets and a token budget: causal, every query keeps a key, deterministic, one selection per
//! q-head of the right length, token budgets respected, calibration honest about what it reached,
//! and a full budget gives exactly dense attention (recall 1, output error 0). On the same data,
//! `oracle-topk-block` bounds every per-query block method: per q-head and query, its recall at
//! the number of blocks the method keeps is at least the method's.

use attnscope_analysis::budget::{resolve, sparsity_of, Budget, SPARSITY_TOLERANCE};
use attnscope_analysis::metrics::{evaluate, DenseHead};
use attnscope_analysis::registry::METHODS;
use attnscope_analysis::selection::Selection;
use attnscope_analysis::testing::GroupData;
use attnscope_core::capture::{CaptureHook, CaptureOptions};
use attnscope_core::Model;
use attnscope_datasets::fetch;

fn dense_head<'a>(data: &'a GroupData, h: usize) -> DenseHead<'a> {
    DenseHead {
        q: data.q_head(h),
        k: data.k.view(),
        v: data.v.view(),
        lse: &data.truth[h].lse,
        dense_out: data.dense_out_head(h),
        rule: data.rule,
    }
}

fn check_shape_and_causality(name: &str, sels: &[Selection], n: usize, group: usize) {
    assert_eq!(sels.len(), group, "{name}: one selection per q-head");
    for s in sels {
        assert_eq!(s.len(), n, "{name}: selection length");
        for r in 0..s.rows() {
            let last_query = ((r + 1) * s.query_block()).min(n) - 1;
            if let Some(m) = s.row_max_key(r) {
                assert!(
                    m <= last_query,
                    "{name}: row {r} keeps key {m} after its last query {last_query}"
                );
            }
        }
        for i in 0..n {
            assert!(s.kept_of(i) >= 1, "{name}: query {i} keeps no key");
        }
    }
}

fn check_all(data: &GroupData, label: &str) {
    let n = data.k.nrows();
    for info in METHODS {
        let name = format!("{} ({label})", info.name);
        let method = info.build_with(&[]).expect("defaults build");
        // The input borrows `data` and must not outlive the method (ndarray views are invariant).
        let input = data.input();
        let prep = method.prepare(&input);
        let knob = method.knob();
        // Full budget: exactly dense.
        let full = if knob.denser_when_larger {
            knob.max_for(n)
        } else {
            knob.min
        };
        let sels = prep.select(full);
        check_shape_and_causality(&name, &sels, n, data.group);
        for (h, s) in sels.iter().enumerate() {
            assert_eq!(
                s.kept_pairs(),
                (n * (n + 1) / 2) as u64,
                "{name}: full budget is not dense"
            );
            let m = evaluate(&dense_head(data, h), s);
            assert!(
                m.recall.iter().all(|&r| (r - 1.0).abs() < 1e-4),
                "{name}: full-budget recall"
            );
            assert!(
                m.out_rel_err.iter().all(|&e| e < 1e-4),
                "{name}: full-budget output error"
            );
        }
        for target in [0.5, 0.8] {
            let cal = resolve(
                method.as_ref(),
                prep.as_ref(),
                Budget::Sparsity(target),
                attnscope_analysis::selection::Scored::all(n),
                None,
            );
            check_shape_and_causality(&name, &cal.selections, n, data.group);
            let s = sparsity_of(&cal.selections);
            assert!(
                (s - cal.sparsity).abs() < 1e-12,
                "{name}: reported sparsity"
            );
            assert_eq!(
                cal.reached,
                (s - target).abs() <= SPARSITY_TOLERANCE,
                "{name}: reached flag"
            );
            // Deterministic: a second preparation selects the same keys.
            let again = method.prepare(&input).select(cal.knob);
            assert_eq!(again, cal.selections, "{name}: not deterministic");
        }
        // A token budget is respected, except where the method's forced keys alone exceed it.
        let k = n / 2;
        if let Some(x) = method.knob_for_tokens(k) {
            let sparsest = if knob.denser_when_larger {
                knob.min
            } else {
                knob.max_for(n)
            };
            let forced = prep.select(sparsest);
            for (s, f) in prep.select(x).iter().zip(&forced) {
                let over = (0..n).find(|&i| s.kept_of(i) > k.max(f.kept_of(i)));
                assert!(
                    over.is_none(),
                    "{name}: query {over:?} keeps more than {k} keys"
                );
            }
        }
    }
}

#[test]
fn every_method_on_random_qk() {
    check_all(&GroupData::random(520, 16, 3, 7), "random");
}

/// Layer 5 of SmolLM2-135M (first KV group) on 520 tokens of a repeated Alice paragraph.
fn smollm2_layer5() -> GroupData {
    let files = fetch::model_path("smollm2-135m").unwrap_or_else(|| {
        fetch::fetch_model("smollm2-135m", &mut |m| eprintln!("{m}")).expect("fetch")
    });
    let model = Model::load(&files.gguf).expect("load");
    let text =
        "The Project Gutenberg EBook of Alice's Adventures in Wonderland, by Lewis Carroll. \
        Alice was beginning to get very tired of sitting by her sister on the bank, and of having \
        nothing to do: once or twice she had peeped into the book her sister was reading, but it \
        had no pictures or conversations in it, 'and what is the use of a book,' thought Alice, \
        'without pictures or conversations?' ";
    let mut ids = model
        .tokenizer()
        .expect("tokenizer")
        .encode(&text.repeat(8))
        .expect("encode");
    ids.truncate(520);
    let layer = 5;
    let mut hook = CaptureHook::new(CaptureOptions {
        layers: Some(vec![layer]),
        keep_qkv: true,
        ..Default::default()
    });
    model.forward(&ids, &mut hook).expect("forward");
    let qkv = hook.layers[0].qkv.as_ref().expect("qkv");
    let (d, g) = (model.config.head_dim, model.config.group_size());
    let q = qkv.q.slice(ndarray::s![.., ..g * d]).to_owned();
    let k = qkv.k.slice(ndarray::s![.., ..d]).to_owned();
    let v = qkv.v.slice(ndarray::s![.., ..d]).to_owned();
    let pieces = model.tokenizer().expect("tokenizer").pieces(&ids);
    let punct = pieces
        .iter()
        .map(|p| !p.trim().is_empty() && p.trim().chars().all(|c| c.is_ascii_punctuation()))
        .collect();
    let newline = pieces
        .iter()
        .map(|p| p.contains('\n') && p.trim().is_empty())
        .collect();
    GroupData::from_qkv(q, k, v, punct, newline, g, 64)
}

#[test]
fn every_method_on_real_smollm2_qk() {
    check_all(&smollm2_layer5(), "smollm2 layer 5");
}

/// Per-query block methods (each keeps whole aligned key blocks, clipped at the query, which the
/// check verifies), their settings here and their block size.
type BlockMethod = (&'static str, &'static [(&'static str, f64)], usize);
const BLOCK_METHODS: &[BlockMethod] = &[
    ("phsa", &[], 64),
    ("phsa-fit", &[], 64),
    ("infllm-v2", &[], 64),
    ("nsa", &[], 64),
    ("moba", &[("block", 64.0)], 64),
    ("quest", &[], 16),
    ("seer-oracle", &[], 64),
    ("xattention", &[], 128),
];

/// For every per-query block method at two sparsities, every q-head and query: the method keeps
/// whole blocks (`c_i` of them), and `oracle-topk-block` (same block) at `k = c_i` reaches at
/// least its recall. Returns (method, mean recall, mean oracle recall) lines.
fn check_oracle_bound(data: &GroupData, label: &str) {
    use std::collections::HashMap;
    let n = data.k.nrows();
    let oracle_info = attnscope_analysis::registry::find("oracle-topk-block").expect("registered");
    // Oracle recall per (block, head, k), per query; computed on first use.
    let mut cache: HashMap<(usize, usize, usize), Vec<f32>> = HashMap::new();
    for &(name, overrides, block) in BLOCK_METHODS {
        let info = attnscope_analysis::registry::find(name).expect("registered");
        let o: Vec<(String, f64)> = overrides.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        let method = info.build_with(&o).expect("builds");
        let oracle = oracle_info
            .build_with(&[("block".to_string(), block as f64)])
            .expect("builds");
        let input = data.input();
        let prep = method.prepare(&input);
        let oprep = oracle.prepare(&input);
        let (mut sum_m, mut sum_o, mut count) = (0f64, 0f64, 0usize);
        for target in [0.5, 0.8] {
            let cal = resolve(
                method.as_ref(),
                prep.as_ref(),
                Budget::Sparsity(target),
                attnscope_analysis::selection::Scored::all(n),
                None,
            );
            for (h, sel) in cal.selections.iter().enumerate() {
                let m = evaluate(&dense_head(data, h), sel);
                for i in 0..n {
                    // Kept blocks of query i, each whole (clipped at i).
                    let mut blocks: Vec<usize> = Vec::new();
                    let mut kept = 0usize;
                    for (s, e) in sel.keys_of(i) {
                        for b in (s as usize / block)..=((e as usize - 1) / block) {
                            if blocks.last() != Some(&b) {
                                blocks.push(b);
                            }
                        }
                        kept += (e - s) as usize;
                    }
                    let whole: usize = blocks
                        .iter()
                        .map(|&b| ((b + 1) * block).min(i + 1) - b * block)
                        .sum();
                    assert_eq!(
                        kept, whole,
                        "{name} ({label}): query {i} keeps part of a {block}-token block"
                    );
                    let c = blocks.len();
                    let rec = cache.entry((block, h, c)).or_insert_with(|| {
                        let s = &oprep.select(c as f64)[h];
                        evaluate(&dense_head(data, h), s).recall
                    });
                    assert!(
                        rec[i] + 1e-5 >= m.recall[i],
                        "{name} ({label}) sparsity {target} head {h} query {i}: {c} blocks \
                         recall {} above oracle-topk-block's {}",
                        m.recall[i],
                        rec[i]
                    );
                    sum_m += m.recall[i] as f64;
                    sum_o += rec[i] as f64;
                    count += 1;
                }
            }
        }
        println!(
            "{label}: {name:<12} block {block:>3}: mean recall {:.4}, oracle-topk-block at the \
             same blocks per query {:.4}",
            sum_m / count as f64,
            sum_o / count as f64
        );
    }
}

#[test]
fn oracle_topk_block_bounds_block_methods_on_random_qk() {
    check_oracle_bound(&GroupData::random(520, 16, 3, 7), "random");
}

#[test]
fn oracle_topk_block_bounds_block_methods_on_real_smollm2_qk() {
    check_oracle_bound(&smollm2_layer5(), "smollm2 layer 5");
}
