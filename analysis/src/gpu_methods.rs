//! Block methods scored and measured on the GPU.
//!
//! On a GPU forward pass (`attnscope simulate --device cuda`) the block methods `phsa`,
//! `infllm-v2`, `nsa`, `moba`, `quest`, `seer-oracle` and `oracle-topk-block` do not run on the
//! host: their block
//! representatives (O(n d), cheap) are computed here exactly as the CPU methods compute them,
//! the device ([`DeviceLayer::block_select_measure`]) scores every query's key blocks, keeps the
//! forced blocks and the top-k others, and measures each selection against the exact dense
//! attention (recall, output error, cosine, kept pairs per query). `seer-oracle` reads the
//! device's pooled ground truth ([`DeviceLayer::pooled_max_truth`]) and ranks its rows here.
//! `oracle-topk-block` ranks the device capture's block mass `P[i, b]` itself with the same row
//! kernel (nothing forced, [`DeviceLayer::block_mass_select_measure`]); its kept pairs depend on
//! whether each query's own block is among its top k, so the device returns that rank per
//! (q-head, query) ([`DeviceLayer::block_mass_ranks`]) and the knob is calibrated on the host per
//! KV group, as the host method does.
//! The CPU methods (`analysis/src/methods/`) define the rules; `tests/gpu_block_methods.rs`
//! compares both on random data and on a real model.
//!
//! Calibration does not depend on scores for the per-query block methods: the kept pairs at
//! top-k depend only on `n`, the block size and the forced blocks ([`RowCounts`]), so the knob is
//! found on the host (the same bisection as [`crate::budget::calibrate`]) before the device runs.
//! Set `ATTNSCOPE_GPU_METHODS=0` to run every method on the host.

use attnscope_core::attention::{
    BlockLists, BlockPool, BlockScoring, DeviceLayer, LayerQkv, SparseMeasure,
};
use ndarray::{Array2, ArrayView2, Axis};

use crate::budget::{
    search_knob, sparsity_of_kept, sparsity_of_tokens, Budget, SPARSITY_TOLERANCE,
};
use crate::method::{Knob, Selector};
use crate::metrics::kl;
use crate::selection::{Range, Selection};
use crate::sim::{MethodRun, MetricRow, SimConfig, SimResults};

pub mod bench;

/// A method the device can score, with its settings.
#[derive(Debug, Clone, PartialEq)]
pub enum GpuMethod {
    Phsa {
        lambda: f32,
        block: usize,
        n_init: usize,
        local: usize,
        newline: bool,
    },
    InfLlmV2 {
        block: usize,
        n_init: usize,
        local: usize,
    },
    Nsa {
        block: usize,
        n_init: usize,
        local: usize,
    },
    Moba {
        block: usize,
    },
    Quest {
        page: usize,
    },
    SeerOracle {
        block: usize,
    },
    /// Top-k blocks of the capture's block mass (device version only at the capture block).
    OracleTopKBlock {
        block: usize,
    },
}

/// Compressed keys of InfLLM v2 and NSA: mean of `[16 t, 16 t + 32)`.
const STRIDE: usize = 16;
const WINDOW: usize = 32;

/// Names of the methods with a device version.
pub const GPU_METHODS: &[&str] = &[
    "phsa",
    "infllm-v2",
    "nsa",
    "moba",
    "quest",
    "seer-oracle",
    "oracle-topk-block",
];

/// False when `ATTNSCOPE_GPU_METHODS=0` asks for the host path.
pub fn enabled() -> bool {
    std::env::var("ATTNSCOPE_GPU_METHODS").map_or(true, |v| v != "0")
}

