//! End-to-end evaluation ([`run_eval`]): what each method's selection does to the model's own
//! output. For every (method, budget) the model runs a sparse prefill ([`SparseHook`]): every
//! layer attends only to the keys the method selected for each query on that layer's own Q/K,
//! its knob calibrated to the budget per layer and KV group exactly as `simulate` does, so errors
//! compound through the layers as in a deployed model. The dense model is always the first row.
//!
//! Per (input, method, budget) an [`EvalRow`] holds the sparsity reached, the mean NLL of the
//! scored tokens and its perplexity with the change from dense, KL(sparse || dense) of the
//! next-token distributions, the share of scored tokens greedy decoding reproduces, and for
//! synthetic tasks whether greedy decoding reproduces the whole reference answer (exact match,
//! by teacher forcing: the answer is appended to the prompt, and greedy decoding reproduces it
//! exactly iff every answer token is the argmax at its position). The selection-fidelity metrics
//! of `simulate` (recall, output error, cosine) are measured on the sparse run's own layers.
//!
//! ```no_run
//! use attnscope_analysis::budget::Budget;
//! use attnscope_analysis::eval::{run_eval, EvalConfig, EvalInput};
//! use attnscope_analysis::input::SimInput;
//! use attnscope_analysis::registry;
//!
//! let model = attnscope_core::Model::load("SmolLM2-135M-Instruct.Q4_1.gguf".as_ref())?;
//! let methods = vec![registry::find("phsa")?.configure(&[])?];
//! let cfg = EvalConfig::new(methods, vec![Budget::Sparsity(0.5)]);
//! let ids = model.tokenizer()?.encode("Alice was beginning to get very tired of sitting by her sister on the bank.")?;
//! let pieces = model.tokenizer()?.pieces(&ids);
//! let input = EvalInput::text(SimInput::from_tokens("alice", ids, pieces), 8)?;
//! let results = run_eval(&model, &cfg, &[input], &mut |_| {})?;
//! for r in &results.rows {
//!     println!("{} {}: ppl {:.3} (dense {:+.3}), KL {:.4}", r.method, r.budget_label, r.ppl, r.delta_ppl, r.kl);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod hook;
mod input;
mod score;
mod summary;

pub use hook::{LayerEval, SparseHook};
pub use input::{reference_answer, EvalInput};
pub use score::{argmax, kl_of_logits, score, Scores, CHUNK};
pub use summary::{accuracy_by_depth, summarize_eval, DepthAccuracy, EvalSummary};

use attnscope_core::attention::NoHook;
use attnscope_core::model::decoder::mean_nll_of;
use attnscope_core::Model;
use ndarray::{s, Array2};

use crate::budget::Budget;
use crate::error::{AnalysisError, Result};
use crate::method::MethodRun;
use crate::results::mean;
pub use crate::results::EvalRow;
use crate::sim::SimConfig;

/// The method name of the dense rows.
pub const DENSE: &str = "dense";

/// What to evaluate: the methods and budgets, and the layer and capture settings they share with
/// `simulate` (`sim`: its `methods`, `budgets`, `layers` (the layers made sparse; the others stay
/// dense), `capture_block` and `calibration` text are read).
#[derive(Debug)]
pub struct EvalConfig {
    pub sim: SimConfig,
    /// Measure recall, output error and cosine of every sparse layer (costs the exact
    /// attention of each layer, as in `simulate`).
    pub fidelity: bool,
}

impl EvalConfig {
    /// `methods` at `budgets` on every layer, with fidelity metrics.
    pub fn new(methods: Vec<MethodRun>, budgets: Vec<Budget>) -> Self {
        Self {
            sim: SimConfig::new(methods, budgets),
            fidelity: true,
        }
    }

    /// Checks the configuration against `model` before anything runs.
    pub fn check(&self, model: &Model) -> Result<()> {
        crate::sim::check_settings(model, &self.sim)?;
        for b in &self.sim.budgets {
            let bad = match *b {
                Budget::Sparsity(x) => !(0.0..1.0).contains(&x),
                Budget::TopP(p) => !(0.0..=1.0).contains(&p),
                Budget::Tokens(k) => k == 0,
            };
            if bad {
                return Err(AnalysisError::Budget(format!(
                    "{} is out of range (sparsity in [0, 1), top-p in [0, 1], tokens >= 1)",
                    b.label()
                )));
            }
        }
        Ok(())
    }
}

/// Everything an evaluation produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EvalResults {
    pub rows: Vec<EvalRow>,
    /// Per-position scores of every row, in row order (for tests and figures).
    pub scores: Vec<Scores>,
}

/// Where an evaluation is: input index, the run (method label or `dense`, and budget label).
#[derive(Debug, Clone, Copy)]
pub struct EvalProgress<'a> {
    pub input: usize,
    pub method: &'a str,
    pub budget: &'a str,
}

