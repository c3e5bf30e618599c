//! `streaming`: StreamingLLM's attention sinks plus a window of the most recent keys.

use crate::method::{DeviceScoring, GroupInput, Knob, Prepared, Selector};
use crate::method::{MethodInfo, MethodKind, ParamSpec, Params};
use crate::selection::Selection;

pub const INFO: MethodInfo = MethodInfo {
    name: "streaming",
    kind: MethodKind::Published,
    paper: "Xiao et al., Efficient Streaming Language Models with Attention Sinks, ICLR 2024 (arXiv:2309.17453)",
    rule: "the first `sinks` tokens plus the `window` most recent keys (the query itself among them)",
    params: &[
        ParamSpec { name: "sinks", default: 4.0, min: 0.0, max: 1e6, integer: true, help: "sink tokens at the start" },
        ParamSpec { name: "window", default: 1020.0, min: 1.0, max: 1e9, integer: true, help: "recent keys, the query included" },
    ],
    build,
};

fn build(p: &Params) -> Box<dyn Selector> {
    Box::new(Streaming {
        sinks: p.count("sinks"),
    })
}

#[derive(Debug)]
struct Streaming {
    sinks: usize,
}

struct Prep {
    n: usize,
    /// The first scored query.
    first: usize,
    sinks: usize,
    group: usize,
}

impl Prepared for Prep {
    fn select(&self, window: f64) -> Vec<Selection> {
        let w = window.max(1.0).round() as usize;
        let mut b = Selection::builder(self.n, 1);
        for i in 0..self.n {
            let lo = (i + 1).saturating_sub(w);
            b.push_ranges([(0, self.sinks as u32), (lo as u32, i as u32 + 1)]);
        }
        vec![b.finish(); self.group]
    }

    fn kept_pairs_at(&self, x: f64) -> Option<(u64, usize)> {
        let w = x.max(1.0).round() as usize;
        // Scored query i keeps [lo, i] plus the leading tokens before lo.
        let per_head: u64 = (self.first..self.n)
            .map(|i| {
                let lo = (i + 1).saturating_sub(w);
                (i + 1 - lo + self.sinks.min(lo)) as u64
            })
            .sum();
        Some((per_head * self.group as u64, self.group))
    }
}

impl Selector for Streaming {
    fn knob(&self) -> Knob {
        Knob::count("window", 1.0, 1)
    }

    fn knob_for_tokens(&self, tokens: usize) -> Option<f64> {
        Some(tokens.saturating_sub(self.sinks).max(1) as f64)
    }

    /// The static pattern on the device: the first `sinks` tokens and the window.
    fn device_scoring(&self, _n: usize) -> Option<DeviceScoring> {
        Some(DeviceScoring::Static { n_init: self.sinks })
    }

    fn prepare<'a>(&'a self, g: &'a GroupInput<'a>) -> Box<dyn Prepared + 'a> {
        Box::new(Prep {
            n: g.n(),
            first: g.scored.first,
            sinks: self.sinks,
            group: g.group_size(),
        })
    }
}
