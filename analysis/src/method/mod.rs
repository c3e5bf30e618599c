//! The [`Selector`] trait every method implements, the per-group input it sees, and the
//! description of its budget knob. Methods only select; metrics live in [`crate::metrics`].

use ndarray::ArrayView2;

use attnscope_core::attention::ScoreRule;
use attnscope_core::capture::HeadCapture;

use crate::selection::Selection;

mod device;
mod info;
pub use device::{
    DeviceScoring, GroupQueries, HeadKeys, RepTransform, RepresentativeRule, Representatives,
};
pub use info::{MethodInfo, MethodKind, ParamSpec, Params};

/// What a method sees: one layer, one KV group.
#[derive(Debug)]
pub struct GroupInput<'a> {
    pub layer: usize,
    pub kv_head: usize,
    /// Post-RoPE queries `[n, d]` of each q-head of the group, in head order.
    pub q: Vec<ArrayView2<'a, f32>>,
    /// Post-RoPE keys `[n, d]` of the group's KV head.
    pub k: ArrayView2<'a, f32>,
    /// Values `[n, d]` of the group's KV head.
    pub v: ArrayView2<'a, f32>,
    /// Per-token punctuation flags (METHODS.md rule; newline-only tokens excluded).
    pub punct: &'a [bool],
    /// Per-token flags of newline-only tokens (punctuation when a method's newline option is on).
    pub newline: &'a [bool],
    /// Exact dense statistics of each q-head of the group (used by oracles only).
    pub truth: Vec<&'a HeadCapture>,
    /// Key block size of `truth[h].block_mass`.
    pub capture_block: usize,
    /// The queries the run scores: methods select keys for these (rows before them stay empty)
    /// and the exact attention holds their rows only. Its window is the layer's
    /// ([`GroupInput::scored_for`]): selections seen through it, sparsity counted over it.
    pub scored: crate::selection::Scored,
    /// How the layer turns `q . k` into logits and which keys a query sees (scale, soft-capping,
    /// sliding window): the exact attention, the oracles and the metrics follow it; methods
    /// with a published score of their own keep it ([`GroupInput::scale`]).
    pub rule: ScoreRule,
    /// Exact quantities computed once per group on first use and shared by the oracles and
    /// the runner's metrics (`GroupCache::default()` when building an input).
    pub cache: GroupCache,
}

/// Per-group values computed on first use (see [`GroupInput::true_probs`]).
#[derive(Debug, Default)]
pub struct GroupCache {
    probs: std::sync::OnceLock<Vec<crate::metrics::TrueProbs>>,
    kt: std::sync::OnceLock<ndarray::Array2<f32>>,
    logits: std::sync::OnceLock<Vec<crate::logits::Logits>>,
}

