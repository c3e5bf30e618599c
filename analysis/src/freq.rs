//! RoPE frequency-chunk dominance of one head (METHODS.md): for each rotary pair `c` (rotate-half
//! pairing of dims `c` and `c + d/2`), `s^(c)_ij = q_i[c] k_j[c] + q_i[c+d/2] k_j[c+d/2]`, so that
//! `q_i . k_j = sum_c s^(c)_ij`. Energy share of `c` = `E[(s^(c))^2] / sum_c E[(s^(c))^2]` over
//! causal pairs; contextual agreement `CA_c` = mean over queries of
//! `|TopK(s^(c)_i) n TopK(s_i)| / K`. Queries are sampled evenly (at most `max_queries`, only
//! queries with more than K visible keys count for agreement).

use ndarray::ArrayView2;
use rayon::prelude::*;

/// Per-pair energy shares and contextual agreement of one head.
#[derive(Debug, Clone, PartialEq)]
pub struct FreqDominance {
    /// `d / 2` energy shares summing to 1.
    pub energy_share: Vec<f32>,
    /// `d / 2` agreements in [0, 1].
    pub agreement: Vec<f32>,
}

/// Frequency-chunk dominance of a head from its queries and keys (`[n, d]`, post-RoPE).
pub fn freq_dominance(
    q: ArrayView2<f32>,
    k: ArrayView2<f32>,
    top_k: usize,
    max_queries: usize,
) -> FreqDominance {
    let (n, d) = q.dim();
    let half = d / 2;
    let stride = n.div_ceil(max_queries.max(1)).max(1);
    let queries: Vec<usize> = (0..n).rev().step_by(stride).collect();
    // Keys column by column, so that each rotary pair's products run over contiguous memory.
    let kt: Vec<Vec<f32>> = (0..2 * half).map(|c| k.column(c).to_vec()).collect();
    let per_query: Vec<(Vec<f64>, Vec<f64>, bool)> = queries
        .par_iter()
        .map(|&i| {
            let qi = q.row(i);
            let m = i + 1;
            let counts = m > top_k;
            // One chunk's scores at a time (a buffer that stays in cache), with its energy and
            // top set; the total sums the chunks in order.
            let mut chunk = vec![0f32; m];
            let mut total = vec![0f32; m];
            let mut energy = Vec::with_capacity(half);
            let mut tops = Vec::with_capacity(if counts { half } else { 0 });
            for c in 0..half {
                let (k1, k2) = (&kt[c][..m], &kt[c + half][..m]);
                pair_scores((qi[c], qi[c + half]), k1, k2, &mut chunk, &mut total);
                energy.push(sum_of_squares(&chunk));
                if counts {
                    tops.push(crate::methods::common::top_token_set(&chunk, top_k));
                }
            }
            let agree: Vec<f64> = if counts {
                let truth = crate::methods::common::top_token_set(&total, top_k);
                tops.iter()
                    .map(|mine| {
                        let inter = mine
                            .iter()
                            .filter(|j| truth.binary_search(j).is_ok())
                            .count();
                        inter as f64 / top_k as f64
                    })
                    .collect()
            } else {
                vec![0.0; half]
            };
            (energy, agree, counts)
        })
        .collect();
    let mut energy = vec![0f64; half];
    let mut agree = vec![0f64; half];
    let mut counted = 0usize;
    for (e, a, c) in per_query {
        energy.iter_mut().zip(&e).for_each(|(x, y)| *x += y);
        if c {
            agree.iter_mut().zip(&a).for_each(|(x, y)| *x += y);
            counted += 1;
        }
    }
    let total: f64 = energy.iter().sum::<f64>().max(f64::MIN_POSITIVE);
    FreqDominance {
        energy_share: energy.iter().map(|e| (e / total) as f32).collect(),
        agreement: agree
            .iter()
            .map(|a| {
                if counted > 0 {
                    (a / counted as f64) as f32
                } else {
                    0.0
                }
            })
            .collect(),
    }
}

/// One rotary pair's scores `chunk[j] = a k1[j] + b k2[j]` (a product and a sum, never fused),
/// added to `total`.
#[inline(always)]
fn pair_scores_generic(
    (a, b): (f32, f32),
    k1: &[f32],
    k2: &[f32],
    chunk: &mut [f32],
    total: &mut [f32],
) {
    for (((c, t), &x), &y) in chunk.iter_mut().zip(total.iter_mut()).zip(k1).zip(k2) {
        let s = a * x + b * y;
        *c = s;
        *t += s;
    }
}

