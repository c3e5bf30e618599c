//! Mistral, Gemma 2, Gemma 3, Phi-3, OLMo-2 and Qwen2 with a sliding window against tiny random
//! transformers models (scripts/make_arch_fixtures.py): logits, the captured attention probabilities (post-softcap,
//! inside each layer's sliding window) and the per-head attention outputs within 1e-4; the
//! Gemma 2, Gemma 3, Phi-3 and OLMo-2 GGUFs give the same logits as their safetensors.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use attnscope_core::attention::{
    sparse_attention, AttentionHook, HookAction, LayerQkv, NoHook, TokenSelection,
};
use attnscope_core::capture::{CaptureHook, CaptureOptions};
use attnscope_core::Model;
use ndarray::{s, Array2, ArrayD, Axis, IxDyn};
use safetensors::SafeTensors;

const ARCHS: [&str; 6] = [
    "mistral",
    "gemma2",
    "gemma3",
    "phi3",
    "olmo2",
    "qwen2_window",
];

fn dir(arch: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tiny")
        .join(arch)
}

fn expected(arch: &str) -> (Vec<u32>, HashMap<String, ArrayD<f32>>) {
    let bytes = std::fs::read(dir(arch).join("expected.safetensors")).expect("fixture");
    let st = SafeTensors::deserialize(&bytes).expect("safetensors");
    let mut ids = Vec::new();
    let mut t = HashMap::new();
    for name in st.names() {
        let v = st.tensor(name).expect("tensor");
        match v.dtype() {
            safetensors::Dtype::I64 => {
                ids = v
                    .data()
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().expect("8")) as u32)
                    .collect()
            }
            _ => {
                let data = v
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().expect("4")))
                    .collect();
                t.insert(
                    name.to_string(),
                    ArrayD::from_shape_vec(IxDyn(v.shape()), data).expect("shape"),
                );
            }
        }
    }
    (ids, t)
}

