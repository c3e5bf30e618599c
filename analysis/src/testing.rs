//! Test support: owned random (or given) Q/K/V for one KV group with the exact dense capture, from
//! which a [`GroupInput`] is borrowed. Used by unit tests, the invariant matrix and benchmarks.

use ndarray::{Array2, ArrayView2};

use attnscope_core::attention::{LayerQkv, ScoreRule};
use attnscope_core::capture::{capture_layer, CaptureOptions, HeadCapture};
use attnscope_core::rng::Rng;

use crate::method::GroupInput;

/// One KV group's owned tensors and exact dense statistics.
#[derive(Debug, Clone)]
pub struct GroupData {
    /// `[n, group * d]` queries of the group's q-heads, token-major.
    pub q: Array2<f32>,
    pub k: Array2<f32>,
    pub v: Array2<f32>,
    pub punct: Vec<bool>,
    pub newline: Vec<bool>,
    pub truth: Vec<HeadCapture>,
    pub dense_out: Array2<f32>,
    pub group: usize,
    pub capture_block: usize,
    /// The layer's score rule the capture followed (plain unless built with
    /// [`GroupData::with_rule`]).
    pub rule: ScoreRule,
}

impl GroupData {
    /// Random Q/K/V with attention that is far from uniform (a few heavy keys, a sink at 0),
    /// and every 7th token marked punctuation.
    pub fn random(n: usize, d: usize, group: usize, seed: u64) -> Self {
        let mut rng = Rng::from_state(seed);
        let mut q = Array2::from_shape_fn((n, group * d), |_| rng.normal_f32());
        let mut k = Array2::from_shape_fn((n, d), |_| rng.normal_f32());
        let v = Array2::from_shape_fn((n, d), |_| rng.normal_f32());
        // A sink and a few heavy hitters: keys aligned with a shared query direction.
        let dir: Vec<f32> = (0..d).map(|_| rng.normal_f32()).collect();
        for j in (0..n).filter(|j| *j == 0 || j % 97 == 13) {
            for c in 0..d {
                k[[j, c]] += 1.5 * dir[c];
            }
        }
        for i in 0..n {
            for h in 0..group {
                for c in 0..d {
                    q[[i, h * d + c]] += 0.8 * dir[c];
                }
            }
        }
        let punct = (0..n).map(|j| j % 7 == 3).collect();
        let newline = (0..n).map(|j| j % 29 == 5).collect();
        Self::from_qkv(q, k, v, punct, newline, group, 64)
    }

    /// Captures the exact statistics of given Q (`[n, group * d]`), K and V (`[n, d]`).
    pub fn from_qkv(
        q: Array2<f32>,
        k: Array2<f32>,
        v: Array2<f32>,
        punct: Vec<bool>,
        newline: Vec<bool>,
        group: usize,
        capture_block: usize,
    ) -> Self {
        let d = k.ncols();
        let mut data = Self::uncaptured(q, k, v, (punct, newline), group, capture_block);
        data.recapture(ScoreRule::plain(d));
        data
    }

    /// This data captured again under `rule` (scale, soft-capping, sliding window).
    pub fn with_rule(mut self, rule: ScoreRule) -> Self {
        self.recapture(rule);
        self
    }

    /// Given Q, K and V and flags, not yet captured ([`GroupData::recapture`] does).
    fn uncaptured(
        q: Array2<f32>,
        k: Array2<f32>,
        v: Array2<f32>,
        (punct, newline): (Vec<bool>, Vec<bool>),
        group: usize,
        capture_block: usize,
    ) -> Self {
        let d = k.ncols();
        Self {
            dense_out: Array2::zeros((q.nrows(), group * d)),
            q,
            k,
            v,
            punct,
            newline,
            truth: Vec::new(),
            group,
            capture_block,
            rule: ScoreRule::plain(d),
        }
    }

    /// Captures the exact statistics of the data under `rule`.
    fn recapture(&mut self, rule: ScoreRule) {
        let (q, k, v) = (&self.q, &self.k, &self.v);
        let d = k.ncols();
        let group = self.group;
        let capture_block = self.capture_block;
        let qkv = LayerQkv {
            layer: 0,
            n_heads: group,
            n_kv_heads: 1,
            head_dim: d,
            q: q.view(),
            k: k.view(),
            v: v.view(),
            rule,
        };
        let opts = CaptureOptions {
            block: capture_block,
            ..CaptureOptions::default()
        };
        let (truth, dense_out) = capture_layer(&qkv, &opts);
        self.truth = truth;
        self.dense_out = dense_out;
        self.rule = rule;
    }

    /// Head dimension.
    pub fn head_dim(&self) -> usize {
        self.k.ncols()
    }

    /// `[n, d]` queries of q-head `h` of the group.
    pub fn q_head(&self, h: usize) -> ArrayView2<'_, f32> {
        let d = self.head_dim();
        self.q.slice(ndarray::s![.., h * d..(h + 1) * d])
    }

    /// `[n, d]` dense attention output of q-head `h`.
    pub fn dense_out_head(&self, h: usize) -> ArrayView2<'_, f32> {
        let d = self.head_dim();
        self.dense_out.slice(ndarray::s![.., h * d..(h + 1) * d])
    }

    /// The method input borrowing this data.
    pub fn input(&self) -> GroupInput<'_> {
        self.input_scored(crate::selection::Scored::all(self.k.nrows()))
    }

    /// The method input borrowing this data, scoring the `scored` queries.
    pub fn input_scored(&self, scored: crate::selection::Scored) -> GroupInput<'_> {
        GroupInput {
            layer: 0,
            kv_head: 0,
            q: (0..self.group).map(|h| self.q_head(h)).collect(),
            k: self.k.view(),
            v: self.v.view(),
            punct: &self.punct,
            newline: &self.newline,
            truth: self.truth.iter().collect(),
            capture_block: self.capture_block,
            scored: GroupInput::scored_for(scored, &self.rule),
            rule: self.rule,
            cache: Default::default(),
        }
    }
}
