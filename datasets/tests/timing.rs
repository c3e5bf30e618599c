//! Generation time of a 32k-token sample after the tokenizer is loaded (run with
//! `cargo test --workspace --release --test timing -- --ignored --nocapture`).

mod common;

use std::time::Instant;

use attnscope_datasets::tasks::{self, TaskParams};

#[test]
#[ignore = "timing; prints numbers"]
fn sample_32k_timing() {
    let mut hays = vec![("sanguo", common::sanguo().clone())];
    if let Some(t) = common::english("canterbury") {
        hays.push(("canterbury", t));
    }
    for (tname, tok) in common::tokenizers() {
        for (hname, hay) in &hays {
            for task in ["text", "niah-single", "niah-multikey", "vt"] {
                let mut best = f64::MAX;
                for seed in 0..5 {
                    let t0 = Instant::now();
                    let s = tasks::generate(task, tok, hay, &TaskParams::new(32768, seed))
                        .expect("sample");
                    best = best.min(t0.elapsed().as_secs_f64());
                    assert_eq!(s.ids.len(), 32768);
                }
                println!(
                    "TIME {tname} {hname} {task} 32768 tokens: best of 5 {:.1} ms",
                    best * 1e3
                );
            }
        }
    }
}
