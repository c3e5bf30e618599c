//! Methods with a device scoring (`analysis/src/device/`) against their CPU definitions: every
//! registered method that declares one ([`Selector::device_scoring`]).
//!
//! (The score-independent kept-pair counts and knob calibration are in `device_counts.rs`.)
//! With a GPU (marked `gpu_`; SKIPPED without one): on a random model (two shapes) and on real SmolLM2 weights
//! (ATTNSCOPE_GPU_MODEL, ATTNSCOPE_GPU_TEXT as in gpu_sim.rs), every layer, every KV group:
//! the device selections equal the host's except at score near-ties (the fraction of differing
//! query rows is printed and must stay tiny), and per query recall, output error and cosine agree
//! to 1e-3 where the selections agree; outputs are poisoned with NaN before every launch and a
//! NaN is an error. `oracle-topk-block` ranks the device capture's own `P[i, b]` (the same values
//! the host method reads from the downloaded capture): its own-block ranks must equal the host's,
//! its selections must be identical, and its per-query metrics agree to 1e-5 (recall, cosine) and
//! 5e-5 (relative output error).
#![cfg(feature = "cuda")]

mod device_util;

use attnscope_analysis::budget::{resolve, Budget};
use attnscope_analysis::device::{block_scoring, query_weights, selection_of, static_rule};
use attnscope_analysis::method::{DeviceScoring, GroupInput, HeadKeys};
use attnscope_analysis::metrics::{evaluate_with, DenseHead};
use attnscope_analysis::selection::{Scored, Selection};
use attnscope_core::attention::{AttentionHook, BlockLists, DeviceLayer, HookAction, LayerQkv};
use attnscope_core::capture::CaptureOptions;
use device_util::*;
use ndarray::{s, Array2};

/// One KV group's Q (per q-head), K and V.
type GroupQkv = (Vec<Array2<f32>>, Array2<f32>, Array2<f32>);

/// Compares every method on one captured layer; accumulates counts into `stats`.
#[derive(Debug, Default)]
struct Stats {
    rows: u64,
    rows_differ: u64,
    queries: u64,
    worst_recall: f64,
    worst_err: f64,
    worst_cos: f64,
    per_method: Vec<(String, u64, u64)>,
    /// `oracle-topk-block` alone: worst |recall|, |out err|, |cosine| differences, rank rows.
    oracle_worst: (f64, f64, f64),
    oracle_ranks: u64,
}

struct Check<'a> {
    punct: &'a [bool],
    newline: &'a [bool],
    stats: Stats,
    sparsity: f64,
}

fn same_keys(a: &Selection, b: &Selection, i: usize) -> bool {
    a.keys_of(i).eq(b.keys_of(i))
}

