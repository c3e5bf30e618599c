//! `phsa-fit` (ours): PHSA with lambda fitted per layer on calibration text. Before the run, every
//! (layer, KV group) of the calibration text is scored with PHSA at each lambda of a grid, at the
//! run's first budget (calibrated to the same sparsity as every method); each layer keeps the
//! lambda whose mean recall over its groups and q-heads is highest. PHSA keeps whole blocks, so
//! with blocks that are multiples of the capture block the recalls are summed from the capture's
//! block masses ([`crate::metrics::recall_from_block_mass`]); other blocks read the exact
//! attention. On the evaluation text the method is PHSA with that layer's lambda (the default
//! lambda for layers never calibrated). Needs `attnscope simulate --calibration-text SRC`; the
//! fitted values are reported in the run.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::phsa::Phsa;
use crate::budget::{resolve, Budget};
use crate::method::{GroupInput, Knob, Prepared, Selector};
use crate::method::{MethodInfo, MethodKind, ParamSpec, Params};
use crate::metrics::{recall_from_block_mass, recall_with};

pub const INFO: MethodInfo = MethodInfo {
    name: "phsa-fit",
    kind: MethodKind::Ours,
    paper: "ours: PHSA with a per-layer lambda fitted to maximize recall on calibration text (the PHSA paper's adaptive strategy is unpublished)",
    rule: "phsa with lambda per layer = argmax over a grid of mean recall on calibration text at the same sparsity",
    params: &[
        ParamSpec { name: "lambda", default: 0.5, min: 0.0, max: 1.0, integer: false, help: "lambda of layers without calibration" },
        ParamSpec { name: "grid_steps", default: 5.0, min: 2.0, max: 101.0, integer: true, help: "grid 0, 1/(s-1), ..., 1 of lambda values tried" },
        ParamSpec { name: "block", default: 64.0, min: 1.0, max: 65536.0, integer: true, help: "block size in tokens" },
        ParamSpec { name: "init_blocks", default: 1.0, min: 0.0, max: 1e6, integer: true, help: "forced blocks at the start" },
        ParamSpec { name: "local_blocks", default: 2.0, min: 0.0, max: 1e6, integer: true, help: "forced blocks before the query's own block" },
        ParamSpec { name: "newline_punct", default: 1.0, min: 0.0, max: 1.0, integer: true, help: "count newline-only tokens as punctuation" },
        ParamSpec { name: "dense_below", default: 0.0, min: 0.0, max: 1e9, integer: true, help: "ours: dense attention below this many tokens (0 = always sparse)" },
        ParamSpec { name: "top_k", default: 16.0, min: 0.0, max: 1e9, integer: true, help: "selected blocks beyond the forced ones" },
    ],
    build,
};

fn build(p: &Params) -> Box<dyn Selector> {
    let steps = p.count("grid_steps").max(2);
    Box::new(PhsaFit {
        base: Phsa {
            lambda: p.get("lambda") as f32,
            block: p.count("block").max(1),
            n_init: p.count("init_blocks"),
            local: p.count("local_blocks"),
            newline: p.flag("newline_punct"),
            dense_below: p.count("dense_below"),
            candidates_only: false,
        },
        grid: (0..steps).map(|s| s as f32 / (steps - 1) as f32).collect(),
        scores: Mutex::new(BTreeMap::new()),
    })
}

/// PHSA whose lambda is fitted per layer on calibration text.
#[derive(Debug)]
pub struct PhsaFit {
    base: Phsa,
    grid: Vec<f32>,
    /// Per layer: summed mean recall of each grid value over calibrated groups.
    scores: Mutex<BTreeMap<usize, Vec<f64>>>,
}

impl PhsaFit {
    fn lambda_for(&self, layer: usize) -> f32 {
        let scores = self.scores.lock().unwrap_or_else(|e| e.into_inner());
        match scores.get(&layer) {
            Some(s) => {
                let best = (0..s.len())
                    .max_by(|&a, &b| s[a].total_cmp(&s[b]).then(b.cmp(&a)))
                    .unwrap_or(0);
                self.grid[best]
            }
            None => self.base.lambda,
        }
    }

    fn with_lambda(&self, lambda: f32) -> Phsa {
        Phsa {
            lambda,
            ..self.base.clone()
        }
    }
}

