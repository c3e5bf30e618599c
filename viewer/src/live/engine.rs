//! The background worker: requests go out on a channel, results come back on another; the UI
//! thread only sends and `try_recv`s.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::Instant;

use super::compute::compute;
use super::layer::LayerCache;
use super::request::{LiveRequest, LiveResult, LiveSource};

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
