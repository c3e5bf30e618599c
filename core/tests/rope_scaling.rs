//! RoPE scaling against transformers (scripts/make_rope_fixtures.py): the inverse frequencies and
//! attention factor of every scaling type read from `config.json` (v4 `rope_scaling` and v5
//! `rope_parameters`), a tiny random Llama with llama3 scaling loaded from safetensors and from a
//! GGUF with llama.cpp's `rope_freqs.weight`, and the refusal of unknown scaling types.

use std::path::{Path, PathBuf};

use attnscope_core::attention::{AttentionHook, HookAction, LayerQkv, NoHook};
use attnscope_core::rope::RopeScaling;
use attnscope_core::{Model, ModelConfig, Result};
use ndarray::{Array2, ArrayD, IxDyn};
use safetensors::SafeTensors;
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rope")
}

fn write_config(dir: &Path, v: &Value) -> PathBuf {
    let p = dir.join("config.json");
    std::fs::write(&p, serde_json::to_string_pretty(v).expect("json")).expect("write");
    p
}

#[test]
fn inverse_frequencies_match_transformers_for_every_type() {
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("freqs.json")).expect("freqs.json"),
    )
    .expect("json");
    let tmp = tempfile::tempdir().expect("tmp");
    let mut seen = std::collections::BTreeSet::new();
    let mut worst = 0f64;
    for case in doc["cases"].as_array().expect("cases") {
        let name = case["name"].as_str().expect("name");
        let cfg = ModelConfig::from_hf_json(&write_config(tmp.path(), &case["config"]))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            cfg.rope_scaling.name(),
            case["rope_type"].as_str().expect("type")
        );
        seen.insert(cfg.rope_scaling.name());
        let n = case["seq_len"].as_u64().expect("seq_len") as usize;
        let f = cfg
            .rope_scaling
            .frequencies(cfg.head_dim, cfg.rope_theta, n);
        let want: Vec<f64> = case["inv_freq"]
            .as_array()
            .expect("inv_freq")
            .iter()
            .map(|x| x.as_f64().expect("number"))
            .collect();
        assert_eq!(f.inv_freq.len(), want.len(), "{name}");
        for (j, (&got, &w)) in f.inv_freq.iter().zip(&want).enumerate() {
            let rel = (got as f64 - w).abs() / w.abs();
            worst = worst.max(rel);
            assert!(
                rel < 1e-6,
                "{name}: inv_freq[{j}] {got} vs transformers {w} ({rel:e})"
            );
        }
        let af = case["attention_factor"].as_f64().expect("attention_factor");
        let rel = (f.attention_factor as f64 - af).abs() / af;
        worst = worst.max(rel);
        assert!(
            rel < 1e-6,
            "{name}: attention factor {} vs {af}",
            f.attention_factor
        );
    }
    for t in ["default", "linear", "dynamic", "llama3", "yarn"] {
        assert!(seen.contains(t), "no case of {t}");
    }
    eprintln!("worst relative error of inverse frequencies / attention factors: {worst:e}");
}

struct Expected {
    ids: Vec<u32>,
    logits: ArrayD<f32>,
    probs: ArrayD<f32>,
}

fn expected() -> Expected {
    let bytes = std::fs::read(fixtures().join("llama3/expected.safetensors")).expect("fixture");
    let st = SafeTensors::deserialize(&bytes).expect("safetensors");
    let f32s = |name: &str| {
        let v = st.tensor(name).expect(name);
        let data = v
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4")))
            .collect();
        ArrayD::from_shape_vec(IxDyn(v.shape()), data).expect("shape")
    };
    let ids = st
        .tensor("input_ids")
        .expect("ids")
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().expect("8")) as u32)
        .collect();
    Expected {
        ids,
        logits: f32s("logits"),
        probs: f32s("attn_probs"),
    }
}

/// Recomputes every head's causal attention probabilities from the post-RoPE Q and K the
/// forward pass hands to the hook (`[layers][heads]` of `[n, n]`).
#[derive(Default)]
struct Probs(Vec<Vec<Array2<f32>>>);

impl AttentionHook for Probs {
    fn on_layer(&mut self, qkv: &LayerQkv<'_>) -> Result<HookAction> {
        let (n, d) = (qkv.q.nrows(), qkv.head_dim);
        let group = qkv.n_heads / qkv.n_kv_heads;
        let scale = 1.0 / (d as f32).sqrt();
        let heads = (0..qkv.n_heads)
            .map(|h| {
                let q = qkv.q.slice(ndarray::s![.., h * d..(h + 1) * d]);
                let kh = h / group;
                let k = qkv.k.slice(ndarray::s![.., kh * d..(kh + 1) * d]);
                let mut p = q.dot(&k.t()) * scale;
                for i in 0..n {
                    let mut row = p.row_mut(i);
                    let m = (0..=i).map(|j| row[j]).fold(f32::NEG_INFINITY, f32::max);
                    let mut sum = 0.0;
                    for j in 0..n {
                        row[j] = if j <= i { (row[j] - m).exp() } else { 0.0 };
                        sum += row[j];
                    }
                    row.mapv_inplace(|x| x / sum);
                }
                p
            })
            .collect();
        self.0.push(heads);
        Ok(HookAction::Dense)
    }
}

