//! Text sources: fetched corpora (`attnscope fetch canterbury`), plain text files, JSONL files
//! with a `"text"` field, and stdin.
//!
//! Text is decoded as UTF-8 (a leading BOM is dropped); an invalid byte is an error that names the
//! file and the byte offset, unless the Latin-1 fallback is asked for. Line ends are normalized to
//! `\n` unless `keep_crlf` is set.
//!
//! ```no_run
//! use attnscope_datasets::text::{self, TextOptions, TextSource};
//! # fn main() -> Result<(), attnscope_datasets::DatasetError> {
//! let alice = text::load(&TextSource::parse("alice29")?, &TextOptions::default())?;
//! let mine = text::load(&TextSource::parse("notes.jsonl")?, &TextOptions::default())?;
//! println!("{} chars, {} chars", alice.text.chars().count(), mine.text.len());
//! # Ok(()) }
//! ```

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{io_err, DatasetError, Result};
use crate::fetch;

/// The haystack the synthetic tasks use unless told otherwise: the four English texts of the
/// `canterbury` corpus, one after the other (about 280k tokens).
pub const DEFAULT_HAYSTACK: &str = "canterbury";

/// Where a text comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextSource {
    /// A fetched corpus (`canterbury`: all its files in order) or one of its files by stem
    /// (`alice29`).
    Corpus(String),
    /// A plain text file.
    File(PathBuf),
    /// A JSONL file: one object per line, its text field (default `"text"`) joined by blank lines.
    Jsonl(PathBuf),
    /// Standard input, read to the end.
    Stdin,
}

/// How to read a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextOptions {
    /// Read bytes that are not valid UTF-8 as Latin-1 (ISO 8859-1) instead of failing.
    pub latin1: bool,
    /// Keep `\r\n` line ends (default: normalize them to `\n`).
    pub keep_crlf: bool,
    /// The field of a JSONL object that holds the text.
    pub jsonl_field: String,
}

impl Default for TextOptions {
    fn default() -> Self {
        Self {
            latin1: false,
            keep_crlf: false,
            jsonl_field: "text".into(),
        }
    }
}

/// A loaded text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Text {
    /// The corpus name, file path or `stdin`.
    pub name: String,
    pub text: String,
    /// Things the user should know (e.g. a Latin-1 fallback was used).
    pub warnings: Vec<String>,
}

/// A named text the tool knows: (name, description, cached?).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KnownText {
    pub name: String,
    pub description: String,
    /// The `attnscope fetch` name that brings it.
    pub corpus: String,
    pub cached: bool,
}

/// Every named text: each corpus (all its files) and each of its files by stem.
pub fn known_texts() -> Vec<KnownText> {
    let mut out = Vec::new();
    for c in fetch::corpora() {
        let files: Vec<&str> = c.file_names().collect();
        out.push(KnownText {
            name: c.name.to_string(),
            description: format!("all of: {}", files.join(", ")),
            corpus: c.name.to_string(),
            cached: files.iter().all(|f| fetch::corpus_file(f).is_some()),
        });
        for f in files {
            out.push(KnownText {
                name: stem(f).to_string(),
                description: format!("{f} from {}", c.name),
                corpus: c.name.to_string(),
                cached: fetch::corpus_file(f).is_some(),
            });
        }
    }
    out
}

fn stem(file: &str) -> &str {
    file.rsplit_once('.').map_or(file, |(s, _)| s)
}

impl TextSource {
    /// `-` is stdin; a known corpus or corpus file name is that text; `jsonl:PATH` or a path
    /// ending in `.jsonl` is JSONL; any other existing path is a plain text file.
    pub fn parse(spec: &str) -> Result<Self> {
        if spec == "-" {
            return Ok(Self::Stdin);
        }
        if known_texts().iter().any(|k| k.name == spec) {
            return Ok(Self::Corpus(spec.to_string()));
        }
        if let Some(p) = spec.strip_prefix("jsonl:") {
            return Ok(Self::Jsonl(p.into()));
        }
        let path = Path::new(spec);
        if path.is_file() {
            let jsonl = path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("jsonl"));
            return Ok(if jsonl {
                Self::Jsonl(path.into())
            } else {
                Self::File(path.into())
            });
        }
        let known: Vec<String> = known_texts().into_iter().map(|k| k.name).collect();
        Err(DatasetError::UnknownSource {
            spec: spec.to_string(),
            known: known.join(", "),
        })
    }

    /// A short name for summaries and sample metadata.
    pub fn name(&self) -> String {
        match self {
            Self::Corpus(n) => n.clone(),
            Self::File(p) | Self::Jsonl(p) => p.display().to_string(),
            Self::Stdin => "stdin".into(),
        }
    }
}

