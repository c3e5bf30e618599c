//! Every way a checkpoint can be wrong gives an error that names the file and the problem.

use std::path::{Path, PathBuf};

use attnscope_core::Model;
use safetensors::{serialize, Dtype, SafeTensors};

fn tiny_llama() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny/llama")
}

/// A temp copy of the tiny llama folder whose safetensors file `edit` may rewrite.
fn copy_with(edit: impl FnOnce(&Path)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(tiny_llama().join(f), dir.path().join(f)).expect("copy");
    }
    edit(dir.path());
    dir
}

/// Rewrites `model.safetensors`, replacing tensor `name` with (dtype, shape, bytes).
fn replace_tensor(dir: &Path, name: &str, dtype: Dtype, shape: Vec<usize>, data: Vec<u8>) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).expect("read");
    let st = SafeTensors::deserialize(&bytes).expect("valid");
    let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    for t in owned.iter_mut().filter(|t| t.0 == name) {
        *t = (name.to_string(), dtype, shape.clone(), data.clone());
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = owned
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).expect("view"),
            )
        })
        .collect();
    std::fs::write(&path, serialize(views, None).expect("serialize")).expect("write");
}

fn load_err(dir: &Path) -> String {
    Model::load(dir).expect_err("must fail").to_string()
}

const NORM: &str = "model.layers.0.input_layernorm.weight";

#[test]
fn truncated_safetensors() {
    let d = copy_with(|d| {
        let p = d.join("model.safetensors");
        let b = std::fs::read(&p).expect("read");
        std::fs::write(&p, &b[..b.len() / 2]).expect("write");
    });
    let e = load_err(d.path());
    assert!(
        e.contains("model.safetensors") && e.contains("not a valid safetensors"),
        "{e}"
    );
}

#[test]
fn unsupported_dtype() {
    let d = copy_with(|d| replace_tensor(d, NORM, Dtype::I32, vec![64], vec![0; 256]));
    let e = load_err(d.path());
    assert!(
        e.contains("model.safetensors") && e.contains("I32") && e.contains(NORM),
        "{e}"
    );
}

#[test]
fn shape_disagrees_with_config() {
    let d = copy_with(|d| replace_tensor(d, NORM, Dtype::F32, vec![32], vec![0; 128]));
    let e = load_err(d.path());
    assert!(
        e.contains(NORM) && e.contains("[32]") && e.contains("[64]"),
        "{e}"
    );
}

#[test]
fn nan_weights() {
    let mut data = vec![0u8; 256];
    data[8..12].copy_from_slice(&f32::NAN.to_le_bytes());
    let d = copy_with(|d| replace_tensor(d, NORM, Dtype::F32, vec![64], data));
    let e = load_err(d.path());
    assert!(
        e.contains(NORM) && e.contains("non-finite") && e.contains("element 2"),
        "{e}"
    );
}

#[test]
fn missing_tensor_and_missing_weights_file() {
    let d = copy_with(|d| std::fs::remove_file(d.join("model.safetensors")).expect("rm"));
    let e = load_err(d.path());
    assert!(e.contains("no model.safetensors"), "{e}");
}

#[test]
fn unknown_architecture_and_rope_scaling() {
    let d = copy_with(|d| {
        let p = d.join("config.json");
        let s = std::fs::read_to_string(&p).expect("read");
        std::fs::write(&p, s.replace("\"llama\"", "\"mamba\"")).expect("write");
    });
    let e = load_err(d.path());
    assert!(e.contains("config.json") && e.contains("mamba"), "{e}");
    let d = copy_with(|d| {
        let p = d.join("config.json");
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).expect("read")).expect("json");
        v["rope_scaling"] = serde_json::json!({"rope_type": "longrope", "factor": 4.0});
        std::fs::write(&p, v.to_string()).expect("write");
    });
    let e = load_err(d.path());
    assert!(e.contains("config.json") && e.contains("'longrope'"), "{e}");
}

#[test]
fn not_a_model_path() {
    let e = load_err(Path::new("/nonexistent/model"));
    assert!(
        e.contains("/nonexistent/model") && e.contains("no such model"),
        "{e}"
    );
}