impl GroupInput<'_> {
    /// Tokens.
    pub fn n(&self) -> usize {
        self.k.nrows()
    }

    /// A selection builder for the scored queries with rows of `query_block` queries: the
    /// rows before [`GroupInput::first_row`] are already pushed (empty).
    pub fn selection_builder(&self, query_block: usize) -> crate::selection::SelectionBuilder {
        crate::selection::Selection::builder_scored(self.scored, query_block)
    }

    /// The first row of `query_block` queries holding a scored query (methods build rows from
    /// here on).
    pub fn first_row(&self, query_block: usize) -> usize {
        self.scored.first_row(query_block)
    }

    /// Head dimension.
    pub fn head_dim(&self) -> usize {
        self.k.ncols()
    }

    /// The keys transposed (`[d, n]`), computed on first use: score products take
    /// `kt().slice(s![.., ..hi])` for the same bits as `k.slice(s![..hi, ..]).t()`, faster
    /// ([`attnscope_core::ops::transposed`]).
    pub fn kt(&self) -> ArrayView2<'_, f32> {
        self.cache
            .kt
            .get_or_init(|| attnscope_core::ops::transposed(self.k))
            .view()
    }

    /// Q-heads in the group.
    pub fn group_size(&self) -> usize {
        self.q.len()
    }

    /// The layer's scale of `q . k` (`1 / sqrt(d)` unless the architecture sets another), the
    /// scale of the methods' own scores. No soft-capping: that is [`GroupInput::logit`].
    pub fn scale(&self) -> f32 {
        self.rule.scale
    }

    /// The layer's attention logit of a raw score `q . k` ([`ScoreRule::logit`]: scale, then
    /// soft-capping where the layer caps): what the exact attention and the oracles rank by.
    pub fn logit(&self, dot: f32) -> f32 {
        self.rule.logit(dot)
    }

    /// The scored queries `queries` of a layer with `rule`, seen through its window.
    pub fn scored_for(
        queries: crate::selection::Scored,
        rule: &ScoreRule,
    ) -> crate::selection::Scored {
        queries.with_window(rule.window)
    }

    /// The exact dense attention of every q-head of the group (computed once, then shared): from
    /// the shared raw scores when they exist ([`GroupInput::logits`]), else from its own
    /// products (the same bits either way; the viewer's live re-selection of an oracle needs no
    /// raw scores kept).
    pub fn true_probs(&self) -> &[crate::metrics::TrueProbs] {
        use rayon::prelude::*;
        self.cache.probs.get_or_init(|| {
            (0..self.group_size())
                .into_par_iter()
                .map(|h| match self.cache.logits.get() {
                    Some(l) => crate::metrics::TrueProbs::from_logits(
                        &l[h],
                        &self.rule,
                        &self.truth[h].lse,
                    ),
                    None => crate::metrics::TrueProbs::compute(
                        self.q[h],
                        self.kt(),
                        &self.truth[h].lse,
                        self.scored,
                        &self.rule,
                    ),
                })
                .collect()
        })
    }

    /// Both the raw scores and the exact attention of every q-head, from one pass over the
    /// products ([`crate::metrics::TrueProbs::compute_with_logits`]; the same bits as
    /// [`GroupInput::logits`] then [`GroupInput::true_probs`]): what the simulator builds before
    /// its methods run. Either one already computed is kept, and the other built from it.
    pub fn exact_attention(&self) -> (&[crate::logits::Logits], &[crate::metrics::TrueProbs]) {
        use rayon::prelude::*;
        if self.cache.logits.get().is_none() && self.cache.probs.get().is_none() {
            let kt = self.kt();
            let (logits, probs): (Vec<_>, Vec<_>) = (0..self.group_size())
                .into_par_iter()
                .map(|h| {
                    crate::metrics::TrueProbs::compute_with_logits(
                        self.q[h],
                        kt,
                        &self.truth[h].lse,
                        self.scored,
                        &self.rule,
                    )
                })
                .unzip();
            let _ = self.cache.logits.set(logits);
            let _ = self.cache.probs.set(probs);
        }
        (self.logits(), self.true_probs())
    }

    /// Every q-head's raw causal scores `q . k` (unscaled, uncapped), computed once on first use and shared by the exact
    /// attention and the methods that score every pair ([`crate::logits`]).
    pub fn logits(&self) -> &[crate::logits::Logits] {
        use rayon::prelude::*;
        self.cache.logits.get_or_init(|| {
            let kt = self.kt();
            (0..self.group_size())
                .into_par_iter()
                .map(|h| crate::logits::Logits::compute(self.q[h], kt, self.scored))
                .collect()
        })
    }
}

/// One method as configured for a run.
#[derive(Debug)]
pub struct MethodRun {
    /// The name in result rows: the method's name, or `name[param=value]` for sweep members.
    pub label: String,
    pub info: &'static MethodInfo,
    pub overrides: Vec<(String, f64)>,
    pub selector: Box<dyn Selector>,
}

/// How a method's one budget knob behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Knob {
    /// Parameter name, e.g. `top_k`, `window`, `p`, `tau`.
    pub name: &'static str,
    /// Smallest and largest meaningful values (the largest for `n` tokens, see [`Knob::max_for`]).
    pub min: f64,
    pub max: f64,
    /// Integer-valued (counts of tokens or blocks).
    pub integer: bool,
    /// True when a larger value keeps more keys.
    pub denser_when_larger: bool,
    /// For count knobs whose range grows with the input: tokens per counted unit (1 for tokens,
    /// the block size for blocks), so the largest value for `n` tokens is `ceil(n / unit)`;
    /// 0 for knobs with a fixed range (`max`).
    pub tokens_per_unit: usize,
}

impl Knob {
    /// A count of tokens or blocks (`tokens_per_unit` tokens each) from `min` on: integer, more
    /// keys as it grows, its range growing with the input.
    pub fn count(name: &'static str, min: f64, tokens_per_unit: usize) -> Self {
        Self {
            name,
            min,
            max: 1e9,
            integer: true,
            denser_when_larger: true,
            tokens_per_unit,
        }
    }

    /// The knob's upper bound for an `n`-token input: counts scale with the input.
    pub fn max_for(&self, n: usize) -> f64 {
        if self.tokens_per_unit > 0 {
            (n.div_ceil(self.tokens_per_unit)) as f64
        } else {
            self.max
        }
    }
}

/// Scores computed once per group, from which selections at any knob value are cheap.
pub trait Prepared: Send + Sync {
    /// One selection per q-head of the group at knob value `x`.
    fn select(&self, x: f64) -> Vec<Selection>;

    /// `(kept causal pairs of the scored queries summed over the selections, number of
    /// selections)` of `select(x)`, without building the selections, for methods that can count
    /// them cheaply. Budget
    /// calibration bisects on it and builds selections only at the chosen value; `None` (the
    /// default) makes it call `select` at every step. Must agree exactly with `select(x)`.
    fn kept_pairs_at(&self, _x: f64) -> Option<(u64, usize)> {
        None
    }

