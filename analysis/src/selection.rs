//! [`Selection`]: the keys a method keeps, per row of queries, as sorted disjoint token ranges.
//!
//! Rows hold one query (`query_block == 1`) or a block of consecutive queries that share one
//! selection (block methods). Ranges are stored merged, so a block selection costs one range per
//! run of adjacent blocks and a sink + window pattern costs two ranges per row. Causality holds by
//! construction: the builder stores nothing after a row's last query, and
//! [`Selection::keys_of`] clips a shared row to each query.

/// Half-open token range `[start, end)`.
pub type Range = (u32, u32);

/// Which queries a run scores, as asked (`--queries`): resolved per input to [`Scored`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Queries {
    /// Every query: sparsity and metrics average over the causal triangle.
    #[default]
    All,
    /// The last `N` queries of each input (decode accounting).
    Last(usize),
}

impl Queries {
    /// The scored queries of an `n`-token input.
    pub fn of(self, n: usize) -> Scored {
        match self {
            Queries::All => Scored::all(n),
            Queries::Last(last) => Scored::last(last, n),
        }
    }
}

impl std::fmt::Display for Queries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Queries::All => write!(f, "all"),
            Queries::Last(n) => write!(f, "last:{n}"),
        }
    }
}

impl std::str::FromStr for Queries {
    type Err = String;

    /// `all` or `last:N` with `N >= 1`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("'{s}': expected 'all' or 'last:N' with N a whole number >= 1");
        match s.trim() {
            "all" => Ok(Queries::All),
            t => {
                let n = t.strip_prefix("last:").ok_or_else(bad)?;
                match n.parse::<usize>() {
                    Ok(n) if n >= 1 => Ok(Queries::Last(n)),
                    _ => Err(bad()),
                }
            }
        }
    }
}

/// The queries a run scores: `first..n` of an `n`-token input (METHODS.md, "Scored queries").
/// `--queries all` scores every query (`first` 0: the average over the causal triangle);
/// `--queries last:N` the last `N` (decode accounting: the queries at the end of a long context).
/// Selections, sparsity and every metric count the scored queries only; the keys each query
/// sees are still all of its visible keys: `0..=i`, or `(i - window, i]` on a sliding-window
/// layer ([`Scored::with_window`]). The visible pairs are the pairs sparsity is counted over
/// ([`Scored::visible_pairs`]); a selection's keys outside them are not attended and not counted
/// ([`Selection::keys_of`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scored {
    /// The first scored query.
    pub first: usize,
    /// Tokens of the input (the last scored query is `n - 1`).
    pub n: usize,
    /// The layer's sliding window (query `i` sees keys `(i - window, i]`), when it is shorter
    /// than the input; `None`: every causal key is visible.
    pub window: Option<usize>,
}

impl Scored {
    /// Every query of `n` tokens.
    pub fn all(n: usize) -> Self {
        Self {
            first: 0,
            n,
            window: None,
        }
    }

    /// The last `last` queries of `n` tokens (every query when `last >= n`).
    pub fn last(last: usize, n: usize) -> Self {
        Self {
            first: n - last.min(n),
            n,
            window: None,
        }
    }

    /// These queries on a layer whose query `i` sees keys `(i - window, i]` only (a window of
    /// `n` keys or more hides nothing and is dropped).
    pub fn with_window(self, window: Option<usize>) -> Self {
        Self {
            window: window.filter(|&w| w < self.n),
            ..self
        }
    }

    /// The first key query `i` sees (0 without a window).
    pub fn first_visible(&self, i: usize) -> usize {
        match self.window {
            Some(w) => (i + 1).saturating_sub(w),
            None => 0,
        }
    }

    /// Visible (query, key) pairs of the scored queries: causal and inside the window. The
    /// denominator of sparsity everywhere ([`crate::budget::sparsity_of`]); equal to
    /// [`Scored::causal_pairs`] without a window.
    pub fn visible_pairs(&self) -> u64 {
        match self.window {
            None => self.causal_pairs(),
            Some(w) => self.range().map(|i| (i + 1).min(w) as u64).sum(),
        }
    }

    /// True when every query is scored.
    pub fn is_all(&self) -> bool {
        self.first == 0
    }

    /// Scored queries.
    pub fn len(&self) -> usize {
        self.n - self.first
    }

    /// True when no query is scored.
    pub fn is_empty(&self) -> bool {
        self.first >= self.n
    }