impl GpuMethod {
    /// The device version of a configured method over `n` tokens, when its settings have one
    /// (dense fallbacks, InfLLM v2's coarse LSE and the seer threshold mode stay on the host).
    pub fn of(run: &MethodRun, n: usize) -> Option<Self> {
        let p = run.info.params(&run.overrides).ok()?;
        let stride_block = |b: usize| b.max(STRIDE) / STRIDE * STRIDE;
        Some(match run.info.name {
            "phsa" if n >= p.count("dense_below") => Self::Phsa {
                lambda: p.get("lambda") as f32,
                block: p.count("block").max(1),
                n_init: p.count("init_blocks"),
                local: p.count("local_blocks"),
                newline: p.flag("newline_punct"),
            },
            "infllm-v2" if !p.flag("coarse_lse") && n >= p.count("dense_below") => Self::InfLlmV2 {
                block: stride_block(p.count("block")),
                n_init: p.count("init_blocks"),
                local: p.count("local_blocks"),
            },
            "nsa" => Self::Nsa {
                block: stride_block(p.count("block")),
                n_init: p.count("init_blocks"),
                local: p.count("local_blocks"),
            },
            "moba" => Self::Moba {
                block: p.count("block").max(1),
            },
            "quest" => Self::Quest {
                page: p.count("page").max(1),
            },
            "seer-oracle" if !p.flag("mode") && p.count("block") <= 64 => Self::SeerOracle {
                block: p.count("block").max(1),
            },
            "oracle-topk-block" => Self::OracleTopKBlock {
                block: p.count("block").max(1),
            },
            _ => return None,
        })
    }

    /// [`GpuMethod::of`] within a run of `cfg`: `oracle-topk-block` runs on the device only when
    /// its block is the capture block (the device's `P[i, b]`; other blocks stay on the host).
    pub fn for_run(cfg: &SimConfig, run: &MethodRun, n: usize) -> Option<Self> {
        Self::of(run, n).filter(|g| match *g {
            Self::OracleTopKBlock { block } => block == cfg.capture_block.max(1),
            _ => true,
        })
    }

    /// Tokens per selected block.
    pub fn block(&self) -> usize {
        match *self {
            Self::Phsa { block, .. }
            | Self::InfLlmV2 { block, .. }
            | Self::Nsa { block, .. }
            | Self::Moba { block }
            | Self::SeerOracle { block }
            | Self::OracleTopKBlock { block } => block,
            Self::Quest { page } => page,
        }
    }

    /// One selection shared by the q-heads of a KV group.
    pub fn group_shared(&self) -> bool {
        matches!(
            self,
            Self::Phsa { .. } | Self::InfLlmV2 { .. } | Self::Nsa { .. }
        )
    }

    /// `(n_init, local)` forced blocks.
    fn forced(&self) -> (usize, usize) {
        match *self {
            Self::Phsa { n_init, local, .. }
            | Self::InfLlmV2 { n_init, local, .. }
            | Self::Nsa { n_init, local, .. } => (n_init, local),
            _ => (0, 0),
        }
    }

    /// The representatives of one KV head's keys `k` (`[n, d]`): `(reps [m, d], minima)`;
    /// `None` for the oracles (no representatives).
    pub fn representatives(
        &self,
        k: ArrayView2<f32>,
        punct: &[bool],
        newline: &[bool],
    ) -> Option<(Array2<f32>, Option<Array2<f32>>)> {
        Some(match *self {
            Self::Phsa {
                lambda,
                block,
                newline: nl,
                ..
            } => (phsa_reps(k, punct, newline, lambda, block, nl), None),
            Self::InfLlmV2 { .. } | Self::Nsa { .. } => (
                crate::methods::common::window_means(k, WINDOW, STRIDE),
                None,
            ),
            Self::Moba { block } => (crate::methods::common::block_means(k, block), None),
            Self::Quest { page } => {
                let (lo, hi) = crate::methods::quest::page_min_max(k, page);
                (hi, Some(lo))
            }
            Self::SeerOracle { .. } | Self::OracleTopKBlock { .. } => return None,
        })
    }

