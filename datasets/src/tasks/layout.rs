//! A fitted text's layout: one window of hay cut into segments with the needles between them
//! ([`Layout`]), and its rendering to text with the byte ranges of every part ([`Rendered`]).

/// Where the needles go in the hay window `w`, and the text around them.
#[derive(Clone)]
pub(super) struct Layout<'a> {
    pub(super) w: String,
    /// Insertion points in `w` (sorted), one per needle in layout order.
    pub(super) cuts: Vec<usize>,
    /// End in `w` of each hay segment (`cuts.len() + 1` of them).
    pub(super) ends: Vec<usize>,
    pub(super) prefix: &'a str,
    pub(super) suffix: &'a str,
    pub(super) needles: Vec<&'a str>,
    /// Hay left out inside one segment: (segment, start, end) in `w`.
    pub(super) gap: Option<(usize, usize, usize)>,
}

/// A rendered [`Layout`].
pub(super) struct Rendered {
    pub(super) text: String,
    /// Byte range of each hay segment in `text`.
    pub(super) segs: Vec<(usize, usize)>,
    /// Byte range of each needle (layout order) in `text`.
    pub(super) needles: Vec<(usize, usize)>,
}

impl Layout<'_> {
    pub(super) fn seg_start(&self, i: usize) -> usize {
        if i == 0 {
            0
        } else {
            self.cuts[i - 1]
        }
    }

    /// The hay of segment `i`, in two parts when the gap is inside it.
    pub(super) fn seg(&self, i: usize) -> (&str, &str) {
        let (a, b) = (self.seg_start(i), self.ends[i]);
        match self.gap {
            Some((j, g0, g1)) if j == i && a <= g0 && g1 <= b => (&self.w[a..g0], &self.w[g1..b]),
            _ => (&self.w[a..b], ""),
        }
    }

    pub(super) fn render(&self) -> Rendered {
        let mut t =
            String::with_capacity(self.w.len() + self.prefix.len() + self.suffix.len() + 256);
        let mut segs = Vec::with_capacity(self.ends.len());
        let mut needles = Vec::with_capacity(self.cuts.len());
        t.push_str(self.prefix);
        for i in 0..self.ends.len() {
            let (p1, p2) = self.seg(i);
            segs.push((t.len(), t.len() + p1.len() + p2.len()));
            t.push_str(p1);
            t.push_str(p2);
            if let Some(n) = self.needles.get(i) {
                if t.chars().next_back().is_some_and(|c| !c.is_whitespace()) {
                    t.push(' ');
                }
                needles.push((t.len(), t.len() + n.len()));
                t.push_str(n);
                let (n1, n2) = self.seg(i + 1);
                let next = n1.chars().chain(n2.chars()).next();
                if next.is_some_and(|c| !c.is_whitespace()) {
                    t.push(' ');
                }
            }
        }
        t.push_str(self.suffix);
        Rendered {
            text: t,
            segs,
            needles,
        }
    }
}