impl Selector for PhsaFit {
    fn knob(&self) -> Knob {
        self.base.knob()
    }

    fn knob_for_tokens(&self, tokens: usize) -> Option<f64> {
        self.base.knob_for_tokens(tokens)
    }

    fn prepare<'a>(&'a self, g: &'a GroupInput<'a>) -> Box<dyn Prepared + 'a> {
        Box::new(self.with_lambda(self.lambda_for(g.layer)).rank(g))
    }

    fn needs_calibration(&self) -> bool {
        true
    }

    fn calibrate(&self, g: &GroupInput<'_>, budget: Budget) {
        // Recall of whole blocks from the capture's block masses; the group's exact attention
        // (computed once, for every lambda of the grid) only when a range cuts a capture block.
        let recall = |h: usize, sel: &crate::selection::Selection| {
            recall_from_block_mass(g.truth[h], g.capture_block, sel)
                .unwrap_or_else(|| recall_with(&g.true_probs()[h], sel))
        };
        let recalls: Vec<f64> = self
            .grid
            .iter()
            .map(|&lambda| {
                let phsa = self.with_lambda(lambda);
                let ranked = phsa.rank(g);
                let cal = resolve(&phsa, &ranked, budget, g.scored, None);
                let total: f64 = cal
                    .selections
                    .iter()
                    .enumerate()
                    .map(|(h, sel)| {
                        let r = recall(h, sel);
                        r.iter().map(|&x| x as f64).sum::<f64>() / r.len().max(1) as f64
                    })
                    .sum();
                total / cal.selections.len().max(1) as f64
            })
            .collect();
        let mut scores = self.scores.lock().unwrap_or_else(|e| e.into_inner());
        let entry = scores
            .entry(g.layer)
            .or_insert_with(|| vec![0.0; self.grid.len()]);
        entry.iter_mut().zip(&recalls).for_each(|(e, r)| *e += r);
    }

    fn fitted(&self) -> Vec<(usize, String, f64)> {
        let layers: Vec<usize> = self
            .scores
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect();
        layers
            .into_iter()
            .map(|l| (l, "lambda".to_string(), self.lambda_for(l) as f64))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::GroupData;
    use attnscope_core::rng::Rng;
    use ndarray::Array2;

    /// Block 3 holds one punctuation token whose key dominates attention; block 5 holds 64
    /// moderately aligned keys with a larger mean. Mean keys (lambda = 1) prefer block 5, the
    /// punctuation mean (lambda = 0) block 3, which is where the attention is: the fit must pick 0.
    #[test]
    fn fits_the_lambda_that_keeps_the_most_attention() {
        let (n, d, b) = (512, 16, 64);
        let mut rng = Rng::from_state(3);
        let u: Vec<f32> = (0..d).map(|c| if c == 0 { 1.0 } else { 0.0 }).collect();
        let q = Array2::from_shape_fn((n, d), |(_, c)| 4.0 * u[c]);
        let mut k = Array2::from_shape_fn((n, d), |_| 0.1 * rng.normal_f32());
        let heavy = 3 * b + 10;
        for c in 0..d {
            k[[heavy, c]] += 20.0 * u[c];
            for j in 5 * b..6 * b {
                k[[j, c]] += 3.0 * u[c];
            }
        }
        let v = Array2::from_shape_fn((n, d), |_| rng.normal_f32());
        let punct: Vec<bool> = (0..n).map(|j| j == heavy).collect();
        let data = GroupData::from_qkv(q, k, v, punct, vec![false; n], 1, 64);
        let info = &INFO;
        let method = info
            .build_with(&[("local_blocks".into(), 0.0), ("init_blocks".into(), 0.0)])
            .expect("build");
        assert!(method.fitted().is_empty());
        let input = data.input();
        method.calibrate(&input, Budget::Tokens(2 * b));
        assert_eq!(method.fitted(), vec![(0, "lambda".to_string(), 0.0)]);
        // The fitted lambda is what the evaluation uses: queries after block 6 keep block 3.
        let sel = &method.prepare(&input).select(1.0)[0];
        assert!(sel.contains(n - 1, heavy) && !sel.contains(n - 1, 5 * b));
    }
}