    /// The device's scoring rule for representatives of `m` rows and head dim `d`.
    pub fn scoring<'a>(
        &self,
        reps: &'a [f32],
        reps_min: Option<&'a [f32]>,
        m: usize,
        d: usize,
    ) -> BlockScoring<'a> {
        let scale = 1.0 / (d as f32).sqrt();
        let block = self.block();
        let (n_init, local) = self.forced();
        let (vis_window, vis_stride, softmax, pool, scale) = match self {
            Self::Phsa { .. } => (block + 1, block, true, BlockPool::Identity, scale),
            Self::InfLlmV2 { .. } => (WINDOW, STRIDE, true, BlockPool::Max(block / STRIDE), scale),
            Self::Nsa { .. } => (WINDOW, STRIDE, true, BlockPool::Sum(block / STRIDE), scale),
            _ => (block + 1, block, false, BlockPool::Identity, 1.0),
        };
        BlockScoring {
            reps,
            reps_min,
            m,
            scale,
            vis_window,
            vis_stride,
            softmax,
            group_shared: self.group_shared(),
            pool,
            block,
            n_init,
            local,
        }
    }
}

/// PHSA's `M(B) = lambda mean(K_B) + (1 - lambda) mean(K_B over punctuation)` (the block mean
/// when the block has no punctuation), as `methods/phsa.rs` computes it.
fn phsa_reps(
    k: ArrayView2<f32>,
    punct: &[bool],
    newline: &[bool],
    lambda: f32,
    block: usize,
    nl: bool,
) -> Array2<f32> {
    let n = k.nrows();
    let mut reps = crate::methods::common::block_means(k, block);
    for (b, mut rep) in reps.axis_iter_mut(Axis(0)).enumerate() {
        let lo = b * block;
        let hi = (lo + block).min(n);
        let idx: Vec<usize> = (lo..hi)
            .filter(|&j| punct[j] || (nl && newline[j]))
            .collect();
        if idx.is_empty() {
            continue;
        }
        let mut pm = ndarray::Array1::<f32>::zeros(k.ncols());
        for &j in &idx {
            pm += &k.row(j);
        }
        pm /= idx.len() as f32;
        rep.zip_mut_with(&pm, |m, &p| *m = lambda * *m + (1.0 - lambda) * p);
    }
    reps
}

/// Per query, the causal pairs of its forced blocks and its number of candidate blocks under a
/// [`BlockScoring`] rule: kept pairs at top-k are `forced + block * min(k, candidates)` per
/// query, whatever the scores.
#[derive(Debug, Clone)]
pub struct RowCounts {
    pub block: usize,
    pub forced_pairs: Vec<u64>,
    pub candidates: Vec<u32>,
}

impl RowCounts {
    /// The counts of `spec` over `n` tokens (mirrors `block_rows` in `kernels/cu/blocksel.cu`).
    pub fn new(spec: &BlockScoring<'_>, n: usize) -> Self {
        let (bs, w, st) = (spec.block, spec.vis_window, spec.vis_stride);
        let mut forced_pairs = Vec::with_capacity(n);
        let mut candidates = Vec::with_capacity(n);
        for i in 0..n {
            let vis = if i + 1 >= w {
                ((i + 1 - w) / st + 1).min(spec.m)
            } else {
                0
            };
            let own = i / bs;
            let ni = spec.n_init.min(own + 1);
            let mut forced: Vec<usize> = (0..ni).collect();
            forced.extend(own.saturating_sub(spec.local).max(ni)..=own);
            forced_pairs.push(
                forced
                    .iter()
                    .map(|&f| (((f + 1) * bs).min(i + 1) - f * bs) as u64)
                    .sum(),
            );
            // Candidates: b < lim, valid, not forced (valid: every block, or for max-pooling
            // the blocks whose first window is visible, `per b <= vis`).
            let (lim, per) = match spec.pool {
                BlockPool::Identity => (vis, 0),
                BlockPool::Sum(_) => (own, 0),
                BlockPool::Max(per) => (own + 1, per.max(1)),
            };
            let valid = |b: usize| per == 0 || (vis > 0 && per * b <= vis);
            let all = if per == 0 {
                lim
            } else if vis == 0 {
                0
            } else {
                lim.min(vis / per + 1)
            };
            let forced_valid = forced.iter().filter(|&&f| f < lim && valid(f)).count();
            candidates.push((all - forced_valid) as u32);
        }
        Self {
            block: bs,
            forced_pairs,
            candidates,
        }
    }

