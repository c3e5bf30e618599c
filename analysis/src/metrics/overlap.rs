//! IoU between selections: one pair ([`iou`]) or every pair of a list at once ([`iou_pairs`]).

use rayon::prelude::*;

use crate::selection::{intersect_len, Selection};

/// Mean over queries of `|S_a n S_b| / |S_a u S_b|` at token granularity.
pub fn iou(a: &Selection, b: &Selection) -> f64 {
    let n = a.len().min(b.len());
    if n == 0 {
        return 1.0;
    }
    let total: f64 = (0..n)
        .into_par_iter()
        .map(|i| {
            let inter = intersect_len(a.keys_of(i), b.keys_of(i));
            let union = a.kept_of(i) as u64 + b.kept_of(i) as u64 - inter;
            if union == 0 {
                1.0
            } else {
                inter as f64 / union as f64
            }
        })
        .sum();
    total / n as f64
}

/// Sets the bits of `[s, e)` in `words`.
#[inline(always)]
fn set_range(words: &mut [u64], s: usize, e: usize) {
    if s >= e {
        return;
    }
    let (ws, we) = (s / 64, (e - 1) / 64);
    let lo = !0u64 << (s % 64);
    let hi = !0u64 >> (63 - (e - 1) % 64);
    if ws == we {
        words[ws] |= lo & hi;
    } else {
        words[ws] |= lo;
        words[ws + 1..we].iter_mut().for_each(|w| *w = !0);
        words[we] |= hi;
    }
}

/// Per-pair sums over queries `lo..hi` of `|S_a n S_b| / |S_a u S_b|` (pairs `a < b` in order).
#[inline(always)]
fn iou_chunk_generic(sels: &[&Selection], lo: usize, hi: usize) -> Vec<f64> {
    let m = sels.len();
    let words = hi.div_ceil(64);
    let mut bits = vec![0u64; m * words];
    let mut kept = vec![0u64; m];
    let mut sums = vec![0f64; m * m.saturating_sub(1) / 2];
    for i in lo..hi {
        let w = i / 64 + 1;
        for (a, sel) in sels.iter().enumerate() {
            let row = &mut bits[a * words..a * words + w];
            row.iter_mut().for_each(|x| *x = 0);
            let mut k = 0u64;
            for (s, e) in sel.keys_of(i) {
                set_range(row, s as usize, e as usize);
                k += (e - s) as u64;
            }
            kept[a] = k;
        }
        let mut p = 0;
        for a in 0..m {
            let ra = &bits[a * words..a * words + w];
            for b in a + 1..m {
                let rb = &bits[b * words..b * words + w];
                let inter: u64 = ra
                    .iter()
                    .zip(rb)
                    .map(|(x, y)| (x & y).count_ones() as u64)
                    .sum();
                let union = kept[a] + kept[b] - inter;
                sums[p] += if union == 0 {
                    1.0
                } else {
                    inter as f64 / union as f64
                };
                p += 1;
            }
        }
    }
    sums
}

attnscope_core::simd_fn! {
    fn iou_chunk(sels: &[&Selection], lo: usize, hi: usize) -> Vec<f64> => iou_chunk_generic
}

/// [`iou`] of every pair of `sels` (`(0, 1), (0, 2), ..., (1, 2), ...`: pairs `a < b` in
/// order), all at once from per-query bitsets of the kept keys.
pub fn iou_pairs(sels: &[&Selection]) -> Vec<f64> {
    let m = sels.len();
    let pairs = m * m.saturating_sub(1) / 2;
    let n = sels.iter().map(|s| s.len()).min().unwrap_or(0);
    if n == 0 {
        return vec![1.0; pairs];
    }
    const CHUNK: usize = 64;
    let parts: Vec<Vec<f64>> = (0..n.div_ceil(CHUNK))
        .into_par_iter()
        .map(|c| iou_chunk(sels, c * CHUNK, ((c + 1) * CHUNK).min(n)))
        .collect();
    let mut total = vec![0f64; pairs];
    for part in parts {
        total.iter_mut().zip(part).for_each(|(t, x)| *t += x);
    }
    total.into_iter().map(|t| t / n as f64).collect()
}
