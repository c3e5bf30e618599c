//! Shared code of the property-based fuzz tests (core/tests/fuzz_*.rs, see core/FUZZING.md):
//! the case count (`ATTNSCOPE_FUZZ_CASES`, default 256), a per-case deadline so a hang fails the
//! test instead of stalling CI, byte mutations of real fixtures and arbitrary JSON values.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::Config;

/// Cases per target: `ATTNSCOPE_FUZZ_CASES`, else `PROPTEST_CASES`, else 256.
pub fn cases() -> u32 {
    ["ATTNSCOPE_FUZZ_CASES", "PROPTEST_CASES"]
        .iter()
        .find_map(|k| std::env::var(k).ok()?.trim().parse().ok())
        .unwrap_or(256)
}

/// The proptest configuration of every fuzz target: [`cases`] cases, no regression files written
/// into the source tree (a failure prints the minimal input instead).
pub fn config() -> Config {
    Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    }
}

/// Seconds one case may take before it counts as a hang (`ATTNSCOPE_FUZZ_DEADLINE_S`, default 20).
fn deadline() -> Duration {
    let s = std::env::var("ATTNSCOPE_FUZZ_DEADLINE_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    Duration::from_secs(s)
}

/// Runs `f` on its own thread and returns its result; panics (failing the case) when `f` panics
/// or runs past the deadline.
pub fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(deadline()) {
        Ok(v) => {
            let _ = handle.join();
            v
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what}: no answer within {:?} (hang?)", deadline())
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                panic!("{what}: panicked: {msg}")
            }
            Ok(()) => panic!("{what}: thread ended without an answer"),
        },
    }
}

/// Counts the cases of property `name` and, every `ATTNSCOPE_FUZZ_PROGRESS` cases (default 0:
/// never), prints the count and the seconds since the first case to stderr, so a long run shows
/// its rate. Shrinking steps count as cases.
pub fn progress(name: &'static str) {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    use std::time::Instant;
    static EVERY: OnceLock<u64> = OnceLock::new();
    static SEEN: OnceLock<Mutex<HashMap<&'static str, (u64, Instant)>>> = OnceLock::new();
    let every = *EVERY.get_or_init(|| {
        std::env::var("ATTNSCOPE_FUZZ_PROGRESS")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    });
    if every == 0 {
        return;
    }
    let mut seen = SEEN
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let entry = seen.entry(name).or_insert((0, Instant::now()));
    entry.0 += 1;
    if entry.0.is_multiple_of(every) {
        eprintln!(
            "fuzz progress: {name}: {} cases in {:.0} s",
            entry.0,
            entry.1.elapsed().as_secs_f64()
        );
    }
}

/// A fixture of core/tests/fixtures.
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// One edit of a byte string.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// Cut the bytes to this fraction of their length (0..1).
    Truncate(f64),
    /// Flip bit `bit` of the byte at this fraction of the (first `focus` bytes of the) input.
    Flip { at: f64, bit: u8 },
    /// Overwrite 8 bytes at this fraction with a little-endian u64 (counts and lengths).
    Word { at: f64, value: u64 },
    /// Insert bytes at this fraction.
    Insert { at: f64, bytes: Vec<u8> },
}

/// Up to `max` mutations.
pub fn mutations(max: usize) -> impl Strategy<Value = Vec<Mutation>> {
    let word = prop_oneof![
        Just(0u64),
        Just(1),
        Just(u32::MAX as u64),
        Just(u64::MAX),
        Just(1 << 40),
        any::<u64>(),
        0u64..300,
    ];
    let one = prop_oneof![
        1 => (0.0f64..1.0).prop_map(Mutation::Truncate),
        6 => (0.0f64..1.0, 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        3 => (0.0f64..1.0, word).prop_map(|(at, value)| Mutation::Word { at, value }),
        1 => (0.0f64..1.0, proptest::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
    ];
    proptest::collection::vec(one, 1..=max)
}

/// Applies `muts` to `bytes`; positions fall in the first `focus` bytes (the structured part of a
/// file, e.g. a GGUF header and directory) unless `focus` is 0.
pub fn apply(bytes: &[u8], muts: &[Mutation], focus: usize) -> Vec<u8> {
    let mut b = bytes.to_vec();
    for m in muts {
        let span = if focus == 0 {
            b.len()
        } else {
            focus.min(b.len())
        };
        let pos = |at: f64| ((at * span as f64) as usize).min(span.saturating_sub(1));
        match m {
            Mutation::Truncate(f) => b.truncate((f * b.len() as f64) as usize),
            Mutation::Flip { at, bit } if !b.is_empty() => {
                let i = pos(*at);
                b[i] ^= 1 << bit;
            }
            Mutation::Word { at, value } if b.len() >= 8 => {
                let i = pos(*at).min(b.len() - 8);
                b[i..i + 8].copy_from_slice(&value.to_le_bytes());
            }
            Mutation::Insert { at, bytes } => {
                let i = if b.is_empty() { 0 } else { pos(*at) };
                b.splice(i..i, bytes.iter().copied());
            }
            _ => {}
        }
    }
    b
}

/// Arbitrary JSON values, numbers biased to the edges (0, negative, huge, fractional).
pub fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::{json, Value};
    let number = prop_oneof![
        Just(json!(0)),
        Just(json!(-1)),
        Just(json!(1)),
        Just(json!(2)),
        Just(json!(u64::MAX)),
        Just(json!(i64::MIN)),
        Just(json!(1e300)),
        Just(json!(-1e-300)),
        Just(json!(0.5)),
        (0u64..100_000).prop_map(|v| json!(v)),
        any::<i64>().prop_map(|v| json!(v)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|v| json!(v)),
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number,
        "\\PC{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Replaces the node of `doc` at pseudo-random path `pick` (indices into objects and arrays) with
/// `value`, or removes it when `remove` (object members only).
pub fn replace_at(
    doc: &mut serde_json::Value,
    pick: &[usize],
    value: serde_json::Value,
    remove: bool,
) {
    use serde_json::Value;
    let Some((&p, rest)) = pick.split_first() else {
        *doc = value;
        return;
    };
    match doc {
        Value::Object(m) if !m.is_empty() => {
            let key = m.keys().nth(p % m.len()).cloned().unwrap_or_default();
            if rest.is_empty() && remove {
                m.remove(&key);
            } else if let Some(child) = m.get_mut(&key) {
                replace_at(child, rest, value, remove);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            let i = p % a.len();
            replace_at(&mut a[i], rest, value, remove);
        }
        other => *other = value,
    }
}