/// Evaluates every input under dense attention, then under every (method, budget).
pub fn run_eval(
    model: &Model,
    cfg: &EvalConfig,
    inputs: &[EvalInput],
    progress: &mut dyn FnMut(EvalProgress<'_>),
) -> Result<EvalResults> {
    cfg.check(model)?;
    calibrate(model, cfg)?;
    let mut out = EvalResults::default();
    for (index, input) in inputs.iter().enumerate() {
        let one = eval_input(model, cfg, index, input, progress)?;
        out.rows.extend(one.rows);
        out.scores.extend(one.scores);
    }
    Ok(out)
}

/// The calibration pass of methods that fit settings on calibration text (as `simulate`).
fn calibrate(model: &Model, cfg: &EvalConfig) -> Result<()> {
    let fits = cfg
        .sim
        .methods
        .iter()
        .any(|m| m.selector.needs_calibration());
    if let (true, Some(cal)) = (fits, &cfg.sim.calibration) {
        let mut hook = crate::sim::calibration::CalibrationHook::new(&cfg.sim, cal, None);
        model.forward(&cal.ids, &mut hook)?;
    }
    Ok(())
}

/// One input: the dense row, then one row per (method, budget).
pub fn eval_input(
    model: &Model,
    cfg: &EvalConfig,
    index: usize,
    input: &EvalInput,
    progress: &mut dyn FnMut(EvalProgress<'_>),
) -> Result<EvalResults> {
    check_input(input)?;
    crate::sim::run::check_attention_rule(model, &cfg.sim, Some(input.len()))?;
    let targets = input.targets();
    progress(EvalProgress {
        input: index,
        method: DENSE,
        budget: DENSE,
    });
    let dense = scored_rows(model, &input.input.ids, &mut NoHook, input)?;
    let dense_scores = score::score(model, dense.view(), None, targets)?;
    let dense_ppl = mean_nll_of(&dense_scores.nll).exp();
    let mut out = EvalResults::default();
    out.rows.push(row(
        index,
        input,
        DENSE,
        None,
        &[],
        &dense_scores,
        dense_ppl,
    ));
    out.scores.push(dense_scores);
    for m in &cfg.sim.methods {
        for (bi, &budget) in cfg.sim.budgets.iter().enumerate() {
            let label = budget.label();
            progress(EvalProgress {
                input: index,
                method: &m.label,
                budget: &label,
            });
            let mut hook = SparseHook::new(cfg, m, budget, &input.input);
            let hidden = scored_rows(model, &input.input.ids, &mut hook, input)?;
            let scores = score::score(model, hidden.view(), Some(dense.view()), targets)?;
            let run = Some((bi, label.as_str()));
            out.rows.push(row(
                index,
                input,
                &m.label,
                run,
                &hook.layers,
                &scores,
                dense_ppl,
            ));
            out.scores.push(scores);
        }
    }
    Ok(out)
}

fn check_input(input: &EvalInput) -> Result<()> {
    let n = input.len();
    if input.first_target == 0 || input.first_target >= n {
        return Err(AnalysisError::Input(format!(
            "input '{}': the scored tokens start at {}, outside 1..{n}",
            input.input.name, input.first_target
        )));
    }
    if input.input.punct.len() != n || input.input.newline.len() != n {
        return Err(AnalysisError::Input(format!(
            "input '{}': punctuation flags do not match its {n} tokens",
            input.input.name
        )));
    }
    Ok(())
}

/// The final hidden states of the rows that predict the scored targets, after a forward pass
/// with `hook`.
fn scored_rows(
    model: &Model,
    ids: &[u32],
    hook: &mut dyn attnscope_core::attention::AttentionHook,
    input: &EvalInput,
) -> Result<Array2<f32>> {
    let hidden = model.forward(ids, hook)?;
    let r = input.rows();
    Ok(hidden.slice(s![r.start..r.end, ..]).to_owned())
}

/// The row of one run from its layers and scores.
fn row(
    index: usize,
    input: &EvalInput,
    method: &str,
    run: Option<(usize, &str)>,
    layers: &[LayerEval],
    scores: &Scores,
    dense_ppl: f64,
) -> EvalRow {
    let nll = mean_nll_of(&scores.nll);
    let ppl = nll.exp();
    let hits = scores.hit.iter().filter(|&&h| h).count();
    let opt_mean = |f: fn(&LayerEval) -> Option<f64>| {
        let v: Vec<f64> = layers.iter().filter_map(f).collect();
        (!v.is_empty()).then(|| mean(v.into_iter()))
    };
    EvalRow {
        input: index,
        method: method.to_string(),
        budget: run.map(|r| r.0),
        budget_label: run.map_or_else(|| DENSE.to_string(), |r| r.1.to_string()),
        tokens: input.len(),
        depth: input.depth,
        sparsity: if layers.is_empty() {
            0.0
        } else {
            mean(layers.iter().map(|l| l.sparsity))
        },
        sparsity_by_layer: layers.iter().map(|l| l.sparsity as f32).collect(),
        reached: layers.iter().all(|l| l.reached),
        recall: opt_mean(|l| l.recall),
        out_rel_err: opt_mean(|l| l.out_rel_err),
        cosine: opt_mean(|l| l.cosine),
        scored: scores.nll.len(),
        nll,
        ppl,
        delta_ppl: ppl - dense_ppl,
        kl: mean(scores.kl.iter().copied()),
        token_accuracy: hits as f64 / scores.hit.len().max(1) as f64,
        exact_match: input.answer.as_ref().map(|_| hits == scores.hit.len()),
    }
}
