//! `oracle-topk-block`: the block-level `oracle-topk`. Per q-head and query `i`, the `k` key
//! blocks of `B` tokens (default 64) with the largest true block mass
//! `P[i, b] = sum over j in block b, j <= i, of A_ij` (ties to the lower block index; every
//! causal block when `k` exceeds their number). No block is forced. An upper bound for every
//! method that keeps at most `k` aligned blocks of `B` tokens per query: no such set holds more
//! of the query's attention.
//!
//! `P` is the capture's [`HeadCapture::block_mass`](attnscope_core::capture::HeadCapture) when
//! `B` is the capture block, else the exact sums of the true probabilities
//! ([`GroupInput::true_probs`]). On a GPU forward pass the device ranks the device capture's `P`
//! itself ([`crate::device`]).
//!
//! Kept pairs depend on `n`, `B`, `k` and on one bit of the scores per query: whether the
//! query's own (partial) block is among its top `k` ([`own_block_rank`]); they are counted from
//! those ranks without building selections ([`block_topk_kept`]).

use std::borrow::Cow;

use ndarray::Array2;
use rayon::prelude::*;

use super::common::top_token_set;
use crate::method::{packed_pair_bytes, DeviceScoring};
use crate::method::{GroupInput, Knob, Prepared, Selector};
use crate::method::{MethodInfo, MethodKind, ParamSpec, Params};
use crate::selection::{Range, Scored, Selection};

pub const INFO: MethodInfo = MethodInfo {
    name: "oracle-topk-block",
    kind: MethodKind::Oracle,
    paper: "upper bound: exact top-k key blocks of the true attention A (no paper)",
    rule: "per q-head and query, the k key blocks of B tokens with the largest true mass P[i, b] (sum of A_ij over the block's causal keys), ties to the lower block; nothing forced",
    params: &[
        ParamSpec {
            name: "block",
            default: 64.0,
            min: 1.0,
            max: 65536.0,
            integer: true,
            help: "key block size B (the capture's P[i, b] when equal to the capture block, else summed exactly)",
        },
        ParamSpec {
            name: "k",
            default: 32.0,
            min: 1.0,
            max: 1e9,
            integer: true,
            help: "key blocks kept per query",
        },
    ],
    build,
};

fn build(p: &Params) -> Box<dyn Selector> {
    Box::new(OracleTopKBlock {
        block: p.count("block").max(1),
    })
}

#[derive(Debug)]
struct OracleTopKBlock {
    block: usize,
}

/// The rank (0 = best) of block `row.len() - 1` (a query's own block) among blocks `row`
/// ordered by descending mass, ties to the lower index (`f32::total_cmp`): the number of
/// earlier blocks whose mass is at least its own.
pub fn own_block_rank(row: &[f32]) -> u32 {
    let Some((own, rest)) = row.split_last() else {
        return 0;
    };
    rest.iter()
        .filter(|x| x.total_cmp(own) != std::cmp::Ordering::Less)
        .count() as u32
}

/// Kept causal pairs of one q-head at `k` blocks per query, from the rank of every query's own
/// block ([`own_block_rank`], `own_rank.len()` queries): query `i` keeps all `i + 1` keys when
/// `k` covers its causal blocks, else `k` blocks of `block` keys, the own block counting only its
/// `i - own B + 1` causal keys when it is among the `k`.
pub fn block_topk_kept(own_rank: &[u32], block: usize, k: usize) -> u64 {
    let b = block.max(1);
    own_rank
        .par_iter()
        .enumerate()
        .with_min_len(1024)
        .map(|(i, &r)| {
            let own = i / b;
            if k > own {
                i as u64 + 1
            } else {
                let l = (i - own * b + 1) as u64;
                let full = (k * b) as u64;
                if (r as usize) < k {
                    full - b as u64 + l
                } else {
                    full
                }
            }
        })
        .sum()
}

