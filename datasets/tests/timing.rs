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
                let mut times = Vec::new();
                for seed in 0..5 {
                    let t0 = Instant::now();
                    let s = tasks::generate(task, tok, hay, &TaskParams::new(32768, seed))
                        .expect("sample");
                    times.push(t0.elapsed().as_secs_f64() * 1e3);
                    assert_eq!(s.ids.len(), 32768);
                }
                let best = times.iter().copied().fold(f64::MAX, f64::min);
                let worst = times.iter().copied().fold(0.0, f64::max);
                let mean = times.iter().sum::<f64>() / times.len() as f64;
                println!(
                    "TIME {tname} {hname} {task} 32768 tokens: best {best:.1} ms, mean \
                     {mean:.1} ms, worst {worst:.1} ms (5 seeds)"
                );
            }
        }
    }
}
