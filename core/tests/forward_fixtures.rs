//! The forward pass, the capture hook and the sparse hook against tiny random models whose
//! expected outputs come from Hugging Face transformers (scripts/make_model_fixtures.py).
//! Each architecture is loaded from its safetensors folder (F32, sharded BF16, F16) and from its
//! GGUF (F32 with llama.cpp's Q/K permutation, F16, BF16): all must give the same logits.

use std::path::{Path, PathBuf};

use attnscope_core::attention::{AttentionHook, HookAction, LayerQkv, TokenSelection};
use attnscope_core::capture::{CaptureHook, CaptureOptions};
use attnscope_core::{attention::NoHook, Model};
use ndarray::{Array2, Array4, ArrayD, Axis, IxDyn};
use safetensors::SafeTensors;

fn fixture_dir(arch: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tiny")
        .join(arch)
}

struct Expected {
    ids: Vec<u32>,
    tensors: std::collections::HashMap<String, ArrayD<f32>>,
}

fn expected(arch: &str) -> Expected {
    let bytes = std::fs::read(fixture_dir(arch).join("expected.safetensors")).expect("fixture");
    let st = SafeTensors::deserialize(&bytes).expect("valid safetensors");
    let mut tensors = std::collections::HashMap::new();
    let mut ids = Vec::new();
    for name in st.names() {
        let v = st.tensor(name).expect("tensor");
        let shape = IxDyn(v.shape());
        match v.dtype() {
            safetensors::Dtype::I64 => {
                ids = v
                    .data()
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")) as u32)
                    .collect();
            }
            safetensors::Dtype::F32 => {
                let data: Vec<f32> = v
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                    .collect();
                tensors.insert(
                    name.to_string(),
                    ArrayD::from_shape_vec(shape, data).expect("shape"),
                );
            }
            // Masks (u8) are for the python side's own checks.
            _ => {}
        }
    }
    Expected { ids, tensors }
}

