//! Synthetic run bundles of any size for the viewer's benchmarks and tests: pooled maps with a
//! sink column, a decaying diagonal band and a few vertical stripes (rows sum to 1), metric rows,
//! IoU rows, frequency shares, tokens and block selections, written with the real bundle writer.

use std::collections::BTreeMap;
use std::path::Path;

use attnscope_analysis::bundle::{
    BudgetInfo, Bundle, DataInfo, Format, InputInfo, Manifest, ManifestMethod, ModelInfo,
    SelectionRow, TokenRow,
};
use attnscope_analysis::sim::{HeadRow, IouRow, MetricRow, SimResults};
use attnscope_analysis::testing::SplitMix;

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
        }
    }
}

/// A pooled map of `nb` blocks: sink column + decaying diagonal + stripes, rows sum to 1.
pub fn synthetic_map(nb: usize, rng: &mut SplitMix) -> Vec<f32> {
    let stripes: Vec<usize> = (0..4)
        .map(|_| (rng.next_u64() as usize) % nb.max(1))
        .collect();
    let decay = 0.05 + 0.3 * rng.uniform();
    let sink = 0.5 + 4.0 * rng.uniform();
    let mut m = vec![0f32; nb * nb];
    for q in 0..nb {
        let row = &mut m[q * nb..q * nb + q + 1];
        for (k, x) in row.iter_mut().enumerate() {
            let d = (q - k) as f32;
            let mut v = (-decay * d).exp() + 0.002 * rng.uniform();
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
    rng: &mut SplitMix,
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
            if forced || f64::from(rng.uniform()) < keep {
                blocks.push(k as u32);
                frac.push(1.0);
            }
        }
        row.push_query_block(&blocks, &frac);
    }
    row
}

/// Writes a synthetic bundle into `dir` (which must not hold a finished run).
pub fn write(dir: &Path, spec: &Spec) -> attnscope_analysis::Result<()> {
    let nb = spec.n_tokens.div_ceil(spec.block);
    let mut rng = SplitMix(7);
    let mut results = SimResults::default();
    let gs = spec.heads / spec.kv_heads.max(1);
    let chunks = spec.head_dim / 2;
    for l in 0..spec.layers {
        for h in 0..spec.heads {
            let kv = h / gs.max(1);
            let mut share: Vec<f32> = (0..chunks)
                .map(|c| (c as f32 * 0.2).exp() * rng.uniform())
                .collect();
            let s: f32 = share.iter().sum();
            share.iter_mut().for_each(|x| *x /= s);
            results.heads.push(HeadRow {
                input: 0,
                layer: l,
                head: h,
                kv_head: kv,
                sink_mass: f64::from(rng.uniform()),
                energy_share: share,
                agreement: (0..chunks).map(|_| rng.uniform()).collect(),
                pooled: synthetic_map(nb, &mut rng),
                n_blocks: nb,
            });
            for (mi, m) in spec.methods.iter().enumerate() {
                for (bi, &sp) in spec.sparsities.iter().enumerate() {
                    let recall =
                        (1.0 - sp * 0.3 - 0.05 * mi as f64 * rng.uniform() as f64).clamp(0.0, 1.0);
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
                            iou: f64::from(rng.uniform()),
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
    let manifest = Manifest {
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
                n_needles: 0,
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

    #[test]
    fn maps_are_causal_and_row_normalized() {
        let mut rng = SplitMix(1);
        let m = synthetic_map(8, &mut rng);
        for q in 0..8 {
            let s: f32 = m[q * 8..q * 8 + 8].iter().sum();
            assert!((s - 1.0).abs() < 1e-5);
            assert!(m[q * 8 + q + 1..q * 8 + 8].iter().all(|&x| x == 0.0));
        }
    }
}
