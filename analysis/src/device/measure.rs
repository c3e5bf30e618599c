//! Device measurements turned into the runner's rows and selections.

use attnscope_core::attention::SparseMeasure;

use super::counts::Chosen;
use super::GroupOut;
use crate::budget::sparsity_of_kept_scored;
use crate::metrics::kl;
use crate::results::MetricRow;
use crate::selection::{Range, Scored, Selection};

/// Per-query measurements of one head reduced to the runner's row over the `scored` queries
/// (the same arithmetic as the host runner in `sim/layer.rs`; the device measures every query).
#[allow(clippy::too_many_arguments)]
pub fn metric_row(
    m: &SparseMeasure,
    h: usize,
    scored: Scored,
    head: (usize, usize, usize),
    method: &str,
    budget: usize,
    chosen: &Chosen,
    query_block: usize,
) -> MetricRow {
    let (layer, hq, kv) = head;
    let rows = h * scored.n + scored.first..(h + 1) * scored.n;
    let r = &m.recall[rows.clone()];
    let e = &m.out_rel_err[rows.clone()];
    let c = &m.cosine[rows.clone()];
    let kept: u64 = m.kept[rows].iter().map(|&x| x as u64).sum();
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
        sparsity: sparsity_of_kept_scored(kept, 1, scored),
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
    selection_of_scored(blocks, sh, Scored::all(n), width, unit, qblock)
}

/// As [`selection_of`] for the `scored` queries (the rows before them stay empty).
pub fn selection_of_scored(
    blocks: &[u32],
    sh: usize,
    scored: Scored,
    width: usize,
    unit: usize,
    qblock: usize,
) -> Selection {
    let qb = qblock.max(1);
    let rows = scored.n.div_ceil(qb);
    let base = sh * rows * width;
    let rs: Vec<Vec<Range>> = (scored.first_row(qb)..rows)
        .map(|r| {
            blocks[base + r * width..base + (r + 1) * width]
                .iter()
                .filter(|&&b| b != u32::MAX)
                .map(|&b| (b * unit as u32, (b + 1) * unit as u32))
                .collect()
        })
        .collect();
    Selection::from_rows_scored(scored, qb, rs)
}

/// Where a device measurement belongs: the scored queries, KV groups and their size, block, query block of
/// the per-block recalls, layer and budget index.
pub(super) struct Shape {
    pub scored: Scored,
    pub nkv: usize,
    pub gs: usize,
    pub block: usize,
    pub qb: usize,
    pub layer: usize,
    pub bi: usize,
}

impl Shape {
    /// Budget `bi` of a layer's selections of `block`-token blocks within `plan`.
    pub(super) fn of(
        qkv: &attnscope_core::attention::LayerQkv<'_>,
        plan: &super::DevicePlan<'_>,
        block: usize,
        bi: usize,
    ) -> Self {
        Self {
            scored: plan.queries.of(qkv.len()),
            nkv: qkv.n_kv_heads,
            gs: qkv.n_heads / qkv.n_kv_heads,
            block,
            qb: plan.query_block.max(1),
            layer: qkv.layer,
            bi,
        }
    }
}

/// One budget's device measurement as the runner's per-group output: a metric row per q-head
/// (with the knob chosen for its group) and, when kept, the selections (one per KV group when
/// the method shares it across the group's q-heads).
pub(super) fn group_outs<'c>(
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
                .map(|h| metric_row(m, h, sh.scored, (sh.layer, h, g), label, sh.bi, ch, sh.qb))
                .collect();
            let selections = match (&m.blocks, keep_selections) {
                (Some(blocks), true) if group_shared => {
                    vec![selection_of_scored(blocks, g, sh.scored, m.width, sh.block, 1); sh.gs]
                }
                (Some(blocks), true) => hs
                    .map(|h| selection_of_scored(blocks, h, sh.scored, m.width, sh.block, 1))
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
