//! `attnscope bench --device cuda --block-methods`: wall time of every device block method
//! (host representatives, calibration, device scoring, top-k, sparse measurement, copies of the
//! per-query metrics) per layer, over one GPU forward pass per length.

use std::time::Instant;

use attnscope_core::attention::{AttentionHook, DeviceLayer, HookAction, LayerQkv};

use super::{run_method, scoring_of, DevicePlan};
use crate::budget::Budget;
use crate::method::{DeviceScoring, MethodRun};
use crate::results::MetricRow;

/// One method's time and means over a layer.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LayerTime {
    pub tokens: usize,
    pub layer: usize,
    pub method: String,
    pub ms: f64,
    pub recall: f64,
    pub out_rel_err: f64,
    pub sparsity: f64,
    pub knob: f64,
}

/// Per length: `(tokens, wall ms of the whole forward with every method, dense attention ms)`.
pub type Total = (usize, f64, f64);

struct Hook<'a> {
    plan: DevicePlan<'a>,
    runs: &'a [MethodRun],
    methods: Vec<DeviceScoring>,
    punct: Vec<bool>,
    newline: Vec<bool>,
    times: Vec<LayerTime>,
    dense_ms: f64,
    err: Option<attnscope_core::CoreError>,
}

impl AttentionHook for Hook<'_> {
    fn on_layer(&mut self, _qkv: &LayerQkv<'_>) -> attnscope_core::Result<HookAction> {
        Ok(HookAction::Dense)
    }

    fn on_layer_device(
        &mut self,
        qkv: &LayerQkv<'_>,
        device: &mut dyn DeviceLayer,
    ) -> attnscope_core::Result<HookAction> {
        let t = Instant::now();
        device.dense()?;
        // The dense pass is asynchronous; the first method's copies wait for it.
        self.dense_ms += t.elapsed().as_secs_f64() * 1e3;
        for (run, scoring) in self.runs.iter().zip(&self.methods) {
            let t = Instant::now();
            let keys = (&self.punct[..], &self.newline[..]);
            let r = run_method(&self.plan, run, scoring, qkv, device, keys, false);
            let ms = t.elapsed().as_secs_f64() * 1e3;
            match r {
                Ok(out) => {
                    let rows: Vec<_> = out.iter().flatten().flat_map(|g| g.rows.iter()).collect();
                    let mean = |f: &dyn Fn(&MetricRow) -> f64| {
                        rows.iter().map(|r| f(r)).sum::<f64>() / rows.len().max(1) as f64
                    };
                    self.times.push(LayerTime {
                        tokens: qkv.len(),
                        layer: qkv.layer,
                        method: run.label.clone(),
                        ms,
                        recall: mean(&|r| r.recall),
                        out_rel_err: mean(&|r| r.out_rel_err),
                        sparsity: mean(&|r| r.sparsity),
                        knob: mean(&|r| r.knob),
                    });
                }
                Err(e) => {
                    self.err.get_or_insert(e);
                }
            }
        }
        Ok(HookAction::Dense)
    }
}