    /// The scored queries as a range.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.first..self.n
    }

    /// The first row of `query_block` queries that holds a scored query.
    pub fn first_row(&self, query_block: usize) -> usize {
        self.first / query_block.max(1)
    }

    /// The rows of the scored queries of a per-query array (`[n, ..]`): row `i - first` is query
    /// `i`.
    pub fn rows_of<'a>(&self, a: ndarray::ArrayView2<'a, f32>) -> ndarray::ArrayView2<'a, f32> {
        a.slice_move(ndarray::s![self.first..self.n, ..])
    }

    /// Causal (query, key) pairs of the scored queries: `sum (i + 1)` over `first..n` (what
    /// per-pair buffers of the scored rows hold, window or not).
    pub fn causal_pairs(&self) -> u64 {
        causal_pairs(self.n) - causal_pairs(self.first)
    }
}

/// Kept keys per row of queries (compact, CSR-like). Rows before the first scored query's row
/// are empty ([`Scored`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    n: usize,
    first: usize,
    window: Option<usize>,
    query_block: usize,
    offsets: Vec<usize>,
    ranges: Vec<Range>,
}

/// Builds a [`Selection`] row by row.
#[derive(Debug)]
pub struct SelectionBuilder {
    sel: Selection,
    scratch: Vec<Range>,
}

impl SelectionBuilder {
    /// Adds the next row from arbitrary (unsorted, overlapping) ranges; empty ranges are dropped.
    pub fn push_ranges(&mut self, ranges: impl IntoIterator<Item = Range>) {
        self.scratch.clear();
        self.scratch
            .extend(ranges.into_iter().filter(|r| r.0 < r.1));
        self.scratch.sort_unstable();
        // Causal by construction: nothing after the row's last query is stored.
        let row = self.sel.offsets.len() - 1;
        let n = (((row + 1) * self.sel.query_block).min(self.sel.n)) as u32;
        let mut last: Option<Range> = None;
        for &(s, e) in &self.scratch {
            let (s, e) = (s.min(n), e.min(n));
            match last.as_mut() {
                Some(l) if s <= l.1 => l.1 = l.1.max(e),
                _ => {
                    if let Some(l) = last.take() {
                        self.sel.ranges.push(l);
                    }
                    last = Some((s, e));
                }
            }
        }
        if let Some(l) = last.filter(|l| l.0 < l.1) {
            self.sel.ranges.push(l);
        }
        self.sel.offsets.push(self.sel.ranges.len());
    }

    /// Adds the next row from key block indices of size `block`.
    pub fn push_blocks(&mut self, blocks: impl IntoIterator<Item = usize>, block: usize) {
        self.push_ranges(
            blocks
                .into_iter()
                .map(|b| ((b * block) as u32, ((b + 1) * block) as u32)),
        );
    }

    /// Adds the next row from token positions.
    pub fn push_tokens(&mut self, tokens: impl IntoIterator<Item = usize>) {
        self.push_ranges(tokens.into_iter().map(|t| (t as u32, t as u32 + 1)));
    }

    /// Finishes; panics in debug builds if the row count is wrong (a method bug, not user input).
    pub fn finish(self) -> Selection {
        debug_assert_eq!(self.sel.rows(), self.sel.n.div_ceil(self.sel.query_block));
        self.sel
    }
}

impl Selection {
    /// A builder for `n` tokens whose rows cover `query_block` queries each.
    pub fn builder(n: usize, query_block: usize) -> SelectionBuilder {
        Self::builder_scored(Scored::all(n), query_block)
    }

    /// A builder for the `scored` queries: the rows before
    /// [`Scored::first_row`] are already pushed (empty), so the next row pushed is that one.
    pub fn builder_scored(scored: Scored, query_block: usize) -> SelectionBuilder {
        let qb = query_block.max(1);
        let rows = scored.n.div_ceil(qb);
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.resize(scored.first_row(qb).min(rows) + 1, 0);
        SelectionBuilder {
            sel: Self {
                n: scored.n,
                first: scored.first,
                window: scored.window,
                query_block: qb,
                offsets,
                ranges: Vec::new(),
            },
            scratch: Vec::new(),
        }
    }

    /// The selection whose row `r` holds `rows[r]` (arbitrary, unsorted, overlapping ranges),
    /// normalized in parallel exactly as [`SelectionBuilder::push_ranges`] does row by row.
    pub fn from_rows(n: usize, query_block: usize, rows: Vec<Vec<Range>>) -> Self {
        Self::from_rows_scored(Scored::all(n), query_block, rows)
    }

