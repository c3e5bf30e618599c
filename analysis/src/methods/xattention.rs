//! `xattention`: block-sparse prefill by antidiagonal scoring (Xu et al., XAttention, ICML 2025,
//! arXiv:2503.16428; public code `xattn_estimate` / `find_blocks_chunked`).
//!
//! With stride `S = 8`, the strided score of query group `a` and key group `b` is the sum of the
//! `S` antidiagonal products of their `S x S` tile, `sum_t q_{Sa + S - 1 - t} . k_{Sb + t}`, scaled
//! by `1 / (sqrt d * S)` (the code's reshaped `Q K^T`: queries taken in reverse order within each
//! group). Each strided row is softmaxed over the causally visible key groups (`b <= a`), and the
//! probabilities are summed per (query block, key block) of `B = 128`. Each query block row keeps
//! block 0 and its diagonal block, then adds blocks in descending score order while the mass kept
//! so far is below `tau` times the row total. Rows are query blocks of `B`; tokens past the end
//! are zero padding, as in the code. Each q-head selects for itself (no GQA sharing).

use ndarray::{Array2, ArrayView2};
use rayon::prelude::*;

use super::common::softmax_inplace;
use crate::method::{GroupInput, Knob, Prepared, Selector};
use crate::method::{MethodInfo, MethodKind, ParamSpec, Params};
use crate::selection::Selection;

pub const INFO: MethodInfo = MethodInfo {
    name: "xattention",
    kind: MethodKind::Published,
    paper: "Xu et al., XAttention: Block Sparse Attention with Antidiagonal Scoring, ICML 2025 (arXiv:2503.16428)",
    rule: "per q-head and 128-query block: block 0 + diagonal + fewest blocks reaching tau of the row's antidiagonal (stride 8) softmax mass",
    params: &[
        ParamSpec { name: "block", default: 128.0, min: 1.0, max: 65536.0, integer: true, help: "query and key block size (a multiple of the stride)" },
        ParamSpec { name: "stride", default: 8.0, min: 1.0, max: 1024.0, integer: true, help: "antidiagonal stride S" },
        ParamSpec { name: "tau", default: 0.9, min: 0.0, max: 1.0, integer: false, help: "share of each row's estimated mass to keep (1 = dense)" },
    ],
    build,
};

fn build(p: &Params) -> Box<dyn Selector> {
    let stride = p.count("stride").max(1);
    Box::new(XAttention {
        stride,
        block: (p.count("block").max(stride) / stride) * stride,
    })
}

#[derive(Debug)]
struct XAttention {
    block: usize,
    stride: usize,
}

/// The strided matrices of the code: row `a` of the query side is
/// `[q_{Sa+S-1}, ..., q_{Sa}]`, row `b` of the key side `[k_{Sb}, ..., k_{Sb+S-1}]`, zero padded.
fn reshape(x: ArrayView2<f32>, stride: usize, reverse: bool) -> Array2<f32> {
    let (n, d) = x.dim();
    let m = n.div_ceil(stride);
    let mut out = Array2::zeros((m, stride * d));
    for a in 0..m {
        for t in 0..stride {
            let src = if reverse {
                stride * a + stride - 1 - t
            } else {
                stride * a + t
            };
            if src < n {
                out.slice_mut(ndarray::s![a, t * d..(t + 1) * d])
                    .assign(&x.row(src));
            }
        }
    }
    out
}

/// Estimated mass `W[r, c]` of query block `r` on key block `c` (`c <= r`), one `Vec` per row;
/// rows before `first_row` (no scored query) are left at zero.
fn block_mass(
    q: ArrayView2<f32>,
    k: ArrayView2<f32>,
    (block, stride): (usize, usize),
    first_row: usize,
) -> Vec<Vec<f32>> {
    let d = q.ncols();
    let qr = reshape(q, stride, true);
    let kr = reshape(k, stride, false);
    let per = block / stride;
    let a0 = (first_row * per).min(qr.nrows());
    let logits =
        qr.slice(ndarray::s![a0.., ..]).dot(&kr.t()) * (1.0 / ((d as f32).sqrt() * stride as f32));
    let rows = q.nrows().div_ceil(block);
    (0..rows)
        .into_par_iter()
        .map(|r| {
            let mut w = vec![0f32; r + 1];
            for a in (r * per).max(a0)..((r + 1) * per).min(qr.nrows()) {
                let mut p: Vec<f32> = logits.row(a - a0).iter().take(a + 1).copied().collect();
                softmax_inplace(&mut p);
                for (b, x) in p.into_iter().enumerate() {
                    w[b / per] += x;
                }
            }
            w
        })
        .collect()
}

/// One query block row: forced blocks, their mass, the row total, and the others best first.
struct Row {
    forced: Vec<u32>,
    forced_mass: f32,
    total: f32,
    ranked: Vec<(u32, f32)>,
}

fn rank_row(r: usize, w: &[f32]) -> Row {
    let forced: Vec<u32> = if r == 0 { vec![0] } else { vec![0, r as u32] };
    let mut ranked: Vec<(u32, f32)> = (1..r).map(|c| (c as u32, w[c])).collect();
    ranked.sort_unstable_by_key(|&(c, s)| super::common::token_key(s, c));
    Row {
        forced_mass: forced.iter().map(|&c| w[c as usize]).sum(),
        total: w.iter().sum(),
        forced,
        ranked,
    }
}

struct Prep {
    n: usize,
    /// The first scored query.
    first: usize,
    block: usize,
    heads: Vec<Vec<Row>>,
}

