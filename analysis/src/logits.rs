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
use crate::selection::Scored;

/// Queries per matrix product.
pub const ROW_CHUNK: usize = 256;

/// Per-pair values of one q-head over the causal pairs of its scored queries, packed: row `i`
/// (for `i` in `first..n`, [`Scored`]) holds keys `0..=i` (`n (n + 1) / 2` floats when every
/// query is scored, from [`PooledF32`]).
#[derive(Debug, Clone, Default)]
pub struct PackedRows {
    first: usize,
    n: usize,
    /// The layer's window ([`Scored::window`]): rows still hold every causal key.
    window: Option<usize>,
    data: PooledF32,
}

/// Offset of row `i` in the packed rows of a matrix whose first row is `first`.
fn row_start(i: usize, first: usize) -> usize {
    i * (i + 1) / 2 - first * (first + 1) / 2
}

impl PackedRows {
    /// Zeros for the rows of the `scored` queries.
    pub fn zeroed(scored: Scored) -> Self {
        Self {
            first: scored.first,
            n: scored.n,
            window: scored.window,
            data: PooledF32::new(row_start(scored.n, scored.first)),
        }
    }

    /// Tokens.
    pub fn len(&self) -> usize {
        self.n
    }

    /// The queries whose rows are held.
    pub fn scored(&self) -> Scored {
        Scored {
            first: self.first,
            n: self.n,
            window: self.window,
        }
    }

    /// True for zero tokens.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The values of query `i` over keys `0..=i`; `i` must be a scored query (a method that
    /// reads another row is wrong, and stops here).
    pub fn row(&self, i: usize) -> &[f32] {
        assert!(
            (self.first..self.n).contains(&i),
            "row {i} of packed rows {}..{}",
            self.first,
            self.n
        );
        let start = row_start(i, self.first);
        &self.data[start..start + i + 1]
    }

    /// The rows of [`ROW_CHUNK`]-query chunks, longest first (for a balanced parallel split):
    /// `(rows lo..hi, their packed values)`.
    pub fn chunks_mut(&mut self) -> Vec<(usize, usize, &mut [f32])> {
        let (first, n) = (self.first, self.n);
        let chunks = (n - first.min(n)).div_ceil(ROW_CHUNK);
        let mut parts = Vec::with_capacity(chunks);
        let mut rest = &mut self.data[..];
        for c in 0..chunks {
            let (lo, hi) = (first + c * ROW_CHUNK, (first + (c + 1) * ROW_CHUNK).min(n));
            let (part, tail) = rest.split_at_mut(row_start(hi, lo));
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

    /// The scores of the `scored` queries of `q` (`[n, d]`) against keys `kt` (`[d, n]`, the
    /// keys transposed).
    pub fn compute(q: ArrayView2<f32>, kt: ArrayView2<f32>, scored: Scored) -> Self {
        let mut rows = PackedRows::zeroed(scored);
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
        let l = Logits::compute(q, kt.view(), Scored::all(600));
        let tail = Logits::compute(q, kt.view(), Scored::last(345, 600));
        for i in [0, 1, 255, 256, 300, 599] {
            let one = q
                .slice(ndarray::s![i..i + 1, ..])
                .dot(&kt.slice(ndarray::s![.., ..i + 1]));
            assert_eq!(l.row(i), one.as_slice().expect("contiguous"), "row {i}");
            if i >= 255 {
                assert_eq!(tail.row(i), l.row(i), "row {i} of the last 345");
            }
        }
    }
}