fn check_model(model: &Model, exp: &Expected, what: &str) -> (f32, f32) {
    let mut hook = Probs::default();
    let hidden = model.forward(&exp.ids, &mut hook).expect("forward");
    let logits = model.logits(hidden.view()).expect("logits").into_dyn();
    assert_eq!(logits.shape(), exp.logits.shape());
    let logit_err = logits
        .iter()
        .zip(exp.logits.iter())
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(logit_err < 1e-4, "{what}: logits differ by {logit_err}");
    let mut prob_err = 0f32;
    for (l, heads) in hook.0.iter().enumerate() {
        for (h, p) in heads.iter().enumerate() {
            for ((i, j), &v) in p.indexed_iter() {
                prob_err = prob_err.max((v - exp.probs[[l, h, i, j]]).abs());
            }
        }
    }
    assert!(
        prob_err < 1e-4,
        "{what}: attention probabilities differ by {prob_err}"
    );
    (logit_err, prob_err)
}

#[test]
fn tiny_llama3_matches_transformers_from_safetensors_and_gguf() {
    let exp = expected();
    let dir = fixtures().join("llama3");
    let st = Model::load(&dir).expect("load safetensors folder");
    assert!(matches!(st.config.rope_scaling, RopeScaling::Llama3 { .. }));
    let gg = Model::load(&dir.join("model.gguf")).expect("load gguf with rope_freqs");
    let RopeScaling::Divisors { divisors } = &gg.config.rope_scaling else {
        panic!("GGUF rope scaling {:?}", gg.config.rope_scaling);
    };
    assert_eq!(divisors.len(), 8);
    // Both sources give the same frequencies (to f32 rounding).
    let (a, b) = (
        st.config.rope_scaling.frequencies(16, 10_000.0, 32),
        gg.config.rope_scaling.frequencies(16, 10_000.0, 32),
    );
    for (x, y) in a.inv_freq.iter().zip(&b.inv_freq) {
        assert!((x - y).abs() <= 1e-6 * x.abs(), "{x} vs {y}");
    }
    let (l1, p1) = check_model(&st, &exp, "safetensors");
    let (l2, p2) = check_model(&gg, &exp, "gguf");
    eprintln!(
        "llama3 tiny: safetensors logits {l1:e} probs {p1:e}; gguf logits {l2:e} probs {p2:e}"
    );
    // The scaling matters: the same weights with plain RoPE give other logits.
    let mut plain = st.config.clone();
    plain.rope_scaling = RopeScaling::Default;
    let w = attnscope_core::safetensors_io::load_safetensors_dir(&dir).expect("weights");
    let m = Model::from_weights(plain, w).expect("plain model");
    let hidden = m.forward(&exp.ids, &mut NoHook).expect("forward");
    let diff = m
        .logits(hidden.view())
        .expect("logits")
        .into_dyn()
        .iter()
        .zip(exp.logits.iter())
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(diff > 1e-2, "plain RoPE should differ, max diff {diff}");
}

#[test]
fn unknown_scaling_types_are_refused_with_their_name_and_the_file() {
    let tmp = tempfile::tempdir().expect("tmp");
    let base: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("llama3/config.json")).expect("config"),
    )
    .expect("json");
    let cases = [
        (
            "rope_scaling",
            serde_json::json!({"type": "banana", "factor": 2.0}),
            "banana",
        ),
        (
            "rope_scaling",
            serde_json::json!({"rope_type": "longrope"}),
            "longrope",
        ),
        (
            "rope_parameters",
            serde_json::json!({"rope_type": "ntk-by-parts", "rope_theta": 1e4}),
            "ntk-by-parts",
        ),
    ];
    for (section, params, name) in cases {
        let mut v = base.clone();
        v.as_object_mut().expect("obj").remove("rope_scaling");
        v[section] = params;
        let p = write_config(tmp.path(), &v);
        let e = ModelConfig::from_hf_json(&p).expect_err(name).to_string();
        assert!(
            e.contains(&format!("'{name}'")) && e.contains(&p.display().to_string()),
            "{e}"
        );
    }
    // A known type without its required parameter names the key.
    let mut v = base.clone();
    v["rope_scaling"] = serde_json::json!({"rope_type": "llama3", "factor": 8.0});
    let e = ModelConfig::from_hf_json(&write_config(tmp.path(), &v))
        .expect_err("missing")
        .to_string();
    assert!(e.contains("rope_scaling.low_freq_factor"), "{e}");
    // Out-of-range parameters are refused with the key and value.
    v["rope_scaling"] = serde_json::json!({"type": "linear", "factor": -2.0});
    let e = ModelConfig::from_hf_json(&write_config(tmp.path(), &v))
        .expect_err("negative")
        .to_string();
    assert!(e.contains("rope_scaling.factor = -2"), "{e}");
}

#[test]
fn dynamic_ntk_rebuilds_tables_only_past_the_original_length() {
    let s = RopeScaling::Dynamic {
        factor: 2.0,
        original_max: 64,
    };
    assert_eq!(
        s.frequencies(16, 1e4, 10),
        RopeScaling::Default.frequencies(16, 1e4, 10)
    );
    assert_ne!(
        s.frequencies(16, 1e4, 100),
        RopeScaling::Default.frequencies(16, 1e4, 100)
    );
    let rope = attnscope_core::ops::Rope::scaled(16, 1e4, s, 128);
    assert!(matches!(rope.for_length(64), std::borrow::Cow::Borrowed(_)));
    assert_eq!(rope.for_length(100).max_positions(), 100);
}
