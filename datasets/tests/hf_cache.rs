//! Hugging Face hub cache resolution on a synthetic cache in the hub layout: `refs/<name>` holding
//! a commit, `snapshots/<commit>/` with symbolic links to `../../blobs/<hash>`, a sharded
//! model (index + two shards, core's tiny Qwen2 fixture) that must load through the links.

use std::fs;
use std::path::{Path, PathBuf};

use attnscope_core::{attention::NoHook, Model};
use attnscope_datasets::hf_cache::{HfCache, HfCacheError};

const MAIN: &str = "0123456789abcdef0123456789abcdef01234567";
const OLD: &str = "89abcdef0123456789abcdef0123456789abcdef";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/tests/fixtures/tiny/qwen2")
}

/// `hub/models--Qwen--Tiny` with `main` -> MAIN (every file of the fixture) and the tag
/// `v0` -> OLD (config.json only, its blob missing).
fn synthetic_hub(hub: &Path) -> PathBuf {
    let repo = hub.join("models--Qwen--Tiny");
    let blobs = repo.join("blobs");
    let snap = repo.join("snapshots").join(MAIN);
    fs::create_dir_all(&blobs).expect("blobs");
    fs::create_dir_all(&snap).expect("snapshot");
    fs::create_dir_all(repo.join("refs")).expect("refs");
    for (i, entry) in fs::read_dir(fixture()).expect("fixture").enumerate() {
        let path = entry.expect("entry").path();
        let name = path.file_name().expect("name").to_owned();
        let blob = format!("{i:040x}");
        fs::copy(&path, blobs.join(&blob)).expect("copy");
        std::os::unix::fs::symlink(format!("../../blobs/{blob}"), snap.join(name)).expect("link");
    }
    fs::write(repo.join("refs/main"), format!("{MAIN}\n")).expect("ref");
    fs::write(repo.join("refs/v0"), OLD).expect("tag");
    let old = repo.join("snapshots").join(OLD);
    fs::create_dir_all(&old).expect("old snapshot");
    std::os::unix::fs::symlink("../../blobs/missing", old.join("config.json")).expect("link");
    repo
}

#[test]
fn a_cached_model_resolves_and_loads_through_the_blob_links() {
    let tmp = tempfile::tempdir().expect("tmp");
    let repo = synthetic_hub(tmp.path());
    let cache = HfCache::at(tmp.path());
    let dir = cache.resolve("Qwen/Tiny", None).expect("main");
    assert_eq!(dir, repo.join("snapshots").join(MAIN));
    assert_eq!(
        cache.resolve("Qwen/Tiny", Some(MAIN)).expect("by commit"),
        dir
    );
    let cached = Model::load(&dir).expect("load the snapshot (sharded, symbolic links)");
    let direct = Model::load(&fixture()).expect("load the fixture folder");
    let ids = [1u32, 5, 9, 33, 2];
    let a = cached.forward(&ids, &mut NoHook).expect("forward");
    let b = direct.forward(&ids, &mut NoHook).expect("forward");
    assert_eq!(a, b);
}

#[test]
fn what_is_missing_is_named_with_where_it_was_looked_for() {
    let tmp = tempfile::tempdir().expect("tmp");
    let repo = synthetic_hub(tmp.path());
    let vars = |k: &str| (k == "HF_HOME").then(|| tmp.path().join("home"));
    let cache = HfCache::from_vars(&vars);
    assert_eq!(cache.hub, tmp.path().join("home/hub"));
    let e = cache.resolve("Qwen/Qwen3-0.6B", None).expect_err("absent");
    assert!(matches!(e, HfCacheError::NotCached { .. }), "{e}");
    let msg = e.to_string();
    for part in [
        "Qwen/Qwen3-0.6B",
        "revision main",
        "models--Qwen--Qwen3-0.6B",
        "$HF_HOME/hub",
        "huggingface-cli download",
    ] {
        assert!(msg.contains(part), "{part}: {msg}");
    }
    let cache = HfCache::at(tmp.path());
    // A branch the cache does not have: the ref file it looked for is named.
    let e = cache
        .resolve("Qwen/Tiny", Some("dev"))
        .expect_err("no dev")
        .to_string();
    assert!(
        e.contains(&repo.join("refs/dev").display().to_string()),
        "{e}"
    );
    // A tag whose snapshot lost its blob.
    let e = cache
        .resolve("Qwen/Tiny", Some("v0"))
        .expect_err("blob missing")
        .to_string();
    assert!(e.contains(OLD) && e.contains("config.json"), "{e}");
    // A ref that points at a snapshot that is not there.
    fs::write(repo.join("refs/gone"), "f".repeat(40)).expect("ref");
    let e = cache
        .resolve("Qwen/Tiny", Some("gone"))
        .expect_err("no snapshot");
    assert!(
        matches!(e, HfCacheError::NotCached { ref missing, .. } if missing.ends_with("f".repeat(40)))
    );
    fs::write(repo.join("refs/junk"), "not a hash").expect("ref");
    let e = cache
        .resolve("Qwen/Tiny", Some("junk"))
        .expect_err("junk")
        .to_string();
    assert!(e.contains("not a commit hash"), "{e}");
}

#[test]
fn bad_ids_and_revisions_are_refused_before_any_lookup() {
    let cache = HfCache::at(Path::new("/nonexistent"));
    for id in ["Qwen", "a/b/c", "../x", "Qwen/..", "/Qwen3", "Qwen/Qwen 3"] {
        let e = cache.resolve(id, None).expect_err(id);
        assert!(matches!(e, HfCacheError::BadRepoId(_)), "{id}: {e}");
    }
    for rev in ["", "../main", "a//b", "/abs"] {
        let e = cache.resolve("Qwen/Tiny", Some(rev)).expect_err(rev);
        assert!(matches!(e, HfCacheError::BadRevision(_)), "{rev}: {e}");
    }
}

#[test]
fn the_hub_folder_follows_huggingface_hub() {
    let v = |pairs: &'static [(&'static str, &'static str)]| {
        move |k: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, p)| PathBuf::from(p))
        }
    };
    let hub = |pairs| HfCache::from_vars(&v(pairs)).hub;
    assert_eq!(
        hub(&[("HF_HUB_CACHE", "/c"), ("HF_HOME", "/h")]),
        Path::new("/c")
    );
    assert_eq!(
        hub(&[("HF_HOME", "/h"), ("HOME", "/u")]),
        Path::new("/h/hub")
    );
    assert_eq!(
        hub(&[("XDG_CACHE_HOME", "/x"), ("HOME", "/u")]),
        Path::new("/x/huggingface/hub")
    );
    assert_eq!(
        hub(&[("HOME", "/u")]),
        Path::new("/u/.cache/huggingface/hub")
    );
}
