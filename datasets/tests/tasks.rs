//! The checks of the datasets issue for synthetic tasks: exact token length for every task and
//! tokenizer at 1k, 8k and 32k; needles decode back from their spans; answers appear only where
//! intended; same seed, same sample; different seeds differ.

mod common;

use attnscope_core::tokenizer::Tokenizer;
use attnscope_datasets::sample::Sample;
use attnscope_datasets::tasks::{self, TaskParams};
use attnscope_datasets::text::Text;

/// Re-tokenizes the sample's text and checks everything that must agree with it.
fn check_sample(tok: &Tokenizer, s: &Sample, len: usize, what: &str) {
    assert_eq!(s.ids.len(), len, "{what}: length");
    assert_eq!(s.len, len, "{what}: len field");
    let ids = tok.encode(&s.text).expect("encode");
    assert_eq!(ids, s.ids, "{what}: ids are the tokenization of the text");
    assert_eq!(s.pieces.len(), len);
    assert_eq!(s.punct.len(), len);
    assert_eq!(s.offsets.len(), len);
    let n_chars = s.text.chars().count();
    for w in s.offsets.windows(2) {
        assert!(w[0].start <= w[1].start, "{what}: offsets sorted");
    }
    assert!(s
        .offsets
        .iter()
        .all(|o| o.start <= o.end && o.end <= n_chars));
    for n in &s.task.needles {
        assert!(
            n.tokens.start < n.tokens.end && n.tokens.end <= len,
            "{what}: span {n:?}"
        );
        let dec = tok
            .decode(&s.ids[n.tokens.start..n.tokens.end])
            .expect("decode");
        assert!(
            dec.contains(&n.text),
            "{what}: needle {:?} decodes to {dec:?}",
            n.text
        );
        // The span holds no more than the needle and its separators.
        assert!(
            dec.trim().len() <= n.text.len() + 4,
            "{what}: span too wide: {dec:?}"
        );
        let chars: String = s
            .text
            .chars()
            .skip(n.chars.start)
            .take(n.chars.len())
            .collect();
        assert_eq!(chars, n.text, "{what}: needle char span");
        let ans = tok
            .decode(&s.ids[n.answer_tokens.start..n.answer_tokens.end])
            .expect("decode");
        let part = if n.text.starts_with("VAR ") {
            &n.key
        } else {
            &n.value
        };
        assert_eq!(ans.trim(), part, "{what}: answer tokens of {:?}", n.text);
        assert!((0.0..=1.0).contains(&n.depth));
    }
}

/// Every answer appears in the text exactly where intended: in its needle(s) and, for vt, in
/// the question; distractor values differ from the answers.
fn check_answers(s: &Sample, what: &str) {
    let needles = &s.task.needles;
    let vt = s.dataset == "vt";
    for a in &s.task.answers {
        let holders = needles
            .iter()
            .filter(|n| n.text.contains(a.as_str()))
            .count();
        let count = s.text.matches(a.as_str()).count();
        assert!(holders >= 1, "{what}: answer {a} is in no needle");
        // vt: each variable is assigned once and (except the last) read once.
        assert_eq!(
            count, holders,
            "{what}: answer {a} appears {count} times, {holders} needles hold it"
        );
        for n in needles.iter().filter(|n| !n.target) {
            assert!(
                !n.text.contains(a.as_str()),
                "{what}: distractor {:?} holds {a}",
                n.text
            );
        }
    }
    if !vt {
        for n in needles {
            assert_eq!(
                s.text.matches(n.value.as_str()).count(),
                1,
                "{what}: value {}",
                n.value
            );
        }
    }
    let q = s.task.question.as_deref().unwrap_or_default();
    assert!(s.text.contains(q), "{what}: question in the text");
    match s.dataset.as_str() {
        "niah-multikey" => {
            assert_eq!(needles.iter().filter(|n| n.target).count(), 1);
            let t = &needles[0];
            assert!(needles[1..]
                .iter()
                .all(|n| n.key != t.key && n.value != t.value));
            assert!(q.contains(&t.key));
            assert!(needles[1..].iter().all(|n| !q.contains(&n.key)));
        }
        "niah-single" => assert_eq!(needles.len(), 1),
        _ => {}
    }
    assert!(!s.task.answer_spans.is_empty(), "{what}: answer spans");
}

fn hays() -> Vec<(&'static str, Text)> {
    let mut v = vec![("sanguo", common::sanguo().clone())];
    if let Some(t) = common::english("canterbury") {
        v.push(("canterbury", t));
    }
    v
}

#[test]
fn exact_length_every_task_tokenizer_and_size() {
    let hays = hays();
    for (tname, tok) in common::tokenizers() {
        for (hname, hay) in &hays {
            for &len in &[1024usize, 8192, 32768] {
                for (ti, task) in tasks::tasks().iter().enumerate() {
                    let seed = 11 + len as u64 + ti as u64;
                    let p = TaskParams::new(len, seed);
                    let what = format!("{} {tname} {hname} {len}", task.name);
                    let s = tasks::generate(task.name, tok, hay, &p)
                        .unwrap_or_else(|e| panic!("{what}: {e}"));
                    check_sample(tok, &s, len, &what);
                    if task.name != "text" {
                        check_answers(&s, &what);
                    }
                    assert!(s.warnings.is_empty(), "{what}: {:?}", s.warnings);
                }
            }
        }
    }
}