    /// Kept causal pairs of one selection at top-`k`.
    pub fn kept(&self, k: usize) -> u64 {
        let b = self.block as u64;
        self.forced_pairs
            .iter()
            .zip(&self.candidates)
            .map(|(&f, &c)| f + b * (k.min(c as usize) as u64))
            .sum()
    }
}

/// A knob value chosen for a budget: as [`crate::budget::Calibrated`] without selections.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Chosen {
    pub knob: f64,
    pub sparsity: f64,
    pub target: f64,
    pub reached: bool,
}

/// [`crate::budget::calibrate`]'s bisection ([`search_knob`]) on counted sparsities
/// (`sparsity(x)`), so that it lands on the same knob value as the host path.
pub fn calibrate_counted(
    knob: &Knob,
    target: f64,
    n: usize,
    sparsity: &dyn Fn(f64) -> f64,
) -> Chosen {
    let (x, (), s) = search_knob(knob, target, n, |x| ((), sparsity(x)))
        .unwrap_or_else(|| (knob.min, (), sparsity(knob.min)));
    Chosen {
        knob: x,
        sparsity: s,
        target,
        reached: (s - target).abs() <= SPARSITY_TOLERANCE,
    }
}

/// [`crate::budget::resolve`] on counted sparsities; `None` for top-p budgets.
pub fn resolve_counted(
    selector: &dyn Selector,
    budget: Budget,
    n: usize,
    sparsity: &dyn Fn(f64) -> f64,
) -> Option<Chosen> {
    let knob = selector.knob();
    Some(match budget {
        Budget::Tokens(t) => match selector.knob_for_tokens(t) {
            Some(x) => Chosen {
                knob: x,
                sparsity: sparsity(x),
                target: sparsity_of_tokens(t, n),
                reached: true,
            },
            None => calibrate_counted(&knob, sparsity_of_tokens(t, n), n, sparsity),
        },
        Budget::Sparsity(s) => calibrate_counted(&knob, s, n, sparsity),
        Budget::TopP(_) => return None,
    })
}

/// Per-query measurements of one head reduced to the runner's row (the same arithmetic as the
/// host runner in `sim/layer.rs`).
#[allow(clippy::too_many_arguments)]
pub fn metric_row(
    m: &SparseMeasure,
    h: usize,
    n: usize,
    head: (usize, usize, usize),
    method: &str,
    budget: usize,
    chosen: &Chosen,
    query_block: usize,
) -> MetricRow {
    let (layer, hq, kv) = head;
    let r = &m.recall[h * n..(h + 1) * n];
    let e = &m.out_rel_err[h * n..(h + 1) * n];
    let c = &m.cosine[h * n..(h + 1) * n];
    let kept: u64 = m.kept[h * n..(h + 1) * n].iter().map(|&x| x as u64).sum();
    let mean = |xs: &mut dyn Iterator<Item = f64>| {
        let (s, k) = xs.fold((0.0, 0usize), |(s, k), x| (s + x, k + 1));
        if k == 0 {
            f64::NAN
        } else {
            s / k as f64
        }
    };
    MetricRow {
        input: 0,
        layer,
        head: hq,
        kv_head: kv,
        method: method.to_string(),
        budget,
        knob: chosen.knob,
        target_sparsity: chosen.target,
        sparsity: sparsity_of_kept(kept, 1, n),
        recall: mean(&mut r.iter().map(|&x| x as f64)),
        info_loss: mean(&mut r.iter().map(|&x| 1.0 - x as f64)),
        kl: mean(&mut r.iter().map(|&x| kl(x.max(f32::MIN_POSITIVE)))),
        out_rel_err: mean(&mut e.iter().map(|&x| x as f64)),
        cosine: mean(&mut c.iter().map(|&x| x as f64)),
        needle_recall: None,
        reached: chosen.reached,
        recall_by_query_block: r
            .chunks(query_block.max(1))
            .map(|c| c.iter().sum::<f32>() / c.len() as f32)
            .collect(),
    }
}

