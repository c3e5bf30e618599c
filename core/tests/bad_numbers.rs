//! Numbers out of range in a config.json or GGUF metadata fail at load with the key, the value and
//! the file named; shards of an index stay inside the model folder; a NaN or infinity in the forward
//! pass stops it with the layer, head and token where it first appeared.

use std::path::{Path, PathBuf};

use attnscope_core::attention::NoHook;
use attnscope_core::safetensors_io::load_safetensors_dir;
use attnscope_core::{CoreError, Model, ModelConfig};

fn tiny(arch: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tiny")
        .join(arch)
}

/// A temp copy of the tiny llama folder with `config.json` edited by `edit`.
fn with_config(edit: impl FnOnce(&mut serde_json::Value)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(tiny("llama").join(f), dir.path().join(f)).expect("copy");
    }
    let p = dir.path().join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).expect("read")).expect("json");
    edit(&mut v);
    std::fs::write(&p, v.to_string()).expect("write");
    dir
}

fn load_err(path: &Path) -> String {
    Model::load(path).expect_err("must fail").to_string()
}

#[test]
fn config_json_numbers_out_of_range() {
    let cases: [(&str, serde_json::Value, &str); 9] = [
        ("rope_theta", 0.0.into(), "rope_theta = 0"),
        ("rope_theta", (-5.0).into(), "rope_theta = -5"),
        ("rms_norm_eps", 0.0.into(), "rms_norm_eps = 0"),
        ("rms_norm_eps", (-1e-6).into(), "rms_norm_eps = -0.000001"),
        ("rms_norm_eps", 3.0.into(), "rms_norm_eps = 3"),
        ("num_key_value_heads", 3.into(), "num_attention_heads = 4"),
        ("head_dim", 15.into(), "head_dim = 15"),
        ("vocab_size", 0.into(), "vocab_size = 0"),
        (
            "max_position_embeddings",
            0.into(),
            "max_position_embeddings = 0",
        ),
    ];
    for (key, value, expect) in cases {
        let d = with_config(|v| {
            v[key] = value.clone();
            if key == "rope_theta" {
                v["rope_parameters"]["rope_theta"] = value.clone();
            }
        });
        let e = load_err(d.path());
        assert!(
            e.contains("config.json") && e.contains(expect),
            "{key}: {e}"
        );
    }
}

#[test]
fn hidden_size_must_split_into_heads_without_head_dim() {
    let d = with_config(|v| {
        v.as_object_mut().expect("object").remove("head_dim");
        v["hidden_size"] = 66.into();
    });
    let e = load_err(d.path());
    assert!(
        e.contains("config.json") && e.contains("hidden_size = 66"),
        "{e}"
    );
}

/// Offset just past a length-prefixed GGUF string equal to `s`.
fn after_string(bytes: &[u8], s: &str) -> usize {
    let mut needle = (s.len() as u64).to_le_bytes().to_vec();
    needle.extend_from_slice(s.as_bytes());
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("'{s}' not in fixture"));
    at + needle.len()
}

/// The tiny llama GGUF with the f32 metadata value of `key` set to `value`.
fn gguf_with_f32(key: &str, value: f32) -> (tempfile::TempDir, PathBuf) {
    let mut bytes = std::fs::read(tiny("llama").join("model.gguf")).expect("read");
    let at = after_string(&bytes, key);
    assert_eq!(bytes[at..at + 4], 6u32.to_le_bytes(), "{key} is an f32");
    bytes[at + 4..at + 8].copy_from_slice(&value.to_le_bytes());
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("model.gguf");
    std::fs::write(&path, bytes).expect("write");
    (dir, path)
}