    /// [`Selection::from_rows`] for the `scored` queries: `rows[r]` is row
    /// `scored.first_row(query_block) + r` (the rows before it are empty).
    pub fn from_rows_scored(scored: Scored, query_block: usize, mut rows: Vec<Vec<Range>>) -> Self {
        use rayon::prelude::*;
        let (n, qb) = (scored.n, query_block.max(1));
        let r0 = scored.first_row(qb).min(n.div_ceil(qb));
        debug_assert_eq!(r0 + rows.len(), n.div_ceil(qb));
        rows.par_iter_mut()
            .enumerate()
            .with_min_len(64)
            .for_each(|(r, row)| normalize_row(row, (((r0 + r + 1) * qb).min(n)) as u32));
        let mut offsets = Vec::with_capacity(r0 + rows.len() + 1);
        offsets.resize(r0 + 1, 0);
        let mut ranges = Vec::with_capacity(rows.iter().map(Vec::len).sum());
        for row in rows {
            ranges.extend_from_slice(&row);
            offsets.push(ranges.len());
        }
        Self {
            n,
            first: scored.first,
            window: scored.window,
            query_block: qb,
            offsets,
            ranges,
        }
    }

    /// Every causal key of every query (the dense selection).
    pub fn dense(n: usize) -> Self {
        let mut b = Self::builder(n, n.max(1));
        b.push_ranges([(0, n as u32)]);
        b.finish()
    }

    /// Tokens covered.
    pub fn len(&self) -> usize {
        self.n
    }

    /// This selection for the `scored` queries: rows before the first scored query's row emptied
    /// (the selection itself when it already scores them), its keys seen through their window.
    /// For methods that select every row.
    pub fn restricted(self, scored: Scored) -> Self {
        if self.scored() == scored || scored.n != self.n {
            return self;
        }
        if self.first == scored.first {
            return Self {
                window: scored.window,
                ..self
            };
        }
        let r0 = scored.first_row(self.query_block).min(self.rows());
        let cut = self.offsets[r0];
        let mut offsets = Vec::with_capacity(self.offsets.len());
        offsets.resize(r0 + 1, 0);
        offsets.extend(self.offsets[r0 + 1..].iter().map(|&o| o - cut));
        Self {
            n: self.n,
            first: scored.first,
            window: scored.window,
            query_block: self.query_block,
            offsets,
            ranges: self.ranges[cut..].to_vec(),
        }
    }

    /// The queries this selection scores.
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

    /// Queries per row.
    pub fn query_block(&self) -> usize {
        self.query_block
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.offsets.len() - 1
    }

    /// The stored ranges of row `r` (not clipped to any query).
    pub fn row_ranges(&self, r: usize) -> &[Range] {
        &self.ranges[self.offsets[r]..self.offsets[r + 1]]
    }

    /// The kept key ranges of query `i` that it sees: clipped causally to `[0, i]` and, on a
    /// sliding-window layer, to its window `(i - window, i]` (a method's selection is
    /// intersected with the visible keys: keys outside the window are not attended).
    pub fn keys_of(&self, i: usize) -> impl Iterator<Item = Range> + '_ {
        let lim = i as u32 + 1;
        let lo = self.scored().first_visible(i) as u32;
        self.row_ranges(i / self.query_block)
            .iter()
            .take_while(move |r| r.0 < lim)
            .filter(move |r| r.1 > lo)
            .map(move |&(s, e)| (s.max(lo), e.min(lim)))
    }

    /// Number of kept visible keys of query `i`.
    pub fn kept_of(&self, i: usize) -> usize {
        self.keys_of(i).map(|(s, e)| (e - s) as usize).sum()
    }

    /// True when query `i` keeps key `j` and sees it.
    pub fn contains(&self, i: usize, j: usize) -> bool {
        j <= i
            && self
                .keys_of(i)
                .any(|(s, e)| (s as usize) <= j && j < e as usize)
    }

    /// Kept visible (query, key) pairs of the scored queries (causal ones without a window).
    pub fn kept_pairs(&self) -> u64 {
        (self.first..self.n).map(|i| self.kept_of(i) as u64).sum()
    }

    /// The largest key position stored in row `r` (before causal clipping), if any.
    pub fn row_max_key(&self, r: usize) -> Option<usize> {
        self.row_ranges(r).last().map(|r| r.1 as usize - 1)
    }
}