    /// `(estimated kept causal pairs, number of selections)` at `x`: a cheap estimate of
    /// [`Prepared::kept_pairs_at`] (monotone in `x` like it) from which calibration guesses where
    /// the target lies before it counts exactly. Only the number of exact counts depends on it;
    /// `None` (the default) makes calibration bisect.
    fn approx_kept_pairs_at(&self, _x: f64) -> Option<(f64, usize)> {
        None
    }
}

/// A sparse-attention selection method.
pub trait Selector: Send + Sync + std::fmt::Debug {
    /// The method's budget knob.
    fn knob(&self) -> Knob;

    /// The knob value that keeps `tokens` keys per query (forced keys included), if the method
    /// has a count knob; `None` makes the runner match the sparsity of a `tokens` budget instead.
    fn knob_for_tokens(&self, _tokens: usize) -> Option<f64> {
        None
    }

    /// Scores the group once.
    fn prepare<'a>(&'a self, g: &'a GroupInput<'a>) -> Box<dyn Prepared + 'a>;

    /// True for methods that fit settings on calibration text before the run (ours only).
    fn needs_calibration(&self) -> bool {
        false
    }

    /// Sees one (layer, KV group) of the calibration text at the run's first budget.
    fn calibrate(&self, _g: &GroupInput<'_>, _budget: Budget) {}

    /// Settings fitted by [`Selector::calibrate`]: `(layer, parameter, value)`.
    fn fitted(&self) -> Vec<(usize, String, f64)> {
        Vec::new()
    }

    /// How the method scores on a device over `n` tokens, when it can ([`DeviceScoring`]);
    /// `None` (the default) keeps it on the host. Settings that only the host implements (a
    /// dense fallback, a variant) answer `None` for the inputs they concern.
    fn device_scoring(&self, _n: usize) -> Option<DeviceScoring> {
        None
    }

    /// The key-block representatives of one KV head, for a
    /// [`DeviceScoring::Representatives`] rule (the same ones the host path scores).
    fn representatives(&self, _keys: &HeadKeys<'_>) -> Option<Representatives> {
        None
    }

    /// Per q-head weights `[group q-heads, head dim]` that multiply the queries of a
    /// [`DeviceScoring::Representatives`] rule before they score (FASA's dominant dimensions:
    /// 1 kept, 0 dropped); `None` (the default) scores the queries as they are.
    fn query_weights(&self, _g: &GroupQueries<'_>) -> Option<ndarray::Array2<f32>> {
        None
    }

    /// Host bytes of the per-pair buffers the method keeps for a KV group of `group_size`
    /// q-heads scoring the `scored` queries, beyond the runner's own exact attention (the memory plan reads
    /// it); 0 (the default) for methods whose buffers are O(n d).
    fn pair_bytes(&self, _scored: crate::selection::Scored, _group_size: usize) -> u64 {
        0
    }

    /// The source of a rule defined outside the library (a Python function registered at run
    /// time), recorded in the bundle's manifest; `None` (the default) for built-in methods.
    fn source(&self) -> Option<MethodSource> {
        None
    }

    /// Why a rule defined outside the library failed while it ran (naming the layer and head),
    /// if it did. Such a rule cannot stop [`Selector::prepare`] with an error; the simulation
    /// checks this after its forward pass and fails the run instead of writing its numbers.
    /// `None` (the default) for built-in methods.
    fn failure(&self) -> Option<String> {
        None
    }
}

/// The source code of a rule defined outside the library ([`Selector::source`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct MethodSource {
    /// The language, e.g. `python`.
    pub language: String,
    /// Where it was defined (module and function, file and line).
    pub origin: String,
    /// The code itself.
    pub code: String,
}

/// Bytes of one head's packed causal pairs of the scored queries (`n (n + 1) / 2` floats when
/// every query is scored).
pub fn packed_pair_bytes(scored: crate::selection::Scored) -> u64 {
    scored.causal_pairs() * 4
}

/// How much attention each method may keep.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Budget {
    /// Keys per query, forced keys included.
    Tokens(usize),
    /// Target fraction of causal pairs skipped.
    Sparsity(f64),
    /// The sparsity that exact top-p over the true attention reaches at this `p`.
    TopP(f64),
}

impl Budget {
    /// The label of result rows and reports: `sparsity=0.9`, `tokens=896` or `top_p=0.9`.
    pub fn label(&self) -> String {
        match self {
            Budget::Tokens(k) => format!("tokens={k}"),
            Budget::Sparsity(s) => format!("sparsity={s}"),
            Budget::TopP(p) => format!("top_p={p}"),
        }
    }
}
