//! Tests of the metrics (the module's own definitions against per-pair sums).

use super::*;
use crate::testing::GroupData;

fn head(data: &GroupData, h: usize) -> DenseHead<'_> {
    DenseHead {
        q: data.q_head(h),
        k: data.k.view(),
        v: data.v.view(),
        lse: &data.truth[h].lse,
        dense_out: data.dense_out_head(h),
        rule: data.rule,
    }
}

/// Selections of every registered method at a middle budget.
fn method_selections(data: &GroupData) -> Vec<Vec<Selection>> {
    crate::registry::METHODS
        .iter()
        .map(|info| {
            let m = info.build_with(&[]).expect("defaults build");
            let g = data.input();
            let p = m.prepare(&g);
            let k = m.knob();
            crate::budget::calibrate(p.as_ref(), &k, 0.7, g.scored).selections
        })
        .collect()
}

#[test]
fn exact_dot_matches_ndarray_bit_for_bit() {
    for d in [1, 3, 8, 13, 16, 64, 71] {
        let data = GroupData::random(20, d, 1, d as u64);
        let q = data.q_head(0);
        for i in 0..20 {
            for j in 0..20 {
                let (a, b) = (q.row(i), data.k.row(j));
                let want = a.dot(&b);
                let got = dot_exact(&a.to_vec(), &b.to_vec());
                assert_eq!(got.to_bits(), want.to_bits(), "d {d} ({i}, {j})");
            }
        }
    }
}

#[test]
fn probabilities_from_shared_scores_have_the_bits_of_their_own_products() {
    let data = GroupData::random(600, 64, 2, 5);
    let g = data.input();
    for h in 0..g.group_size() {
        let own = TrueProbs::compute(g.q[h], g.kt(), &g.truth[h].lse, g.scored, &g.rule);
        let shared = TrueProbs::from_logits(&g.logits()[h], &g.rule, &g.truth[h].lse);
        for i in 0..g.n() {
            assert_eq!(own.row(i), shared.row(i), "q-head {h} query {i}");
        }
    }
    // Scores and probabilities from one pass: the same bits as each built on its own.
    let fresh = data.input();
    let (logits, probs) = fresh.exact_attention();
    for h in 0..g.group_size() {
        for i in 0..g.n() {
            assert_eq!(
                logits[h].row(i),
                g.logits()[h].row(i),
                "q-head {h} query {i}"
            );
            assert_eq!(
                probs[h].row(i),
                g.true_probs()[h].row(i),
                "q-head {h} query {i}"
            );
        }
    }
}

