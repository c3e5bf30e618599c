//! Live re-selection: re-runs one registered method on a bundle's captured post-RoPE Q/K/V with
//! new parameters or a new budget, on a background thread, exactly as `attnscope simulate` does
//! (the same capture, [`GroupInput`], budget calibration and metrics), so the UI never waits.
//!
//! [`LiveEngine`] owns the worker. The UI submits [`LiveRequest`]s; while one is computing, newer
//! requests replace each other and only the latest runs next. The worker keeps the last layer's
//! Q/K/V and exact capture, so changing a parameter does not reread or recapture.

use std::path::PathBuf;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::Instant;

use attnscope_analysis::budget::{resolve, sparsity_of, Budget};
use attnscope_analysis::bundle::qkv::{read_qkv, SavedLayer};
use attnscope_analysis::bundle::SelectionRow;
use attnscope_analysis::method::GroupInput;
use attnscope_analysis::metrics::recall_only;
use attnscope_analysis::registry;
use attnscope_core::attention::LayerQkv;
use attnscope_core::capture::{capture_layer, CaptureOptions, HeadCapture};
use ndarray::Array2;

/// The budget of a live re-selection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LiveBudget {
    Sparsity(f64),
    Tokens(usize),
}

impl LiveBudget {
    fn budget(self) -> Budget {
        match self {
            LiveBudget::Sparsity(s) => Budget::Sparsity(s),
            LiveBudget::Tokens(t) => Budget::Tokens(t),
        }
    }

    /// e.g. `sparsity=0.9`.
    pub fn label(self) -> String {
        match self {
            LiveBudget::Sparsity(s) => format!("sparsity={s:.3}"),
            LiveBudget::Tokens(t) => format!("tokens={t}"),
        }
    }
}

/// What to recompute.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveRequest {
    pub input: usize,
    pub layer: usize,
    /// Registry name of the method.
    pub method: String,
    pub overrides: Vec<(String, f64)>,
    pub budget: LiveBudget,
}

impl LiveRequest {
    /// e.g. `phsa[lambda=0.3] @ sparsity=0.900`: the parameters that differ from the method's
    /// defaults.
    pub fn label(&self) -> String {
        let info = registry::find(&self.method).ok();
        let knob = info
            .and_then(|i| i.build_with(&[]).ok())
            .map(|m| m.knob().name);
        let params: Vec<String> = self
            .overrides
            .iter()
            .filter(|(k, v)| {
                Some(k.as_str()) != knob
                    && info
                        .and_then(|i| i.params.iter().find(|p| p.name == k))
                        .is_none_or(|p| p.default != *v)
            })
            .map(|(k, v)| format!("{k}={}", crate::colormap::fmt_value(*v)))
            .collect();
        if params.is_empty() {
            format!("{} @ {}", self.method, self.budget.label())
        } else {
            format!(
                "{}[{}] @ {}",
                self.method,
                params.join(","),
                self.budget.label()
            )
        }
    }
}

/// One q-head of a live result.
#[derive(Debug, Clone)]
pub struct LiveHead {
    pub head: usize,
    pub kv_head: usize,
    pub knob: f64,
    pub sparsity: f64,
    pub recall: f64,
    pub reached: bool,
    /// Mean recall of each query block (of the run's block size).
    pub recall_by_query_block: Vec<f32>,
    /// The selection compacted to the run's blocks (for the head-map overlay).
    pub selection: SelectionRow,
}

/// The outcome of a [`LiveRequest`].
#[derive(Debug, Clone)]
pub struct LiveResult {
    pub request: LiveRequest,
    /// Sequence number of the request (increasing).
    pub seq: u64,
    pub heads: Vec<LiveHead>,
    /// Wall seconds of the computation (capture excluded when cached).
    pub seconds: f64,
    /// Wall seconds of reading Q/K/V and the exact capture (0 when cached).
    pub capture_seconds: f64,
}

impl LiveResult {
    /// Mean recall over the layer's q-heads.
    pub fn mean_recall(&self) -> f64 {
        mean(self.heads.iter().map(|h| h.recall))
    }

    /// Mean achieved sparsity over the layer's q-heads.
    pub fn mean_sparsity(&self) -> f64 {
        mean(self.heads.iter().map(|h| h.sparsity))
    }

    /// The result of one q-head.
    pub fn head(&self, h: usize) -> Option<&LiveHead> {
        self.heads.iter().find(|x| x.head == h)
    }
}

fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let (s, c) = xs.fold((0.0, 0usize), |(s, c), x| (s + x, c + 1));
    if c == 0 {
        f64::NAN
    } else {
        s / c as f64
    }
}

/// Everything the worker needs besides the request.
#[derive(Debug, Clone)]
pub struct LiveSource {
    pub dir: PathBuf,
    /// `qkv-input{I}.safetensors` per input index (None: not captured).
    pub qkv_files: Vec<Option<String>>,
    pub punct: Vec<Vec<bool>>,
    pub newline: Vec<Vec<bool>>,
    /// Capture block of the run.
    pub block: usize,
}

