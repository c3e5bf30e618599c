//! Top-k key blocks of an exact statistic the device computes: the block mass `P[i, b]`
//! ([`DeviceScoring::BlockMassTopK`](crate::method::DeviceScoring)) and the per-tile maximum of
//! the attention ([`DeviceScoring::TileMaxTopK`](crate::method::DeviceScoring)). Each KV group's
//! knob is calibrated on the host from the method's own kept-pair count, as the host method does.

use attnscope_core::attention::{BlockLists, DeviceLayer, LayerQkv};

use super::measure::{group_outs, metric_row, selection_of, Shape};
use super::{resolve_counted, top_p_on_host, Chosen, DevicePlan, GroupOut};
use crate::budget::sparsity_of_kept;
use crate::method::MethodRun;
use crate::selection::Scored;

/// The knob of every budget and KV group from a kept-pair count of q-head `h` at `k`
/// (`[budget][kv group]`).
fn calibrate_groups(
    plan: &DevicePlan<'_>,
    run: &MethodRun,
    qkv: &LayerQkv<'_>,
    kept: &dyn Fn(usize, usize) -> u64,
) -> attnscope_core::Result<Vec<Vec<Chosen>>> {
    let n = qkv.len();
    let (nkv, gs) = (qkv.n_kv_heads, qkv.n_heads / qkv.n_kv_heads);
    plan.budgets
        .iter()
        .map(|&budget| {
            (0..nkv)
                .map(|g| {
                    let sparsity = |x: f64| {
                        let k = x.max(0.0).round() as usize;
                        let total: u64 = (g * gs..(g + 1) * gs).map(|h| kept(h, k)).sum();
                        sparsity_of_kept(total, gs, n)
                    };
                    resolve_counted(run.selector.as_ref(), budget, n, &sparsity)
                        .ok_or_else(top_p_on_host)
                })
                .collect()
        })
        .collect()
}

/// Per q-head `k` of each budget (at least 1) from the chosen knobs of its group.
fn per_head_k(chosen: &[Vec<Chosen>], nh: usize, gs: usize) -> Vec<Vec<usize>> {
    chosen
        .iter()
        .map(|per_group| {
            (0..nh)
                .map(|h| (per_group[h / gs].knob.max(0.0).round() as usize).max(1))
                .collect()
        })
        .collect()
}

/// Block-mass top-k on one layer (`[budget][kv group]`): own-block ranks from the device, the
/// knobs calibrated on counted pairs (`kept(own_ranks, block, k)`), then per q-head the top-k
/// blocks of `P` and their measurement on the device.
pub(super) fn block_mass_topk(
    plan: &DevicePlan<'_>,
    run: &MethodRun,
    block: usize,
    kept: fn(&[u32], usize, usize) -> u64,
    qkv: &LayerQkv<'_>,
    device: &mut dyn DeviceLayer,
    keep_selections: bool,
) -> attnscope_core::Result<Vec<Vec<GroupOut>>> {
    let n = qkv.len();
    let (nh, nkv) = (qkv.n_heads, qkv.n_kv_heads);
    let gs = nh / nkv;
    let ranks = device.block_mass_ranks(block)?;
    if ranks.len() != nh * n {
        return Err(attnscope_core::CoreError::Device(format!(
            "{} own-block ranks for {nh} heads x {n} queries",
            ranks.len()
        )));
    }
    let chosen = calibrate_groups(plan, run, qkv, &|h, k| {
        kept(&ranks[h * n..(h + 1) * n], block, k)
    })?;
    let ks = per_head_k(&chosen, nh, gs);
    let measured = device.block_mass_select_measure(block, &ks, keep_selections)?;
    Ok(measured
        .iter()
        .zip(&chosen)
        .enumerate()
        .map(|(bi, (m, per_group))| {
            let shape = Shape::of(qkv, plan, block, bi);
            group_outs(
                m,
                &shape,
                &run.label,
                |g| &per_group[g],
                false,
                keep_selections,
            )
        })
        .collect())
}

/// The ranking and counting rules of a tile-max method.
pub(super) type TileRules = (
    usize,
    fn(&[f32], usize) -> Vec<Vec<u32>>,
    fn(&[Vec<u32>], usize, usize, usize) -> u64,
);

/// Tile-max top-k on one layer (`[budget][kv group]`): the device's tile maxima of every
/// q-head, ranked by the method's rule, the knobs calibrated on its counted pairs, and the kept
/// blocks measured on the device.
pub(super) fn tile_max_topk(
    plan: &DevicePlan<'_>,
    run: &MethodRun,
    (block, rank, kept): TileRules,
    qkv: &LayerQkv<'_>,
    device: &mut dyn DeviceLayer,
    keep_selections: bool,
) -> attnscope_core::Result<Vec<Vec<GroupOut>>> {
    let n = qkv.len();
    let (nh, nkv) = (qkv.n_heads, qkv.n_kv_heads);
    let gs = nh / nkv;
    let qb = plan.query_block.max(1);
    let nb = n.div_ceil(block);
    let truth = device.pooled_max_truth(block)?;
    let ranked: Vec<Vec<Vec<u32>>> = (0..nh)
        .map(|h| rank(&truth[h * nb * nb..(h + 1) * nb * nb], nb))
        .collect();
    let chosen = calibrate_groups(plan, run, qkv, &|h, k| kept(&ranked[h], n, block, k))?;
    let mut out = Vec::with_capacity(chosen.len());
    for (bi, per_group) in chosen.iter().enumerate() {
        let keep: Vec<usize> = per_head_k(std::slice::from_ref(per_group), nh, gs).remove(0);
        let width = keep.iter().copied().max().unwrap_or(1).min(nb).max(1);
        let mut all = vec![u32::MAX; nh * nb * width];
        for h in 0..nh {
            for (r, row) in ranked[h].iter().enumerate() {
                for (e, &c) in row.iter().take(keep[h].min(width)).enumerate() {
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
        let groups = (0..nkv)
            .map(|g| {
                let hs = g * gs..(g + 1) * gs;
                let ch = &per_group[g];
                GroupOut {
                    rows: hs
                        .clone()
                        .map(|h| {
                            metric_row(
                                &m,
                                h,
                                Scored::all(n),
                                (qkv.layer, h, g),
                                &run.label,
                                bi,
                                ch,
                                qb,
                            )
                        })
                        .collect(),
                    selections: if keep_selections {
                        hs.map(|h| selection_of(&all, h, n, width, block, block))
                            .collect()
                    } else {
                        Vec::new()
                    },
                    seconds: 0.0,
                }
            })
            .collect();
        out.push(groups);
    }
    Ok(out)
}