#[test]
fn gguf_rope_theta_and_eps_out_of_range() {
    let cases = [
        (
            "llama.rope.freq_base",
            f32::NAN,
            "llama.rope.freq_base = NaN",
        ),
        ("llama.rope.freq_base", 0.0, "llama.rope.freq_base = 0"),
        (
            "llama.attention.layer_norm_rms_epsilon",
            0.0,
            "llama.attention.layer_norm_rms_epsilon = 0",
        ),
        (
            "llama.attention.layer_norm_rms_epsilon",
            -1.0,
            "llama.attention.layer_norm_rms_epsilon = -1",
        ),
        (
            "llama.attention.layer_norm_rms_epsilon",
            f32::INFINITY,
            "= inf",
        ),
    ];
    for (key, value, expect) in cases {
        let (_d, path) = gguf_with_f32(key, value);
        let e = Model::load(&path).expect_err("must fail");
        assert!(matches!(e, CoreError::BadValue { .. }), "{e:?}");
        let e = e.to_string();
        assert!(
            e.contains(&path.display().to_string()) && e.contains(expect),
            "{key}: {e}"
        );
    }
}

#[test]
fn index_shards_must_stay_inside_the_folder() {
    let outside = tempfile::tempdir().expect("tempdir");
    std::fs::write(outside.path().join("evil.safetensors"), b"x").expect("write");
    let cases = [
        "../../etc/passwd".to_string(),
        "/etc/passwd".to_string(),
        "sub/../../x.safetensors".to_string(),
        "missing.safetensors".to_string(),
    ];
    for shard in cases {
        let d = with_config(|_| {});
        let index = serde_json::json!({"weight_map": {"a": shard}});
        let ip = d.path().join("model.safetensors.index.json");
        std::fs::write(&ip, index.to_string()).expect("write");
        let e = load_err(d.path());
        assert!(
            e.contains("model.safetensors.index.json") && e.contains(&shard),
            "{shard}: {e}"
        );
    }
    // A symbolic link that leads out of the folder is refused too.
    #[cfg(unix)]
    {
        let d = with_config(|_| {});
        std::os::unix::fs::symlink(
            outside.path().join("evil.safetensors"),
            d.path().join("link.safetensors"),
        )
        .expect("symlink");
        let index = serde_json::json!({"weight_map": {"a": "link.safetensors"}});
        let ip = d.path().join("model.safetensors.index.json");
        std::fs::write(&ip, index.to_string()).expect("write");
        let e = load_err(d.path());
        assert!(
            e.contains("link.safetensors") && e.contains("outside"),
            "{e}"
        );
    }
}

#[test]
fn index_with_shards_inside_loads() {
    let d = with_config(|_| {});
    let index = serde_json::json!({"weight_map": {"a": "model.safetensors"}});
    std::fs::write(
        d.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .expect("write");
    Model::load(d.path()).expect("shard inside the folder loads");
}

#[test]
fn forward_stops_at_the_first_non_finite_value() {
    // Huge (finite) V weights overflow the value projection of layer 0 to infinity.
    let dir = tiny("llama");
    let config = ModelConfig::from_hf_json(&dir.join("config.json")).expect("config");
    let mut w = load_safetensors_dir(&dir).expect("weights");
    let v = w
        .tensors
        .get_mut("model.layers.0.self_attn.v_proj.weight")
        .expect("v_proj");
    v.data.fill(3.0e38);
    let model = Model::from_weights(config, w).expect("model");
    let e = model
        .forward(&[1, 2, 3, 4], &mut NoHook)
        .expect_err("must fail");
    assert!(matches!(e, CoreError::NonFinite(_)), "{e:?}");
    let e = e.to_string();
    assert!(
        e.starts_with("layer 0: non-finite value in the attention output (head 0, token 0)"),
        "{e}"
    );
    // Perplexity: the same error, not a NaN perplexity.
    let e = model
        .mean_nll(&[1, 2, 3, 4], &mut NoHook)
        .expect_err("must fail")
        .to_string();
    assert!(e.contains("layer 0"), "{e}");
}

#[test]
fn perplexity_input_is_checked() {
    let model = Model::load(&tiny("llama")).expect("load");
    let hidden = model.forward(&[1, 2, 3], &mut NoHook).expect("forward");
    assert!(model.nll_of_hidden(hidden.view(), &[]).is_err());
    assert!(model
        .nll_of_hidden(hidden.view(), &[1, 2, 3, 4, 5])
        .is_err());
    assert!(model.nll_of_hidden(hidden.view(), &[1, 2, 999]).is_err());
    let (nll, n) = model.nll_of_hidden(hidden.view(), &[1, 2, 3]).expect("nll");
    assert!(nll.is_finite() && n == 2);
}
