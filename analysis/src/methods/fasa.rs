//! `fasa`: FASA's token-importance predictor from dominant RoPE frequency chunks (Wang et al.,
//! FASA: Frequency-Aware Sparse Attention, ICLR 2026, arXiv:2602.03152). With rotate-half RoPE the
//! score splits into `d / 2` frequency chunks, `q . k = sum_c s^(c)`,
//! `s^(c)_ij = q_i[c] k_j[c] + q_i[c + d/2] k_j[c + d/2]`. FASA scores keys with the head's
//! dominant chunks only, `sum over c in D_h of s^(c)_ij`, and keeps the top `B` causal keys of each
//! query (knob `budget`, default 256; ties by lower index).
//!
//! Dominant chunks: the paper calibrates them offline on held-out text. Here (documented choice)
//! `D_h` = the `chunks` pairs (default `0` = `d / 4`) of largest energy share
//! `E[(s^(c))^2]` (the METHODS.md frequency-dominance metric) over the causal pairs of this
//! q-head's queries in the first `calib_frac` (default half) of the sequence, standing in for the
//! held-out part; the same chunks then score every query. Chunk lists calibrated elsewhere can be
//! passed per (layer, q-head) through [`Fasa::calibrated`].
//!
//! GQA: each q-head selects with its own dominant chunks. Full budget (`B > i`) keeps every
//! causal key. Rankings store the best `cap` keys per query; larger budgets re-score exactly.

use std::collections::BTreeMap;

use ndarray::{s, Array2, ArrayView2};
use rayon::prelude::*;

use super::common::{top_k_pairs_scored, top_k_selection};
use crate::method::{DeviceScoring, GroupQueries, HeadKeys, RepTransform, Representatives};
use crate::method::{GroupInput, Knob, Prepared, Selector};
use crate::method::{MethodInfo, MethodKind, ParamSpec, Params};
use crate::selection::Selection;

pub const INFO: MethodInfo = MethodInfo {
    name: "fasa",
    kind: MethodKind::Published,
    paper: "Wang et al., FASA: Frequency-Aware Sparse Attention, ICLR 2026 (arXiv:2602.03152)",
    rule: "per q-head, top-B keys by the sum over the head's dominant RoPE chunks c of q[c]k[c] + q[c+d/2]k[c+d/2] (dominant = largest energy share on the first half of the sequence)",
    params: &[
        ParamSpec { name: "chunks", default: 0.0, min: 0.0, max: 4096.0, integer: true, help: "dominant frequency chunks per head (0 = d/4)" },
        ParamSpec { name: "calib_frac", default: 0.5, min: 0.0, max: 1.0, integer: false, help: "leading share of the queries used to pick the dominant chunks (held-out stand-in)" },
        ParamSpec { name: "cap", default: 2048.0, min: 1.0, max: 1e9, integer: true, help: "ranked keys stored per query (memory bound; results are exact regardless)" },
        ParamSpec { name: "budget", default: 256.0, min: 1.0, max: 1e9, integer: true, help: "keys kept per query (B)" },
    ],
    build,
};

fn build(p: &Params) -> Box<dyn Selector> {
    Box::new(Fasa {
        chunks: p.count("chunks"),
        calib_frac: p.get("calib_frac").clamp(0.0, 1.0),
        cap: p.count("cap").max(1),
        calibrated: BTreeMap::new(),
    })
}

/// FASA with explicit settings.
#[derive(Debug, Clone)]
pub struct Fasa {
    /// Dominant chunks per head (0 = d/4).
    pub chunks: usize,
    /// Leading share of queries whose causal pairs measure the chunk energies.
    pub calib_frac: f64,
    pub cap: usize,
    /// Dominant chunk lists calibrated elsewhere, by (layer, global q-head); they override the
    /// in-sequence choice for those heads.
    pub calibrated: BTreeMap<(usize, usize), Vec<usize>>,
}

/// Energy `sum over i < n_cal, j <= i of (s^(c)_ij)^2` of every chunk `c < d/2` (exact, in
/// `O(n d)` through causal prefix sums of the key products).
pub fn chunk_energy(q: ArrayView2<f32>, k: ArrayView2<f32>, n_cal: usize) -> Vec<f64> {
    let half = k.ncols() / 2;
    (0..half)
        .map(|c| {
            let (mut a, mut b, mut cc, mut e) = (0f64, 0f64, 0f64, 0f64);
            for i in 0..n_cal.min(k.nrows()) {
                let (k1, k2) = (k[[i, c]] as f64, k[[i, c + half]] as f64);
                a += k1 * k1;
                b += k1 * k2;
                cc += k2 * k2;
                let (q1, q2) = (q[[i, c]] as f64, q[[i, c + half]] as f64);
                e += q1 * q1 * a + 2.0 * q1 * q2 * b + q2 * q2 * cc;
            }
            e
        })
        .collect()
}