impl LiveSource {
    /// The source of a loaded run.
    pub fn of(run: &crate::data::RunData) -> Self {
        let mut qkv_files = vec![None; run.n_inputs];
        for q in &run.manifest.qkv {
            if q.input < qkv_files.len() {
                qkv_files[q.input] = Some(q.file.clone());
            }
        }
        Self {
            dir: run.dir.clone(),
            qkv_files,
            punct: run
                .tokens
                .iter()
                .map(|t| t.iter().map(|r| r.is_punct).collect())
                .collect(),
            newline: run
                .tokens
                .iter()
                .map(|t| t.iter().map(|r| r.is_newline).collect())
                .collect(),
            block: run.block,
        }
    }
}

/// A captured layer kept by the worker between requests.
struct LayerCache {
    input: usize,
    layer: usize,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    /// Token-major `[n, heads * d]`, as the simulator's hook sees them.
    q: Array2<f32>,
    k: Array2<f32>,
    v: Array2<f32>,
    heads: Vec<HeadCapture>,
}

impl LayerCache {
    fn load(src: &LiveSource, input: usize, layer: usize) -> Result<Self, String> {
        let file = src
            .qkv_files
            .get(input)
            .cloned()
            .flatten()
            .ok_or_else(|| format!("input {input} has no captured Q/K/V"))?;
        let layers = read_qkv(&src.dir.join(&file)).map_err(|e| e.to_string())?;
        let saved = layers
            .into_iter()
            .find(|l| l.layer == layer)
            .ok_or_else(|| format!("{file} holds no layer {layer}"))?;
        Self::from_saved(saved, input, src.block)
    }

    fn from_saved(s: SavedLayer, input: usize, block: usize) -> Result<Self, String> {
        let (n, d) = (s.n, s.head_dim);
        if s.n_kv_heads == 0 || !s.n_heads.is_multiple_of(s.n_kv_heads) || d == 0 {
            return Err(format!(
                "layer {}: {} q-heads over {} KV heads of dim {d}",
                s.layer, s.n_heads, s.n_kv_heads
            ));
        }
        if s.q.len() != s.n_heads * n * d
            || s.k.len() != s.n_kv_heads * n * d
            || s.v.len() != s.n_kv_heads * n * d
        {
            return Err(format!(
                "layer {}: tensor sizes do not match their shapes",
                s.layer
            ));
        }
        let token_major = |x: &[f32], heads: usize| {
            Array2::from_shape_fn((n, heads * d), |(i, c)| x[(c / d) * n * d + i * d + c % d])
        };
        let q = token_major(&s.q, s.n_heads);
        let k = token_major(&s.k, s.n_kv_heads);
        let v = token_major(&s.v, s.n_kv_heads);
        let opts = CaptureOptions {
            block,
            ..CaptureOptions::default()
        };
        let qkv = LayerQkv {
            layer: s.layer,
            n_heads: s.n_heads,
            n_kv_heads: s.n_kv_heads,
            head_dim: d,
            q: q.view(),
            k: k.view(),
            v: v.view(),
        };
        let (heads, _) = capture_layer(&qkv, &opts);
        Ok(Self {
            input,
            layer: s.layer,
            n_heads: s.n_heads,
            n_kv_heads: s.n_kv_heads,
            head_dim: d,
            q,
            k,
            v,
            heads,
        })
    }

    fn qkv(&self) -> LayerQkv<'_> {
        LayerQkv {
            layer: self.layer,
            n_heads: self.n_heads,
            n_kv_heads: self.n_kv_heads,
            head_dim: self.head_dim,
            q: self.q.view(),
            k: self.k.view(),
            v: self.v.view(),
        }
    }
}

/// Runs `req` on a cached (or freshly captured) layer.
fn compute(
    src: &LiveSource,
    cache: &mut Option<LayerCache>,
    req: &LiveRequest,
    seq: u64,
) -> Result<LiveResult, String> {
    let t0 = Instant::now();
    let info = registry::find(&req.method).map_err(|e| e.to_string())?;
    let method = info.build_with(&req.overrides).map_err(|e| e.to_string())?;
    if cache
        .as_ref()
        .is_none_or(|c| c.input != req.input || c.layer != req.layer)
    {
        *cache = None;
        *cache = Some(LayerCache::load(src, req.input, req.layer)?);
    }
    let capture_seconds = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let c = cache.as_ref().ok_or("no layer")?;
    let qkv = c.qkv();
    let n = qkv.len();
    let empty = Vec::new();
    let punct = src.punct.get(req.input).unwrap_or(&empty);
    let newline = src.newline.get(req.input).unwrap_or(&empty);
    if punct.len() != n || newline.len() != n {
        return Err(format!(
            "the bundle has {} tokens for input {} but Q/K/V has {n}",
            punct.len(),
            req.input
        ));
    }
    let gs = c.n_heads / c.n_kv_heads;
    let mut heads = Vec::with_capacity(c.n_heads);
    for g in 0..c.n_kv_heads {
        let input = GroupInput {
            layer: c.layer,
            kv_head: g,
            q: (g * gs..(g + 1) * gs).map(|h| qkv.q_head(h)).collect(),
            k: qkv.k_head(g),
            v: qkv.v_head(g),
            punct,
            newline,
            truth: c.heads[g * gs..(g + 1) * gs].iter().collect(),
            capture_block: src.block,
            cache: Default::default(),
        };
        let prep = method.prepare(&input);
        let cal = resolve(method.as_ref(), prep.as_ref(), req.budget.budget(), n, None);
        for (hi, sel) in cal.selections.iter().enumerate() {
            let h = g * gs + hi;
            let r = recall_only(input.q[hi], input.k, &c.heads[h].lse, sel);
            let qb = src.block.max(1);
            heads.push(LiveHead {
                head: h,
                kv_head: g,
                knob: cal.knob,
                sparsity: sparsity_of(std::slice::from_ref(sel), n),
                recall: mean(r.iter().map(|&x| f64::from(x))),
                reached: cal.reached,
                recall_by_query_block: r
                    .chunks(qb)
                    .map(|ch| ch.iter().sum::<f32>() / ch.len() as f32)
                    .collect(),
                selection: SelectionRow::compact(sel, qb, (c.layer, h, g), &req.method, 0),
            });
        }
    }
    Ok(LiveResult {
        request: req.clone(),
        seq,
        heads,
        seconds: t1.elapsed().as_secs_f64(),
        capture_seconds,
    })
}

