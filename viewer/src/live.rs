//! Live re-selection: re-runs one registered method on a bundle's captured post-RoPE Q/K/V with
//! new parameters or a new budget, on a background thread, exactly as `attnscope simulate` does
//! (the same capture, [`GroupInput`], budget calibration and metrics), so the UI never waits.
//!
//! [`LiveEngine`] owns the worker. The UI submits [`LiveRequest`]s; while one is computing, newer
//! requests replace each other and only the latest runs next. The worker keeps the last layer's
//! Q/K/V and exact per-query log-sum-exp (all of the exact capture that methods and metrics
//! read, [`capture_lse`]), so changing a parameter does not reread or recapture.
//!
//! The UI thread never waits on the worker: [`LiveEngine::submit`] only sends on a channel (or
//! parks the request while one computes) and [`LiveEngine::poll`], called once per frame, only
//! `try_recv`s; reading Q/K/V and the capture happen on the worker. Dropping the engine does not
//! join the worker either (it ends after its current request).

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::Instant;

use attnscope_analysis::budget::{resolve, sparsity_of, Budget};
use attnscope_analysis::bundle::qkv::{read_qkv, SavedLayer};
use attnscope_analysis::method::GroupInput;
use attnscope_analysis::metrics::recall_only;
use attnscope_analysis::registry;
use attnscope_analysis::results::mean;
use attnscope_analysis::results::SelectionRow;
use attnscope_core::attention::{prob_tile, TILE};
use attnscope_core::capture::HeadCapture;
use ndarray::{Array2, ArrayView2};

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
    /// Of `capture_seconds`, the wall seconds of reading Q/K/V from the bundle.
    pub read_seconds: f64,
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
    /// Q/K/V as read, head-major (`[heads, n, d]`): each head's `[n, d]` is contiguous, as in
    /// the simulator's per-group copies.
    saved: SavedLayer,
    /// The exact statistics of each q-head; only `lse` is filled (see [`capture_lse`]).
    heads: Vec<HeadCapture>,
}

impl LayerCache {
    /// Reads and captures a layer; also returns the seconds spent reading.
    fn load(src: &LiveSource, input: usize, layer: usize) -> Result<(Self, f64), String> {
        let t = Instant::now();
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
        let read = t.elapsed().as_secs_f64();
        Ok((Self::from_saved(saved, input)?, read))
    }

    fn from_saved(s: SavedLayer, input: usize) -> Result<Self, String> {
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
        let heads = capture_lse(&s)
            .into_iter()
            .map(|lse| HeadCapture {
                lse,
                block_mass: Array2::zeros((0, 0)),
                sink_mass: Vec::new(),
                pooled: Array2::zeros((0, 0)),
            })
            .collect();
        Ok(Self {
            input,
            saved: s,
            heads,
        })
    }

    /// The `[n, d]` slab of head `head` of a head-major tensor.
    fn view(x: &[f32], head: usize, n: usize, d: usize) -> ArrayView2<'_, f32> {
        ArrayView2::from_shape((n, d), &x[head * n * d..(head + 1) * n * d])
            .expect("sizes checked at load")
    }

    fn q_head(&self, h: usize) -> ArrayView2<'_, f32> {
        Self::view(&self.saved.q, h, self.saved.n, self.saved.head_dim)
    }

    fn k_head(&self, g: usize) -> ArrayView2<'_, f32> {
        Self::view(&self.saved.k, g, self.saved.n, self.saved.head_dim)
    }

    fn v_head(&self, g: usize) -> ArrayView2<'_, f32> {
        Self::view(&self.saved.v, g, self.saved.n, self.saved.head_dim)
    }
}