/// The host selections of selection head `sh` from device block lists
/// (`[heads, rows, width]`), rows of `qblock` queries, blocks of `unit` tokens.
pub fn selection_of(
    blocks: &[u32],
    sh: usize,
    n: usize,
    width: usize,
    unit: usize,
    qblock: usize,
) -> Selection {
    let rows = n.div_ceil(qblock.max(1));
    let base = sh * rows * width;
    let rs: Vec<Vec<Range>> = (0..rows)
        .map(|r| {
            blocks[base + r * width..base + (r + 1) * width]
                .iter()
                .filter(|&&b| b != u32::MAX)
                .map(|&b| (b * unit as u32, (b + 1) * unit as u32))
                .collect()
        })
        .collect();
    Selection::from_rows(n, qblock.max(1), rs)
}

/// The seer oracle's ranked rows of one q-head from the pooled truth `[nb, nb]` (row-normalized
/// as `methods/seer_oracle.rs` does): key blocks best first.
pub fn seer_ranked(g: &[f32], nb: usize) -> Vec<Vec<u32>> {
    (0..nb)
        .map(|r| {
            let mut row: Vec<f32> = g[r * nb..r * nb + r + 1].to_vec();
            let total: f32 = row.iter().sum();
            if total > 0.0 {
                row.iter_mut().for_each(|x| *x /= total);
            }
            let mut idx: Vec<(u32, f32)> = row
                .into_iter()
                .enumerate()
                .map(|(c, s)| (c as u32, s))
                .collect();
            idx.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            idx.into_iter().map(|e| e.0).collect()
        })
        .collect()
}

/// Kept causal pairs of the seer oracle's rows at top-`k` (as `methods/seer_oracle.rs`).
pub fn seer_kept(ranked: &[Vec<u32>], n: usize, block: usize, k: usize) -> u64 {
    let bs = block as u64;
    ranked
        .iter()
        .enumerate()
        .map(|(r, row)| {
            let l = (n - r * block).min(block) as u64;
            row.iter()
                .take(k.max(1))
                .map(|&c| {
                    if c as usize == r {
                        l * (l + 1) / 2
                    } else {
                        bs * l
                    }
                })
                .sum::<u64>()
        })
        .sum()
}

/// What the device measured for one method, budget and KV group.
#[derive(Debug, Clone, Default)]
pub struct GroupOut {
    pub rows: Vec<MetricRow>,
    /// One per q-head of the group (for IoU, the selections table), when kept.
    pub selections: Vec<Selection>,
    /// Wall seconds of this part.
    pub seconds: f64,
}

/// One layer's device results: `out[method][budget][kv group]` for the methods it ran.
#[derive(Debug, Default)]
pub struct GpuLayer {
    pub out: Vec<Option<Vec<Vec<GroupOut>>>>,
    /// Device of each method that ran there.
    pub device: String,
}

impl GpuLayer {
    /// True when method `mi` ran on the device.
    pub fn handles(&self, mi: usize) -> bool {
        self.out.get(mi).is_some_and(Option::is_some)
    }

    /// Appends method `mi`'s rows of budget `bi`, group `g` to `results` and its selections to
    /// `sels` (the host runner's list for IoU and the selections table).
    pub fn take(
        &self,
        mi: usize,
        bi: usize,
        g: usize,
        label: &str,
        results: &mut SimResults,
        sels: &mut Vec<Vec<Selection>>,
    ) {
        let Some(Some(per_budget)) = self.out.get(mi) else {
            return;
        };
        let Some(o) = per_budget.get(bi).and_then(|b| b.get(g)) else {
            return;
        };
        results.metrics.extend(o.rows.iter().cloned());
        sels.push(o.selections.clone());
        *results.method_seconds.entry(label.to_string()).or_default() += o.seconds;
    }
}