#[test]
fn depth_places_the_needle() {
    let tok = common::smollm2();
    let hay = common::sanguo();
    for &d in &[0.0, 0.25, 0.5, 0.75, 1.0] {
        let mut p = TaskParams::new(4096, 3);
        p.depth = Some(d);
        let s = tasks::generate("niah-single", tok, hay, &p).expect("sample");
        let got = s.task.needles[0].depth;
        assert!((got - d).abs() < 0.05, "depth {d}: needle at {got}");
        check_sample(tok, &s, 4096, &format!("depth {d}"));
    }
    // vt: the asked chain starts at the depth, in order.
    let mut p = TaskParams::new(4096, 3);
    p.depth = Some(0.2);
    p.chains = Some(2);
    let s = tasks::generate("vt", tok, hay, &p).expect("vt");
    let target: Vec<_> = s.task.needles.iter().filter(|n| n.target).collect();
    assert_eq!(target.len(), 5);
    assert!((target[0].depth - 0.2).abs() < 0.05);
    assert!(target
        .windows(2)
        .all(|w| w[0].tokens.end <= w[1].tokens.start));
    check_answers(&s, "vt 2 chains");
}

#[test]
fn same_seed_same_bytes_different_seed_differs() {
    let tok = common::smollm2();
    let hay = common::sanguo();
    for task in tasks::tasks() {
        let a = tasks::generate(task.name, tok, hay, &TaskParams::new(2048, 5)).expect("a");
        let b = tasks::generate(task.name, tok, hay, &TaskParams::new(2048, 5)).expect("b");
        let c = tasks::generate(task.name, tok, hay, &TaskParams::new(2048, 6)).expect("c");
        assert_eq!(
            a.to_json_line().expect("json"),
            b.to_json_line().expect("json"),
            "{}: same seed",
            task.name
        );
        assert_ne!(a.text, c.text, "{}: different seeds", task.name);
    }
}

#[test]
fn multi_needle_parameters() {
    let tok = common::smollm2();
    let hay = common::sanguo();
    let mut p = TaskParams::new(3000, 9);
    p.needles = Some(6);
    for name in ["niah-multikey", "niah-multivalue", "niah-multiquery"] {
        let s = tasks::generate(name, tok, hay, &p).expect(name);
        assert_eq!(s.task.needles.len(), 6, "{name}");
        check_sample(tok, &s, 3000, name);
        check_answers(&s, name);
        let want = if name == "niah-multikey" { 1 } else { 6 };
        assert_eq!(s.task.answers.len(), want, "{name}");
        assert_eq!(s.task.answer_spans.len(), want, "{name}");
    }
    let mv = tasks::generate("niah-multivalue", tok, hay, &p).expect("mv");
    // Values are listed in the order they appear.
    let pos: Vec<usize> = mv
        .task
        .answers
        .iter()
        .map(|a| mv.text.find(a.as_str()).unwrap_or(0))
        .collect();
    assert!(pos.windows(2).all(|w| w[0] < w[1]), "{pos:?}");
}

/// Many lengths and seeds (run with `-- --ignored`): every sample must land exactly.
#[test]
#[ignore = "stress; a few minutes"]
fn stress_many_lengths_and_seeds() {
    let hays = hays();
    let mut n = 0;
    for (tname, tok) in common::tokenizers() {
        for (hname, hay) in &hays {
            for k in 0..60u64 {
                let len = 400 + ((k * 7919 + 13) % 6000) as usize;
                for task in tasks::tasks() {
                    let what = format!("{} {tname} {hname} {len} seed {k}", task.name);
                    let s = tasks::generate(task.name, tok, hay, &TaskParams::new(len, k))
                        .unwrap_or_else(|e| panic!("{what}: {e}"));
                    check_sample(tok, &s, len, &what);
                    if task.name != "text" {
                        check_answers(&s, &what);
                    }
                    n += 1;
                }
            }
        }
    }
    println!("{n} samples exact");
}

/// Lengths just above each task's minimum (run with `-- --ignored`).
#[test]
#[ignore = "stress"]
fn stress_near_the_minimum() {
    let hays = hays();
    for (tname, tok) in common::tokenizers() {
        for (hname, hay) in &hays {
            for task in tasks::tasks() {
                let min = match tasks::generate(task.name, tok, hay, &TaskParams::new(1, 0)) {
                    Err(attnscope_datasets::DatasetError::TooShort { min, .. }) => min,
                    Ok(s) => s.len,
                    Err(e) => panic!("{e}"),
                };
                for len in min..min + 40 {
                    let what = format!("{} {tname} {hname} {len}", task.name);
                    // The minimum depends a little on the seed (keys and values differ).
                    match tasks::generate(task.name, tok, hay, &TaskParams::new(len, len as u64)) {
                        Ok(s) => check_sample(tok, &s, len, &what),
                        Err(attnscope_datasets::DatasetError::TooShort { min: m, .. })
                            if m > len && m < min + 16 => {}
                        Err(e) => panic!("{what}: {e}"),
                    }
                }
                println!("{} {tname} {hname}: minimum {min}", task.name);
            }
        }
    }
}