/// The exact per-query log-sum-exp of every q-head of a saved layer, bit for bit what
/// `attnscope_core::capture::capture_layer` (the simulator's capture) records: the same
/// [`prob_tile`] over the same 64-query tiles. It is the only part of the exact capture that the
/// methods (oracles) and the metrics read; the rest of `capture_layer`'s work (the dense output
/// `P V`, the `[n, n / block]` block masses, the sink mass and the pooled map, which the bundle's
/// tables already hold) is skipped: half the floating-point work and ~0.9 GB less memory at 32k
/// tokens x 14 heads. Tiles are spread over the machine's cores, longest first.
fn capture_lse(s: &SavedLayer) -> Vec<Vec<f32>> {
    let (n, d) = (s.n, s.head_dim);
    let gs = s.n_heads / s.n_kv_heads.max(1);
    let scale = 1.0 / (d as f32).sqrt();
    // Longest tiles (the last queries see the most keys) first, for balance.
    let mut tiles: Vec<(usize, usize)> = (0..s.n_heads)
        .flat_map(|h| (0..n).step_by(TILE).map(move |t0| (h, t0)))
        .collect();
    tiles.sort_by_key(|&(h, t0)| (std::cmp::Reverse(t0), h));
    let kts: Vec<ndarray::Array2<f32>> = (0..s.n_kv_heads)
        .map(|g| attnscope_core::ops::transposed(LayerCache::view(&s.k, g, n, d)))
        .collect();
    let next = AtomicUsize::new(0);
    let workers = std::thread::available_parallelism()
        .map_or(1, |p| p.get())
        .min(tiles.len().max(1));
    let done: Vec<Vec<(usize, usize, Vec<f32>)>> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                sc.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&(h, t0)) = tiles.get(i) else {
                            break;
                        };
                        let t1 = (t0 + TILE).min(n);
                        let q = LayerCache::view(&s.q, h, n, d);
                        let kt = &kts[h / gs];
                        let (_, lse) = prob_tile(
                            q.slice(ndarray::s![t0..t1, ..]),
                            kt.slice(ndarray::s![.., ..t1]),
                            t0,
                            scale,
                        );
                        out.push((h, t0, lse));
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let mut lse = vec![vec![0f32; n]; s.n_heads];
    for (h, t0, l) in done.into_iter().flatten() {
        lse[h][t0..t0 + l.len()].copy_from_slice(&l);
    }
    lse
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
    let mut read_seconds = 0.0;
    if cache
        .as_ref()
        .is_none_or(|c| c.input != req.input || c.saved.layer != req.layer)
    {
        *cache = None;
        let (c, read) = LayerCache::load(src, req.input, req.layer)?;
        *cache = Some(c);
        read_seconds = read;
    }
    let capture_seconds = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let c = cache.as_ref().ok_or("no layer")?;
    let n = c.saved.n;
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
    let (n_heads, n_kv_heads) = (c.saved.n_heads, c.saved.n_kv_heads);
    let gs = n_heads / n_kv_heads;
    // Methods that rank every causal pair keep per-pair buffers for a whole KV group: refuse
    // rather than let the system kill the viewer (oracle-topk needs 15 GB at 32k x 7 heads).
    let need = method.pair_bytes(n, gs);
    if let Some(have) = attnscope_analysis::sim::available_memory() {
        if need > have {
            let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
            return Err(format!(
                "{} at {n} tokens needs about {:.1} GiB for the {gs} q-heads of a KV group; \
                 {:.1} GiB are available",
                req.method,
                gib(need),
                gib(have)
            ));
        }
    }
    let mut heads = Vec::with_capacity(n_heads);
    for g in 0..n_kv_heads {
        let input = GroupInput {
            layer: c.saved.layer,
            kv_head: g,
            q: (g * gs..(g + 1) * gs).map(|h| c.q_head(h)).collect(),
            k: c.k_head(g),
            v: c.v_head(g),
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
                selection: SelectionRow::compact(sel, qb, (c.saved.layer, h, g), &req.method, 0),
            });
        }
    }
    Ok(LiveResult {
        request: req.clone(),
        seq,
        heads,
        seconds: t1.elapsed().as_secs_f64(),
        capture_seconds,
        read_seconds,
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

#[cfg(test)]
mod tests {
    use super::*;
    use attnscope_core::attention::LayerQkv;
    use attnscope_core::capture::{capture_layer, CaptureOptions};

    /// The live path (log-sum-exp only, head-major views) gives bit for bit what the simulator's
    /// path (the full capture, token-major layer views) gives, for every registered method.
    #[test]
    fn lse_only_capture_matches_the_full_capture_for_every_method() {
        let (n, d, heads, kv, block, layer) = (300, 16, 4, 2, 16, 2);
        let punct: Vec<bool> = (0..n).map(|i| i % 7 == 3).collect();
        let newline: Vec<bool> = (0..n).map(|i| i % 50 == 49).collect();
        let saved = crate::synthetic::synthetic_qkv(layer, heads, kv, d, &punct, 5);
        let (q, k, v) = saved.token_major();
        let qkv = LayerQkv {
            layer,
            n_heads: heads,
            n_kv_heads: kv,
            head_dim: d,
            q: q.view(),
            k: k.view(),
            v: v.view(),
        };
        let opts = CaptureOptions {
            block,
            ..CaptureOptions::default()
        };
        let (full, _) = capture_layer(&qkv, &opts);
        let mut cache = Some(LayerCache::from_saved(saved, 0).expect("valid"));
        for (a, b) in full.iter().zip(&cache.as_ref().expect("cached").heads) {
            assert_eq!(a.lse, b.lse, "log-sum-exp bit for bit");
        }
        let src = LiveSource {
            dir: PathBuf::new(),
            qkv_files: vec![None],
            punct: vec![punct.clone()],
            newline: vec![newline.clone()],
            block,
        };
        let gs = heads / kv;
        for info in registry::METHODS {
            let req = LiveRequest {
                input: 0,
                layer,
                method: info.name.into(),
                overrides: Vec::new(),
                budget: LiveBudget::Sparsity(0.7),
            };
            let live = compute(&src, &mut cache, &req, 1).expect("computes");
            assert!(live.capture_seconds < 0.5, "the layer stays cached");
            let method = info.build_with(&[]).expect("defaults");
            for g in 0..kv {
                let input = GroupInput {
                    layer,
                    kv_head: g,
                    q: (g * gs..(g + 1) * gs).map(|h| qkv.q_head(h)).collect(),
                    k: qkv.k_head(g),
                    v: qkv.v_head(g),
                    punct: &punct,
                    newline: &newline,
                    truth: full[g * gs..(g + 1) * gs].iter().collect(),
                    capture_block: block,
                    cache: Default::default(),
                };
                let prep = method.prepare(&input);
                let cal = resolve(
                    method.as_ref(),
                    prep.as_ref(),
                    Budget::Sparsity(0.7),
                    n,
                    None,
                );
                for (hi, sel) in cal.selections.iter().enumerate() {
                    let h = g * gs + hi;
                    let r = recall_only(input.q[hi], input.k, &full[h].lse, sel);
                    let got = live.head(h).expect("every head");
                    let name = info.name;
                    assert_eq!(got.knob, cal.knob, "{name} H{h} knob");
                    assert_eq!(got.sparsity, sparsity_of(std::slice::from_ref(sel), n));
                    assert_eq!(
                        got.recall,
                        mean(r.iter().map(|&x| f64::from(x))),
                        "{name} H{h}"
                    );
                    let want = SelectionRow::compact(sel, block, (layer, h, g), name, 0);
                    assert_eq!(got.selection.offsets, want.offsets, "{name} H{h}");
                    assert_eq!(got.selection.blocks, want.blocks, "{name} H{h}");
                }
            }
        }
    }
}