/// A deterministic punctuation mask for random token ids (about one token in 12), so that PHSA's
/// punctuation representative is exercised.
fn synthetic_punct(n: usize) -> Vec<bool> {
    (0..n)
        .map(|i| (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 60 == 0 || i % 23 == 22)
        .collect()
}

/// Times every device block method at `sparsity` on `model` over the first `len` of `ids`, for
/// each length; returns one row per (length, layer, method) and the dense attention ms per
/// length.
#[cfg(feature = "cuda")]
pub fn run(
    model: &attnscope_core::gpu::GpuModel,
    ids: &[u32],
    lens: &[usize],
    sparsity: f64,
    names: &[String],
) -> crate::Result<(Vec<LayerTime>, Vec<Total>)> {
    let n_max = lens.iter().copied().max().unwrap_or(0).min(ids.len());
    let mut methods = Vec::new();
    for info in crate::registry::METHODS {
        let listed = names.iter().any(|x| x == info.name);
        if !names.is_empty() && !listed {
            continue;
        }
        let selector = info.build_with(&[])?;
        // Every method with a device scoring at the longest length, unless named.
        if names.is_empty() && selector.device_scoring(n_max).is_none() {
            continue;
        }
        methods.push(MethodRun {
            label: info.name.to_string(),
            info,
            overrides: Vec::new(),
            selector,
        });
    }
    if let Some(bad) = names
        .iter()
        .find(|x| !methods.iter().any(|m| &m.label == *x))
    {
        crate::registry::find(bad)?;
    }
    let budgets = [Budget::Sparsity(sparsity)];
    let plan = DevicePlan {
        budgets: &budgets,
        query_block: 64,
        capture_block: 64,
        queries: crate::selection::Queries::All,
    };
    let mut times = Vec::new();
    let mut totals = Vec::new();
    for &len in lens {
        let ids = &ids[..len.min(ids.len())];
        let n = ids.len();
        let scorings: Vec<DeviceScoring> = methods
            .iter()
            .map(|m| {
                scoring_of(&plan, m, n).ok_or_else(|| {
                    crate::AnalysisError::Input(format!(
                        "{}: no device version with these settings",
                        m.label
                    ))
                })
            })
            .collect::<crate::Result<_>>()?;
        let mut hook = Hook {
            plan,
            runs: &methods,
            methods: scorings,
            punct: synthetic_punct(n),
            newline: vec![false; n],
            times: Vec::new(),
            dense_ms: 0.0,
            err: None,
        };
        let t = Instant::now();
        model.forward(ids, &mut hook, &mut |_| {})?;
        let wall = t.elapsed().as_secs_f64() * 1e3;
        if let Some(e) = hook.err {
            return Err(e.into());
        }
        totals.push((n, wall, hook.dense_ms));
        times.extend(hook.times);
    }
    Ok((times, totals))
}

/// Runs [`run`] and prints one table per length (per-layer ms of every method, the total over
/// layers, mean recall and sparsity), or JSON lines with `json`.
#[cfg(feature = "cuda")]
pub fn print(
    model: &attnscope_core::gpu::GpuModel,
    ids: &[u32],
    lens: &[usize],
    sparsity: f64,
    names: &[String],
    label: &str,
    json: bool,
) -> anyhow::Result<()> {
    let (times, totals) = run(model, ids, lens, sparsity, names)?;
    for (n, wall, dense) in totals {
        let rows: Vec<&LayerTime> = times.iter().filter(|t| t.tokens == n).collect();
        let mut methods: Vec<&str> = Vec::new();
        for r in &rows {
            if !methods.contains(&r.method.as_str()) {
                methods.push(&r.method);
            }
        }
        let layers = rows.iter().map(|r| r.layer).max().map_or(0, |l| l + 1);
        if json {
            for r in &rows {
                println!("{}", serde_json::to_string(r)?);
            }
            println!(
                "{}",
                serde_json::json!({"tokens": n, "layers": layers, "forward_with_methods_ms": wall,
                    "dense_attention_host_ms": dense, "label": label, "sparsity": sparsity})
            );
            continue;
        }
        println!("{label} | {n} tokens, {layers} layers, target sparsity {sparsity}");
        println!(
            "{:<12} {:>10} {:>10} {:>10} {:>9} {:>9} {:>8} {:>7}",
            "method", "ms/layer", "max", "total ms", "recall", "out err", "sparsity", "knob"
        );
        let mut sum = 0.0;
        for m in &methods {
            let r: Vec<&&LayerTime> = rows.iter().filter(|r| r.method == *m).collect();
            let total: f64 = r.iter().map(|x| x.ms).sum();
            let max = r.iter().map(|x| x.ms).fold(0.0, f64::max);
            let mean = |f: &dyn Fn(&LayerTime) -> f64| {
                r.iter().map(|x| f(x)).sum::<f64>() / r.len().max(1) as f64
            };
            sum += total;
            println!(
                "{m:<12} {:>10.2} {max:>10.2} {total:>10.1} {:>9.4} {:>9.4} {:>8.4} {:>7.1}",
                total / r.len().max(1) as f64,
                mean(&|x| x.recall),
                mean(&|x| x.out_rel_err),
                mean(&|x| x.sparsity),
                mean(&|x| x.knob),
            );
        }
        println!(
            "{:<12} {:>10.2} {:>10} {sum:>10.1}   (whole forward with all methods: {wall:.1} ms)",
            "all",
            sum / layers.max(1) as f64,
            ""
        );
    }
    Ok(())
}