#[test]
fn metrics_from_shared_probabilities_agree_with_per_pair_scores() {
    for d in [16, 64, 48] {
        let data = GroupData::random(300, d, 3, 11 + d as u64);
        let g = data.input();
        let probs = g.true_probs();
        // Every shared probability against the per-pair expression.
        for (h, p) in probs.iter().enumerate() {
            for i in 0..g.n() {
                let lse = g.truth[h].lse[i];
                for (j, &a) in p.row(i).iter().enumerate() {
                    let (qi, kj) = (g.q[h].row(i), g.k.row(j));
                    let want = (qi.dot(&kj) * g.scale() - lse).exp();
                    // Forward error of a d-term dot product in any order, then the scaling
                    // and the subtraction; exp turns an argument error into a relative one.
                    let abs_dot: f32 = qi.iter().zip(kj).map(|(x, y)| (x * y).abs()).sum();
                    let arg_err =
                        f32::EPSILON * (d as f32 * abs_dot * g.scale() + 4.0 * (lse.abs() + 1.0));
                    assert!(
                        (a - want).abs() <= want * arg_err + 1e-30,
                        "d {d} head {h} ({i}, {j}): {a} vs {want}"
                    );
                }
            }
        }
        for sels in method_selections(&data) {
            for (h, sel) in sels.iter().enumerate() {
                let want = evaluate(&head(&data, h), sel);
                let got = evaluate_with(&head(&data, h), &probs[h], sel);
                assert_eq!(got.kept, want.kept, "d {d} head {h}");
                for (name, a, b) in [
                    ("recall", &got.recall, &want.recall),
                    ("output error", &got.out_rel_err, &want.out_rel_err),
                    ("cosine", &got.cosine, &want.cosine),
                ] {
                    for (i, (x, y)) in a.iter().zip(b.iter()).enumerate() {
                        assert!(
                            (x - y).abs() <= 1e-5 * y.abs().max(1.0),
                            "d {d} head {h} query {i} {name}: {x} vs {y}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn windowed_soft_capped_metrics_agree_with_per_pair_scores() {
    // Every method's selections on a layer with a window of 40 keys, soft-capping and its
    // own scale: the shared probabilities (0 outside the window) give the per-pair metrics
    // over the visible kept keys, and the kept counts leave the hidden keys out.
    let rule = ScoreRule {
        scale: 0.3,
        softcap: Some(2.5),
        window: Some(40),
    };
    let data = GroupData::random(200, 16, 2, 9).with_rule(rule);
    let probs = data.input().true_probs().to_vec();
    for sels in method_selections(&data) {
        for (h, sel) in sels.iter().enumerate() {
            assert_eq!(sel.scored().window, Some(40));
            let want = evaluate(&head(&data, h), sel);
            let got = evaluate_with(&head(&data, h), &probs[h], sel);
            assert_eq!(got.kept, want.kept, "head {h}");
            for (i, (x, y)) in got.recall.iter().zip(&want.recall).enumerate() {
                assert!((x - y).abs() <= 1e-5, "head {h} query {i}: {x} vs {y}");
            }
            let kept: u64 = want.kept.iter().map(|&k| k as u64).sum();
            assert_eq!(kept, sel.kept_pairs(), "head {h}");
        }
    }
}

#[test]
fn many_selections_at_once_give_each_one_s_bits() {
    for d in [64, 16] {
        let data = GroupData::random(230, d, 3, 21 + d as u64);
        let probs = data.input().true_probs().to_vec();
        let all = method_selections(&data);
        for h in 0..3 {
            let sels: Vec<&Selection> = all.iter().map(|s| &s[h]).collect();
            let many = evaluate_many(&head(&data, h), &probs[h], &sels);
            assert_eq!(many.len(), sels.len());
            for (got, sel) in many.iter().zip(&sels) {
                let want = evaluate_with(&head(&data, h), &probs[h], sel);
                assert_eq!(got, &want, "d {d} head {h}");
            }
        }
        assert!(evaluate_many(&head(&data, 0), &probs[0], &[]).is_empty());
    }
}

#[test]
fn recall_alone_is_the_recall_of_the_full_evaluation() {
    // Every method's selections (token and block rows), d 64 (the paired sums) and 16.
    for d in [64, 16] {
        let data = GroupData::random(260, d, 3, 5 + d as u64);
        let probs = data.input().true_probs().to_vec();
        for sels in method_selections(&data) {
            for (h, sel) in sels.iter().enumerate() {
                let want = evaluate_with(&head(&data, h), &probs[h], sel).recall;
                let got = recall_with(&probs[h], sel);
                assert_eq!(got.len(), want.len());
                for (i, (x, y)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (x - y).abs() <= 1e-5,
                        "d {d} head {h} query {i}: {x} vs {y}"
                    );
                }
            }
        }
    }
}

#[test]
fn recall_from_block_masses_is_the_recall_of_whole_block_selections() {
    // Capture blocks of 64 (GroupData): block methods of 64-token blocks are summed from the
    // block masses, token methods are refused (their ranges cut blocks).
    let data = GroupData::random(300, 16, 3, 17);
    let probs = data.input().true_probs().to_vec();
    let all = method_selections(&data);
    let mut summed = Vec::new();
    for (info, sels) in crate::registry::METHODS.iter().zip(&all) {
        for (h, sel) in sels.iter().enumerate() {
            let bm = &data.truth[h];
            let Some(got) = recall_from_block_mass(bm, 64, sel) else {
                continue;
            };
            let want = recall_with(&probs[h], sel);
            for (i, (x, y)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (x - y).abs() <= 1e-5,
                    "{} head {h} query {i}: {x} vs {y}",
                    info.name
                );
            }
            summed.push(info.name);
            // Masses of 64-token blocks read as 32-token ones: refused (their shape differs).
            assert!(recall_from_block_mass(bm, 32, sel).is_none());
        }
    }
    for name in ["phsa", "phsa-fit", "infllm-v2", "moba"] {
        assert!(summed.contains(&name), "{name} was not summed from blocks");
    }
    for name in ["oracle-topk", "h2o", "rtpurbo-proxy"] {
        assert!(!summed.contains(&name), "{name} cuts blocks");
    }
}

#[test]
fn pairwise_iou_matches_iou() {
    let data = GroupData::random(200, 16, 3, 4);
    let all = method_selections(&data);
    for h in 0..3 {
        let sels: Vec<&Selection> = all.iter().map(|s| &s[h]).collect();
        let got = iou_pairs(&sels);
        let mut p = 0;
        for a in 0..sels.len() {
            for b in a + 1..sels.len() {
                let want = iou(sels[a], sels[b]);
                assert!((got[p] - want).abs() < 1e-12, "pair ({a}, {b})");
                p += 1;
            }
        }
    }
}
