//! One live re-selection: the method run on each KV group of the cached layer, its budget
//! calibrated and its recall measured exactly as `attnscope simulate` does.

use std::time::Instant;

use attnscope_analysis::budget::{resolve, sparsity_of};
use attnscope_analysis::method::GroupInput;
use attnscope_analysis::metrics::recall_only;
use attnscope_analysis::registry;
use attnscope_analysis::results::mean;
use attnscope_analysis::results::SelectionRow;

use super::layer::LayerCache;
use super::request::{LiveHead, LiveRequest, LiveResult, LiveSource};

/// Runs `req` on a cached (or freshly captured) layer.
pub(super) fn compute(
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
    let need = method.pair_bytes(attnscope_analysis::selection::Scored::all(n), gs);
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
            scored: attnscope_analysis::selection::Scored::all(c.k_head(g).nrows()),
            // Saved layers are replayed as plain causal attention (bundles do not record a
            // layer's soft-capping or window).
            rule: attnscope_core::attention::ScoreRule::plain(c.saved.head_dim),
            cache: Default::default(),
        };
        let prep = method.prepare(&input);
        let cal = resolve(
            method.as_ref(),
            prep.as_ref(),
            req.budget.budget(),
            input.scored,
            None,
        );
        for (hi, sel) in cal.selections.iter().enumerate() {
            let h = g * gs + hi;
            let r = recall_only(input.q[hi], input.k, (&c.heads[h].lse, &input.rule), sel);
            let qb = src.block.max(1);
            heads.push(LiveHead {
                head: h,
                kv_head: g,
                knob: cal.knob,
                sparsity: sparsity_of(std::slice::from_ref(sel)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::request::LiveBudget;
    use attnscope_analysis::budget::Budget;
    use attnscope_core::attention::LayerQkv;
    use attnscope_core::capture::{capture_layer, CaptureOptions};
    use std::path::PathBuf;

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
            rule: attnscope_core::attention::ScoreRule::plain(d),
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
                    scored: attnscope_analysis::selection::Scored::all(qkv.k_head(g).nrows()),
                    rule: qkv.rule,
                    cache: Default::default(),
                };
                let prep = method.prepare(&input);
                let cal = resolve(
                    method.as_ref(),
                    prep.as_ref(),
                    Budget::Sparsity(0.7),
                    input.scored,
                    None,
                );
                for (hi, sel) in cal.selections.iter().enumerate() {
                    let h = g * gs + hi;
                    let r = recall_only(input.q[hi], input.k, (&full[h].lse, &input.rule), sel);
                    let got = live.head(h).expect("every head");
                    let name = info.name;
                    assert_eq!(got.knob, cal.knob, "{name} H{h} knob");
                    assert_eq!(got.sparsity, sparsity_of(std::slice::from_ref(sel)));
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