fn max_rel_err(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f32 {
    assert_eq!(a.shape(), b.shape());
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
        / scale
}

#[test]
fn logits_match_transformers() {
    for arch in ARCHS {
        let (ids, exp) = expected(arch);
        let model = Model::load(&dir(arch)).expect("load");
        assert_eq!(model.config.arch.name(), arch.trim_end_matches("_window"));
        let hidden = model.forward(&ids, &mut NoHook).expect("forward");
        let logits = model.logits(hidden.view()).expect("logits").into_dyn();
        let err = max_rel_err(&logits, &exp["logits"]);
        eprintln!("{arch}: logits max rel err {err:.2e}");
        assert!(err < 1e-4, "{arch}: logits max rel err {err}");
    }
}

/// The GGUF files (llama.cpp's layout: Gemma norms as 1 + w, Phi-3's fused tensors, F16
/// matrices) give the safetensors' config and transformers' logits. llama.cpp scales Gemma 2
/// queries by `head_dim^-1/2`; the fixture's `query_pre_attn_scalar` of 24 is set back after the
/// GGUF's own value (the head size, 32) is checked.
#[test]
fn gguf_files_match_transformers() {
    for arch in ["gemma2", "gemma3", "phi3", "olmo2"] {
        let (ids, exp) = expected(arch);
        let mut model = Model::load(&dir(arch).join("model.gguf")).expect("load gguf");
        let st = Model::load(&dir(arch)).expect("load safetensors");
        assert_eq!(model.config.arch, st.config.arch);
        assert_eq!(model.config.rope_scaling, st.config.rope_scaling);
        if arch == "gemma2" {
            assert_eq!(model.config.attention.query_pre_attn_scalar, Some(32.0));
            model.config.attention.query_pre_attn_scalar = Some(24.0);
        }
        assert_eq!(model.config.attention, st.config.attention, "{arch}");
        let hidden = model.forward(&ids, &mut NoHook).expect("forward");
        let err = max_rel_err(
            &model.logits(hidden.view()).expect("logits").into_dyn(),
            &exp["logits"],
        );
        eprintln!("{arch} gguf: logits max rel err {err:.2e}");
        assert!(err < 1e-4, "{arch} gguf: logits max rel err {err}");
    }
}

#[test]
fn config_says_which_layers_are_local() {
    let windows = |arch: &str| {
        let m = Model::load(&dir(arch)).expect("load");
        (0..m.config.n_layers)
            .map(|l| m.config.window_of(l))
            .collect::<Vec<_>>()
    };
    let (w, g) = (Some(8), None);
    assert_eq!(windows("mistral"), [w, w]);
    assert_eq!(windows("phi3"), [w, w]);
    assert_eq!(windows("gemma2"), [w, g, w, g]);
    assert_eq!(windows("gemma3"), [w, w, w, w, w, g]);
    assert_eq!(windows("olmo2"), [g, g]);
    // Qwen2 with use_sliding_window: from max_window_layers (1) on; without it: none.
    assert_eq!(windows("qwen2_window"), [g, w, w]);
    assert_eq!(windows("qwen2"), [g, g]);
    let m = Model::load(&dir("gemma2")).expect("load");
    let rule = m.config.score_rule(0);
    assert_eq!(rule.softcap, Some(2.0));
    assert!((rule.scale - 24f32.powf(-0.5)).abs() < 1e-7);
    assert_eq!(m.config.attention.final_softcap, Some(3.0));
}

#[test]
fn capture_records_the_probabilities_the_model_uses() {
    for arch in ARCHS {
        let (ids, exp) = expected(arch);
        let model = Model::load(&dir(arch)).expect("load");
        let block = 4;
        let mut hook = CaptureHook::new(CaptureOptions {
            block,
            sink_tokens: 4,
            layers: None,
            keep_qkv: true,
            block_mass_from: 0,
        });
        model.forward(&ids, &mut hook).expect("forward");
        let n = ids.len();
        let d = model.config.head_dim;
        let probs = &exp["attn_probs"];
        for lc in &hook.layers {
            assert_eq!(lc.rule, model.config.score_rule(lc.layer));
            let qkv = lc.qkv.as_ref().expect("kept");
            for (h, hc) in lc.heads.iter().enumerate() {
                let g = h / model.config.group_size();
                for i in 0..n {
                    let p = |j: usize| probs[[lc.layer, h, i, j]];
                    for (b, &got) in hc.block_mass.row(i).iter().enumerate() {
                        let want: f32 = (b * block..((b + 1) * block).min(n)).map(p).sum();
                        assert!(
                            (got - want).abs() < 1e-4,
                            "{arch} layer {} head {h} P[{i},{b}] {got} vs {want}",
                            lc.layer
                        );
                    }
                    let sink: f32 = (0..4.min(n)).map(p).sum();
                    assert!((hc.sink_mass[i] - sink).abs() < 1e-4, "{arch} sink {i}");
                    // The LSE is over the logits the model uses: exp(logit_ii - lse_i) = p_ii.
                    let dot = qkv
                        .q
                        .row(i)
                        .slice(s![h * d..(h + 1) * d])
                        .dot(&qkv.k.row(i).slice(s![g * d..(g + 1) * d]));
                    let p_ii = (lc.rule.logit(dot) - hc.lse[i]).exp();
                    assert!((p_ii - p(i)).abs() < 1e-4, "{arch} lse row {i}");
                    if let Some(w) = lc.rule.window {
                        // Keys outside the window hold no mass.
                        if i >= w {
                            assert_eq!(p(i - w), 0.0, "{arch}: transformers' window");
                            assert!(hc.block_mass[[i, 0]] == 0.0 || i < w + block);
                        }
                    }
                }
            }
            let want = exp["attn_out"].index_axis(Axis(0), lc.layer).to_owned();
            for h in 0..model.config.n_heads {
                let got = lc.dense_out.slice(s![.., h * d..(h + 1) * d]).to_owned();
                let err = max_rel_err(&got.into_dyn(), &want.index_axis(Axis(0), h).to_owned());
                assert!(
                    err < 1e-4,
                    "{arch} layer {} head {h} output {err}",
                    lc.layer
                );
            }
        }
    }
}

/// Selects every causal key of layer 0 (also those outside the window) and records the output.
struct AllKeys {
    out: Option<Array2<f32>>,
}

impl AttentionHook for AllKeys {
    fn on_layer(&mut self, qkv: &LayerQkv<'_>) -> attnscope_core::Result<HookAction> {
        if qkv.layer != 0 {
            return Ok(HookAction::Dense);
        }
        let sel = TokenSelection::from_fn(qkv.n_heads, qkv.len(), |_, i| (0..=i as u32).collect());
        self.out = Some(sparse_attention(qkv, &sel)?);
        Ok(HookAction::Sparse(sel))
    }
}

#[test]
fn a_sparse_selection_never_reaches_past_the_window() {
    for arch in ["mistral", "gemma2"] {
        let (ids, exp) = expected(arch);
        let model = Model::load(&dir(arch)).expect("load");
        let mut hook = AllKeys { out: None };
        let hidden = model.forward(&ids, &mut hook).expect("forward");
        // Selecting every causal key equals the dense windowed (and soft-capped) attention.
        let out = hook.out.expect("layer 0");
        let d = model.config.head_dim;
        let want = exp["attn_out"].index_axis(Axis(0), 0).to_owned();
        for h in 0..model.config.n_heads {
            let got = out.slice(s![.., h * d..(h + 1) * d]).to_owned();
            let err = max_rel_err(&got.into_dyn(), &want.index_axis(Axis(0), h).to_owned());
            assert!(err < 1e-4, "{arch} head {h}: {err}");
        }
        let err = max_rel_err(
            &model.logits(hidden.view()).expect("logits").into_dyn(),
            &exp["logits"],
        );
        assert!(err < 1e-4, "{arch}: {err}");
    }
}

#[test]
fn a_selection_with_nothing_inside_the_window_is_refused() {
    let (ids, _) = expected("mistral");
    let model = Model::load(&dir("mistral")).expect("load");
    struct FirstKeyOnly;
    impl AttentionHook for FirstKeyOnly {
        fn on_layer(&mut self, qkv: &LayerQkv<'_>) -> attnscope_core::Result<HookAction> {
            Ok(HookAction::Sparse(TokenSelection::from_fn(
                qkv.n_heads,
                qkv.len(),
                |_, _| vec![0],
            )))
        }
    }
    let e = model
        .forward(&ids, &mut FirstKeyOnly)
        .expect_err("key 0 is outside the window of query 8");
    assert!(e.to_string().contains("sliding window of 8"), "{e}");
}

#[test]
fn unknown_architectures_are_named() {
    let tmp = tempfile::tempdir().expect("tmp");
    let text = std::fs::read_to_string(dir("mistral").join("config.json")).expect("config");
    let text = text.replace("\"mistral\"", "\"falcon_h9\"");
    std::fs::write(tmp.path().join("config.json"), text).expect("write");
    let e = Model::load(tmp.path()).expect_err("unknown");
    assert!(e.to_string().contains("architecture 'falcon_h9'"), "{e}");
}

#[test]
fn the_cuda_path_refuses_what_it_does_not_cover() {
    use attnscope_core::device::{Device, Precision};
    for (arch, what) in [
        ("mistral", "mistral layers with a sliding window of 8"),
        ("gemma3", "gemma3 layers"),
        ("olmo2", "olmo2 layers"),
    ] {
        let mut model = Model::load(&dir(arch)).expect("load");
        let e = model
            .to_device(Device::Cuda(0), Precision::F32)
            .expect_err("not on the GPU yet")
            .to_string();
        assert!(e.contains(what) && e.contains("--device cpu"), "{e}");
    }
}