impl Check<'_> {
    fn layer(&mut self, qkv: &LayerQkv<'_>, device: &mut dyn DeviceLayer) {
        let opts = CaptureOptions::default();
        let (heads, dense) = device.capture(&opts).expect("capture");
        let (n, d) = (qkv.len(), qkv.head_dim);
        let (nh, nkv) = (qkv.n_heads, qkv.n_kv_heads);
        let gs = nh / nkv;
        for name in device_methods() {
            let run = run_of(name, &overrides(name));
            let sc = scoring(&run, n);
            let block = sc.block();
            let groups: Vec<GroupQkv> = (0..nkv)
                .map(|g| {
                    (
                        (g * gs..(g + 1) * gs)
                            .map(|h| qkv.q_head(h).to_owned())
                            .collect(),
                        qkv.k_head(g).to_owned(),
                        qkv.v_head(g).to_owned(),
                    )
                })
                .collect();
            // Host: prepare, calibrate to the target, select, evaluate.
            let mut cpu_sel: Vec<Selection> = Vec::new();
            let mut cpu_knob = Vec::new();
            let mut cpu_metrics = Vec::new();
            for (g, (q, k, v)) in groups.iter().enumerate() {
                let input = GroupInput {
                    layer: qkv.layer,
                    kv_head: g,
                    q: q.iter().map(|x| x.view()).collect(),
                    k: k.view(),
                    v: v.view(),
                    punct: self.punct,
                    newline: self.newline,
                    truth: heads[g * gs..(g + 1) * gs].iter().collect(),
                    capture_block: 64,
                    scored: Scored::all(k.nrows()),
                    rule: qkv.rule,
                    cache: Default::default(),
                };
                let prep = run.selector.prepare(&input);
                let cal = resolve(
                    run.selector.as_ref(),
                    prep.as_ref(),
                    Budget::Sparsity(self.sparsity),
                    Scored::all(n),
                    None,
                );
                let probs = input.true_probs();
                for (hi, sel) in cal.selections.iter().enumerate() {
                    let h = g * gs + hi;
                    let dh = DenseHead {
                        q: q[hi].view(),
                        k: k.view(),
                        v: v.view(),
                        lse: &heads[h].lse,
                        dense_out: dense.slice(s![.., h * d..(h + 1) * d]),
                        rule: qkv.rule,
                    };
                    cpu_metrics.push(evaluate_with(&dh, &probs[hi], sel));
                }
                cpu_knob.push(cal.knob);
                cpu_sel.extend(cal.selections);
            }
            // Device: the same knob (block methods: one for all groups; oracles: per group).
            let (gpu_sel, m): (Vec<Selection>, _) = if let DeviceScoring::BlockMassTopK { .. } = sc
            {
                let ranks = device.block_mass_ranks(block).expect("own block ranks");
                for h in 0..nh {
                    let want = host_ranks(&heads[h].block_mass, block);
                    assert_eq!(
                        &ranks[h * n..(h + 1) * n],
                        &want[..],
                        "{name} layer {} head {h}: own-block ranks differ from the host's",
                        qkv.layer
                    );
                }
                self.stats.oracle_ranks += (nh * n) as u64;
                let ks: Vec<usize> = (0..nh)
                    .map(|h| (cpu_knob[h / gs].round() as usize).max(1))
                    .collect();
                let m = device
                    .block_mass_select_measure(block, &[ks], true)
                    .expect("device oracle")
                    .remove(0);
                let blocks = m.blocks.clone().expect("blocks kept");
                let sels = (0..nh)
                    .map(|h| selection_of(&blocks, h, n, m.width, block, 1))
                    .collect();
                (sels, m)
            } else if let DeviceScoring::TileMaxTopK { rank, .. } = sc {
                let nb = n.div_ceil(block);
                let truth = device.pooled_max_truth(block).expect("pooled truth");
                assert!(truth.iter().all(|x| x.is_finite()), "pooled truth NaN");
                let width = cpu_knob
                    .iter()
                    .map(|&x| x.round() as usize)
                    .max()
                    .unwrap_or(1)
                    .clamp(1, nb);
                let mut all = vec![u32::MAX; nh * nb * width];
                for h in 0..nh {
                    let ranked = rank(&truth[h * nb * nb..(h + 1) * nb * nb], nb);
                    let k = (cpu_knob[h / gs].round() as usize).max(1);
                    for (r, row) in ranked.iter().enumerate() {
                        for (e, &c) in row.iter().take(k.min(width)).enumerate() {
                            all[(h * nb + r) * width + e] = c;
                        }
                    }
                }
                let m = device
                    .measure_blocks(&BlockLists {
                        blocks: &all,
                        width,
                        unit: block,
                        qblock: block,
                        heads_per_sel: 1,
                    })
                    .expect("measure");
                let sels = (0..nh)
                    .map(|h| selection_of(&all, h, n, width, block, block))
                    .collect();
                (sels, m)
            } else if let DeviceScoring::Static { n_init } = sc {
                let mut out = device
                    .block_select_measure(&static_rule(n_init, cpu_knob[0]), &[0], true)
                    .expect("device static pattern");
                let m = out.remove(0);
                let blocks = m.blocks.clone().expect("blocks kept");
                let sels = (0..nh)
                    .map(|h| selection_of(&blocks, h / gs, n, m.width, 1, 1))
                    .collect();
                (sels, m)
            } else {
                let DeviceScoring::Representatives(rule) = sc else {
                    unreachable!("the other scorings are handled above")
                };
                assert!(
                    cpu_knob.iter().all(|&x| x == cpu_knob[0]),
                    "{name}: knob differs between groups"
                );
                let k = cpu_knob[0].max(run.selector.knob().min).round() as usize;
                let mut reps = Vec::new();
                let mut mins = Vec::new();
                let mut mr = 0;
                for (_, kk, _) in &groups {
                    let keys = HeadKeys {
                        k: kk.view(),
                        punct: self.punct,
                        newline: self.newline,
                    };
                    let (r, lo, m) = reps_of(&run, &keys);
                    mr = m;
                    reps.extend(r);
                    mins.extend(lo);
                }
                let mut spec =
                    block_scoring(&rule, &reps, (!mins.is_empty()).then_some(&mins[..]), mr, d);
                let weights = query_weights(&run, qkv);
                spec.query_weights = weights.as_deref();
                let mut out = device
                    .block_select_measure(&spec, &[k], true)
                    .expect("device block selection");
                let m = out.remove(0);
                let blocks = m.blocks.clone().expect("blocks kept");
                let sels = (0..nh)
                    .map(|h| {
                        let sh = if spec.group_shared { h / gs } else { h };
                        selection_of(&blocks, sh, n, m.width, block, 1)
                    })
                    .collect();
                (sels, m)
            };
            // Block-mass top-k ranks the same P values on both sides: tighter bounds.
            let exact = matches!(sc, DeviceScoring::BlockMassTopK { .. });
            let (mut rows, mut differ) = (0u64, 0u64);
            for h in 0..nh {
                let c = &cpu_metrics[h];
                for i in 0..n {
                    let o = h * n + i;
                    let (r, e, cs) = (m.recall[o], m.out_rel_err[o], m.cosine[o]);
                    assert!(
                        r.is_finite() && e.is_finite() && cs.is_finite(),
                        "{name}: NaN at head {h} query {i}"
                    );
                    rows += 1;
                    if !same_keys(&cpu_sel[h], &gpu_sel[h], i) {
                        differ += 1;
                        continue;
                    }
                    assert_eq!(m.kept[o], c.kept[i], "{name}: kept at head {h} query {i}");
                    let dr = (r - c.recall[i]).abs() as f64;
                    let de = (e - c.out_rel_err[i]).abs() as f64;
                    let dc = (cs - c.cosine[i]).abs() as f64;
                    self.stats.worst_recall = self.stats.worst_recall.max(dr);
                    self.stats.worst_err = self.stats.worst_err.max(de);
                    self.stats.worst_cos = self.stats.worst_cos.max(dc);
                    // The oracle ranks the same P values on both sides: tighter bounds.
                    let (tr, te, tc) = if exact {
                        let w = &mut self.stats.oracle_worst;
                        *w = (w.0.max(dr), w.1.max(de), w.2.max(dc));
                        (1e-5, 5e-5, 1e-5)
                    } else {
                        (1e-3, 1e-3, 1e-3)
                    };
                    assert!(
                        dr <= tr && de <= te && dc <= tc,
                        "{name} layer {} head {h} query {i}: recall {r} vs {}, err {e} vs {}, cos {cs} vs {}",
                        qkv.layer,
                        c.recall[i],
                        c.out_rel_err[i],
                        c.cosine[i]
                    );
                }
            }
            // The oracle ranks the same P values on both sides: no row may differ.
            assert!(
                !exact || differ == 0,
                "{name} layer {}: {differ} query rows differ",
                qkv.layer
            );
            self.stats.rows += rows;
            self.stats.rows_differ += differ;
            self.stats.queries += rows - differ;
            match self.stats.per_method.iter_mut().find(|x| x.0 == name) {
                Some(x) => {
                    x.1 += rows;
                    x.2 += differ;
                }
                None => self.stats.per_method.push((name.into(), rows, differ)),
            }
        }
    }

    fn report(&self, what: &str) {
        println!(
            "{what}: {} (head, query) rows, {} differ ({:.2e}); worst |diff| where equal: \
             recall {:.2e}, out err {:.2e}, cosine {:.2e}",
            self.stats.rows,
            self.stats.rows_differ,
            self.stats.rows_differ as f64 / self.stats.rows.max(1) as f64,
            self.stats.worst_recall,
            self.stats.worst_err,
            self.stats.worst_cos
        );
        for (name, rows, differ) in &self.stats.per_method {
            println!(
                "  {name:<12} {rows:>9} rows {differ:>7} differ ({:.2e})",
                *differ as f64 / (*rows).max(1) as f64
            );
        }
        let w = self.stats.oracle_worst;
        println!(
            "  oracle-topk-block: {} own-block ranks equal the host's; worst |diff| recall {:.2e}, \
             out err {:.2e}, cosine {:.2e}",
            self.stats.oracle_ranks, w.0, w.1, w.2
        );
        let frac = self.stats.rows_differ as f64 / self.stats.rows.max(1) as f64;
        assert!(frac < 1e-3, "{what}: {frac:.2e} of the selections differ");
    }
}

