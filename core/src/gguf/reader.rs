//! The GGUF container (versions 2 and 3): header, metadata key/values, tensor directory, and
//! tensor data read from a memory map. Every malformed input is a [`CoreError`] naming the file.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::dequant::{dequantize, GgmlType};
use super::value::{GgufMetadata, GgufValue};
use crate::error::{CoreError, Result};
use crate::tensor::HostTensor;

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml's GGML_MAX_DIMS.
const MAX_DIMS: u32 = 4;
/// Nesting limit for arrays of arrays (ggml itself allows none deeper than this in practice).
const MAX_DEPTH: usize = 8;

/// One entry of the tensor directory.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensorInfo {
    pub name: String,
    /// Dimensions in ggml order: `dims[0]` (ne0) varies fastest. PyTorch order is the reverse.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Byte offset of the data, relative to [`GgufFile::data_offset`].
    pub offset: u64,
}

impl GgufTensorInfo {
    /// Number of elements (checked for overflow when the file is opened).
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Shape in PyTorch order (outermost first).
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    /// Bytes the data occupies.
    pub fn n_bytes(&self) -> u64 {
        let ty = self.ggml_type;
        self.n_elements() / ty.block_size() as u64 * ty.type_size() as u64
    }
}

/// An opened GGUF file: parsed header and directory plus a memory map of the data.
#[derive(Debug)]
pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    pub metadata: GgufMetadata,
    pub tensors: Vec<GgufTensorInfo>,
    /// Data alignment (`general.alignment`, default 32).
    pub alignment: u64,
    /// Absolute file offset where tensor data starts.
    pub data_offset: u64,
    mmap: Mmap,
}

/// A bounds-checked little-endian cursor over the mapped bytes.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn err(&self, msg: impl Into<String>) -> CoreError {
        CoreError::format(self.path, msg.into())
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let remaining = self.buf.len() - self.pos;
        if n > remaining {
            return Err(self.err(format!(
                "truncated GGUF: {what} needs {n} bytes at offset {}, only {remaining} left",
                self.pos
            )));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn arr<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        self.arr(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        self.arr(what).map(u64::from_le_bytes)
    }

    /// A count or length that must fit in the remaining bytes at `min_size` bytes per item.
    fn count(&mut self, what: &str, min_size: usize) -> Result<usize> {
        let n = self.u64(what)?;
        let remaining = (self.buf.len() - self.pos) as u64;
        if n.saturating_mul(min_size.max(1) as u64) > remaining {
            return Err(self.err(format!(
                "absurd {what} {n} at offset {}: only {remaining} bytes remain \
                 (truncated or corrupt GGUF)",
                self.pos - 8
            )));
        }
        Ok(n as usize)
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.count(&format!("{what} length"), 1)?;
        let at = self.pos;
        let bytes = self.take(n, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|e| self.err(format!("{what} at offset {at} is not valid UTF-8 ({e})")))
    }

    fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<GgufValue> {
        Ok(match ty {
            0 => GgufValue::U8(self.arr::<1>(key)?[0]),
            1 => GgufValue::I8(self.arr::<1>(key)?[0] as i8),
            2 => GgufValue::U16(u16::from_le_bytes(self.arr(key)?)),
            3 => GgufValue::I16(i16::from_le_bytes(self.arr(key)?)),
            4 => GgufValue::U32(self.u32(key)?),
            5 => GgufValue::I32(i32::from_le_bytes(self.arr(key)?)),
            6 => GgufValue::F32(f32::from_le_bytes(self.arr(key)?)),
            7 => match self.arr::<1>(key)?[0] {
                0 => GgufValue::Bool(false),
                1 => GgufValue::Bool(true),
                b => return Err(self.err(format!("metadata '{key}': invalid bool byte {b}"))),
            },
            8 => GgufValue::String(self.string(&format!("string value of '{key}'"))?),
            9 => {
                if depth >= MAX_DEPTH {
                    return Err(self.err(format!("metadata '{key}': arrays nested too deep")));
                }
                let elem = self.u32(key)?;
                let min = min_value_size(elem).ok_or_else(|| {
                    self.err(format!("metadata '{key}': unknown array type {elem}"))
                })?;
                let n = self.count(&format!("array count of '{key}'"), min)?;
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.value(elem, key, depth + 1)?);
                }
                GgufValue::Array(v)
            }
            10 => GgufValue::U64(self.u64(key)?),
            11 => GgufValue::I64(i64::from_le_bytes(self.arr(key)?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.arr(key)?)),
            other => return Err(self.err(format!("metadata '{key}': unknown value type {other}"))),
        })
    }
}

/// The smallest encoded size of a value of GGUF type `ty`, `None` for an unknown type.
fn min_value_size(ty: u32) -> Option<usize> {
    Some(match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 | 10..=12 => 8,
        9 => 12,
        _ => return None,
    })
}