fn max_rel_err(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f32 {
    assert_eq!(a.shape(), b.shape());
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
        / scale
}

fn check_logits(model: &Model, exp: &Expected, what: &str) {
    let hidden = model.forward(&exp.ids, &mut NoHook).expect("forward");
    let logits = model.logits(hidden.view()).expect("logits").into_dyn();
    let err = max_rel_err(&logits, &exp.tensors["logits"]);
    assert!(err < 1e-4, "{what}: logits differ, max rel err {err}");
    let err = max_rel_err(&hidden.into_dyn(), &exp.tensors["hidden_out"]);
    assert!(
        err < 1e-4,
        "{what}: final hidden differs, max rel err {err}"
    );
}

#[test]
fn logits_match_transformers_for_every_architecture_and_format() {
    for arch in ["llama", "qwen2", "qwen3"] {
        let exp = expected(arch);
        let dir = fixture_dir(arch);
        let st = Model::load(&dir).expect("load safetensors folder");
        check_logits(&st, &exp, &format!("{arch} safetensors"));
        let gg = Model::load(&dir.join("model.gguf")).expect("load gguf");
        assert_eq!(st.config.n_heads, gg.config.n_heads);
        assert_eq!(st.config.tie_embeddings, gg.config.tie_embeddings);
        check_logits(&gg, &exp, &format!("{arch} gguf"));
    }
}

/// Releasing a separate output head frees its weights, keeps the forward pass exact and turns
/// logits into an error naming the file; a head tied to the embeddings stays.
#[test]
fn released_output_head_refuses_logits_and_keeps_the_forward() {
    let exp = expected("llama");
    let mut model = Model::load(&fixture_dir("llama")).expect("load");
    assert!(!model.config.tie_embeddings);
    let head_bytes = (model.config.vocab * model.config.hidden * 4) as u64;
    assert_eq!(model.release_output_head(), head_bytes);
    let hidden = model.forward(&exp.ids, &mut NoHook).expect("forward");
    let err = max_rel_err(&hidden.into_dyn(), &exp.tensors["hidden_out"]);
    assert!(err < 1e-4, "final hidden differs after the release: {err}");
    let hidden = model.forward(&exp.ids, &mut NoHook).expect("forward");
    let e = model
        .logits(hidden.view())
        .expect_err("logits must be refused");
    assert!(e.to_string().contains("output head was released"), "{e}");
    assert!(e.to_string().contains("llama"), "names the model: {e}");
    let exp = expected("qwen2");
    let mut tied = Model::load(&fixture_dir("qwen2")).expect("load");
    assert!(tied.config.tie_embeddings);
    assert_eq!(tied.release_output_head(), 0);
    check_logits(&tied, &exp, "qwen2 (tied) after release_output_head");
}

#[test]
fn capture_matches_transformers_attention_probabilities() {
    for arch in ["llama", "qwen2", "qwen3"] {
        let exp = expected(arch);
        let model = Model::load(&fixture_dir(arch)).expect("load");
        let block = 8;
        let mut hook = CaptureHook::new(CaptureOptions {
            block,
            sink_tokens: 4,
            layers: None,
            keep_qkv: true,
            block_mass_from: 0,
        });
        model.forward(&exp.ids, &mut hook).expect("forward");
        let probs: Array4<f32> = exp.tensors["attn_probs"]
            .clone()
            .into_dimensionality()
            .expect("4-d");
        let n = exp.ids.len();
        let d = model.config.head_dim;
        assert_eq!(hook.layers.len(), model.config.n_layers);
        for lc in &hook.layers {
            let qkv = lc.qkv.as_ref().expect("kept qkv");
            let q_ref = exp.tensors["q_rope"]
                .index_axis(Axis(0), lc.layer)
                .to_owned();
            for (h, hc) in lc.heads.iter().enumerate() {
                // Post-RoPE queries handed to the hook equal transformers'.
                let q_h = qkv.q.slice(ndarray::s![.., h * d..(h + 1) * d]).to_owned();
                let err = max_rel_err(&q_h.into_dyn(), &q_ref.index_axis(Axis(0), h).to_owned());
                assert!(err < 1e-4, "{arch} layer {} head {h} q: {err}", lc.layer);
                let a = probs.index_axis(Axis(0), lc.layer);
                let a = a.index_axis(Axis(0), h);
                for i in 0..n {
                    for (b, &pm) in hc.block_mass.row(i).iter().enumerate() {
                        let want: f32 = (b * block..((b + 1) * block).min(n))
                            .map(|j| a[[i, j]])
                            .sum();
                        assert!((pm - want).abs() < 1e-5, "{arch} P[{i},{b}] {pm} vs {want}");
                    }
                    let sink: f32 = (0..4.min(n)).map(|j| a[[i, j]]).sum();
                    assert!((hc.sink_mass[i] - sink).abs() < 1e-5);
                    // LSE: p_ij = exp(s_ij - lse_i) reproduces the diagonal probability.
                    let s_ii = qkv.q.row(i).slice(ndarray::s![h * d..(h + 1) * d]).dot(
                        &qkv.k.row(i).slice(ndarray::s![
                            lc_kv(&model, h) * d..(lc_kv(&model, h) + 1) * d
                        ]),
                    ) / (d as f32).sqrt();
                    let p_ii = (s_ii - hc.lse[i]).exp();
                    assert!((p_ii - a[[i, i]]).abs() < 1e-5, "{arch} lse row {i}");
                }
                let row_sums = hc.block_mass.sum_axis(Axis(1));
                assert!(row_sums.iter().all(|s| (s - 1.0).abs() < 1e-5));
            }
            // The dense output the capture hook hands back equals transformers' per-head output.
            let want = exp.tensors["attn_out"]
                .index_axis(Axis(0), lc.layer)
                .to_owned();
            for h in 0..model.config.n_heads {
                let got = lc
                    .dense_out
                    .slice(ndarray::s![.., h * d..(h + 1) * d])
                    .to_owned();
                let err = max_rel_err(&got.into_dyn(), &want.index_axis(Axis(0), h).to_owned());
                assert!(
                    err < 1e-4,
                    "{arch} layer {} head {h} attention output: {err}",
                    lc.layer
                );
            }
        }
    }
}

fn lc_kv(model: &Model, h: usize) -> usize {
    h / model.config.group_size()
}

/// Keeps key 0 and the 8 most recent keys of every query in layer 0 and records the output.
struct SinkWindowHook {
    out: Option<Array2<f32>>,
}

impl AttentionHook for SinkWindowHook {
    fn on_layer(&mut self, qkv: &LayerQkv<'_>) -> attnscope_core::Result<HookAction> {
        if qkv.layer != 0 {
            return Ok(HookAction::Dense);
        }
        let sel = TokenSelection::from_fn(qkv.n_heads, qkv.len(), |_, i| {
            let mut ks: Vec<u32> = (i.saturating_sub(7)..=i).map(|j| j as u32).collect();
            ks.push(0);
            ks
        });
        self.out = Some(attnscope_core::attention::sparse_attention(qkv, &sel)?);
        Ok(HookAction::Sparse(sel))
    }
}

#[test]
fn sparse_hook_attends_only_to_the_selection() {
    for arch in ["llama", "qwen2", "qwen3"] {
        let exp = expected(arch);
        let model = Model::load(&fixture_dir(arch)).expect("load");
        let mut hook = SinkWindowHook { out: None };
        let hidden = model.forward(&exp.ids, &mut hook).expect("forward");
        let out = hook.out.expect("layer 0 ran");
        let d = model.config.head_dim;
        let want = &exp.tensors["sparse_attn_out_l0"];
        for h in 0..model.config.n_heads {
            let got = out.slice(ndarray::s![.., h * d..(h + 1) * d]).to_owned();
            let err = max_rel_err(&got.into_dyn(), &want.index_axis(Axis(0), h).to_owned());
            assert!(err < 1e-4, "{arch} head {h} sparse output: {err}");
        }
        // The sparse layer changed the model's output (the hook's selection was used).
        let logits = model.logits(hidden.view()).expect("logits").into_dyn();
        assert!(max_rel_err(&logits, &exp.tensors["logits"]) > 1e-3);
    }
}

#[test]
fn bad_inputs_give_clear_errors() {
    let model = Model::load(&fixture_dir("llama")).expect("load");
    let e = model.forward(&[], &mut NoHook).expect_err("empty");
    assert!(e.to_string().contains("empty"), "{e}");
    let too_long = vec![1u32; model.config.max_context + 1];
    let e = model.forward(&too_long, &mut NoHook).expect_err("too long");
    assert!(e.to_string().contains("context"), "{e}");
    let e = model
        .forward(&[1, 99_999], &mut NoHook)
        .expect_err("bad id");
    assert!(e.to_string().contains("vocabulary"), "{e}");
    let e = model.tokenizer().expect_err("no tokenizer");
    assert!(e.to_string().contains("tokenizer"), "{e}");
}