/// Runs every method of `cfg` that has a device version on one captured layer (after
/// [`DeviceLayer::capture`]); `None` when none does, the budgets need the host (top-p), or the
/// run has needles (needle recall reads host selections).
pub fn run_layer(
    cfg: &SimConfig,
    qkv: &LayerQkv<'_>,
    device: &mut dyn DeviceLayer,
    punct: &[bool],
    newline: &[bool],
    has_needles: bool,
) -> attnscope_core::Result<Option<GpuLayer>> {
    let n = qkv.len();
    if !enabled() || has_needles || cfg.budgets.iter().any(|b| matches!(b, Budget::TopP(_))) {
        return Ok(None);
    }
    let methods: Vec<Option<GpuMethod>> = cfg
        .methods
        .iter()
        .map(|m| GpuMethod::for_run(cfg, m, n))
        .collect();
    if methods.iter().all(Option::is_none) {
        return Ok(None);
    }
    let mut layer = GpuLayer {
        out: Vec::with_capacity(methods.len()),
        device: device.device(),
    };
    for (run, gm) in cfg.methods.iter().zip(&methods) {
        let out = match gm {
            None => None,
            Some(gm) => Some(run_method(cfg, run, gm, qkv, device, punct, newline, true)?),
        };
        layer.out.push(out);
    }
    Ok(Some(layer))
}

/// One method on one layer: `[budget][kv group]`.
#[allow(clippy::too_many_arguments)]
pub fn run_method(
    cfg: &SimConfig,
    run: &MethodRun,
    gm: &GpuMethod,
    qkv: &LayerQkv<'_>,
    device: &mut dyn DeviceLayer,
    punct: &[bool],
    newline: &[bool],
    keep_selections: bool,
) -> attnscope_core::Result<Vec<Vec<GroupOut>>> {
    let t = std::time::Instant::now();
    let (n, d) = (qkv.len(), qkv.head_dim);
    let (nh, nkv) = (qkv.n_heads, qkv.n_kv_heads);
    let gs = nh / nkv;
    let qb = cfg.query_block.max(1);
    let block = gm.block();
    let mut out: Vec<Vec<GroupOut>> = Vec::with_capacity(cfg.budgets.len());
    if let GpuMethod::OracleTopKBlock { .. } = gm {
        out = oracle_topk_block(cfg, run, block, qkv, device, keep_selections)?;
    } else if let GpuMethod::SeerOracle { .. } = gm {
        let nb = n.div_ceil(block);
        let truth = device.pooled_max_truth(block)?;
        let ranked: Vec<Vec<Vec<u32>>> = (0..nh)
            .map(|h| seer_ranked(&truth[h * nb * nb..(h + 1) * nb * nb], nb))
            .collect();
        for (bi, &budget) in cfg.budgets.iter().enumerate() {
            // Each KV group is calibrated on its own q-heads (as on the host).
            let mut chosen = Vec::with_capacity(nkv);
            for g in 0..nkv {
                let hs = g * gs..(g + 1) * gs;
                let sparsity = |x: f64| -> f64 {
                    let k = x.max(0.0).round() as usize;
                    let total: u64 = hs.clone().map(|h| seer_kept(&ranked[h], n, block, k)).sum();
                    sparsity_of_kept(total, gs, n)
                };
                let ch = resolve_counted(run.selector.as_ref(), budget, n, &sparsity).ok_or_else(
                    || attnscope_core::CoreError::Input("top-p budgets run on the host".into()),
                )?;
                chosen.push(ch);
            }
            let keep: Vec<usize> = chosen
                .iter()
                .map(|c| (c.knob.max(0.0).round() as usize).max(1))
                .collect();
            let width = keep.iter().copied().max().unwrap_or(1).min(nb).max(1);
            let mut all = vec![u32::MAX; nh * nb * width];
            for h in 0..nh {
                for (r, row) in ranked[h].iter().enumerate() {
                    for (e, &c) in row.iter().take(keep[h / gs].min(width)).enumerate() {
                        all[(h * nb + r) * width + e] = c;
                    }
                }
            }
            let m = device.measure_blocks(&BlockLists {
                blocks: &all,
                width,
                unit: block,
                qblock: block,
                heads_per_sel: 1,
            })?;
            let mut groups = Vec::with_capacity(nkv);
            for (g, ch) in chosen.iter().enumerate() {
                let hs = g * gs..(g + 1) * gs;
                let rows = hs
                    .clone()
                    .map(|h| metric_row(&m, h, n, (qkv.layer, h, g), &run.label, bi, ch, qb))
                    .collect();
                let selections = if keep_selections {
                    hs.clone()
                        .map(|h| selection_of(&all, h, n, width, block, block))
                        .collect()
                } else {
                    Vec::new()
                };
                groups.push(GroupOut {
                    rows,
                    selections,
                    seconds: 0.0,
                });
            }
            out.push(groups);
        }
    } else {
        let mut reps = Vec::new();
        let mut mins = Vec::new();
        let mut m = 0;
        for g in 0..nkv {
            let k = qkv.k_head(g).as_standard_layout().into_owned();
            let Some((r, lo)) = gm.representatives(k.view(), punct, newline) else {
                return Err(attnscope_core::CoreError::Input(
                    "no representatives".into(),
                ));
            };
            m = r.nrows();
            reps.extend(r.iter().copied());
            if let Some(lo) = lo {
                mins.extend(lo.iter().copied());
            }
        }
        let spec = gm.scoring(&reps, (!mins.is_empty()).then_some(&mins[..]), m, d);
        let counts = RowCounts::new(&spec, n);
        let sparsity = |x: f64| {
            let k = x.max(0.0).round() as usize;
            sparsity_of_kept(counts.kept(k) * gs as u64, gs, n)
        };
        let chosen: Vec<Chosen> = cfg
            .budgets
            .iter()
            .map(|&b| resolve_counted(run.selector.as_ref(), b, n, &sparsity))
            .collect::<Option<_>>()
            .ok_or_else(|| {
                attnscope_core::CoreError::Input("top-p budgets run on the host".into())
            })?;
        let ks: Vec<usize> = chosen
            .iter()
            .map(|c| c.knob.max(0.0).round() as usize)
            .collect();
        let host_ms = t.elapsed().as_secs_f64() * 1e3;
        let td = std::time::Instant::now();
        let measured = device.block_select_measure(&spec, &ks, keep_selections)?;
        if std::env::var_os("ATTNSCOPE_GPU_PROFILE").is_some() {
            eprintln!(
                "{} layer {}: host representatives + calibration {host_ms:.2} ms, device call \
                 {:.2} ms",
                run.label,
                qkv.layer,
                td.elapsed().as_secs_f64() * 1e3
            );
        }
        for (bi, (m, ch)) in measured.iter().zip(&chosen).enumerate() {
            let shape = Shape {
                n,
                nkv,
                gs,
                block,
                qb,
                layer: qkv.layer,
                bi,
            };
            out.push(group_outs(
                m,
                &shape,
                &run.label,
                |_| ch,
                spec.group_shared,
                keep_selections,
            ));
        }
    }
    // Wall time split evenly over budgets and groups (the runner adds it per group).
    let share = t.elapsed().as_secs_f64() / (out.len() * nkv).max(1) as f64;
    for groups in out.iter_mut() {
        for o in groups.iter_mut() {
            o.seconds = share;
        }
    }
    Ok(out)
}

