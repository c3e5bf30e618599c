//! Captured post-RoPE Q/K/V of chosen layers as safetensors, so the viewer can re-run selection
//! methods live. One file per input, `qkv-input{I}.safetensors`, with tensors
//! `layer{L}.q` `[n_heads, n, head_dim]`, `layer{L}.k` and `layer{L}.v` `[n_kv_heads, n, head_dim]`
//! (f32, head-major) and metadata `format = attnscope-qkv`, `input`, `layers`.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};

use super::io::{file_err, write_atomic};
use crate::error::Result;
pub use crate::results::SavedLayer;

fn le_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Writes the layers of one input to `path` (temporary name, then renamed).
pub fn write_qkv(path: &Path, input: usize, layers: &[SavedLayer]) -> Result<()> {
    let mut bufs: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for l in layers {
        for (name, heads, data) in [
            ("q", l.n_heads, &l.q),
            ("k", l.n_kv_heads, &l.k),
            ("v", l.n_kv_heads, &l.v),
        ] {
            bufs.push((
                format!("layer{}.{name}", l.layer),
                vec![heads, l.n, l.head_dim],
                le_bytes(data),
            ));
        }
    }
    let views = bufs
        .iter()
        .map(|(n, shape, b)| {
            TensorView::new(Dtype::F32, shape.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| file_err(path, e))
        })
        .collect::<Result<Vec<_>>>()?;
    let layer_list: Vec<String> = layers.iter().map(|l| l.layer.to_string()).collect();
    let meta = HashMap::from([
        ("format".to_string(), "attnscope-qkv".to_string()),
        ("input".to_string(), input.to_string()),
        ("layers".to_string(), layer_list.join(",")),
    ]);
    let bytes = safetensors::serialize(views, Some(meta)).map_err(|e| file_err(path, e))?;
    write_atomic(path, &bytes)
}

/// Reads the layers of a file written by [`write_qkv`].
pub fn read_qkv(path: &Path) -> Result<Vec<SavedLayer>> {
    let bytes = std::fs::read(path).map_err(|e| file_err(path, e))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| file_err(path, format!("not a readable safetensors file: {e}")))?;
    let (_, meta) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| file_err(path, e))?;
    let layers: Vec<usize> = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("layers"))
        .map(|s| s.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_default();
    let get = |name: String| -> Result<(Vec<usize>, Vec<f32>)> {
        let t = st
            .tensor(&name)
            .map_err(|e| file_err(path, format!("tensor {name}: {e}")))?;
        if t.dtype() != Dtype::F32 {
            return Err(file_err(path, format!("tensor {name} is not f32")));
        }
        let v = t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok((t.shape().to_vec(), v))
    };
    layers
        .into_iter()
        .map(|l| {
            let (qs, q) = get(format!("layer{l}.q"))?;
            let (ks, k) = get(format!("layer{l}.k"))?;
            let (_, v) = get(format!("layer{l}.v"))?;
            if qs.len() != 3 || ks.len() != 3 {
                return Err(file_err(path, format!("layer {l}: expected 3-d tensors")));
            }
            Ok(SavedLayer {
                layer: l,
                n_heads: qs[0],
                n_kv_heads: ks[0],
                head_dim: qs[2],
                n: qs[1],
                q,
                k,
                v,
            })
        })
        .collect()
}
