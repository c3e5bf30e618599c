//! `a-shape`: MInference's static A-shape pattern — the first `n_init` tokens (global "sink"
//! columns) plus a local window of the `local` most recent keys, the query itself included.
//!
//! Jiang et al., MInference 1.0: Accelerating Pre-filling for Long-Context LLMs via Dynamic Sparse
//! Attention, NeurIPS 2024 (arXiv:2407.02490). Defaults 128 + 3968 as in shared/METHODS.md. The
//! public kernel works on 64-token tiles; the pattern is replayed here at token granularity.
//! Static, so one selection is shared by every q-head of the group. The knob is the window.

use crate::method::{DeviceScoring, GroupInput, Knob, Prepared, Selector};
use crate::method::{MethodInfo, MethodKind, ParamSpec, Params};
use crate::selection::Selection;

pub const INFO: MethodInfo = MethodInfo {
    name: "a-shape",
    kind: MethodKind::Published,
    paper: "Jiang et al., MInference 1.0: Accelerating Pre-filling for Long-Context LLMs via Dynamic Sparse Attention, NeurIPS 2024 (arXiv:2407.02490)",
    rule: "static A-shape: the first n_init tokens plus the `local` most recent keys (the query included)",
    params: &[
        ParamSpec { name: "n_init", default: 128.0, min: 0.0, max: 1e9, integer: true, help: "global tokens at the start" },
        ParamSpec { name: "local", default: 3968.0, min: 1.0, max: 1e9, integer: true, help: "recent keys, the query included" },
    ],
    build,
};

fn build(p: &Params) -> Box<dyn Selector> {
    Box::new(AShape {
        n_init: p.count("n_init"),
    })
}

#[derive(Debug)]
struct AShape {
    n_init: usize,
}

struct Prep {
    n: usize,
    /// The first scored query.
    first: usize,
    n_init: usize,
    group: usize,
}

impl Prepared for Prep {
    fn select(&self, local: f64) -> Vec<Selection> {
        let w = local.max(1.0).round() as usize;
        let mut b = Selection::builder(self.n, 1);
        for i in 0..self.n {
            let lo = (i + 1).saturating_sub(w) as u32;
            let init = self.n_init.min(i + 1) as u32;
            b.push_ranges([(0, init), (lo, i as u32 + 1)]);
        }
        vec![b.finish(); self.group]
    }

    fn kept_pairs_at(&self, x: f64) -> Option<(u64, usize)> {
        let w = x.max(1.0).round() as usize;
        // Scored query i keeps [lo, i] plus the leading tokens before lo.
        let per_head: u64 = (self.first..self.n)
            .map(|i| {
                let lo = (i + 1).saturating_sub(w);
                (i + 1 - lo + self.n_init.min(lo)) as u64
            })
            .sum();
        Some((per_head * self.group as u64, self.group))
    }
}

impl Selector for AShape {
    fn knob(&self) -> Knob {
        Knob::count("local", 1.0, 1)
    }

    /// `None` when `tokens` cannot hold the init tokens plus the query itself: the runner then
    /// matches that budget's sparsity instead.
    fn knob_for_tokens(&self, tokens: usize) -> Option<f64> {
        (tokens > self.n_init).then(|| (tokens - self.n_init) as f64)
    }

    /// The static pattern on the device: the first `n_init` tokens and the window.
    fn device_scoring(&self, _n: usize) -> Option<DeviceScoring> {
        Some(DeviceScoring::Static {
            n_init: self.n_init,
        })
    }

    fn prepare<'a>(&'a self, g: &'a GroupInput<'a>) -> Box<dyn Prepared + 'a> {
        Box::new(Prep {
            n: g.n(),
            first: g.scored.first,
            n_init: self.n_init,
            group: g.group_size(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::GroupData;

    #[test]
    fn init_plus_local_window() {
        let data = GroupData::random(20, 8, 2, 1);
        let g = data.input();
        let m = AShape { n_init: 2 };
        let sels = m.prepare(&g).select(3.0);
        assert_eq!(sels.len(), 2);
        let s = &sels[0];
        // Query 10: tokens 0, 1 and 8, 9, 10.
        assert_eq!(s.keys_of(10).collect::<Vec<_>>(), vec![(0, 2), (8, 11)]);
        // Query 3: the window reaches the init tokens and merges with them.
        assert_eq!(s.keys_of(3).collect::<Vec<_>>(), vec![(0, 4)]);
        // Query 0 keeps itself.
        assert_eq!(s.kept_of(0), 1);
        assert_eq!(m.knob_for_tokens(130), Some(128.0));
        assert_eq!(m.knob_for_tokens(2), None);
        assert_eq!(sels[1], sels[0]);
    }

    #[test]
    fn full_window_is_dense() {
        let data = GroupData::random(30, 8, 1, 2);
        let g = data.input();
        let m = AShape { n_init: 128 };
        let s = &m.prepare(&g).select(30.0)[0];
        assert_eq!(s.kept_pairs(), crate::selection::causal_pairs(30));
    }
}
