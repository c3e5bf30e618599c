//! Synthetic run bundles of any size for the viewer's benchmarks and tests: pooled maps with a
//! sink column, a decaying diagonal band and a few vertical stripes (rows sum to 1), metric rows,
//! IoU rows, frequency shares, tokens and block selections, written with the real bundle writer,
//! and optionally captured post-RoPE Q/K/V of chosen layers ([`synthetic_qkv`]), written by the
//! simulator's own `--save-qkv` writer so live re-selection can run on them.

use std::collections::BTreeMap;
use std::path::Path;

use attnscope_analysis::bundle::qkv::{write_qkv, SavedLayer};
use attnscope_analysis::bundle::{
    qkv_file_name, BudgetInfo, Bundle, DataInfo, Format, InputInfo, Manifest, ManifestMethod,
    ModelInfo, QkvFile,
};
use attnscope_analysis::error::AnalysisError;
use attnscope_analysis::results::{HeadRow, IouRow, MetricRow, SelectionRow, SimResults, TokenRow};
use attnscope_core::rng::Rng;

/// Shape of a synthetic bundle.
#[derive(Debug, Clone)]
pub struct Spec {
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub n_tokens: usize,
    /// Tokens per block: maps are `n_tokens / block` blocks per side.
    pub block: usize,
    pub methods: Vec<String>,
    pub sparsities: Vec<f64>,
    /// Methods (first k) whose budget-0 selections are written.
    pub selection_methods: usize,
    /// Layers whose post-RoPE Q/K/V are written (`qkv-input0.safetensors`, as
    /// `attnscope simulate --save-qkv` writes them), for live re-selection.
    pub qkv_layers: Vec<usize>,
}

impl Spec {
    /// The benchmark's bundle: a 24-layer, 14-head model at 32k tokens with 512 x 512 maps.
    pub fn qwen_32k() -> Self {
        Self {
            layers: 24,
            heads: 14,
            kv_heads: 2,
            head_dim: 64,
            n_tokens: 32768,
            block: 64,
            methods: ["phsa", "infllm-v2", "quest", "oracle-topk"]
                .map(String::from)
                .to_vec(),
            sparsities: vec![0.9, 0.95],
            selection_methods: 2,
            qkv_layers: Vec::new(),
        }
    }

    /// The live re-selection benchmark's bundle: one layer of the same model at 32k tokens with
    /// its captured Q/K/V (151 MB) and little else (maps of the 14 heads, no selections).
    pub fn qwen_32k_live() -> Self {
        Self {
            layers: 1,
            selection_methods: 0,
            qkv_layers: vec![0],
            ..Self::qwen_32k()
        }
    }

    /// A small bundle for tests.
    pub fn small() -> Self {
        Self {
            layers: 3,
            heads: 4,
            kv_heads: 2,
            head_dim: 16,
            n_tokens: 256,
            block: 16,
            methods: ["phsa", "infllm-v2"].map(String::from).to_vec(),
            sparsities: vec![0.8],
            selection_methods: 2,
            qkv_layers: Vec::new(),
        }
    }
}

/// A pooled map of `nb` blocks: sink column + decaying diagonal + stripes, rows sum to 1.
pub fn synthetic_map(nb: usize, rng: &mut Rng) -> Vec<f32> {
    let stripes: Vec<usize> = (0..4)
        .map(|_| (rng.next_u64() as usize) % nb.max(1))
        .collect();
    let decay = 0.05 + 0.3 * rng.unit_f32();
    let sink = 0.5 + 4.0 * rng.unit_f32();
    let mut m = vec![0f32; nb * nb];
    for q in 0..nb {
        let row = &mut m[q * nb..q * nb + q + 1];
        for (k, x) in row.iter_mut().enumerate() {
            let d = (q - k) as f32;
            let mut v = (-decay * d).exp() + 0.002 * rng.unit_f32();
            if k == 0 {
                v += sink;
            }
            if stripes.contains(&k) {
                v += 0.3;
            }
            *x = v;
        }
        let s: f32 = row.iter().sum();
        for x in row.iter_mut() {
            *x /= s;
        }
    }
    m
}