/// Loads a text.
pub fn load(src: &TextSource, opts: &TextOptions) -> Result<Text> {
    match src {
        TextSource::Corpus(name) => load_corpus(name, opts),
        TextSource::File(p) => {
            let bytes = std::fs::read(p).map_err(io_err(p))?;
            from_bytes(&bytes, &p.display().to_string(), opts)
        }
        TextSource::Jsonl(p) => {
            let bytes = std::fs::read(p).map_err(io_err(p))?;
            let origin = p.display().to_string();
            let mut t = from_bytes(&bytes, &origin, opts)?;
            // JSON strings may hold `\r\n` as escapes, which decoding the file cannot see.
            t.text = normalize_line_ends(jsonl_text(&t.text, &origin, &opts.jsonl_field)?, opts);
            Ok(t)
        }
        TextSource::Stdin => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .lock()
                .read_to_end(&mut bytes)
                .map_err(io_err("stdin"))?;
            from_bytes(&bytes, "stdin", opts)
        }
    }
}

fn load_corpus(name: &str, opts: &TextOptions) -> Result<Text> {
    let known = known_texts();
    let Some(k) = known.iter().find(|k| k.name == name) else {
        return Err(DatasetError::UnknownSource {
            spec: name.to_string(),
            known: known
                .iter()
                .map(|k| k.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    };
    let files: Vec<String> = match fetch::corpora().iter().find(|c| c.name == name) {
        Some(c) => c.file_names().map(str::to_string).collect(),
        None => vec![name.to_string()],
    };
    let mut parts = Vec::new();
    let mut warnings = Vec::new();
    for f in &files {
        let path = fetch::corpus_file(f).ok_or_else(|| DatasetError::MissingCorpus {
            name: f.clone(),
            corpus: k.corpus.clone(),
            cache: fetch::cache_home(),
        })?;
        let bytes = std::fs::read(&path).map_err(io_err(&path))?;
        let t = from_bytes(&bytes, &path.display().to_string(), opts)?;
        warnings.extend(t.warnings);
        parts.push(t.text.trim_end().to_string());
    }
    Ok(Text {
        name: name.to_string(),
        text: parts.join("\n\n"),
        warnings,
    })
}

/// Decodes `bytes` read from `origin` (UTF-8, BOM dropped; Latin-1 when `opts.latin1` and the
/// bytes are not UTF-8), normalizes line ends and refuses empty text.
pub fn from_bytes(bytes: &[u8], origin: &str, opts: &TextOptions) -> Result<Text> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut warnings = Vec::new();
    let text = match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(e) if opts.latin1 => {
            warnings.push(format!(
                "{origin}: invalid UTF-8 at byte offset {}; read as Latin-1",
                e.valid_up_to()
            ));
            bytes.iter().map(|&b| char::from(b)).collect()
        }
        Err(e) => {
            return Err(DatasetError::Encoding {
                origin: origin.to_string(),
                offset: e.valid_up_to(),
            })
        }
    };
    let text = normalize_line_ends(text, opts);
    if text.trim().is_empty() {
        return Err(DatasetError::Empty {
            origin: origin.to_string(),
        });
    }
    Ok(Text {
        name: origin.to_string(),
        text,
        warnings,
    })
}

/// `\r\n` line ends turned into `\n`, unless `opts.keep_crlf`. Every text this crate reads goes
/// through here (by [`from_bytes`], and once more for the strings of a JSONL file).
pub fn normalize_line_ends(text: String, opts: &TextOptions) -> String {
    if !opts.keep_crlf && text.contains('\r') {
        text.replace("\r\n", "\n")
    } else {
        text
    }
}

/// The `field` strings of a JSONL document, joined by blank lines. Blank lines are skipped.
pub fn jsonl_text(doc: &str, origin: &str, field: &str) -> Result<String> {
    let mut parts = Vec::new();
    for (i, line) in doc.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let fmt = |msg: String| DatasetError::Format {
            origin: format!("{origin}:{}", i + 1),
            msg,
        };
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| fmt(format!("not a JSON object: {e}")))?;
        match v.get(field) {
            Some(serde_json::Value::String(s)) => parts.push(s.clone()),
            Some(_) => return Err(fmt(format!("field \"{field}\" is not a string"))),
            None => return Err(fmt(format!("no \"{field}\" field"))),
        }
    }
    let text = parts.join("\n\n");
    if text.trim().is_empty() {
        return Err(DatasetError::Empty {
            origin: origin.to_string(),
        });
    }
    Ok(text)
}
