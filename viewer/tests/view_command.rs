//! `attnscope view RUN_DIR` runs the attnscope-viewer binary found next to `attnscope` or on PATH,
//! and says clearly when it is missing.

mod common;

use std::path::PathBuf;
use std::process::Command;

/// target/<profile>/, where `cargo test --workspace` puts both binaries.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    exe.parent()
        .and_then(|deps| deps.parent())
        .map(PathBuf::from)
        .expect("target dir")
}

/// `attnscope` alone in a fresh folder (hard link, or copy).
fn lone_attnscope() -> Option<(tempfile::TempDir, PathBuf)> {
    let src = bin_dir().join("attnscope");
    if !src.is_file() {
        eprintln!("notice: {} not built; skipping", src.display());
        return None;
    }
    let tmp = tempfile::tempdir_in(bin_dir()).expect("tmp");
    let dst = tmp.path().join("attnscope");
    if std::fs::hard_link(&src, &dst).is_err() {
        std::fs::copy(&src, &dst).expect("copy attnscope");
    }
    Some((tmp, dst))
}

#[test]
fn view_without_the_viewer_binary_is_a_clear_error() {
    let Some((_tmp, attnscope)) = lone_attnscope() else {
        return;
    };
    let out = Command::new(&attnscope)
        .arg("view")
        .arg(common::fixture())
        .env("PATH", "")
        .output()
        .expect("run attnscope view");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("`attnscope-viewer` was not found"), "{err}");
}

#[test]
fn view_of_a_folder_without_a_run_is_a_clear_error() {
    let attnscope = bin_dir().join("attnscope");
    if !attnscope.is_file() {
        eprintln!("notice: attnscope not built; skipping");
        return;
    }
    let out = Command::new(&attnscope)
        .args(["view", "/nonexistent/run"])
        .output()
        .expect("run attnscope view");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("no manifest.json"), "{err}");
}

#[test]
fn view_runs_the_viewer_found_on_path() {
    let Some((tmp, attnscope)) = lone_attnscope() else {
        return;
    };
    // A stand-in viewer on PATH that records its arguments.
    let fake_dir = tmp.path().join("bin");
    std::fs::create_dir_all(&fake_dir).expect("mkdir");
    let record = tmp.path().join("args.txt");
    let fake = fake_dir.join("attnscope-viewer");
    std::fs::write(
        &fake,
        format!("#!/bin/sh\necho \"$@\" > {}\n", record.display()),
    )
    .expect("write fake viewer");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let out = Command::new(&attnscope)
        .arg("view")
        .arg(common::fixture())
        .args(["--view", "head-map"])
        .env("PATH", &fake_dir)
        .output()
        .expect("run attnscope view");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let args = std::fs::read_to_string(&record).expect("the viewer ran");
    assert!(
        args.contains("tests/fixtures/run --view head-map"),
        "{args}"
    );
}
