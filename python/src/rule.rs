//! Selection rules written in Python: a [`Selector`] that calls a Python function once per
//! (layer, KV group) for scores, and leaves the rest to the shared code of the built-in methods:
//! block rules get the shared top-k of blocks with forced sink and local blocks and causal
//! masking (as `infllm-v2` and `phsa`), token rules the per-query top-k (as `oracle-topk`), and
//! both the budget calibration to matched sparsity and every metric.
//!
//! A registered rule is a row of the method registry ([`registry::register`]). Its row's
//! constructor is a plain function pointer, so each rule takes one of [`MAX_RULES`] slots whose
//! constructor looks the rule up.

use std::sync::{Arc, Mutex};

use attnscope_analysis::method::{GroupInput, Knob, Prepared, Selector};
use attnscope_analysis::method::{MethodInfo, MethodKind, MethodSource, ParamSpec, Params};
use attnscope_analysis::methods::common::{
    block_k_for_tokens, rank_blocks_per_query, top_k_pairs, RankedHeads,
};
use attnscope_analysis::methods::oracle_topk::top_k_of_rows;
use attnscope_analysis::registry;
use attnscope_analysis::selection::{Scored, Selection};
use numpy::{IntoPyArray, PyReadonlyArray3};
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// What a rule's scores rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleKind {
    /// `[heads, query rows, key blocks]`: blocks per query (or per query block).
    Block,
    /// `[heads, n, n]`: keys per query.
    Token,
}

/// One registered rule.
#[derive(Debug)]
pub struct RuleDef {
    pub name: String,
    pub kind: RuleKind,
    /// Called as `invoke(q, k, ctx)`; returns a float32 array (the package's wrapper around
    /// the user's function).
    pub invoke: Py<PyAny>,
    pub knob: &'static str,
    pub source: MethodSource,
}

/// Rules one process can register (names registered again reuse their slot).
pub const MAX_RULES: usize = 64;

static SLOTS: Mutex<Vec<Option<Arc<RuleDef>>>> = Mutex::new(Vec::new());

/// The Python exception of the first rule that failed in the current run (the cause of the
/// error the run raises).
pub static LAST_FAILURE: Mutex<Option<PyErr>> = Mutex::new(None);

fn slot(i: usize) -> Option<Arc<RuleDef>> {
    let slots = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
    slots.get(i).cloned().flatten()
}

macro_rules! builders {
    ($($i:literal)*) => {
        const BUILDERS: [fn(&Params) -> Box<dyn Selector>; MAX_RULES] =
            [$(|p: &Params| build_slot($i, p)),*];
    };
}
builders!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31
          32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60
          61 62 63);

fn build_slot(i: usize, p: &Params) -> Box<dyn Selector> {
    let def = slot(i);
    let failure = match def {
        Some(_) => None,
        None => Some(format!("rule slot {i} is empty (not registered)")),
    };
    Box::new(PyRule {
        def,
        block: p.count("block").max(1),
        n_init: p.count("init_blocks"),
        local: p.count("local_blocks"),
        params: p.clone(),
        failure: Mutex::new(failure),
    })
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_string().into_boxed_str())
}

/// The shape of a rule's row in the registry.
#[derive(Debug)]
pub struct RuleSpec {
    pub name: String,
    pub kind: RuleKind,
    pub knob: String,
    pub block: usize,
    pub init_blocks: usize,
    pub local_blocks: usize,
    /// Extra numeric parameters with their defaults (`--param name.x=v` sets them).
    pub params: Vec<(String, f64)>,
    pub summary: String,
    pub source: MethodSource,
}