/// Sorts, clips at `lim` (the row's last query + 1), merges overlapping or adjacent ranges and
/// drops empty ones, in place: the normal form of a stored row.
fn normalize_row(row: &mut Vec<Range>, lim: u32) {
    row.retain(|r| r.0 < r.1);
    row.sort_unstable();
    let mut w = 0;
    let mut last: Option<Range> = None;
    for x in 0..row.len() {
        let (s, e) = (row[x].0.min(lim), row[x].1.min(lim));
        match last.as_mut() {
            Some(l) if s <= l.1 => l.1 = l.1.max(e),
            _ => {
                if let Some(l) = last.take() {
                    row[w] = l;
                    w += 1;
                }
                last = Some((s, e));
            }
        }
    }
    if let Some(l) = last.filter(|l| l.0 < l.1) {
        row[w] = l;
        w += 1;
    }
    row.truncate(w);
}

/// All causal (query, key) pairs of `n` tokens.
pub fn causal_pairs(n: usize) -> u64 {
    (n as u64) * (n as u64 + 1) / 2
}

/// Size of the intersection of two sorted disjoint range lists.
pub fn intersect_len(a: impl Iterator<Item = Range>, b: impl Iterator<Item = Range>) -> u64 {
    let (mut a, mut b) = (a.peekable(), b.peekable());
    let mut total = 0u64;
    while let (Some(&x), Some(&y)) = (a.peek(), b.peek()) {
        let (s, e) = (x.0.max(y.0), x.1.min(y.1));
        if s < e {
            total += (e - s) as u64;
        }
        if x.1 <= y.1 {
            a.next();
        } else {
            b.next();
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_and_clip_causally() {
        let mut b = Selection::builder(10, 4);
        b.push_ranges([(2, 3), (0, 1), (1, 2)]);
        b.push_blocks([0, 1], 2);
        b.push_tokens([9, 0, 8]);
        let s = b.finish();
        assert_eq!(s.row_ranges(0), &[(0, 3)]);
        assert_eq!(s.row_ranges(1), &[(0, 4)]);
        assert_eq!(s.row_ranges(2), &[(0, 1), (8, 10)]);
        assert_eq!(s.keys_of(1).collect::<Vec<_>>(), vec![(0, 2)]);
        assert_eq!(s.kept_of(8), 2);
        assert!(s.contains(9, 9) && !s.contains(8, 9));
        assert_eq!(Selection::dense(5).kept_pairs(), causal_pairs(5));
    }

    #[test]
    fn a_window_hides_keys_from_counts_and_sparsity() {
        let scored = Scored::all(10).with_window(Some(3));
        assert_eq!(scored.visible_pairs(), 1 + 2 + 3 * 8);
        assert_eq!(Scored::all(10).with_window(Some(10)).window, None);
        // Sink 0 and the two most recent keys: the sink leaves the window from query 3 on.
        let mut b = Selection::builder_scored(scored, 1);
        for i in 0..10u32 {
            b.push_ranges([(0, 1), (i.saturating_sub(1), i + 1)]);
        }
        let s = b.finish();
        assert_eq!(s.keys_of(2).collect::<Vec<_>>(), vec![(0, 3)]);
        assert_eq!(s.keys_of(9).collect::<Vec<_>>(), vec![(8, 10)]);
        assert!(!s.contains(9, 0) && s.contains(2, 0));
        assert_eq!(s.kept_pairs(), 1 + 2 + 3 + 2 * 7);
        // Restricting to the same queries without the window counts the sink again.
        let plain = s.clone().restricted(Scored::all(10));
        assert_eq!(plain.kept_pairs(), 1 + 2 + 3 + 3 * 7);
    }

    #[test]
    fn intersection_of_range_lists() {
        let a = [(0u32, 5u32), (8, 10)];
        let b = [(3u32, 9u32)];
        assert_eq!(intersect_len(a.into_iter(), b.into_iter()), 3);
    }
}

#[cfg(test)]
mod from_rows_tests {
    use super::*;
    use attnscope_core::rng::Rng;

    #[test]
    fn parallel_rows_normalize_like_the_builder() {
        let mut rng = Rng::from_state(5);
        for (n, qb) in [(50usize, 1usize), (50, 4), (7, 3), (64, 64)] {
            let rows: Vec<Vec<Range>> = (0..n.div_ceil(qb))
                .map(|_| {
                    (0..(rng.next_u64() % 9))
                        .map(|_| {
                            let s = (rng.next_u64() % (n as u64 + 5)) as u32;
                            (s, s + (rng.next_u64() % 12) as u32)
                        })
                        .collect()
                })
                .collect();
            let mut b = Selection::builder(n, qb);
            for r in &rows {
                b.push_ranges(r.iter().copied());
            }
            assert_eq!(
                Selection::from_rows(n, qb, rows),
                b.finish(),
                "n {n} qb {qb}"
            );
        }
    }
}
