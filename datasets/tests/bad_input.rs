//! Bad input gives clear errors: lengths below a task's minimum, haystacks too short, unknown
//! tasks, encoding errors (file and byte offset), empty files, malformed JSONL.

mod common;

use attnscope_datasets::tasks::{self, TaskParams};
use attnscope_datasets::text::{self, TextOptions, TextSource};
use attnscope_datasets::DatasetError;

#[test]
fn length_below_the_task_minimum() {
    let tok = common::smollm2();
    let hay = common::sanguo();
    let e =
        tasks::generate("niah-multikey", tok, hay, &TaskParams::new(40, 1)).expect_err("must fail");
    match &e {
        DatasetError::TooShort { min, len, .. } => {
            assert_eq!(*len, 40);
            assert!(*min > 40);
            // The minimum itself works.
            let s = tasks::generate("niah-multikey", tok, hay, &TaskParams::new(*min, 1))
                .expect("at the minimum");
            assert_eq!(s.ids.len(), *min);
        }
        other => panic!("{other}"),
    }
    assert!(e.to_string().contains("minimum"), "{e}");
    let e = tasks::generate("text", tok, hay, &TaskParams::new(0, 1)).expect_err("must fail");
    assert!(e.to_string().contains("--len"), "{e}");
    let mut p = TaskParams::new(1000, 1);
    p.depth = Some(1.5);
    let e = tasks::generate("niah-single", tok, hay, &p).expect_err("must fail");
    assert!(e.to_string().contains("depth"), "{e}");
}

#[test]
fn short_haystack_is_reused_with_a_warning_or_refused() {
    let tok = common::smollm2();
    let src = TextSource::File(common::fixture("short.txt"));
    let hay = text::load(&src, &TextOptions::default()).expect("fixture");
    let mut p = TaskParams::new(3000, 2);
    let s = tasks::generate("niah-single", tok, &hay, &p).expect("reused");
    assert_eq!(s.ids.len(), 3000);
    assert!(
        s.warnings.iter().any(|w| w.contains("reused")),
        "{:?}",
        s.warnings
    );
    p.repeat = false;
    let e = tasks::generate("niah-single", tok, &hay, &p).expect_err("must fail");
    assert!(matches!(e, DatasetError::HaystackTooShort { .. }), "{e}");
    assert!(e.to_string().contains("--no-repeat"), "{e}");
    // Short enough for the text: no warning.
    p.len = 60;
    let s = tasks::generate("text", tok, &hay, &p).expect("fits");
    assert!(s.warnings.is_empty());
    assert_eq!(s.ids.len(), 60);
}

#[test]
fn unknown_task_lists_the_known_ones() {
    let e = tasks::generate(
        "niah-nope",
        common::smollm2(),
        common::sanguo(),
        &TaskParams::new(100, 1),
    )
    .expect_err("must fail");
    let msg = e.to_string();
    assert!(
        msg.contains("niah-nope") && msg.contains("niah-single") && msg.contains("vt"),
        "{msg}"
    );
}

#[test]
fn invalid_utf8_names_file_and_offset_and_latin1_reads_it() {
    let path = common::fixture("latin1.txt");
    let src = TextSource::File(path.clone());
    let e = text::load(&src, &TextOptions::default()).expect_err("must fail");
    let msg = e.to_string();
    assert!(
        msg.contains("latin1.txt") && msg.contains("byte offset 16"),
        "{msg}"
    );
    assert!(msg.contains("--latin1"), "{msg}");
    let t = text::load(
        &src,
        &TextOptions {
            latin1: true,
            ..Default::default()
        },
    )
    .expect("latin1");
    assert!(t.text.contains("café"), "{}", t.text);
    assert_eq!(t.warnings.len(), 1);
}

#[test]
fn empty_files_are_refused() {
    for f in ["empty.txt", "blank.txt", "empty.jsonl"] {
        let src = TextSource::parse(common::fixture(f).to_str().expect("utf8 path")).expect(f);
        let e = text::load(&src, &TextOptions::default()).expect_err("must fail");
        assert!(matches!(e, DatasetError::Empty { .. }), "{f}: {e}");
        assert!(e.to_string().contains(f), "{e}");
    }
}

#[test]
fn jsonl_texts_are_joined_and_errors_name_the_line() {
    let src =
        TextSource::parse(common::fixture("docs.jsonl").to_str().expect("utf8")).expect("jsonl");
    assert!(matches!(src, TextSource::Jsonl(_)));
    let t = text::load(&src, &TextOptions::default()).expect("jsonl");
    assert_eq!(t.text, "First document.\nSecond line.\n\n第二个文档。");
    let bad = TextSource::Jsonl(common::fixture("bad.jsonl"));
    let msg = text::load(&bad, &TextOptions::default())
        .expect_err("must fail")
        .to_string();
    assert!(
        msg.contains("bad.jsonl:2") && msg.contains("\"text\""),
        "{msg}"
    );
}

#[test]
fn unknown_source_and_crlf() {
    let e = TextSource::parse("/no/such/file.txt").expect_err("must fail");
    let msg = e.to_string();
    assert!(
        msg.contains("/no/such/file.txt") && msg.contains("alice29"),
        "{msg}"
    );
    assert_eq!(TextSource::parse("-").expect("stdin"), TextSource::Stdin);
    let crlf = b"one\r\ntwo\r\n";
    let t = text::from_bytes(crlf, "x", &TextOptions::default()).expect("crlf");
    assert_eq!(t.text, "one\ntwo\n");
    let o = TextOptions {
        keep_crlf: true,
        ..Default::default()
    };
    assert_eq!(
        text::from_bytes(crlf, "x", &o).expect("crlf").text,
        "one\r\ntwo\r\n"
    );
    let bom = b"\xEF\xBB\xBFhi";
    assert_eq!(
        text::from_bytes(bom, "x", &TextOptions::default())
            .expect("bom")
            .text,
        "hi"
    );
}