impl AttentionHook for Check<'_> {
    fn on_layer(&mut self, _qkv: &LayerQkv<'_>) -> attnscope_core::Result<HookAction> {
        Ok(HookAction::Dense)
    }

    fn on_layer_device(
        &mut self,
        qkv: &LayerQkv<'_>,
        device: &mut dyn DeviceLayer,
    ) -> attnscope_core::Result<HookAction> {
        self.layer(qkv, device);
        Ok(HookAction::Dense)
    }
}

fn gpu_or_skip(test: &str) -> bool {
    match attnscope_core::Device::Cuda(0).check_available() {
        Ok(()) => true,
        Err(e) => {
            println!("SKIPPED {test}: {e}");
            false
        }
    }
}

#[test]
fn gpu_block_methods_match_cpu_on_random_models() {
    if !gpu_or_skip("gpu_block_methods_match_cpu_on_random_models") {
        return;
    }
    use attnscope_core::device::Precision;
    use attnscope_core::gpu::{random_config, GpuModel};
    for (shape, n, seed) in [("smollm2-135m", 1000usize, 3u64), ("qwen2.5-0.5b", 1536, 7)] {
        let mut cfg = random_config(shape).expect("shape");
        cfg.n_layers = 2;
        for precision in [Precision::F32, Precision::Bf16] {
            let model = GpuModel::random(cfg.clone(), 0, precision, seed).expect("model");
            let ids: Vec<u32> = (0..n as u64)
                .map(|i| ((i * 2_654_435_761 + seed) % cfg.vocab as u64) as u32)
                .collect();
            let punct: Vec<bool> = (0..n).map(|j| j % 7 == 3).collect();
            let newline: Vec<bool> = (0..n).map(|j| j % 29 == 5).collect();
            let mut check = Check {
                punct: &punct,
                newline: &newline,
                stats: Stats::default(),
                sparsity: 0.8,
            };
            model
                .forward(&ids, &mut check, &mut |_| {})
                .expect("forward");
            check.report(&format!("random {shape} {precision} n {n}"));
        }
    }
}

