//! Where a plain-text sample starts: `TaskParams::offset` (characters of the normalized text),
//! else the top of the text for seed 0, else a paragraph chosen by the seed; the sample records
//! the start it used and whether the text was repeated.

mod common;

use attnscope_datasets::sample::Sample;
use attnscope_datasets::tasks::{self, TaskParams};
use attnscope_datasets::text::{self, Text, TextOptions, TextSource};
use attnscope_datasets::DatasetError;

/// The sample's text begins with the haystack's text from its recorded start.
fn starts_at(s: &Sample, hay: &Text) {
    let want: String = hay.text.chars().skip(s.start_char).take(30).collect();
    let got: String = s.text.chars().take(30).collect();
    assert_eq!(got, want, "start_char {}", s.start_char);
}

#[test]
fn seed_zero_without_offset_starts_at_the_top() {
    let tok = common::smollm2();
    let hay = common::sanguo();
    let s = tasks::generate("text", tok, hay, &TaskParams::new(501, 0)).expect("sample");
    assert_eq!(s.start_char, 0);
    assert!(!s.repeated && s.warnings.is_empty(), "{:?}", s.warnings);
    starts_at(&s, hay);
    assert_eq!(s.ids.len(), 501);
}

#[test]
fn a_start_without_an_exact_cut_moves_by_a_character_and_says_so() {
    // SmolLM2 spends two tokens on most CJK characters: from the very top no cut lands on 500.
    let tok = common::smollm2();
    let hay = common::sanguo();
    let s = tasks::generate("text", tok, hay, &TaskParams::new(500, 0)).expect("sample");
    assert_eq!((s.start_char, s.ids.len()), (1, 500));
    starts_at(&s, hay);
    assert!(
        s.warnings
            .iter()
            .any(|w| w.contains("from character 0") && w.contains("starts at character 1")),
        "{:?}",
        s.warnings
    );
}

#[test]
fn explicit_offset_is_used_and_recorded() {
    let tok = common::smollm2();
    let hay = common::sanguo();
    for (seed, offset) in [(0u64, 1234usize), (9, 1234), (0, 50_000)] {
        let mut p = TaskParams::new(700, seed);
        p.offset = Some(offset);
        let s = tasks::generate("text", tok, hay, &p).expect("sample");
        assert_eq!(s.start_char, offset, "seed {seed}");
        assert!(!s.repeated);
        assert_eq!(s.ids.len(), 700);
        starts_at(&s, hay);
        assert_eq!(s.task.params["offset"], offset);
    }
    // Needle tasks take the offset too.
    let mut p = TaskParams::new(1500, 3);
    p.offset = Some(777);
    let s = tasks::generate("niah-single", tok, hay, &p).expect("needle sample");
    assert_eq!(s.start_char, 777);
}

#[test]
fn seeded_start_without_offset_is_recorded() {
    let tok = common::smollm2();
    let hay = common::sanguo();
    let s = tasks::generate("text", tok, hay, &TaskParams::new(600, 7)).expect("sample");
    assert!(s.start_char > 0, "seed 7 picks a paragraph");
    starts_at(&s, hay);
    let again = tasks::generate("text", tok, hay, &TaskParams::new(600, 7)).expect("again");
    assert_eq!(again.start_char, s.start_char);
}

#[test]
fn offset_past_the_end_is_an_error() {
    let tok = common::smollm2();
    let hay = common::sanguo();
    let n = hay.text.chars().count();
    let mut p = TaskParams::new(100, 0);
    p.offset = Some(n);
    let e = tasks::generate("text", tok, hay, &p).expect_err("must fail");
    assert!(matches!(e, DatasetError::Param(_)), "{e}");
    assert!(
        e.to_string().contains(&format!("--offset {n}")) && e.to_string().contains("characters"),
        "{e}"
    );
}

#[test]
fn short_text_is_repeated_and_says_so() {
    let tok = common::smollm2();
    let src = TextSource::File(common::fixture("short.txt"));
    let hay = text::load(&src, &TextOptions::default()).expect("fixture");
    let s = tasks::generate("text", tok, &hay, &TaskParams::new(400, 0)).expect("repeated");
    assert_eq!((s.start_char, s.repeated, s.ids.len()), (0, true, 400));
    assert!(
        s.warnings.iter().any(|w| w.contains("reused")),
        "{:?}",
        s.warnings
    );
    let fits = tasks::generate("text", tok, &hay, &TaskParams::new(30, 0)).expect("fits");
    assert!(!fits.repeated && fits.warnings.is_empty());
}

#[test]
fn offset_near_the_end_continues_from_the_top_or_is_refused() {
    let tok = common::smollm2();
    let hay = common::sanguo();
    let n = hay.text.chars().count();
    let mut p = TaskParams::new(800, 0);
    p.offset = Some(n - 200);
    let s = tasks::generate("text", tok, hay, &p).expect("continues");
    assert_eq!(
        (s.start_char, s.repeated, s.ids.len()),
        (n - 200, true, 800)
    );
    assert!(
        s.warnings
            .iter()
            .any(|w| w.contains("continues from the top")),
        "{:?}",
        s.warnings
    );
    p.repeat = false;
    let e = tasks::generate("text", tok, hay, &p).expect_err("refused");
    assert!(e.to_string().contains("--offset"), "{e}");
}

#[test]
fn start_fields_round_trip_and_default_when_absent() {
    let tok = common::smollm2();
    let hay = common::sanguo();
    let mut p = TaskParams::new(64, 0);
    p.offset = Some(10);
    let s = tasks::generate("text", tok, hay, &p).expect("sample");
    let line = s.to_json_line().expect("json");
    let back: Sample = serde_json::from_str(&line).expect("parse");
    assert_eq!(back, s);
    let mut v: serde_json::Value = serde_json::from_str(&line).expect("value");
    let o = v.as_object_mut().expect("object");
    o.remove("start_char");
    o.remove("repeated");
    let old: Sample = serde_json::from_value(v).expect("older sample without the fields");
    assert_eq!((old.start_char, old.repeated), (0, false));
    assert!(s.summary().contains("character 10"));
}

#[test]
fn jsonl_strings_with_crlf_escapes_are_normalized() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("d.jsonl");
    std::fs::write(&p, "{\"text\": \"a\\r\\nb\"}\r\n{\"text\": \"c\"}\r\n").expect("write");
    let t = text::load(&TextSource::Jsonl(p.clone()), &TextOptions::default()).expect("load");
    assert_eq!(t.text, "a\nb\n\nc");
    let keep = TextOptions {
        keep_crlf: true,
        ..TextOptions::default()
    };
    let t = text::load(&TextSource::Jsonl(p), &keep).expect("load");
    assert_eq!(t.text, "a\r\nb\n\nc");
}