/// Registers (or replaces) a rule: a slot for its constructor and a registry row.
pub fn register(spec: RuleSpec, invoke: Py<PyAny>) -> attnscope_analysis::Result<()> {
    let count = |name: &str, default: f64, min: f64, help: &'static str| ParamSpec {
        name: leak(name),
        default,
        min,
        max: 1e9,
        integer: true,
        help,
    };
    let mut params = Vec::new();
    if spec.kind == RuleKind::Block {
        params.push(count(
            "block",
            spec.block as f64,
            1.0,
            "selection block size",
        ));
        params.push(count(
            "init_blocks",
            spec.init_blocks as f64,
            0.0,
            "forced blocks at the start",
        ));
        params.push(count(
            "local_blocks",
            spec.local_blocks as f64,
            0.0,
            "forced blocks before the query's own",
        ));
    }
    params.push(count(
        &spec.knob,
        64.0,
        0.0,
        "the budget knob (set by calibration)",
    ));
    for (name, default) in &spec.params {
        params.push(ParamSpec {
            name: leak(name),
            default: *default,
            min: f64::MIN,
            max: f64::MAX,
            integer: false,
            help: "a parameter of the Python rule (ctx.params)",
        });
    }
    let def = Arc::new(RuleDef {
        name: spec.name.clone(),
        kind: spec.kind,
        invoke,
        knob: leak(&spec.knob),
        source: spec.source.clone(),
    });
    let mut slots = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
    let at = slots
        .iter()
        .position(|s| s.as_ref().is_some_and(|d| d.name == spec.name))
        .or_else(|| slots.iter().position(Option::is_none))
        .or_else(|| (slots.len() < MAX_RULES).then_some(slots.len()));
    let Some(at) = at else {
        return Err(attnscope_analysis::AnalysisError::Param {
            method: spec.name,
            msg: format!("at most {MAX_RULES} Python rules can be registered in one process"),
        });
    };
    if at == slots.len() {
        slots.push(None);
    }
    let before = slots[at].replace(def);
    let kind = match spec.kind {
        RuleKind::Block => "block",
        RuleKind::Token => "token",
    };
    let info = MethodInfo {
        name: leak(&spec.name),
        kind: MethodKind::User,
        paper: leak(&format!(
            "user rule (Python {kind} rule {})",
            spec.source.origin
        )),
        rule: leak(&spec.summary),
        params: Box::leak(params.into_boxed_slice()),
        build: BUILDERS[at],
    };
    if let Err(e) = registry::register(info) {
        slots[at] = before;
        return Err(e);
    }
    Ok(())
}

/// A rule as configured for one run.
#[derive(Debug)]
struct PyRule {
    def: Option<Arc<RuleDef>>,
    block: usize,
    n_init: usize,
    local: usize,
    params: Params,
    /// The first failure (naming layer and head); later groups are not scored.
    failure: Mutex<Option<String>>,
}

/// A rule's scores for one group: `[heads, rows, cols]`, row-major.
struct Scores {
    data: Vec<f32>,
    heads: usize,
    rows: usize,
    cols: usize,
}

impl PyRule {
    fn failed(&self) -> bool {
        self.failure.lock().map(|f| f.is_some()).unwrap_or(true)
    }

    fn fail(&self, msg: String, err: Option<PyErr>) {
        let mut f = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        if f.is_none() {
            *f = Some(msg);
            if let Some(err) = err {
                let mut last = LAST_FAILURE.lock().unwrap_or_else(|e| e.into_inner());
                last.get_or_insert(err);
            }
        }
        // The run stops before its next layer; its error names this failure.
        attnscope_analysis::sim::request_stop();
    }

    /// The context the rule sees besides `q` and `k`.
    fn ctx<'py>(&self, py: Python<'py>, g: &GroupInput<'_>) -> PyResult<Bound<'py, PyDict>> {
        let ctx = PyDict::new(py);
        let gs = g.group_size();
        ctx.set_item("layer", g.layer)?;
        ctx.set_item("kv_head", g.kv_head)?;
        ctx.set_item(
            "q_heads",
            (g.kv_head * gs..(g.kv_head + 1) * gs).collect::<Vec<_>>(),
        )?;
        ctx.set_item("n", g.n())?;
        ctx.set_item("head_dim", g.head_dim())?;
        ctx.set_item("scale", g.scale())?;
        ctx.set_item("block_size", self.block)?;
        ctx.set_item("init_blocks", self.n_init)?;
        ctx.set_item("local_blocks", self.local)?;
        ctx.set_item("capture_block", g.capture_block)?;
        ctx.set_item("punct_mask", g.punct.to_vec().into_pyarray(py))?;
        ctx.set_item("newline_mask", g.newline.to_vec().into_pyarray(py))?;
        let params = PyDict::new(py);
        for (k, v) in self.params.iter() {
            params.set_item(k, v)?;
        }
        ctx.set_item("params", params)?;
        Ok(ctx)
    }