#[test]
fn gpu_block_methods_match_cpu_on_real_smollm2() {
    if !gpu_or_skip("gpu_block_methods_match_cpu_on_real_smollm2") {
        return;
    }
    let Some(path) = std::env::var_os("ATTNSCOPE_GPU_MODEL") else {
        println!("SKIPPED gpu_block_methods_match_cpu_on_real_smollm2: set ATTNSCOPE_GPU_MODEL");
        return;
    };
    let Some(text) = std::env::var_os("ATTNSCOPE_GPU_TEXT") else {
        println!("SKIPPED gpu_block_methods_match_cpu_on_real_smollm2: set ATTNSCOPE_GPU_TEXT");
        return;
    };
    use attnscope_datasets::punct::{is_punct_piece, PunctOptions};
    let mut model = attnscope_core::Model::load(path.as_ref()).expect("model");
    let tok = model.tokenizer().expect("tokenizer");
    let text = std::fs::read_to_string(&text).expect("text");
    let mut ids = tok.encode(&text).expect("encode");
    ids.truncate(2048);
    let pieces = tok.pieces(&ids);
    let plain = PunctOptions {
        newlines: false,
        ..PunctOptions::default()
    };
    let punct: Vec<bool> = pieces.iter().map(|p| is_punct_piece(p, &plain)).collect();
    let newline: Vec<bool> = pieces
        .iter()
        .zip(&punct)
        .map(|(p, &pu)| !pu && is_punct_piece(p, &PunctOptions::default()))
        .collect();
    model
        .to_device(
            attnscope_core::Device::Cuda(0),
            attnscope_core::device::Precision::F32,
        )
        .expect("to device");
    let mut check = Check {
        punct: &punct,
        newline: &newline,
        stats: Stats::default(),
        sparsity: 0.9,
    };
    model.forward(&ids, &mut check).expect("forward");
    check.report("real SmolLM2 (f32), 2048 tokens of the text");
}