/// Exact `P[i, b]` of one q-head from its true probabilities, for the scored queries
/// (`[n - first, ceil(n / block)]`, row `r` is query `first + r`, zero after the query's own
/// block).
fn block_mass_of(p: &crate::metrics::TrueProbs, n: usize, block: usize) -> Array2<f32> {
    let nb = n.div_ceil(block);
    let first = p.scored().first;
    let mut out = Array2::<f32>::zeros((n - first, nb));
    out.axis_iter_mut(ndarray::Axis(0))
        .into_par_iter()
        .enumerate()
        .with_min_len(16)
        .for_each(|(r, mut row)| {
            for (b, chunk) in p.row(first + r).chunks(block).enumerate() {
                row[b] = chunk.iter().sum();
            }
        });
    out
}

/// One q-head: `P` of the scored queries (borrowed from the capture or computed; row `r` is
/// query `from + r`) and, when every query is scored, each query's own-block rank.
struct Head<'a> {
    mass: Cow<'a, Array2<f32>>,
    from: usize,
    own_rank: Vec<u32>,
}

struct Prep<'a> {
    scored: Scored,
    block: usize,
    heads: Vec<Head<'a>>,
}

impl Prep<'_> {
    fn rows(&self, head: &Head<'_>, k: usize) -> Selection {
        let b = self.block;
        let rows: Vec<Vec<Range>> = self
            .scored
            .range()
            .into_par_iter()
            .with_min_len(16)
            .map(|i| {
                let own = i / b;
                if k > own {
                    return vec![(0, i as u32 + 1)];
                }
                let row = head.mass.row(i - head.from);
                let top = match row.as_slice() {
                    Some(r) => top_token_set(&r[..=own], k),
                    None => {
                        top_token_set(&row.iter().take(own + 1).copied().collect::<Vec<_>>(), k)
                    }
                };
                top.into_iter()
                    .map(|x| (x * b as u32, ((x + 1) * b as u32).min(i as u32 + 1)))
                    .collect()
            })
            .collect();
        Selection::from_rows_scored(self.scored, 1, rows)
    }
}

impl Prepared for Prep<'_> {
    fn select(&self, x: f64) -> Vec<Selection> {
        let k = x.max(0.0).round() as usize;
        self.heads.iter().map(|h| self.rows(h, k)).collect()
    }

    fn kept_pairs_at(&self, x: f64) -> Option<(u64, usize)> {
        if !self.scored.is_all() {
            return None;
        }
        let k = x.max(0.0).round() as usize;
        let kept = self
            .heads
            .iter()
            .map(|h| block_topk_kept(&h.own_rank, self.block, k))
            .sum();
        Some((kept, self.heads.len()))
    }
}

impl Selector for OracleTopKBlock {
    fn knob(&self) -> Knob {
        Knob::count("k", 1.0, self.block)
    }

    fn knob_for_tokens(&self, tokens: usize) -> Option<f64> {
        Some((tokens / self.block).max(1) as f64)
    }