impl GgufFile {
    /// Opens and parses a GGUF v2/v3 file; tensor data stays memory-mapped.
    pub fn open(path: &Path) -> Result<GgufFile> {
        let file = File::open(path).map_err(|e| CoreError::io(path, e))?;
        let len = file.metadata().map_err(|e| CoreError::io(path, e))?.len();
        if len < 24 {
            return Err(CoreError::format(
                path,
                format!("truncated GGUF: {len} bytes, shorter than the 24-byte header"),
            ));
        }
        // SAFETY: the map is read-only and private to this struct; like every mmap-based
        // loader we assume no other process truncates the model file while it is open.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| CoreError::io(path, e))?;
        let mut c = Cursor {
            buf: &mmap,
            pos: 0,
            path,
        };
        let magic = c.arr::<4>("magic")?;
        if &magic != MAGIC {
            return Err(c.err(format!(
                "bad magic {magic:02x?} (expected \"GGUF\"); not a GGUF file"
            )));
        }
        let version = c.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(c.err(format!(
                "unsupported GGUF version {version} (versions 2 and 3 are supported)"
            )));
        }
        // A tensor info takes at least 8 + 4 + 8 + 4 + 8 bytes, a key/value at least 8 + 4 + 1.
        let n_tensors = c.count("tensor count", 32)?;
        let n_kv = c.count("metadata key/value count", 13)?;

        let mut metadata = GgufMetadata::new();
        for _ in 0..n_kv {
            let key = c.string("metadata key")?;
            let ty = c.u32(&key)?;
            let value = c.value(ty, &key, 0)?;
            if metadata.insert(key.clone(), value).is_some() {
                return Err(c.err(format!("duplicate metadata key '{key}'")));
            }
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() => a,
                _ => return Err(c.err(format!("general.alignment {v:?} is not a power of two"))),
            },
        };

        let mut tensors = Vec::with_capacity(n_tensors);
        let mut names = HashSet::with_capacity(n_tensors);
        for _ in 0..n_tensors {
            let info = read_tensor_info(&mut c, alignment)?;
            if !names.insert(info.name.clone()) {
                return Err(c.err(format!("duplicate tensor '{}'", info.name)));
            }
            tensors.push(info);
        }
        let data_offset = (c.pos as u64).div_ceil(alignment) * alignment;
        for t in &tensors {
            let end = data_offset
                .checked_add(t.offset)
                .and_then(|s| s.checked_add(t.n_bytes()));
            if end.is_none_or(|e| e > len) {
                return Err(c.err(format!(
                    "truncated GGUF: tensor '{}' ({} bytes at offset {}) extends past the end \
                     of the file ({len} bytes)",
                    t.name,
                    t.n_bytes(),
                    data_offset.saturating_add(t.offset)
                )));
            }
        }
        Ok(GgufFile {
            path: path.to_path_buf(),
            version,
            metadata,
            tensors,
            alignment,
            data_offset,
            mmap,
        })
    }

    /// A metadata value by key.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    /// A tensor's directory entry by name.
    pub fn tensor_info(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The raw stored bytes of a tensor.
    pub fn tensor_bytes(&self, info: &GgufTensorInfo) -> Result<&[u8]> {
        let start = self.data_offset.checked_add(info.offset);
        let end = start.and_then(|s| s.checked_add(info.n_bytes()));
        match (start, end) {
            (Some(s), Some(e)) if e <= self.mmap.len() as u64 => {
                Ok(&self.mmap[s as usize..e as usize])
            }
            _ => Err(CoreError::format(
                &self.path,
                format!("tensor '{}' extends past the end of the file", info.name),
            )),
        }
    }

    /// A tensor dequantized to f32, shape in PyTorch order (`dims` reversed).
    pub fn tensor_f32(&self, info: &GgufTensorInfo) -> Result<HostTensor> {
        let bytes = self.tensor_bytes(info)?;
        let n = info.n_elements() as usize;
        let data = dequantize(info.ggml_type, bytes, n)
            .map_err(|e| CoreError::format(&self.path, format!("tensor '{}': {e}", info.name)))?;
        HostTensor::new(info.shape(), data).ok_or_else(|| {
            CoreError::format(
                &self.path,
                format!("tensor '{}': shape mismatch", info.name),
            )
        })
    }
}

fn read_tensor_info(c: &mut Cursor<'_>, alignment: u64) -> Result<GgufTensorInfo> {
    let name = c.string("tensor name")?;
    let n_dims = c.u32(&format!("dimension count of tensor '{name}'"))?;
    if n_dims == 0 || n_dims > MAX_DIMS {
        return Err(c.err(format!(
            "tensor '{name}' has {n_dims} dimensions (1..={MAX_DIMS} allowed)"
        )));
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    for _ in 0..n_dims {
        dims.push(c.u64(&format!("dimensions of tensor '{name}'"))?);
    }
    let type_id = c.u32(&format!("type of tensor '{name}'"))?;
    let ggml_type = GgmlType::from_id(type_id).ok_or_else(|| {
        c.err(format!(
            "tensor '{name}' has unknown ggml type id {type_id}"
        ))
    })?;
    let offset = c.u64(&format!("offset of tensor '{name}'"))?;
    let n_elements = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= isize::MAX as u64 / 4)
        .ok_or_else(|| c.err(format!("tensor '{name}' has absurd dimensions {dims:?}")))?;
    let bs = ggml_type.block_size() as u64;
    if dims[0] % bs != 0 {
        return Err(c.err(format!(
            "tensor '{name}': row length {} is not a multiple of the {} block size {bs} \
             ({n_elements} elements)",
            dims[0],
            ggml_type.name()
        )));
    }
    if offset % alignment != 0 {
        return Err(c.err(format!(
            "tensor '{name}': data offset {offset} is not aligned to {alignment}"
        )));
    }
    Ok(GgufTensorInfo {
        name,
        dims,
        ggml_type,
        offset,
    })
}
