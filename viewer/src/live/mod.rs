//! Live re-selection: re-runs one registered method on a bundle's captured post-RoPE Q/K/V with
//! new parameters or a new budget, on a background thread, exactly as `attnscope simulate` does
//! (the same capture,
//! [`GroupInput`](attnscope_analysis::method::GroupInput), budget calibration and metrics), so the UI never waits.
//!
//! [`LiveEngine`] owns the worker. The UI submits [`LiveRequest`]s; while one is computing, newer
//! requests replace each other and only the latest runs next. The worker keeps the last layer's
//! Q/K/V and exact per-query log-sum-exp (all of the exact capture that methods and metrics
//! read), so changing a parameter does not reread or recapture.
//!
//! The UI thread never waits on the worker: [`LiveEngine::submit`] only sends on a channel (or
//! parks the request while one computes) and [`LiveEngine::poll`], called once per frame, only
//! `try_recv`s; reading Q/K/V and the capture happen on the worker. Dropping the engine does not
//! join the worker either (it ends after its current request).
//!
//! Modules, each using only those before it: `request` (requests, results, the source), `layer`
//! (the cached layer and its log-sum-exp capture), `compute` (one re-selection), `engine` (the
//! worker).

mod compute;
mod engine;
mod layer;
mod request;

pub use compute::compute_once;
pub use engine::LiveEngine;
pub use request::{LiveBudget, LiveHead, LiveRequest, LiveResult, LiveSource};
