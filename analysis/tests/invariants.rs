//! The invariant matrix: every registered method, on random and on real Q/K, at two sparsity
//! budgets and a token budget: causal, every query keeps a key, deterministic, one selection per
//! q-head of the right length, token budgets respected, calibration honest about what it reached,
//! and a full budget gives exactly dense attention (recall 1, output error 0).

use attnscope_analysis::budget::{resolve, sparsity_of, Budget, SPARSITY_TOLERANCE};
use attnscope_analysis::metrics::{evaluate, DenseHead};
use attnscope_analysis::registry::METHODS;
use attnscope_analysis::selection::Selection;
use attnscope_analysis::testing::GroupData;
use attnscope_core::capture::{CaptureHook, CaptureOptions};
use attnscope_core::Model;
use attnscope_datasets::fetch;

fn dense_head<'a>(data: &'a GroupData, h: usize) -> DenseHead<'a> {
    DenseHead {
        q: data.q_head(h),
        k: data.k.view(),
        v: data.v.view(),
        lse: &data.truth[h].lse,
        dense_out: data.dense_out_head(h),
    }
}

fn check_shape_and_causality(name: &str, sels: &[Selection], n: usize, group: usize) {
    assert_eq!(sels.len(), group, "{name}: one selection per q-head");
    for s in sels {
        assert_eq!(s.len(), n, "{name}: selection length");
        for r in 0..s.rows() {
            let last_query = ((r + 1) * s.query_block()).min(n) - 1;
            if let Some(m) = s.row_max_key(r) {
                assert!(
                    m <= last_query,
                    "{name}: row {r} keeps key {m} after its last query {last_query}"
                );
            }
        }
        for i in 0..n {
            assert!(s.kept_of(i) >= 1, "{name}: query {i} keeps no key");
        }
    }
}

fn check_all(data: &GroupData, label: &str) {
    let n = data.k.nrows();
    for info in METHODS {
        let name = format!("{} ({label})", info.name);
        let method = info.build_with(&[]).expect("defaults build");
        // The input borrows `data` and must not outlive the method (ndarray views are invariant).
        let input = data.input();
        let prep = method.prepare(&input);
        let knob = method.knob();
        // Full budget: exactly dense.
        let full = if knob.denser_when_larger {
            knob.max_for(n)
        } else {
            knob.min
        };
        let sels = prep.select(full);
        check_shape_and_causality(&name, &sels, n, data.group);
        for (h, s) in sels.iter().enumerate() {
            assert_eq!(
                s.kept_pairs(),
                (n * (n + 1) / 2) as u64,
                "{name}: full budget is not dense"
            );
            let m = evaluate(&dense_head(data, h), s);
            assert!(
                m.recall.iter().all(|&r| (r - 1.0).abs() < 1e-4),
                "{name}: full-budget recall"
            );
            assert!(
                m.out_rel_err.iter().all(|&e| e < 1e-4),
                "{name}: full-budget output error"
            );
        }
        for target in [0.5, 0.8] {
            let cal = resolve(
                method.as_ref(),
                prep.as_ref(),
                Budget::Sparsity(target),
                n,
                None,
            );
            check_shape_and_causality(&name, &cal.selections, n, data.group);
            let s = sparsity_of(&cal.selections, n);
            assert!(
                (s - cal.sparsity).abs() < 1e-12,
                "{name}: reported sparsity"
            );
            assert_eq!(
                cal.reached,
                (s - target).abs() <= SPARSITY_TOLERANCE,
                "{name}: reached flag"
            );
            // Deterministic: a second preparation selects the same keys.
            let again = method.prepare(&input).select(cal.knob);
            assert_eq!(again, cal.selections, "{name}: not deterministic");
        }
        // A token budget is respected, except where the method's forced keys alone exceed it.
        let k = n / 2;
        if let Some(x) = method.knob_for_tokens(k) {
            let sparsest = if knob.denser_when_larger {
                knob.min
            } else {
                knob.max_for(n)
            };
            let forced = prep.select(sparsest);
            for (s, f) in prep.select(x).iter().zip(&forced) {
                let over = (0..n).find(|&i| s.kept_of(i) > k.max(f.kept_of(i)));
                assert!(
                    over.is_none(),
                    "{name}: query {over:?} keeps more than {k} keys"
                );
            }
        }
    }
}

#[test]
fn every_method_on_random_qk() {
    check_all(&GroupData::random(520, 16, 3, 7), "random");
}

#[test]
fn every_method_on_real_smollm2_qk() {
    let files = fetch::model_path("smollm2-135m").unwrap_or_else(|| {
        fetch::fetch_model("smollm2-135m", &mut |m| eprintln!("{m}")).expect("fetch")
    });
    let model = Model::load(&files.gguf).expect("load");
    let text =
        "The Project Gutenberg EBook of Alice's Adventures in Wonderland, by Lewis Carroll. \
        Alice was beginning to get very tired of sitting by her sister on the bank, and of having \
        nothing to do: once or twice she had peeped into the book her sister was reading, but it \
        had no pictures or conversations in it, 'and what is the use of a book,' thought Alice, \
        'without pictures or conversations?' ";
    let mut ids = model
        .tokenizer()
        .expect("tokenizer")
        .encode(&text.repeat(8))
        .expect("encode");
    ids.truncate(520);
    let layer = 5;
    let mut hook = CaptureHook::new(CaptureOptions {
        layers: Some(vec![layer]),
        keep_qkv: true,
        ..Default::default()
    });
    model.forward(&ids, &mut hook).expect("forward");
    let qkv = hook.layers[0].qkv.as_ref().expect("qkv");
    let (d, g) = (model.config.head_dim, model.config.group_size());
    let q = qkv.q.slice(ndarray::s![.., ..g * d]).to_owned();
    let k = qkv.k.slice(ndarray::s![.., ..d]).to_owned();
    let v = qkv.v.slice(ndarray::s![.., ..d]).to_owned();
    let pieces = model.tokenizer().expect("tokenizer").pieces(&ids);
    let punct = pieces
        .iter()
        .map(|p| !p.trim().is_empty() && p.trim().chars().all(|c| c.is_ascii_punctuation()))
        .collect();
    let newline = pieces
        .iter()
        .map(|p| p.contains('\n') && p.trim().is_empty())
        .collect();
    check_all(
        &GroupData::from_qkv(q, k, v, punct, newline, g, 64),
        "smollm2 layer 5",
    );
}
