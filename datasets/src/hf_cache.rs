//! Models in the local Hugging Face hub cache: `--model ORG/NAME` resolves to
//! `<hub>/models--ORG--NAME/snapshots/<commit>`, the commit read from `refs/<revision>`
//! (`main` unless a revision is given; a full commit hash names its snapshot directly). Files in
//! a snapshot are usually symbolic links to `../../blobs/<hash>`, which the safetensors loader
//! follows. The hub folder is `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
//! `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`, as `huggingface_hub` does.
//! Nothing is downloaded: a model that is not in the cache is an error that says what was looked
//! for and where.
//!
//! ```no_run
//! use attnscope_datasets::hf_cache::HfCache;
//! let dir = HfCache::from_env().resolve("Qwen/Qwen3-0.6B", None).unwrap();
//! let model = attnscope_core::Model::load(&dir).unwrap();
//! ```

use std::path::{Path, PathBuf};

/// Errors of the hub cache lookup.
#[derive(Debug, thiserror::Error)]
pub enum HfCacheError {
    #[error("'{0}' is not a Hugging Face repository id (ORG/NAME)")]
    BadRepoId(String),
    #[error("revision '{0}' is not a branch, tag or commit name")]
    BadRevision(String),
    #[error(
        "{repo} (revision {revision}) is not in the Hugging Face cache: {missing} does not \
         exist (hub folder {hub}, from {hub_from}). The hub is not reached from here: download \
         the model where it is (`huggingface-cli download {repo}`) and copy the cache folder, \
         set HF_HOME or HF_HUB_CACHE to where it is, or pass the model folder itself"
    )]
    NotCached {
        repo: String,
        revision: String,
        missing: PathBuf,
        hub: PathBuf,
        hub_from: String,
    },
    #[error("{}: {msg}", path.display())]
    Broken { path: PathBuf, msg: String },
}

/// The hub cache folder and where its location came from.
#[derive(Debug, Clone)]
pub struct HfCache {
    pub hub: PathBuf,
    /// The variable (or default) that gave `hub`, for messages.
    pub hub_from: String,
}

impl HfCache {
    /// A cache at `hub` (the folder holding `models--*`).
    pub fn at(hub: &Path) -> Self {
        Self {
            hub: hub.to_path_buf(),
            hub_from: "the command line".into(),
        }
    }

    /// The cache `huggingface_hub` would use, from the environment.
    pub fn from_env() -> Self {
        Self::from_vars(&|k| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
    }

    /// As [`HfCache::from_env`] with the variables read through `var`.
    pub fn from_vars(var: &dyn Fn(&str) -> Option<PathBuf>) -> Self {
        let (hub, hub_from) = if let Some(p) = var("HF_HUB_CACHE") {
            (p, "$HF_HUB_CACHE")
        } else if let Some(p) = var("HF_HOME") {
            (p.join("hub"), "$HF_HOME/hub")
        } else if let Some(p) = var("XDG_CACHE_HOME") {
            (p.join("huggingface/hub"), "$XDG_CACHE_HOME/huggingface/hub")
        } else {
            let home = var("HOME").unwrap_or_else(|| PathBuf::from("~"));
            (
                home.join(".cache/huggingface/hub"),
                "the default ~/.cache/huggingface/hub",
            )
        };
        Self {
            hub,
            hub_from: hub_from.into(),
        }
    }

    /// The cache folder of repository `repo` (`models--ORG--NAME`).
    pub fn repo_dir(&self, repo: &str) -> Result<PathBuf, HfCacheError> {
        let bad = || HfCacheError::BadRepoId(repo.to_string());
        let (org, name) = repo.split_once('/').ok_or_else(bad)?;
        let ok = |s: &str| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        if !ok(org) || !ok(name) {
            return Err(bad());
        }
        Ok(self.hub.join(format!("models--{org}--{name}")))
    }

    /// The snapshot folder of `repo` at `revision` (default `main`).
    pub fn resolve(&self, repo: &str, revision: Option<&str>) -> Result<PathBuf, HfCacheError> {
        let dir = self.repo_dir(repo)?;
        let rev = revision.unwrap_or("main");
        let bad_rev = || HfCacheError::BadRevision(rev.to_string());
        if rev.is_empty()
            || rev.starts_with('/')
            || rev
                .split('/')
                .any(|p| p.is_empty() || p == "." || p == "..")
        {
            return Err(bad_rev());
        }
        let not_cached = |missing: PathBuf| HfCacheError::NotCached {
            repo: repo.to_string(),
            revision: rev.to_string(),
            missing,
            hub: self.hub.clone(),
            hub_from: self.hub_from.clone(),
        };
        let is_commit = rev.len() == 40 && rev.chars().all(|c| c.is_ascii_hexdigit());
        let commit = if is_commit && dir.join("snapshots").join(rev).is_dir() {
            rev.to_string()
        } else {
            let r = dir.join("refs").join(rev);
            if !r.is_file() {
                return Err(not_cached(if dir.is_dir() { r } else { dir }));
            }
            let text = std::fs::read_to_string(&r).map_err(|e| HfCacheError::Broken {
                path: r.clone(),
                msg: e.to_string(),
            })?;
            let c = text.trim().to_string();
            if c.len() != 40 || !c.chars().all(|ch| ch.is_ascii_hexdigit()) {
                return Err(HfCacheError::Broken {
                    path: r,
                    msg: format!("holds '{c}', not a commit hash"),
                });
            }
            c
        };
        let snap = dir.join("snapshots").join(&commit);
        if !snap.is_dir() {
            return Err(not_cached(snap));
        }
        let config = snap.join("config.json");
        if !config.exists() {
            return Err(HfCacheError::Broken {
                path: snap,
                msg: "the snapshot has no config.json (or its blob is missing)".into(),
            });
        }
        Ok(snap)
    }
}
