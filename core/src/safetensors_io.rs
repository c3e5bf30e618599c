//! Hugging Face folders: `config.json` + `model.safetensors` (or shards listed in
//! `model.safetensors.index.json`), memory-mapped and converted to f32 (from F32, F16 or BF16).

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use memmap2::Mmap;
use rayon::prelude::*;
use safetensors::{Dtype, SafeTensors};

use crate::error::{CoreError, Result};
use crate::tensor::{HostTensor, Weights};

/// The safetensors files of a HF folder, in a stable order.
///
/// Shards named by `model.safetensors.index.json` must be plain relative paths that stay inside
/// the folder once symbolic links are resolved (`../../etc/passwd` or an absolute path is an error
/// naming the index file and the shard); a shard that does not exist is an error too.
pub fn shard_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let text = std::fs::read_to_string(&index).map_err(|e| CoreError::io(&index, e))?;
        return shards_of_index(dir, &index, &text);
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    Err(CoreError::format(
        dir,
        "no model.safetensors and no model.safetensors.index.json in this folder",
    ))
}

/// The shard files listed in the `weight_map` of index document `text` (read from `index` in
/// folder `dir`), checked to lie inside `dir`.
pub fn shards_of_index(dir: &Path, index: &Path, text: &str) -> Result<Vec<PathBuf>> {
    let v: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| CoreError::format(index, format!("invalid JSON: {e}")))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| CoreError::format(index, "no 'weight_map' object"))?;
    let mut files = BTreeSet::new();
    for (tensor, f) in map {
        let f = f.as_str().ok_or_else(|| {
            CoreError::format(
                index,
                format!("'weight_map' entry of tensor '{tensor}' is {f}, not a file name"),
            )
        })?;
        files.insert(f);
    }
    if files.is_empty() {
        return Err(CoreError::format(index, "'weight_map' lists no file"));
    }
    let root = dir.canonicalize().map_err(|e| CoreError::io(dir, e))?;
    let blobs = hf_cache_blobs(&root);
    files
        .into_iter()
        .map(|f| shard_inside(&root, blobs.as_deref(), index, f).map(|_| dir.join(f)))
        .collect()
}

/// The `blobs` folder of a Hugging Face hub cache repository when `root` (canonical) is one of
/// its snapshots (`models--ORG--NAME/snapshots/REV`): files there are symbolic links to
/// `../../blobs/HASH`, which a shard may then resolve to.
fn hf_cache_blobs(root: &Path) -> Option<PathBuf> {
    let snapshots = root.parent()?;
    let repo = snapshots.parent()?;
    let named = |p: &Path, f: &dyn Fn(&str) -> bool| p.file_name()?.to_str().map(f);
    let layout =
        named(snapshots, &|n| n == "snapshots")? && named(repo, &|n| n.starts_with("models--"))?;
    let blobs = repo.join("blobs").canonicalize().ok()?;
    (layout && blobs.is_dir()).then_some(blobs)
}

/// The canonical path of `root.join(shard)`, after checking that `shard` is a relative path that,
/// canonicalized, stays under the canonical folder `root` (or the hub cache's `blobs` folder of
/// a snapshot, see [`hf_cache_blobs`]).
fn shard_inside(root: &Path, blobs: Option<&Path>, index: &Path, shard: &str) -> Result<PathBuf> {
    let outside = |why: &str| {
        CoreError::format(
            index,
            format!("shard '{shard}' {why}; shards must be files inside the model folder"),
        )
    };
    let rel = Path::new(shard);
    if shard.is_empty() || rel.is_absolute() || rel.has_root() {
        return Err(outside("is not a relative file name"));
    }
    if rel
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(outside("climbs out of the folder with '..'"));
    }
    let path = root.join(rel);
    let real = path.canonicalize().map_err(|e| {
        CoreError::format(
            index,
            format!("shard '{shard}' cannot be opened ({}): {e}", path.display()),
        )
    })?;
    if !real.starts_with(root) && !blobs.is_some_and(|b| real.starts_with(b)) {
        return Err(outside(&format!(
            "resolves to {}, outside {}",
            real.display(),
            root.display()
        )));
    }
    Ok(real)
}

fn convert(path: &Path, name: &str, dtype: Dtype, bytes: &[u8]) -> Result<Vec<f32>> {
    let chunks = |w: usize| bytes.chunks_exact(w);
    Ok(match dtype {
        Dtype::F32 => chunks(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => chunks(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => chunks(2)
            .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        other => {
            return Err(CoreError::unsupported(
                path,
                format!("dtype {other:?} of tensor '{name}' (F32, F16 and BF16 are supported)"),
            ))
        }
    })
}

/// Loads every tensor of the folder's safetensors files as f32.
pub fn load_safetensors_dir(dir: &Path) -> Result<Weights> {
    let mut weights = Weights::new(dir);
    for path in shard_files(dir)? {
        let file = File::open(&path).map_err(|e| CoreError::io(&path, e))?;
        // SAFETY: the file is opened read-only; a concurrent writer would be a user error that at
        // worst yields wrong weights, which the non-finite check in `Weights::take` partly catches.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| CoreError::io(&path, e))?;
        let st = SafeTensors::deserialize(&mmap)
            .map_err(|e| CoreError::format(&path, format!("not a valid safetensors file: {e}")))?;
        let names = st.names();
        let loaded: Vec<Result<(String, String, HostTensor)>> = names
            .par_iter()
            .map(|name| {
                let view = st
                    .tensor(name)
                    .map_err(|e| CoreError::format(&path, format!("tensor '{name}': {e}")))?;
                let data = convert(&path, name, view.dtype(), view.data())?;
                let t = HostTensor::new(view.shape().to_vec(), data).ok_or_else(|| {
                    CoreError::format(&path, format!("tensor '{name}': size does not match shape"))
                })?;
                Ok((name.to_string(), format!("{:?}", view.dtype()), t))
            })
            .collect();
        for r in loaded {
            let (name, dtype, t) = r?;
            *weights.dtypes.entry(dtype).or_default() += 1;
            if weights.tensors.insert(name.clone(), t).is_some() {
                return Err(CoreError::format(
                    &path,
                    format!("tensor '{name}' appears in more than one shard"),
                ));
            }
        }
    }
    Ok(weights)
}