    fn prepare<'a>(&'a self, g: &'a GroupInput<'a>) -> Box<dyn Prepared + 'a> {
        let (n, b, scored) = (g.n(), self.block, g.scored);
        let nb = n.div_ceil(b);
        let heads = (0..g.group_size())
            .map(|h| {
                let cap = g.truth[h];
                let (mass, from) = if g.capture_block == b
                    && cap.block_mass_from <= scored.first
                    && cap.block_mass.dim() == (n - cap.block_mass_from, nb)
                {
                    (Cow::Borrowed(&cap.block_mass), cap.block_mass_from)
                } else {
                    (
                        Cow::Owned(block_mass_of(&g.true_probs()[h], n, b)),
                        scored.first,
                    )
                };
                // Counted pairs cover every query ([`crate::budget::counts_pairs`]).
                let own_rank = if scored.is_all() {
                    (0..n)
                        .into_par_iter()
                        .with_min_len(256)
                        .map(|i| {
                            let row = mass.row(i - from);
                            let own = i / b;
                            match row.as_slice() {
                                Some(r) => own_block_rank(&r[..=own]),
                                None => own_block_rank(
                                    &row.iter().take(own + 1).copied().collect::<Vec<_>>(),
                                ),
                            }
                        })
                        .collect()
                } else {
                    Vec::new()
                };
                Head {
                    mass,
                    from,
                    own_rank,
                }
            })
            .collect();
        Box::new(Prep {
            scored,
            block: b,
            heads,
        })
    }

    fn device_scoring(&self, _n: usize) -> Option<DeviceScoring> {
        Some(DeviceScoring::BlockMassTopK {
            block: self.block,
            kept: block_topk_kept,
        })
    }

    /// The exact attention when it runs alone (the viewer's live re-selection).
    fn pair_bytes(&self, scored: crate::selection::Scored, group_size: usize) -> u64 {
        packed_pair_bytes(scored) * group_size as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::GroupData;

    fn oracle(block: usize) -> Box<dyn Selector> {
        (INFO.build)(
            &INFO
                .params(&[("block".to_string(), block as f64)])
                .unwrap_or_default(),
        )
    }

    /// Brute force: per head and query, the top-k blocks by exact mass summed in f64.
    #[test]
    fn keeps_the_blocks_of_largest_true_mass() {
        let data = GroupData::random(300, 8, 2, 11);
        for block in [16usize, 64, 100] {
            let m = oracle(block);
            let g = data.input();
            let scale = g.scale();
            let prep = m.prepare(&g);
            for k in [1usize, 2, 3, 5] {
                let sels = prep.select(k as f64);
                for (h, sel) in sels.iter().enumerate() {
                    for i in (0..300).step_by(7) {
                        let own = i / block;
                        let mut mass = vec![0f64; own + 1];
                        for j in 0..=i {
                            let a =
                                (g.q[h].row(i).dot(&g.k.row(j)) * scale - g.truth[h].lse[i]).exp();
                            mass[j / block] += a as f64;
                        }
                        let mut order: Vec<usize> = (0..=own).collect();
                        order.sort_by(|&a, &b| mass[b].total_cmp(&mass[a]).then(a.cmp(&b)));
                        let mut want: Vec<usize> = order.into_iter().take(k).collect();
                        want.sort_unstable();
                        let keys: Vec<usize> = sel
                            .keys_of(i)
                            .flat_map(|(s, e)| s as usize..e as usize)
                            .collect();
                        let mut got: Vec<usize> = keys.iter().map(|&j| j / block).collect();
                        got.dedup();
                        assert_eq!(got, want, "block {block} k {k} head {h} query {i}");
                        let full: usize = want
                            .iter()
                            .map(|&b| ((b + 1) * block).min(i + 1) - b * block)
                            .sum();
                        assert_eq!(keys.len(), full, "whole blocks, clipped at the query");
                    }
                }
            }
        }
    }

    #[test]
    fn counted_pairs_equal_the_selections() {
        let data = GroupData::random(333, 8, 3, 4);
        for block in [16usize, 64] {
            let m = oracle(block);
            let g = data.input();
            let prep = m.prepare(&g);
            for k in [1usize, 2, 4, 7, 21, 22, 1000] {
                let counted = prep.kept_pairs_at(k as f64).map(|x| x.0);
                let built: u64 = prep.select(k as f64).iter().map(|s| s.kept_pairs()).sum();
                assert_eq!(counted, Some(built), "block {block} k {k}");
            }
        }
    }

    #[test]
    fn capture_mass_and_exact_sums_rank_alike() {
        // B = capture block reads the capture's P; a capture at another block makes the method
        // sum the true probabilities itself: same selections (no near-ties in random data).
        let data = GroupData::random(260, 8, 2, 6);
        let other = GroupData::from_qkv(
            data.q.clone(),
            data.k.clone(),
            data.v.clone(),
            data.punct.clone(),
            data.newline.clone(),
            2,
            32,
        );
        let m = oracle(64);
        let (a, b) = (data.input(), other.input());
        for k in [1.0, 2.0, 3.0] {
            assert_eq!(m.prepare(&a).select(k), m.prepare(&b).select(k), "k {k}");
        }
    }

    #[test]
    fn own_rank_counts_ties_before_the_own_block() {
        assert_eq!(own_block_rank(&[0.5]), 0);
        assert_eq!(own_block_rank(&[0.1, 0.5, 0.3]), 1);
        assert_eq!(own_block_rank(&[0.3, 0.2, 0.3]), 1);
        assert_eq!(own_block_rank(&[0.0, 0.0, 0.0]), 2);
    }
}