/// Where a device measurement belongs: tokens, KV groups and their size, block, query block of
/// the per-block recalls, layer and budget index.
struct Shape {
    n: usize,
    nkv: usize,
    gs: usize,
    block: usize,
    qb: usize,
    layer: usize,
    bi: usize,
}

/// One budget's device measurement as the runner's per-group output: a metric row per q-head
/// (with the knob chosen for its group) and, when kept, the selections (one per KV group when
/// the method shares it across the group's q-heads).
fn group_outs<'c>(
    m: &SparseMeasure,
    sh: &Shape,
    label: &str,
    chosen: impl Fn(usize) -> &'c Chosen,
    group_shared: bool,
    keep_selections: bool,
) -> Vec<GroupOut> {
    (0..sh.nkv)
        .map(|g| {
            let hs = g * sh.gs..(g + 1) * sh.gs;
            let ch = chosen(g);
            let rows = hs
                .clone()
                .map(|h| metric_row(m, h, sh.n, (sh.layer, h, g), label, sh.bi, ch, sh.qb))
                .collect();
            let selections = match (&m.blocks, keep_selections) {
                (Some(blocks), true) if group_shared => {
                    vec![selection_of(blocks, g, sh.n, m.width, sh.block, 1); sh.gs]
                }
                (Some(blocks), true) => hs
                    .map(|h| selection_of(blocks, h, sh.n, m.width, sh.block, 1))
                    .collect(),
                _ => Vec::new(),
            };
            GroupOut {
                rows,
                selections,
                seconds: 0.0,
            }
        })
        .collect()
}