/// Selections keeping the sink, two local blocks and ~`keep` of the other causal blocks.
fn synthetic_selection(
    nb: usize,
    keep: f64,
    head: (usize, usize, usize),
    method: &str,
    block: usize,
    rng: &mut Rng,
) -> SelectionRow {
    let (layer, h, kv) = head;
    let mut row = SelectionRow::new(0, layer, h, kv, method.to_string(), 0, block);
    let mut blocks = Vec::new();
    let mut frac = Vec::new();
    for q in 0..nb {
        blocks.clear();
        frac.clear();
        for k in 0..=q {
            let forced = k == 0 || q - k <= 2;
            if forced || f64::from(rng.unit_f32()) < keep {
                blocks.push(k as u32);
                frac.push(1.0);
            }
        }
        row.push_query_block(&blocks, &frac);
    }
    row
}

/// Rotary base of the synthetic Q/K (Qwen2.5's `rope_theta`).
pub const SYNTHETIC_ROPE_THETA: f64 = 1e6;

/// Synthetic post-RoPE Q/K/V of one layer, head-major (`[heads, n, d]`, `[kv_heads, n, d]`) as
/// `--save-qkv` stores them. Random, but shaped so that attention is far from uniform. Per KV
/// group, before the rotation (rotate-half pairs `(c, c + d/2)`, base [`SYNTHETIC_ROPE_THETA`],
/// so low chunks turn fast and high chunks barely turn over 32k tokens):
///
/// - a **sink**: key 0 has a large component (27) along a direction of the slowest chunks
///   (the last eighth) that every query shares with weight 3 x U(0.6, 1.3) per q-head: a sink
///   logit of about 6 to 13, so the sink takes from a few percent to most of a query's mass;
/// - **topics**: the text is cut into segments of 64 to 1023 tokens, each with one of 8 topic
///   directions (slow chunks); keys get 5 x salience (U(0.5, 1.5), 2% of tokens 2.5: heavy
///   hitters) times their segment's topic, queries 5 x U(0.6, 1.4) times theirs: a query
///   favours earlier segments of its own topic (logit about +3, vertical stripes and blocks);
/// - a **local** part: one vector of norm 5 on the fast chunks (the first 7/16) shared by the
///   group's queries (weight U(0.5, 1.5) per q-head) and keys; after the rotation its score is a
///   sum of cosines of the distance, a recency band of about a hundred tokens;
/// - **punctuation**: keys of punctuation tokens add 4 x a punctuation direction that queries
///   weigh by 2 x U(0, 1) (what PHSA's punctuation representative can pick up);
/// - uniform noise of standard deviation 0.3 on every coordinate; values are U(-1, 1).
pub fn synthetic_qkv(
    layer: usize,
    heads: usize,
    kv_heads: usize,
    d: usize,
    punct: &[bool],
    seed: u64,
) -> SavedLayer {
    let n = punct.len();
    let kv_heads = kv_heads.max(1);
    let gs = heads / kv_heads;
    let half = d / 2;
    let mut rng = Rng::from_state(seed ^ (layer as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    // Chunk bands: local [0, 7/16), punctuation [7/16, 10/16), topics [9/16, 7/8), sink [7/8, 1).
    let band = |a: usize, b: usize| (half * a / 16, (half * b / 16).max(half * a / 16 + 1));
    let (local, punct_band, topic_band, sink_band) =
        (band(0, 7), band(7, 10), band(9, 14), band(14, 16));
    let direction = |rng: &mut Rng, (c0, c1): (usize, usize), norm: f32| {
        let mut v = vec![0f32; d];
        for c in c0..c1.min(half) {
            v[c] = rng.normal_f32();
            v[c + half] = rng.normal_f32();
        }
        let s = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
        v.iter_mut().for_each(|x| *x *= norm / s);
        v
    };
    // Segments and their topics.
    let mut topic_of = vec![0usize; n];
    let mut i = 0;
    while i < n {
        let len = 64 + (rng.next_u64() % 960) as usize;
        let t = (rng.next_u64() % 8) as usize;
        topic_of[i..(i + len).min(n)].fill(t);
        i += len;
    }
    // Rotation angles per (position, chunk).
    let (cos, sin): (Vec<f32>, Vec<f32>) = (0..n)
        .flat_map(|i| {
            (0..half).map(move |c| {
                let a = i as f64 * SYNTHETIC_ROPE_THETA.powf(-(c as f64) / half as f64);
                (a.cos() as f32, a.sin() as f32)
            })
        })
        .unzip();
    let rotate = |x: &mut [f32], i: usize| {
        for c in 0..half {
            let (co, si) = (cos[i * half + c], sin[i * half + c]);
            let (a, b) = (x[c], x[c + half]);
            x[c] = a * co - b * si;
            x[c + half] = a * si + b * co;
        }
    };
    let noise = |rng: &mut Rng| (rng.unit_f32() - 0.5) * 0.3 * 12f32.sqrt();
    let mut q = vec![0f32; heads * n * d];
    let mut k = vec![0f32; kv_heads * n * d];
    let mut v = vec![0f32; kv_heads * n * d];
    for g in 0..kv_heads {
        let sink = direction(&mut rng, sink_band, 1.0);
        let loc = direction(&mut rng, local, 5.0);
        let pun = direction(&mut rng, punct_band, 1.0);
        let topics: Vec<Vec<f32>> = (0..8)
            .map(|_| direction(&mut rng, topic_band, 1.0))
            .collect();
        for i in 0..n {
            let row = &mut k[(g * n + i) * d..(g * n + i + 1) * d];
            let salience = if rng.unit_f32() < 0.02 {
                2.5
            } else {
                0.5 + rng.unit_f32()
            };
            let (t, p, s0) = (
                &topics[topic_of[i]],
                if punct[i] { 4.0 } else { 0.0 },
                if i == 0 { 27.0 } else { 0.0 },
            );
            for c in 0..d {
                row[c] =
                    5.0 * salience * t[c] + loc[c] + p * pun[c] + s0 * sink[c] + noise(&mut rng);
            }
            rotate(row, i);
            for x in &mut v[(g * n + i) * d..(g * n + i + 1) * d] {
                *x = 2.0 * rng.unit_f32() - 1.0;
            }
        }
        for h in g * gs..(g + 1) * gs {
            let a = 3.0 * (0.6 + 0.7 * rng.unit_f32());
            let w = 5.0 * (0.6 + 0.8 * rng.unit_f32());
            let m = 0.5 + rng.unit_f32();
            let pw = 2.0 * rng.unit_f32();
            for i in 0..n {
                let row = &mut q[(h * n + i) * d..(h * n + i + 1) * d];
                let t = &topics[topic_of[i]];
                for c in 0..d {
                    row[c] = a * sink[c] + w * t[c] + m * loc[c] + pw * pun[c] + noise(&mut rng);
                }
                rotate(row, i);
            }
        }
    }
    SavedLayer {
        layer,
        n_heads: heads,
        n_kv_heads: kv_heads,
        head_dim: d,
        n,
        q,
        k,
        v,
    }
}

/// Writes a synthetic bundle into `dir` (which must not hold a finished run).
pub fn write(dir: &Path, spec: &Spec) -> attnscope_analysis::Result<()> {
    let nb = spec.n_tokens.div_ceil(spec.block);
    let mut rng = Rng::from_state(7);
    let mut results = SimResults::default();
    let gs = spec.heads / spec.kv_heads.max(1);
    let chunks = spec.head_dim / 2;
    for l in 0..spec.layers {
        for h in 0..spec.heads {
            let kv = h / gs.max(1);
            let mut share: Vec<f32> = (0..chunks)
                .map(|c| (c as f32 * 0.2).exp() * rng.unit_f32())
                .collect();
            let s: f32 = share.iter().sum();
            share.iter_mut().for_each(|x| *x /= s);
            results.heads.push(HeadRow {
                input: 0,
                layer: l,
                head: h,
                kv_head: kv,
                sink_mass: f64::from(rng.unit_f32()),
                energy_share: share,
                agreement: (0..chunks).map(|_| rng.unit_f32()).collect(),
                pooled: synthetic_map(nb, &mut rng),
                n_blocks: nb,
                block: 0,
            });
            for (mi, m) in spec.methods.iter().enumerate() {
                for (bi, &sp) in spec.sparsities.iter().enumerate() {
                    let recall =
                        (1.0 - sp * 0.3 - 0.05 * mi as f64 * rng.unit_f32() as f64).clamp(0.0, 1.0);
                    results.metrics.push(MetricRow {
                        input: 0,
                        layer: l,
                        head: h,
                        kv_head: kv,
                        method: m.clone(),
                        budget: bi,
                        knob: 16.0,
                        target_sparsity: sp,
                        sparsity: sp,
                        recall,
                        info_loss: 1.0 - recall,
                        kl: -recall.ln(),
                        out_rel_err: 0.5 * (1.0 - recall),
                        cosine: recall,
                        needle_recall: None,
                        reached: true,
                        recall_by_query_block: (0..nb).map(|_| recall as f32).collect(),
                    });
                }
                if mi < spec.selection_methods {
                    let keep = 1.0 - spec.sparsities.first().copied().unwrap_or(0.9);
                    results.selections.push(synthetic_selection(
                        nb,
                        keep,
                        (l, h, kv),
                        m,
                        spec.block,
                        &mut rng,
                    ));
                }
            }
        }
        for kv in 0..spec.kv_heads {
            for bi in 0..spec.sparsities.len() {
                for a in 0..spec.methods.len() {
                    for b in a + 1..spec.methods.len() {
                        results.iou.push(IouRow {
                            input: 0,
                            layer: l,
                            kv_head: kv,
                            budget: bi,
                            method_a: spec.methods[a].clone(),
                            method_b: spec.methods[b].clone(),
                            iou: f64::from(rng.unit_f32()),
                        });
                    }
                }
            }
        }
    }
    let tokens: Vec<TokenRow> = (0..spec.n_tokens)
        .map(|i| TokenRow {
            input: 0,
            position: i,
            id: (i % 5000) as u32,
            piece: if i % 9 == 8 {
                ".".into()
            } else {
                format!(" w{}", i % 97)
            },
            is_punct: i % 9 == 8,
            is_newline: false,
            char_start: None,
            char_end: None,
            is_needle: false,
            is_needle_query: false,
        })
        .collect();
    let mut manifest = Manifest {
        format: Format::Parquet,
        run_id: "synthetic".into(),
        model: ModelInfo {
            spec: "synthetic".into(),
            architecture: "synthetic".into(),
            n_layers: spec.layers,
            n_heads: spec.heads,
            n_kv_heads: spec.kv_heads,
            head_dim: spec.head_dim,
            ..ModelInfo::default()
        },
        data: DataInfo {
            dataset: "synthetic".into(),
            len: spec.n_tokens,
            depth: None,
            inputs: vec![InputInfo {
                index: 0,
                name: "synthetic".into(),
                text: "synthetic".into(),
                seed: 0,
                n_tokens: spec.n_tokens,
                ..InputInfo::default()
            }],
        },
        n_tokens: spec.n_tokens,
        methods: spec
            .methods
            .iter()
            .map(|m| ManifestMethod {
                name: m.clone(),
                kind: "published".into(),
                params: BTreeMap::new(),
            })
            .collect(),
        budgets: spec
            .sparsities
            .iter()
            .enumerate()
            .map(|(i, &s)| BudgetInfo {
                index: i,
                label: format!("sparsity={s}"),
                kind: "sparsity".into(),
                value: s,
            })
            .collect(),
        layers: (0..spec.layers).collect(),
        capture_block: spec.block,
        selection_budgets: if spec.selection_methods > 0 {
            vec![0]
        } else {
            Vec::new()
        },
        device: "synthetic".into(),
        ..Manifest::default()
    };
    if !spec.qkv_layers.is_empty() {
        // As `attnscope simulate --save-qkv` does: one file per input, listed in the manifest.
        std::fs::create_dir_all(dir).map_err(|e| AnalysisError::File {
            path: dir.to_path_buf(),
            msg: e.to_string(),
        })?;
        let punct: Vec<bool> = tokens.iter().map(|t| t.is_punct).collect();
        let layers: Vec<SavedLayer> = spec
            .qkv_layers
            .iter()
            .map(|&l| synthetic_qkv(l, spec.heads, spec.kv_heads, spec.head_dim, &punct, 11))
            .collect();
        let file = qkv_file_name(0);
        write_qkv(&dir.join(&file), 0, &layers)?;
        manifest.qkv = vec![QkvFile {
            input: 0,
            file,
            layers: spec.qkv_layers.clone(),
        }];
    }
    let mut b = Bundle {
        dir: dir.to_path_buf(),
        manifest,
        results,
        tokens,
    };
    b.write(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A part of a sweep (`simulate --shard`) holds some of the sweep's inputs: the input picker
    /// and the first focus use their indices.
    #[test]
    fn a_part_of_a_sweep_is_shown_by_its_input_indices() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("run");
        write(&dir, &Spec::small()).expect("write");
        let mut run = crate::data::RunData::open(&dir).expect("open");
        assert_eq!(run.input_indices(), [0]);
        let part = &mut run.manifest.data.inputs[0];
        part.index = 5;
        part.name = "lcet10, seed 1".into();
        assert_eq!(run.input_indices(), [5]);
        assert_eq!(crate::views::Focus::for_run(&run).input, 5);
        assert_eq!(run.describe_input(5), "lcet10, seed 1");
    }

    #[test]
    fn maps_are_causal_and_row_normalized() {
        let mut rng = Rng::from_state(1);
        let m = synthetic_map(8, &mut rng);
        for q in 0..8 {
            let s: f32 = m[q * 8..q * 8 + 8].iter().sum();
            assert!((s - 1.0).abs() < 1e-5);
            assert!(m[q * 8 + q + 1..q * 8 + 8].iter().all(|&x| x == 0.0));
        }
    }

    /// The synthetic Q/K give attention with a sink, a recency band and concentrated mass, far
    /// from uniform (checked with the simulator's exact capture).
    #[test]
    fn synthetic_qkv_attention_is_not_uniform() {
        use attnscope_core::attention::LayerQkv;
        use attnscope_core::capture::{capture_layer, CaptureOptions};
        let (n, d, heads, kv) = (2048, 64, 4, 2);
        let punct: Vec<bool> = (0..n).map(|i| i % 9 == 8).collect();
        let s = synthetic_qkv(3, heads, kv, d, &punct, 11);
        assert_eq!((s.layer, s.n, s.head_dim), (3, n, d));
        assert_eq!(
            (s.q.len(), s.k.len(), s.v.len()),
            (heads * n * d, kv * n * d, kv * n * d)
        );
        let (q, k, v) = s.token_major();
        let qkv = LayerQkv {
            layer: 3,
            n_heads: heads,
            n_kv_heads: kv,
            head_dim: d,
            q: q.view(),
            k: k.view(),
            v: v.view(),
            rule: attnscope_core::attention::ScoreRule::plain(d),
        };
        let (caps, _) = capture_layer(&qkv, &CaptureOptions::default());
        let nb = n / 64;
        for (h, c) in caps.iter().enumerate() {
            // Over the last 512 queries: sink mass, mass of the own + previous block, and mass
            // of the top 10% of blocks (uniform attention would give about 0.1).
            let rows = n - 512..n;
            let m = rows.len() as f32;
            let sink: f32 = rows.clone().map(|i| c.sink_mass[i]).sum::<f32>() / m;
            let local: f32 = rows
                .clone()
                .map(|i| c.block_mass[[i, i / 64]] + c.block_mass[[i, (i / 64).max(1) - 1]])
                .sum::<f32>()
                / m;
            let top: f32 = rows
                .map(|i| {
                    let mut b: Vec<f32> = (0..nb).map(|j| c.block_mass[[i, j]]).collect();
                    b.sort_by(|x, y| y.total_cmp(x));
                    b[..nb / 10].iter().sum::<f32>()
                })
                .sum::<f32>()
                / m;
            eprintln!("head {h}: sink {sink:.3}, local {local:.3}, top 10% of blocks {top:.3}");
            assert!((0.01..0.99).contains(&sink), "head {h}: sink mass {sink}");
            // The two nearest blocks get more than an average block of the rest.
            let rest = (1.0 - sink - local).max(0.0) / (nb - 3) as f32;
            assert!(
                local / 2.0 > 2.0 * rest,
                "head {h}: local {local}, rest {rest}"
            );
            assert!(top > 0.5, "head {h}: top 10% of blocks hold {top}");
        }
    }
}
