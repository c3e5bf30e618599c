//! The extension module as built by `cargo test --workspace` (the file scripts/test.sh hands to
//! the pytest suite beside this file): a shared library that exports CPython's entry point of
//! `attnscope._native` and, being an abi3 extension module, is not linked with libpython.

use std::path::PathBuf;

/// `lib_native.so` beside this test's executable (`target/<profile>/deps/`).
fn extension() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent().expect("deps folder").join("lib_native.so")
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn extension_module_exports_its_entry_point_without_libpython() {
    let path = extension();
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        &bytes[..4],
        b"\x7fELF",
        "{} is not a shared library",
        path.display()
    );
    assert!(
        contains(&bytes, b"PyInit__native\0"),
        "no PyInit__native in {}",
        path.display()
    );
    assert!(
        !contains(&bytes, b"libpython3"),
        "{} names libpython: an abi3 extension module must not link it",
        path.display()
    );
}
