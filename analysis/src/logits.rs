//! The raw causal scores `q_i . k_j` of one q-head (packed lower triangle, row `i` holding keys
//! `0..=i`), computed once per KV group ([`GroupInput::logits`](crate::method::GroupInput::logits))
//! and read by everything that needs them: the exact attention ([`crate::metrics::TrueProbs`]),
//! h2o, blasst, dsa-proxy and hisa-proxy. Each comes from matrix products of [`ROW_CHUNK`]
//! queries against the keys transposed, and a product's entries do not depend on which rows or
//! columns it holds (each is the same sequence of operations over the head dimension), so every
//! reader sees the bits its own product would have given.

use ndarray::ArrayView2;
use rayon::prelude::*;

use crate::bigbuf::PooledF32;

/// Queries per matrix product.
pub const ROW_CHUNK: usize = 256;

/// Per-pair values of one q-head over its causal pairs, packed: row `i` holds keys `0..=i`
/// (`n (n + 1) / 2` floats, from [`PooledF32`]).
#[derive(Debug, Clone, Default)]
pub struct PackedRows {
    n: usize,
    data: PooledF32,
}

impl PackedRows {
    /// `n` rows of zeros.
    pub fn zeroed(n: usize) -> Self {
        Self {
            n,
            data: PooledF32::new(n * (n + 1) / 2),
        }
    }

    /// Tokens.
    pub fn len(&self) -> usize {
        self.n
    }

    /// True for zero tokens.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The values of query `i` over keys `0..=i`.
    pub fn row(&self, i: usize) -> &[f32] {
        let start = i * (i + 1) / 2;
        &self.data[start..start + i + 1]
    }

    /// The rows of [`ROW_CHUNK`]-query chunks, longest first (for a balanced parallel split):
    /// `(rows lo..hi, their packed values)`.
    pub fn chunks_mut(&mut self) -> Vec<(usize, usize, &mut [f32])> {
        let n = self.n;
        let mut parts = Vec::with_capacity(n.div_ceil(ROW_CHUNK));
        let mut rest = &mut self.data[..];
        for c in 0..n.div_ceil(ROW_CHUNK) {
            let (lo, hi) = (c * ROW_CHUNK, ((c + 1) * ROW_CHUNK).min(n));
            let (part, tail) = rest.split_at_mut(hi * (hi + 1) / 2 - lo * (lo + 1) / 2);
            parts.push((lo, hi, part));
            rest = tail;
        }
        parts.reverse();
        parts
    }
}

/// One q-head's raw causal scores (see the module documentation).
#[derive(Debug, Clone, Default)]
pub struct Logits {
    rows: PackedRows,
}

impl std::ops::Deref for Logits {
    type Target = PackedRows;
    fn deref(&self) -> &PackedRows {
        &self.rows
    }
}

impl Logits {
    /// Scores already computed row by row ([`crate::metrics::TrueProbs::compute_with_logits`]).
    pub(crate) fn from_rows(rows: PackedRows) -> Self {
        Self { rows }
    }

    /// The scores of queries `q` (`[n, d]`) against keys `kt` (`[d, n]`, the keys transposed).
    pub fn compute(q: ArrayView2<f32>, kt: ArrayView2<f32>) -> Self {
        let mut rows = PackedRows::zeroed(q.nrows());
        rows.chunks_mut()
            .into_par_iter()
            .for_each(|(lo, hi, part)| {
                let s = q
                    .slice(ndarray::s![lo..hi, ..])
                    .dot(&kt.slice(ndarray::s![.., ..hi]));
                let mut at = 0;
                for (r, row) in s.outer_iter().enumerate() {
                    let i = lo + r;
                    let row = row.as_slice().expect("fresh arrays are contiguous");
                    part[at..at + i + 1].copy_from_slice(&row[..=i]);
                    at += i + 1;
                }
            });
        Self { rows }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::GroupData;

    #[test]
    fn rows_hold_the_bits_of_any_product_of_the_same_entries() {
        // Chunks of ROW_CHUNK queries here; one product per query elsewhere.
        let data = GroupData::random(600, 16, 1, 4);
        let (q, k) = (data.q_head(0), data.k.view());
        let kt = attnscope_core::ops::transposed(k);
        let l = Logits::compute(q, kt.view());
        for i in [0, 1, 255, 256, 300, 599] {
            let one = q
                .slice(ndarray::s![i..i + 1, ..])
                .dot(&kt.slice(ndarray::s![.., ..i + 1]));
            assert_eq!(l.row(i), one.as_slice().expect("contiguous"), "row {i}");
        }
    }
}