impl Row {
    /// Ranked blocks kept at `tau`: the fewest reaching `tau` of the row total with the forced
    /// blocks (all at `tau >= 1`).
    fn extra(&self, tau: f64) -> usize {
        let need = tau * self.total as f64;
        let mut kept = self.forced_mass as f64;
        self.ranked
            .iter()
            .take_while(|&&(_, s)| {
                let take = tau >= 1.0 || kept < need;
                kept += s as f64;
                take
            })
            .count()
    }
}

impl Prepared for Prep {
    /// Over the scored queries of each row ([`super::common::block_row_pairs`]).
    fn kept_pairs_at(&self, tau: f64) -> Option<(u64, usize)> {
        let kept = self
            .heads
            .iter()
            .flat_map(|rows| rows.iter().enumerate())
            .map(|(r, row)| {
                let (full, diag) =
                    super::common::block_row_pairs(r, self.block, (self.first, self.n));
                let blocks = row.forced.len() + row.extra(tau);
                // The diagonal block is always forced; the others are complete.
                (blocks as u64 - 1) * full + diag
            })
            .sum();
        Some((kept, self.heads.len()))
    }

    fn select(&self, tau: f64) -> Vec<Selection> {
        self.heads
            .iter()
            .map(|rows| {
                let mut b = Selection::builder(self.n, self.block);
                for row in rows {
                    let extra = row.ranked[..row.extra(tau)].iter().map(|&(c, _)| c);
                    b.push_blocks(
                        row.forced.iter().copied().chain(extra).map(|c| c as usize),
                        self.block,
                    );
                }
                b.finish()
            })
            .collect()
    }
}

impl Selector for XAttention {
    fn knob(&self) -> Knob {
        Knob {
            name: "tau",
            min: 0.0,
            max: 1.0,
            integer: false,
            denser_when_larger: true,
            tokens_per_unit: 0,
        }
    }

    fn prepare<'a>(&'a self, g: &'a GroupInput<'a>) -> Box<dyn Prepared + 'a> {
        let heads =
            g.q.iter()
                .map(|q| {
                    let first_row = g.scored.first_row(self.block);
                    let w = block_mass(*q, g.k, (self.block, self.stride), first_row);
                    w.iter().enumerate().map(|(r, w)| rank_row(r, w)).collect()
                })
                .collect();
        Box::new(Prep {
            n: g.n(),
            first: g.scored.first,
            block: self.block,
            heads,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::GroupData;

    #[test]
    fn strided_logit_is_the_antidiagonal_of_each_tile() {
        let q = Array2::from_shape_fn((5, 3), |(i, c)| (i * 3 + c) as f32 * 0.1);
        let k = Array2::from_shape_fn((5, 3), |(j, c)| 1.0 - (j + 2 * c) as f32 * 0.07);
        let (qr, kr) = (reshape(q.view(), 2, true), reshape(k.view(), 2, false));
        let s = qr.dot(&kr.t());
        let dot = |i: usize, j: usize| {
            if i < 5 && j < 5 {
                q.row(i).dot(&k.row(j))
            } else {
                0.0
            }
        };
        for a in 0..3 {
            for b in 0..3 {
                let anti = dot(2 * a + 1, 2 * b) + dot(2 * a, 2 * b + 1);
                assert!((s[[a, b]] - anti).abs() < 1e-5, "tile ({a}, {b})");
            }
        }
    }

    #[test]
    fn threshold_walks_blocks_in_score_order() {
        // Row 4: forced blocks 0 and 4 hold 0.3 of 1.0; then 2 (0.4), 1 (0.2), 3 (0.1).
        let row = rank_row(4, &[0.2, 0.2, 0.4, 0.1, 0.1]);
        assert_eq!(row.ranked, vec![(2, 0.4), (1, 0.2), (3, 0.1)]);
        let prep = Prep {
            n: 10,
            first: 0,
            block: 2,
            heads: vec![vec![
                rank_row(0, &[1.0]),
                rank_row(1, &[0.5, 0.5]),
                rank_row(2, &[0.1, 0.8, 0.1]),
                rank_row(3, &[0.25; 4]),
                row,
            ]],
        };
        let row4 = |tau: f64| prep.select(tau)[0].row_ranges(4).to_vec();
        assert_eq!(row4(0.25), vec![(0, 2), (8, 10)]); // forced mass 0.3 already reaches 0.25
        assert_eq!(row4(0.5), vec![(0, 2), (4, 6), (8, 10)]); // 0.3 < 0.5: add block 2
        assert_eq!(row4(0.75), vec![(0, 6), (8, 10)]); // 0.7 < 0.75: add block 1
        assert_eq!(row4(1.0), vec![(0, 10)]);
        assert_eq!(
            prep.select(0.0)[0].row_ranges(2).to_vec(),
            vec![(0, 2), (4, 6)]
        );
    }

    #[test]
    fn causal_and_dense_at_tau_one() {
        let data = GroupData::random(300, 8, 3, 3);
        let g = data.input();
        let p = INFO.params(&[("block".into(), 32.0)]).unwrap_or_default();
        let m = (INFO.build)(&p);
        let prep = m.prepare(&g);
        for s in prep.select(1.0) {
            assert!((0..300).all(|i| s.kept_of(i) == i + 1));
        }
        let sels = prep.select(0.5);
        assert_eq!(sels.len(), 3);
        for s in &sels {
            for r in 0..s.rows() {
                assert!(s
                    .row_max_key(r)
                    .is_some_and(|j| j < ((r + 1) * 32).min(300)));
            }
        }
        let rows = block_mass(g.q[0], g.k, (32, 8), 0);
        for (r, w) in rows.iter().enumerate() {
            let expect = ((r + 1) * 4).min(300usize.div_ceil(8)) - r * 4;
            assert!((w.iter().sum::<f32>() - expect as f32).abs() < 1e-3);
        }
    }
}