    /// Calls the rule on one group and checks what it returned.
    fn scores(&self, def: &RuleDef, g: &GroupInput<'_>) -> Result<Scores, (String, Option<PyErr>)> {
        let (n, gs, d) = (g.n(), g.group_size(), g.head_dim());
        let mut q = ndarray::Array3::<f32>::zeros((gs, n, d));
        for (h, qh) in g.q.iter().enumerate() {
            q.index_axis_mut(ndarray::Axis(0), h).assign(qh);
        }
        let k = g.k.to_owned();
        let where_ = format!(
            "layer {}, KV head {} (q heads {}-{})",
            g.layer,
            g.kv_head,
            g.kv_head * gs,
            (g.kv_head + 1) * gs - 1
        );
        let got = Python::attach(|py| -> Result<Scores, (String, Option<PyErr>)> {
            let call = || -> PyResult<Py<PyAny>> {
                let ctx = self.ctx(py, g)?;
                def.invoke
                    .call1(py, (q.into_pyarray(py), k.into_pyarray(py), ctx))
            };
            let out = call().map_err(|e| {
                let what = e.to_string();
                (format!("{where_}: the rule raised {what}"), Some(e))
            })?;
            let arr: PyReadonlyArray3<f32> = out.extract(py).map_err(|e| {
                (
                    format!(
                        "{where_}: the rule returned something other than a 3-d float array ({e})"
                    ),
                    None,
                )
            })?;
            let v = arr.as_array();
            let (h, r, c) = v.dim();
            Ok(Scores {
                data: v.iter().copied().collect(),
                heads: h,
                rows: r,
                cols: c,
            })
        })?;
        self.check(&got, g, &where_).map_err(|m| (m, None))?;
        Ok(got)
    }

    /// Shape and values: NaN is refused, naming the q head and position.
    fn check(&self, s: &Scores, g: &GroupInput<'_>, where_: &str) -> Result<(), String> {
        let (n, gs) = (g.n(), g.group_size());
        let nb = n.div_ceil(self.block);
        let (shape, ok) = match self.def.as_ref().map(|d| d.kind) {
            Some(RuleKind::Token) => (format!("[{gs} or 1, {n}, {n}]"), s.rows == n && s.cols == n),
            _ => (
                format!("[{gs} or 1, {n} or {nb}, {nb}] (heads, queries or query blocks of {}, key blocks)", self.block),
                (s.rows == n || s.rows == nb) && s.cols == nb,
            ),
        };
        if !(ok && (s.heads == gs || s.heads == 1)) {
            return Err(format!(
                "{where_}: the rule returned scores of shape [{}, {}, {}]; expected {shape}",
                s.heads, s.rows, s.cols
            ));
        }
        if let Some(at) = s.data.iter().position(|x| x.is_nan()) {
            let (h, rest) = (at / (s.rows * s.cols), at % (s.rows * s.cols));
            let head = if s.heads == 1 {
                format!(
                    "the group's shared row (q heads {}-{})",
                    g.kv_head * gs,
                    (g.kv_head + 1) * gs - 1
                )
            } else {
                format!("q head {}", g.kv_head * gs + h)
            };
            return Err(format!(
                "layer {}, {head}: score [{h}, {}, {}] is NaN",
                g.layer,
                rest / s.cols,
                rest % s.cols
            ));
        }
        Ok(())
    }