attnscope_core::simd_fn! {
    fn pair_scores(
        q: (f32, f32),
        k1: &[f32],
        k2: &[f32],
        chunk: &mut [f32],
        total: &mut [f32],
    ) => pair_scores_generic
}

/// `sum x^2` in `f64`, in eight interleaved partial sums (vectorized where the CPU allows).
#[inline(always)]
fn sum_of_squares_generic(xs: &[f32]) -> f64 {
    let mut lanes = [0f64; 8];
    let chunks = xs.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..8 {
            let x = c[l] as f64;
            lanes[l] += x * x;
        }
    }
    let mut sum: f64 = lanes.iter().sum();
    for &x in rest {
        sum += (x as f64) * (x as f64);
    }
    sum
}

attnscope_core::simd_fn! {
    fn sum_of_squares(xs: &[f32]) -> f64 => sum_of_squares_generic
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    /// The first implementation, kept as the reference of the faster one.
    fn reference(
        q: ArrayView2<f32>,
        k: ArrayView2<f32>,
        top_k: usize,
        max_q: usize,
    ) -> FreqDominance {
        fn top(xs: &[f32], k: usize) -> Vec<u32> {
            let mut idx: Vec<u32> = (0..xs.len() as u32).collect();
            let k = k.min(xs.len());
            if k < idx.len() {
                idx.select_nth_unstable_by(k, |&a, &b| {
                    xs[b as usize].total_cmp(&xs[a as usize]).then(a.cmp(&b))
                });
                idx.truncate(k);
            }
            idx.sort_unstable();
            idx
        }
        let (n, d) = q.dim();
        let half = d / 2;
        let stride = n.div_ceil(max_q.max(1)).max(1);
        let (mut energy, mut agree, mut counted) = (vec![0f64; half], vec![0f64; half], 0);
        for i in (0..n).rev().step_by(stride) {
            let (qi, m) = (q.row(i), i + 1);
            let mut chunk = vec![vec![0f32; m]; half];
            let mut total = vec![0f32; m];
            for j in 0..m {
                let kj = k.row(j);
                for c in 0..half {
                    let s = qi[c] * kj[c] + qi[c + half] * kj[c + half];
                    chunk[c][j] = s;
                    total[j] += s;
                }
            }
            for (c, s) in chunk.iter().enumerate() {
                energy[c] += s.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>();
            }
            if m > top_k {
                let truth = top(&total, top_k);
                for (c, s) in chunk.iter().enumerate() {
                    let mine = top(s, top_k);
                    let inter = mine
                        .iter()
                        .filter(|j| truth.binary_search(j).is_ok())
                        .count();
                    agree[c] += inter as f64 / top_k as f64;
                }
                counted += 1;
            }
        }
        let total: f64 = energy.iter().sum::<f64>().max(f64::MIN_POSITIVE);
        FreqDominance {
            energy_share: energy.iter().map(|e| (e / total) as f32).collect(),
            agreement: agree
                .iter()
                .map(|a| {
                    if counted > 0 {
                        (a / counted as f64) as f32
                    } else {
                        0.0
                    }
                })
                .collect(),
        }
    }

    #[test]
    fn same_values_as_the_reference() {
        let data = crate::testing::GroupData::random(333, 16, 1, 3);
        for (top_k, max_q) in [(8, 40), (64, 500), (1, 7)] {
            let got = freq_dominance(data.q_head(0), data.k.view(), top_k, max_q);
            let want = reference(data.q_head(0), data.k.view(), top_k, max_q);
            // Energies are summed in another order (f64, then one f32 rounding): within 1e-6.
            for (g, w) in got.energy_share.iter().zip(&want.energy_share) {
                assert!(
                    (g - w).abs() <= 1e-6 * w.abs().max(1e-30),
                    "top_k {top_k}: {g} vs {w}"
                );
            }
            assert_eq!(got.agreement, want.agreement, "top_k {top_k}");
        }
    }

    #[test]
    fn a_single_active_pair_carries_all_energy_and_agrees_fully() {
        let (n, d) = (50, 8);
        let q = Array2::from_shape_fn((n, d), |(_, c)| if c == 1 || c == 5 { 1.0 } else { 0.0 });
        let k = Array2::from_shape_fn((n, d), |(j, c)| match c {
            1 => (j as f32 * 0.37).sin(),
            5 => (j as f32 * 0.11).cos(),
            _ => 0.0,
        });
        let f = freq_dominance(q.view(), k.view(), 5, 20);
        assert!(
            (f.energy_share[1] - 1.0).abs() < 1e-6,
            "{:?}",
            f.energy_share
        );
        assert!((f.energy_share.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        assert!((f.agreement[1] - 1.0).abs() < 1e-6);
    }
}