/// Runs one request synchronously (tests and benchmarks).
pub fn compute_once(src: &LiveSource, req: &LiveRequest) -> Result<LiveResult, String> {
    compute(src, &mut None, req, 0)
}

type Job = (u64, LiveRequest);
type Reply = (u64, Result<LiveResult, String>);

/// The background worker and the UI's view of it.
pub struct LiveEngine {
    jobs: Sender<Job>,
    replies: Receiver<Reply>,
    /// Sequence number of the job being computed.
    running: Option<u64>,
    /// The newest request not yet sent (replaces older ones).
    pending: Option<LiveRequest>,
    next_seq: u64,
    /// The newest finished result.
    pub latest: Option<Arc<LiveResult>>,
    /// The newest error (cleared by a later success).
    pub error: Option<String>,
    started: Option<Instant>,
}

impl std::fmt::Debug for LiveEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveEngine")
            .field("running", &self.running)
            .field("pending", &self.pending)
            .finish_non_exhaustive()
    }
}

impl LiveEngine {
    /// Starts the worker thread; `repaint` is called when a result is ready.
    pub fn start(src: LiveSource, repaint: impl Fn() + Send + 'static) -> Self {
        let (jobs, job_rx) = channel::<Job>();
        let (reply_tx, replies) = channel::<Reply>();
        std::thread::Builder::new()
            .name("attnscope-live".into())
            .spawn(move || {
                let mut cache: Option<LayerCache> = None;
                while let Ok((seq, req)) = job_rx.recv() {
                    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        compute(&src, &mut cache, &req, seq)
                    }))
                    .unwrap_or_else(|_| {
                        cache = None;
                        Err(format!("{} failed (internal error)", req.label()))
                    });
                    if reply_tx.send((seq, out)).is_err() {
                        break;
                    }
                    repaint();
                }
            })
            .ok();
        Self {
            jobs,
            replies,
            running: None,
            pending: None,
            next_seq: 0,
            latest: None,
            error: None,
            started: None,
        }
    }

    /// Asks for `req`; it runs now if the worker is idle, else after the current job (replacing
    /// any request still waiting).
    pub fn submit(&mut self, req: LiveRequest) {
        if self.running.is_some() {
            self.pending = Some(req);
        } else {
            self.send(req);
        }
    }

    fn send(&mut self, req: LiveRequest) {
        self.next_seq += 1;
        if self.jobs.send((self.next_seq, req)).is_ok() {
            self.running = Some(self.next_seq);
            self.started = Some(Instant::now());
        } else {
            self.error = Some("the live worker stopped".into());
        }
    }

    /// Collects finished work; returns true when a new result arrived. Call once per frame.
    pub fn poll(&mut self) -> bool {
        let mut fresh = false;
        while let Ok((seq, out)) = self.replies.try_recv() {
            if Some(seq) == self.running {
                self.running = None;
            }
            match out {
                Ok(r) => {
                    self.latest = Some(Arc::new(r));
                    self.error = None;
                    fresh = true;
                }
                Err(e) => self.error = Some(e),
            }
        }
        if self.running.is_none() {
            if let Some(req) = self.pending.take() {
                self.send(req);
            }
        }
        fresh
    }

    /// True while a request is computing or waiting.
    pub fn busy(&self) -> bool {
        self.running.is_some() || self.pending.is_some()
    }

    /// Seconds the current job has been running.
    pub fn running_for(&self) -> Option<f64> {
        self.running
            .and(self.started)
            .map(|t| t.elapsed().as_secs_f64())
    }

    /// Blocks until the worker is idle (tests), up to `timeout`.
    pub fn wait_idle(&mut self, timeout: std::time::Duration) -> bool {
        let t = Instant::now();
        while self.busy() && t.elapsed() < timeout {
            self.poll();
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        !self.busy()
    }
}
