//! A corpus that is not in the cache: the error tells the fetch command. (Own test binary: it
//! points ATTNSCOPE_HOME at an empty folder.)

use attnscope_datasets::text::{self, TextOptions, TextSource};
use attnscope_datasets::DatasetError;

#[test]
fn missing_corpus_tells_the_fetch_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::env::set_var("ATTNSCOPE_HOME", dir.path());
    for name in ["alice29", "canterbury"] {
        let src = TextSource::parse(name).expect("known name");
        let e = text::load(&src, &TextOptions::default()).expect_err("must fail");
        assert!(matches!(e, DatasetError::MissingCorpus { .. }), "{e}");
        assert!(e.to_string().contains("attnscope fetch canterbury"), "{e}");
    }
    let listed = text::known_texts();
    assert!(listed.iter().any(|k| k.name == "alice29" && !k.cached));
}
