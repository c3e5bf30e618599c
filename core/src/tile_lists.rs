//! A [`TokenSelection`] as per-query-tile key lists, the input of the block-sparse flash kernel
//! (`kernels/cu/flash_sparse.cu`): for each q-head and tile of [`TILE`] queries, the union of the
//! keys its queries keep (ascending, padded to a multiple of 64 with `u32::MAX`) and one 64-bit
//! word per (query, 64 listed keys) saying which of them the query keeps.
//!
//! A block method's queries of one tile keep the same key blocks, so a tile's list is about
//! `1 / TILE` of the per-query lists and the kernel reads each kept key once per tile.

use rayon::prelude::*;

use crate::exact_attention::TokenSelection;

/// Queries per tile (the kernel's 4 warps x 16 rows).
pub const TILE: usize = 64;

/// Listed keys per mask word.
const CHUNK: usize = 64;

/// Per-(q-head, query tile) key lists and keep masks (layout in the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TileLists {
    /// `heads * ceil(n / TILE) + 1` offsets (multiples of 64) into `keys` and `mask`; entry
    /// `h * ceil(n / TILE) + t` starts the list of q-head `h`, tile `t`.
    pub offsets: Vec<u64>,
    /// The lists, each ascending, padded with `u32::MAX`.
    pub keys: Vec<u32>,
    /// `mask[offset + c * 64 + r]` bit `j`: query `t * TILE + r` keeps listed key `c * 64 + j`.
    pub mask: Vec<u64>,
}

/// One tile's list and mask; `keys(h, i)`: the ascending keys of query `i` of q-head `h`. The
/// union is gathered in a bit set over the keys (linear in the kept pairs, no sort).
fn tile<'a>(
    keys: &(impl Fn(usize, usize) -> &'a [u32] + Sync),
    h: usize,
    rows: std::ops::Range<usize>,
) -> (Vec<u32>, Vec<u64>) {
    let top = rows
        .clone()
        .filter_map(|i| keys(h, i).last())
        .max()
        .map_or(0, |&k| k as usize + 1);
    let mut seen = vec![0u64; top.div_ceil(64)];
    for i in rows.clone() {
        for &k in keys(h, i) {
            seen[k as usize / 64] |= 1 << (k % 64);
        }
    }
    let mut list: Vec<u32> = Vec::new();
    for (w, &bits) in seen.iter().enumerate() {
        let mut b = bits;
        while b != 0 {
            list.push((w * 64) as u32 + b.trailing_zeros());
            b &= b - 1;
        }
    }
    let len = list.len().next_multiple_of(CHUNK);
    list.resize(len, u32::MAX);
    let mut mask = vec![0u64; len];
    for (r, i) in rows.enumerate() {
        // Both ascending: walk the list once per query.
        let mut at = 0;
        for &key in keys(h, i) {
            while list[at] != key {
                at += 1;
            }
            mask[(at / CHUNK) * CHUNK + r] |= 1 << (at % CHUNK);
        }
    }
    (list, mask)
}

impl TileLists {
    /// The tile lists of `sel` (`heads` q-heads over `n` queries).
    pub fn new(sel: &TokenSelection, heads: usize, n: usize) -> Self {
        Self::from_rows(heads, n, |h, i| sel.keys(h, i))
    }

    /// The tile lists of compressed rows: `keys(h, i)` gives the ascending keys of query `i` of
    /// q-head `h`.
    pub fn from_rows<'a>(
        heads: usize,
        n: usize,
        keys: impl Fn(usize, usize) -> &'a [u32] + Sync,
    ) -> Self {
        let tiles = n.div_ceil(TILE);
        let parts: Vec<(Vec<u32>, Vec<u64>)> = (0..heads * tiles)
            .into_par_iter()
            .map(|r| {
                let (h, t) = (r / tiles, r % tiles);
                tile(&keys, h, t * TILE..((t + 1) * TILE).min(n))
            })
            .collect();
        let mut offsets = Vec::with_capacity(parts.len() + 1);
        offsets.push(0u64);
        for (list, _) in &parts {
            offsets.push(offsets[offsets.len() - 1] + list.len() as u64);
        }
        let (keys, mask): (Vec<Vec<u32>>, Vec<Vec<u64>>) = parts.into_iter().unzip();
        Self {
            offsets,
            keys: keys.concat(),
            mask: mask.concat(),
        }
    }

    /// The keys query `i` of q-head `h` keeps, read back from the lists (ascending).
    #[cfg(test)]
    fn kept(&self, h: usize, i: usize, n: usize) -> Vec<u32> {
        let tiles = n.div_ceil(TILE);
        let (t, r) = (i / TILE, i % TILE);
        let (a, b) = (
            self.offsets[h * tiles + t] as usize,
            self.offsets[h * tiles + t + 1] as usize,
        );
        (a..b)
            .filter(|&at| {
                let word = self.mask[a + ((at - a) / CHUNK) * CHUNK + r];
                (word >> ((at - a) % CHUNK)) & 1 == 1
            })
            .map(|at| self.keys[at])
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every query's keys read back from the lists are its own; block-shared selections list each
    /// key once per tile; padding is `u32::MAX` and kept by no query.
    #[test]
    fn lists_hold_every_query_keys_exactly() {
        let (heads, n) = (3, 200);
        // Token-level (different per query) and block-shared (per tile of 64) selections.
        let token = TokenSelection::from_fn(heads, n, |h, i| {
            (0..=i as u32)
                .filter(|&j| {
                    j < 4 || j as usize + 9 > i || (j as usize * 7 + h + i).is_multiple_of(11)
                })
                .collect()
        });
        let block = TokenSelection::from_fn(heads, n, |h, i| {
            let qb = i / 64;
            (0..=i as u32)
                .filter(|&j| {
                    let kb = j as usize / 16;
                    kb == 0 || j as usize / 64 == qb || (kb + h).is_multiple_of(3)
                })
                .collect()
        });
        for sel in [&token, &block] {
            let lists = TileLists::new(sel, heads, n);
            assert_eq!(lists.keys.len(), lists.mask.len());
            assert_eq!(
                lists.offsets[lists.offsets.len() - 1] as usize,
                lists.keys.len()
            );
            for h in 0..heads {
                for i in 0..n {
                    assert_eq!(lists.kept(h, i, n), sel.keys(h, i), "head {h} query {i}");
                }
            }
            for (at, &k) in lists.keys.iter().enumerate() {
                if k == u32::MAX {
                    let start = lists.offsets.partition_point(|&o| o as usize <= at) - 1;
                    let a = lists.offsets[start] as usize;
                    for r in 0..TILE {
                        let w = lists.mask[a + ((at - a) / CHUNK) * CHUNK + r];
                        assert_eq!((w >> ((at - a) % CHUNK)) & 1, 0);
                    }
                }
            }
        }
        // Block-shared: the last tile (rows 192..200) lists its visible keys of kept blocks only.
        let lists = TileLists::new(&block, heads, n);
        let tiles = n.div_ceil(TILE);
        let (a, b) = (lists.offsets[tiles - 1], lists.offsets[tiles]);
        let listed: Vec<u32> = lists.keys[a as usize..b as usize]
            .iter()
            .copied()
            .filter(|&k| k != u32::MAX)
            .collect();
        let want: Vec<u32> = (0..200u32)
            .filter(|&j| {
                let kb = j as usize / 16;
                kb == 0 || j as usize / 64 == 3 || kb.is_multiple_of(3)
            })
            .collect();
        assert_eq!(listed, want);
    }
}