/// The `count` chunks of largest energy (ties by lower index), ascending.
pub fn dominant_chunks(energy: &[f64], count: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..energy.len()).collect();
    idx.sort_by(|&a, &b| energy[b].total_cmp(&energy[a]).then(a.cmp(&b)));
    idx.truncate(count);
    idx.sort_unstable();
    idx
}

/// Per q-head: the queries' and the keys' dominant dimensions only (`[n, m]` and `[m, n]`, in
/// ascending dimension order). Nothing else is stored: `select(b)` scores chunk by chunk and keeps
/// each query's top `b` (the same set as a stored ranking's first `b`, so results do not depend
/// on `cap`).
struct Prep<'a> {
    g: &'a GroupInput<'a>,
    heads: Vec<(Array2<f32>, Array2<f32>)>,
}

/// Scores of queries `lo..hi` against keys `0..hi` from the dominant dimensions (`q` `[n, m]`,
/// `kt` `[m, n]`). Each entry is the product over all dimensions with the others zeroed, bit for
/// bit: a matrix product sums its terms in dimension order, and a zero term leaves a sum that
/// started at `+0` unchanged.
fn scores(q: &Array2<f32>, kt: &Array2<f32>, lo: usize, hi: usize) -> Array2<f32> {
    q.slice(s![lo..hi, ..]).dot(&kt.slice(s![.., ..hi]))
}

impl Prepared for Prep<'_> {
    fn select(&self, x: f64) -> Vec<Selection> {
        let b = x.max(1.0).round() as usize;
        self.heads
            .iter()
            .map(|(q, kt)| top_k_selection(self.g.scored, b, &|lo, hi| scores(q, kt, lo, hi)))
            .collect()
    }

    fn kept_pairs_at(&self, x: f64) -> Option<(u64, usize)> {
        let b = x.max(1.0).round() as usize;
        let heads = self.heads.len();
        Some((top_k_pairs_scored(self.g.scored, b) * heads as u64, heads))
    }
}

impl Fasa {
    /// The dominant chunks of q-head `h` of the group.
    pub fn head_chunks(&self, g: &GroupInput<'_>, h: usize) -> Vec<usize> {
        let global = g.kv_head * g.group_size() + h;
        self.chunks_of(g.layer, global, g.q[h], g.k)
    }

    /// The dominant chunks of global q-head `head` of `layer` from its queries `q` and the
    /// group's keys `k` (a calibrated list when one was given for it).
    fn chunks_of(
        &self,
        layer: usize,
        head: usize,
        q: ArrayView2<'_, f32>,
        k: ArrayView2<'_, f32>,
    ) -> Vec<usize> {
        if let Some(c) = self.calibrated.get(&(layer, head)) {
            return c.clone();
        }
        let half = k.ncols() / 2;
        let count = if self.chunks == 0 {
            half / 2
        } else {
            self.chunks
        };
        let n_cal = ((k.nrows() as f64 * self.calib_frac).ceil() as usize).max(1);
        dominant_chunks(&chunk_energy(q, k, n_cal), count.clamp(1, half.max(1)))
    }

    /// The query and key dimensions of `chunks` (both halves of each pair), ascending.
    fn dims_of(chunks: &[usize], half: usize) -> Vec<usize> {
        let mut dims: Vec<usize> = chunks
            .iter()
            .filter(|&&c| c < half)
            .flat_map(|&c| [c, c + half])
            .collect();
        dims.sort_unstable();
        dims.dedup();
        dims
    }
}

impl Selector for Fasa {
    fn knob(&self) -> Knob {
        Knob::count("budget", 1.0, 1)
    }

    fn knob_for_tokens(&self, tokens: usize) -> Option<f64> {
        Some(tokens.max(1) as f64)
    }