    /// What a failed rule selects meanwhile (the run fails before its numbers are written).
    fn fallback(&self, g: &GroupInput<'_>) -> Box<dyn Prepared + '_> {
        Box::new(TokenScores {
            n: g.n(),
            scored: g.scored,
            heads: Vec::new(),
            group_size: g.group_size(),
        })
    }
}

impl Selector for PyRule {
    fn knob(&self) -> Knob {
        let name = self.def.as_ref().map_or("top_k", |d| d.knob);
        match self.def.as_ref().map(|d| d.kind) {
            Some(RuleKind::Token) => Knob::count(name, 1.0, 1),
            _ => Knob::count(name, 0.0, self.block),
        }
    }

    fn knob_for_tokens(&self, tokens: usize) -> Option<f64> {
        match self.def.as_ref().map(|d| d.kind) {
            Some(RuleKind::Token) => Some(tokens as f64),
            _ => Some(block_k_for_tokens(
                tokens,
                self.block,
                self.n_init,
                self.local,
            )),
        }
    }

    fn prepare<'a>(&'a self, g: &'a GroupInput<'a>) -> Box<dyn Prepared + 'a> {
        let Some(def) = self.def.as_ref().filter(|_| !self.failed()) else {
            return self.fallback(g);
        };
        let s = match self.scores(def, g) {
            Ok(s) => s,
            Err((msg, err)) => {
                self.fail(msg, err);
                return self.fallback(g);
            }
        };
        let n = g.n();
        let plane = s.rows * s.cols;
        let head = |h: usize| &s.data[h * plane..(h + 1) * plane];
        match def.kind {
            RuleKind::Block => {
                let (block, per_query) = (self.block, s.rows == n);
                let heads = (0..s.heads)
                    .map(|h| {
                        let d = head(h);
                        rank_blocks_per_query(g.scored, block, self.n_init, self.local, |i| {
                            let r = if per_query { i } else { i / block };
                            d[r * s.cols..(r + 1) * s.cols]
                                .iter()
                                .map(|&x| (x != f32::NEG_INFINITY).then_some(x))
                                .collect()
                        })
                    })
                    .collect();
                Box::new(RankedHeads {
                    heads,
                    group_size: g.group_size(),
                })
            }
            RuleKind::Token => Box::new(TokenScores {
                n,
                scored: g.scored,
                heads: (0..s.heads).map(|h| head(h).to_vec()).collect(),
                group_size: g.group_size(),
            }),
        }
    }

    fn pair_bytes(&self, scored: Scored, group_size: usize) -> u64 {
        let n = scored.n;
        match self.def.as_ref().map(|d| d.kind) {
            Some(RuleKind::Token) => (n * n * 4 * group_size) as u64,
            _ => 0,
        }
    }

    fn source(&self) -> Option<MethodSource> {
        self.def.as_ref().map(|d| d.source.clone())
    }

    fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .map(|f| f.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }
}

/// Token scores `[n, n]` per head (or one shared by the group); `select(k)` keeps each query's
/// `k` best causal keys (ties by lower index, as `oracle-topk`). With no heads (a failed rule),
/// every causal key.
struct TokenScores {
    n: usize,
    scored: Scored,
    heads: Vec<Vec<f32>>,
    group_size: usize,
}

impl TokenScores {
    fn take(&self, s: &[f32], k: usize) -> Selection {
        let n = self.n;
        top_k_of_rows(self.scored, k, |i| &s[i * n..i * n + i + 1])
    }
}

impl Prepared for TokenScores {
    fn select(&self, x: f64) -> Vec<Selection> {
        let k = x.max(0.0).round() as usize;
        match self.heads.as_slice() {
            [] => vec![self.take(&[], self.n + 1); self.group_size],
            [one] => vec![self.take(one, k); self.group_size],
            many => many.iter().map(|s| self.take(s, k)).collect(),
        }
    }

    fn kept_pairs_at(&self, x: f64) -> Option<(u64, usize)> {
        let k = x.max(0.0).round() as usize;
        let k = if self.heads.is_empty() { self.n + 1 } else { k };
        Some((
            top_k_pairs(self.n, k) * self.group_size as u64,
            self.group_size,
        ))
    }
}