/// `oracle-topk-block` on one layer (`[budget][kv group]`): own-block ranks from the device,
/// the knob of each KV group calibrated on the host from counted kept pairs (as the host method),
/// then per q-head the top-k blocks of `P` and their measurement on the device.
fn oracle_topk_block(
    cfg: &SimConfig,
    run: &MethodRun,
    block: usize,
    qkv: &LayerQkv<'_>,
    device: &mut dyn DeviceLayer,
    keep_selections: bool,
) -> attnscope_core::Result<Vec<Vec<GroupOut>>> {
    use crate::methods::oracle_topk_block::block_topk_kept;
    let n = qkv.len();
    let (nh, nkv) = (qkv.n_heads, qkv.n_kv_heads);
    let gs = nh / nkv;
    let qb = cfg.query_block.max(1);
    let ranks = device.block_mass_ranks(block)?;
    if ranks.len() != nh * n {
        return Err(attnscope_core::CoreError::Device(format!(
            "{} own-block ranks for {nh} heads x {n} queries",
            ranks.len()
        )));
    }
    let rank = |h: usize| &ranks[h * n..(h + 1) * n];
    let mut chosen: Vec<Vec<Chosen>> = Vec::with_capacity(cfg.budgets.len());
    for &budget in &cfg.budgets {
        let mut per_group = Vec::with_capacity(nkv);
        for g in 0..nkv {
            let sparsity = |x: f64| {
                let k = x.max(0.0).round() as usize;
                let kept: u64 = (g * gs..(g + 1) * gs)
                    .map(|h| block_topk_kept(rank(h), block, k))
                    .sum();
                sparsity_of_kept(kept, gs, n)
            };
            per_group.push(
                resolve_counted(run.selector.as_ref(), budget, n, &sparsity).ok_or_else(|| {
                    attnscope_core::CoreError::Input("top-p budgets run on the host".into())
                })?,
            );
        }
        chosen.push(per_group);
    }
    let ks: Vec<Vec<usize>> = chosen
        .iter()
        .map(|per_group| {
            (0..nh)
                .map(|h| (per_group[h / gs].knob.max(0.0).round() as usize).max(1))
                .collect()
        })
        .collect();
    let measured = device.block_mass_select_measure(block, &ks, keep_selections)?;
    let mut out = Vec::with_capacity(measured.len());
    for (bi, (m, per_group)) in measured.iter().zip(&chosen).enumerate() {
        let shape = Shape {
            n,
            nkv,
            gs,
            block,
            qb,
            layer: qkv.layer,
            bi,
        };
        out.push(group_outs(
            m,
            &shape,
            &run.label,
            |g| &per_group[g],
            false,
            keep_selections,
        ));
    }
    Ok(out)
}

/// Where each method of `cfg` runs over `n` tokens: `cuda` for the methods [`run_layer`] takes on
/// a GPU forward pass (`gpu` true), else `cpu`.
pub fn method_devices(
    cfg: &SimConfig,
    n: usize,
    gpu: bool,
    has_needles: bool,
) -> std::collections::BTreeMap<String, String> {
    let topp = cfg.budgets.iter().any(|b| matches!(b, Budget::TopP(_)));
    let on = gpu && enabled() && !topp && !has_needles;
    cfg.methods
        .iter()
        .map(|m| {
            let d = if on && GpuMethod::for_run(cfg, m, n).is_some() {
                "cuda"
            } else {
                "cpu"
            };
            (m.label.clone(), d.to_string())
        })
        .collect()
}