    fn prepare<'a>(&'a self, g: &'a GroupInput<'a>) -> Box<dyn Prepared + 'a> {
        let half = g.head_dim() / 2;
        let heads = (0..g.group_size())
            .into_par_iter()
            .map(|h| {
                let dims = Self::dims_of(&self.head_chunks(g, h), half);
                let q = g.q[h].select(ndarray::Axis(1), &dims);
                let kt = g.kt().select(ndarray::Axis(0), &dims);
                (q, kt)
            })
            .collect();
        // `cap` bounded the stored rankings of earlier versions; selections are exact either way.
        let _ = self.cap;
        Box::new(Prep { g, heads })
    }

    /// Token-level top-k of `q . k` over the head's dominant dimensions (the queries masked by
    /// [`Selector::query_weights`]), one selection per q-head, nothing forced.
    fn device_scoring(&self, _n: usize) -> Option<DeviceScoring> {
        Some(DeviceScoring::Representatives(
            super::oracle_topk::token_rule(RepTransform::Raw, false, false),
        ))
    }

    /// The keys themselves.
    fn representatives(&self, keys: &HeadKeys<'_>) -> Option<Representatives> {
        Some(Representatives {
            reps: keys.k.to_owned(),
            minima: None,
        })
    }

    /// 1 on each q-head's dominant dimensions, 0 elsewhere.
    fn query_weights(&self, g: &GroupQueries<'_>) -> Option<Array2<f32>> {
        let d = g.k.ncols();
        let mut w = Array2::<f32>::zeros((g.q.len(), d));
        for (h, q) in g.q.iter().enumerate() {
            let head = g.kv_head * g.q.len() + h;
            for c in Self::dims_of(&self.chunks_of(g.layer, head, *q, g.k), d / 2) {
                w[[h, c]] = 1.0;
            }
        }
        Some(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::GroupData;

    fn fasa(chunks: usize, cap: usize) -> Fasa {
        Fasa {
            chunks,
            calib_frac: 0.5,
            cap,
            calibrated: BTreeMap::new(),
        }
    }

    fn run(data: &GroupData, m: &Fasa, b: f64) -> Vec<Selection> {
        let g = data.input();
        let p = m.prepare(&g);
        p.select(b)
    }

    #[test]
    fn energy_matches_brute_force() {
        let data = GroupData::random(40, 8, 1, 9);
        let (q, k) = (data.q_head(0), data.k.view());
        let e = chunk_energy(q, k, 20);
        for (c, &ec) in e.iter().enumerate() {
            let mut want = 0f64;
            for i in 0..20 {
                for j in 0..=i {
                    let s = q[[i, c]] * k[[j, c]] + q[[i, c + 4]] * k[[j, c + 4]];
                    want += (s as f64).powi(2);
                }
            }
            assert!(
                (ec - want).abs() <= 1e-6 * want.max(1.0),
                "chunk {c}: {ec} vs {want}"
            );
        }
    }

    #[test]
    fn dominant_chunk_decides_the_top_keys() {
        // d = 4: chunks c0 = dims (0, 2), c1 = dims (1, 3). Chunk 1 is loud (q[1] = 10) but
        // key 1 is picked by it; chunk 0 alone would pick key 2. With 1 dominant chunk (c1)
        // query 3 keeps {1}; with both chunks the full q . k decides.
        let q = Array2::from_shape_fn((4, 4), |(_, c)| [1.0, 10.0, 0.0, 0.0][c]);
        let k = Array2::from_shape_vec(
            (4, 4),
            vec![
                0.0, 0.0, 0.0, 0.0, //
                0.0, 1.0, 0.0, 0.0, // s = 10 (chunk 1)
                5.0, 0.5, 0.0, 0.0, // s = 5 + 5 = 10 (chunk 0: 5, chunk 1: 5)
                1.0, 0.0, 0.0, 0.0, // s = 1
            ],
        )
        .expect("test data");
        let data = GroupData::from_qkv(q, k.clone(), k, vec![false; 4], vec![false; 4], 1, 2);
        let g = data.input();
        assert_eq!(fasa(1, 8).head_chunks(&g, 0), vec![1]);
        let s = run(&data, &fasa(1, 8), 1.0);
        assert_eq!(s[0].keys_of(3).collect::<Vec<_>>(), vec![(1, 2)]);
        // Both chunks: scores [0, 10, 10, 1] -> tie between 1 and 2 goes to the lower index.
        let s = run(&data, &fasa(2, 8), 2.0);
        assert_eq!(s[0].keys_of(3).collect::<Vec<_>>(), vec![(1, 3)]);
        // A calibrated list overrides the in-sequence choice.
        let mut m = fasa(1, 8);
        m.calibrated.insert((0, 0), vec![0]);
        let s = run(&data, &m, 1.0);
        assert_eq!(s[0].keys_of(3).collect::<Vec<_>>(), vec![(2, 3)]);
    }

    #[test]
    fn invariants_and_cap_independence() {
        let n = 250;
        let data = GroupData::random(n, 16, 3, 21);
        for b in [1.0, 12.0, 100.0] {
            let a = run(&data, &fasa(0, 1000), b);
            assert_eq!(a, run(&data, &fasa(0, 4), b), "cap changed the selection");
            for s in &a {
                for r in 0..n {
                    assert!(s.row_max_key(r).is_some_and(|m| m <= r));
                    assert_eq!(s.kept_of(r), (b as usize).min(r + 1));
                }
            }
        }
        for s in run(&data, &fasa(0, 8), n as f64) {
            assert_eq!(s.kept_pairs(), crate::selection::causal_pairs(n));
        }
    }
}
