//! Compact selections for the bundle: for each query block (of `block` queries), the key blocks
//! its queries keep any key of and the fraction of each such block's causal (query, key) pairs
//! kept. Block methods keep whole blocks (fraction 1 off the diagonal); token methods show as
//! partial blocks. At 8k tokens and block 64 one head is at most 128 x 128 entries.

use serde::{Deserialize, Serialize};

use crate::selection::Selection;

/// The compacted selection of one (input, layer, q-head, method, budget), CSR over query blocks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelectionRow {
    pub input: usize,
    pub layer: usize,
    pub head: usize,
    pub kv_head: usize,
    pub method: String,
    pub budget: usize,
    /// Queries per query block = tokens per key block.
    pub block: usize,
    /// `offsets[q]..offsets[q + 1]` index `blocks` / `fraction` for query block `q`.
    pub offsets: Vec<u32>,
    pub blocks: Vec<u32>,
    pub fraction: Vec<f32>,
}

impl SelectionRow {
    /// An empty row (no query blocks yet).
    pub fn new(
        input: usize,
        layer: usize,
        head: usize,
        kv_head: usize,
        method: String,
        budget: usize,
        block: usize,
    ) -> Self {
        Self {
            input,
            layer,
            head,
            kv_head,
            method,
            budget,
            block,
            offsets: vec![0],
            blocks: Vec::new(),
            fraction: Vec::new(),
        }
    }

    /// Compacts `sel` (over `sel.len()` tokens) to blocks of `block` tokens.
    pub fn compact(
        sel: &Selection,
        block: usize,
        head: (usize, usize, usize),
        method: &str,
        budget: usize,
    ) -> Self {
        let (layer, h, kv) = head;
        let mut row = Self::new(0, layer, h, kv, method.to_string(), budget, block.max(1));
        let b = row.block;
        let n = sel.len();
        let nb = n.div_ceil(b);
        // Key blocks by shift when the block is a power of two (a division per range otherwise).
        let shift = b.is_power_of_two().then(|| b.trailing_zeros());
        let block_of = |x: usize| shift.map_or(x / b, |s| x >> s);
        let mut kept = vec![0u64; nb];
        let mut touched: Vec<usize> = Vec::new();
        let (mut kb, mut kf) = (Vec::new(), Vec::new());
        for qb in 0..nb {
            let (q0, q1) = (qb * b, ((qb + 1) * b).min(n));
            for i in q0..q1 {
                for (s, e) in sel.keys_of(i) {
                    let (s, e) = (s as usize, e as usize);
                    let mut x = s;
                    while x < e {
                        let k = block_of(x);
                        let end = e.min((k + 1) * b);
                        if kept[k] == 0 {
                            touched.push(k);
                        }
                        kept[k] += (end - x) as u64;
                        x = end;
                    }
                }
            }
            touched.sort_unstable();
            kb.clear();
            kf.clear();
            for &k in &touched {
                // Causal pairs of the (query block, key block) tile: every pair of a key block
                // before the query block (whole blocks: it ends at or before `q0 <= n`), the
                // lower triangle of the diagonal tile, none after it.
                let rows = (q1 - q0) as u64;
                let pairs: u64 = match k.cmp(&qb) {
                    std::cmp::Ordering::Less => rows * b as u64,
                    std::cmp::Ordering::Equal => rows * (rows + 1) / 2,
                    std::cmp::Ordering::Greater => 0,
                };
                kb.push(k as u32);
                kf.push(if pairs == 0 {
                    0.0
                } else {
                    kept[k] as f32 / pairs as f32
                });
                kept[k] = 0;
            }
            touched.clear();
            row.push_query_block(&kb, &kf);
        }
        row
    }

    /// Appends the next query block.
    pub fn push_query_block(&mut self, blocks: &[u32], fraction: &[f32]) {
        self.blocks.extend_from_slice(blocks);
        self.fraction.extend_from_slice(fraction);
        self.offsets.push(self.blocks.len() as u32);
    }

    /// Number of query blocks.
    pub fn n_query_blocks(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// Kept key blocks of query block `q`, ascending.
    pub fn blocks_of(&self, q: usize) -> &[u32] {
        &self.blocks[self.offsets[q] as usize..self.offsets[q + 1] as usize]
    }

    /// Kept fraction of each of [`Self::blocks_of`].
    pub fn fraction_of(&self, q: usize) -> &[f32] {
        &self.fraction[self.offsets[q] as usize..self.offsets[q + 1] as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_and_token_selections_compact() {
        // 8 tokens, blocks of 4: row 0 keeps block 0, row 1 keeps blocks 0 and 1.
        let mut b = Selection::builder(8, 4);
        b.push_blocks([0], 4);
        b.push_blocks([0, 1], 4);
        let r = SelectionRow::compact(&b.finish(), 4, (0, 0, 0), "x", 0);
        assert_eq!(r.blocks_of(0), &[0]);
        assert_eq!(r.blocks_of(1), &[0, 1]);
        assert_eq!(r.fraction_of(1), &[1.0, 1.0]);
        // Per-query token selection: each query keeps only itself.
        let mut b = Selection::builder(8, 1);
        for i in 0..8 {
            b.push_tokens([i]);
        }
        let r = SelectionRow::compact(&b.finish(), 4, (0, 0, 0), "x", 0);
        assert_eq!(r.blocks_of(1), &[1]);
        // 4 kept of the diagonal tile's 10 causal pairs.
        assert!((r.fraction_of(1)[0] - 0.4).abs() < 1e-6);
        // Dense over 10 tokens (a short last block): every causal tile is whole.
        let mut b = Selection::builder(10, 1);
        for i in 0..10u32 {
            b.push_ranges([(0, i + 1)]);
        }
        let r = SelectionRow::compact(&b.finish(), 4, (0, 0, 0), "x", 0);
        for q in 0..3 {
            assert_eq!(r.blocks_of(q), (0..=q as u32).collect::<Vec<_>>());
            assert!(
                r.fraction_of(q).iter().all(|&f| f == 1.0),
                "query block {q}"
            );
        }
    }
}
