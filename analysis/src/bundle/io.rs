//! Table files: [`TableWriter`] (shaped `try_new` / `write` / `close`, written to a temporary
//! name and renamed on `close`), [`read_table`], and atomic JSON / byte writes.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::error::{AnalysisError, Result};

/// File format of a bundle's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Apache Parquet, Snappy-compressed (pandas, polars, pyarrow, DuckDB, Spark).
    #[default]
    Parquet,
    /// Arrow IPC file (Feather v2), uncompressed: fastest to write and to memory-map.
    Ipc,
}

impl Format {
    /// File extension of this format.
    pub fn ext(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::Ipc => "arrow",
        }
    }
}

impl std::str::FromStr for Format {
    type Err = AnalysisError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "parquet" => Ok(Format::Parquet),
            "ipc" | "arrow" | "feather" => Ok(Format::Ipc),
            _ => Err(AnalysisError::Input(format!(
                "--format {s}: expected parquet or ipc"
            ))),
        }
    }
}

pub(crate) fn file_err(path: &Path, e: impl std::fmt::Display) -> AnalysisError {
    AnalysisError::File {
        path: path.to_path_buf(),
        msg: e.to_string(),
    }
}

/// The temporary name a file is written under before it is renamed into place.
pub fn partial_name(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".partial");
    PathBuf::from(s)
}

enum Inner {
    Parquet(ArrowWriter<BufWriter<File>>),
    Ipc(arrow_ipc::writer::FileWriter<BufWriter<File>>),
}

/// Writes one table: record batches go to `PATH.partial`, and [`TableWriter::close`] renames it
/// to `PATH`. A writer dropped without `close` removes its partial file, so a table file that
/// exists is always complete.
pub struct TableWriter {
    path: PathBuf,
    tmp: PathBuf,
    inner: Option<Inner>,
    rows: usize,
}

impl std::fmt::Debug for TableWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableWriter")
            .field("path", &self.path)
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl TableWriter {
    /// Starts writing a table of `schema` to `path` in `format`.
    pub fn try_new(path: &Path, schema: SchemaRef, format: Format) -> Result<Self> {
        let tmp = partial_name(path);
        let file = BufWriter::new(File::create(&tmp).map_err(|e| file_err(&tmp, e))?);
        let inner = match format {
            Format::Parquet => {
                let props = WriterProperties::builder()
                    .set_compression(Compression::SNAPPY)
                    .set_created_by(format!("attnscope {}", env!("CARGO_PKG_VERSION")))
                    .build();
                Inner::Parquet(
                    ArrowWriter::try_new(file, schema, Some(props))
                        .map_err(|e| file_err(&tmp, e))?,
                )
            }
            Format::Ipc => Inner::Ipc(
                arrow_ipc::writer::FileWriter::try_new(file, &schema)
                    .map_err(|e| file_err(&tmp, e))?,
            ),
        };
        Ok(Self {
            path: path.to_path_buf(),
            tmp,
            inner: Some(inner),
            rows: 0,
        })
    }

    /// Appends a record batch.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let r = match self.inner.as_mut() {
            Some(Inner::Parquet(w)) => w.write(batch).map_err(|e| e.to_string()),
            Some(Inner::Ipc(w)) => w.write(batch).map_err(|e| e.to_string()),
            None => Err("writer already closed".to_string()),
        };
        r.map_err(|e| file_err(&self.tmp, e))?;
        self.rows += batch.num_rows();
        Ok(())
    }

    /// Finishes the file, syncs it and renames it into place; returns the rows written.
    pub fn close(mut self) -> Result<usize> {
        let inner = self
            .inner
            .take()
            .ok_or_else(|| file_err(&self.tmp, "writer already closed"))?;
        let file = match inner {
            Inner::Parquet(w) => w.into_inner().map_err(|e| file_err(&self.tmp, e))?,
            Inner::Ipc(mut w) => {
                w.finish().map_err(|e| file_err(&self.tmp, e))?;
                w.into_inner().map_err(|e| file_err(&self.tmp, e))?
            }
        };
        let file = file
            .into_inner()
            .map_err(|e| file_err(&self.tmp, e.error()))?;
        file.sync_all().map_err(|e| file_err(&self.tmp, e))?;
        std::fs::rename(&self.tmp, &self.path).map_err(|e| file_err(&self.path, e))?;
        Ok(self.rows)
    }
}

impl Drop for TableWriter {
    fn drop(&mut self) {
        if self.inner.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Reads every record batch of a table file, naming the file in any error. The Arrow and
/// Parquet readers can panic on some damaged files (buffer offsets past the end, bad dictionary
/// pages, ...); such a panic is turned into that error too, and prints nothing.
pub fn read_table(path: &Path, format: Format) -> Result<Vec<RecordBatch>> {
    attnscope_core::contained::catch_quietly(|| read_batches(path, format)).unwrap_or_else(|why| {
        Err(file_err(
            path,
            format!(
                "not a readable {} table (damaged: the reader failed on it: {why})",
                format.ext()
            ),
        ))
    })
}

fn read_batches(path: &Path, format: Format) -> Result<Vec<RecordBatch>> {
    let file = File::open(path).map_err(|e| file_err(path, e))?;
    let bad = |e: &dyn std::fmt::Display| {
        file_err(
            path,
            format!(
                "not a readable {} table (truncated or corrupt?): {e}",
                format.ext()
            ),
        )
    };
    match format {
        Format::Parquet => {
            let reader = ParquetRecordBatchReaderBuilder::try_new(file)
                .map_err(|e| bad(&e))?
                .with_batch_size(65536)
                .build()
                .map_err(|e| bad(&e))?;
            reader.map(|b| b.map_err(|e| bad(&e))).collect()
        }
        Format::Ipc => {
            let reader = arrow_ipc::reader::FileReader::try_new(BufReader::new(file), None)
                .map_err(|e| bad(&e))?;
            reader.map(|b| b.map_err(|e| bad(&e))).collect()
        }
    }
}

/// Writes bytes to `path` through `PATH.partial` and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = partial_name(path);
    let mut f = File::create(&tmp).map_err(|e| file_err(&tmp, e))?;
    f.write_all(bytes).map_err(|e| file_err(&tmp, e))?;
    f.sync_all().map_err(|e| file_err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| file_err(path, e))
}

/// Writes `value` as pretty JSON through a temporary file and a rename.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_vec_pretty(value).map_err(|e| file_err(path, e))?;
    write_atomic(path, &text)
}

/// Reads a JSON file, naming the file in any error.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|e| file_err(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| file_err(path, format!("invalid or truncated: {e}")))
}
