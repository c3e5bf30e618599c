//! The forward pass shared by every architecture family, in numbered steps. Architectures differ
//! only in which optional parts their layers have (their `LayerSpec`, see [`super::llama`]).

use ndarray::{s, Array1, Array2, ArrayView2, Axis};
use rayon::prelude::*;

use super::finite::{check_attention, check_hidden};
use super::layer::Activation;
use super::{Model, OutputHead};
use crate::attention::{dense_attention, sparse_attention, AttentionHook, HookAction, LayerQkv};
use crate::error::{CoreError, Result};
use crate::ops::{gelu_tanh_mul, rms_norm, rms_norm_inplace, silu_mul};

/// RMSNorm over each `head_dim` slice of `x` (`[n, heads * head_dim]`).
fn head_norm(x: &mut Array2<f32>, weight: &Array1<f32>, head_dim: usize, eps: f32) -> Result<()> {
    let (n, width) = x.dim();
    let mut heads = x
        .view_mut()
        .into_shape_with_order((n * width / head_dim.max(1), head_dim))
        .map_err(|e| CoreError::Input(format!("per-head norm of a [{n}, {width}] array: {e}")))?;
    rms_norm_inplace(heads.view_mut(), weight, eps);
    Ok(())
}

/// Rows of hidden states per chunk of the CPU forward pass's MLP: 1,024 per thread, at least
/// 4,096 (a multiple of [`crate::ops::matmul_t`]'s row chunks).
pub fn mlp_chunk_rows() -> usize {
    (1024 * rayon::current_num_threads()).max(4096)
}

/// The gated MLP `down(act(gate(x)) * up(x))` of `x` (`[n, hidden]`), over row chunks so that
/// its two `[rows, intermediate]` buffers stay small at long inputs (at 32k tokens of
/// Qwen2.5-0.5B they would be 1.3 GB). The chunks are whole multiples of
/// [`crate::ops::matmul_t`]'s own row chunks, so the values are those of one whole pass.
fn mlp(layer: &super::layer::Layer, act: Activation, x: ArrayView2<f32>) -> Array2<f32> {
    gated_mlp(
        [&layer.gate, &layer.up, &layer.down],
        act,
        x,
        mlp_chunk_rows(),
    )
}

/// [`mlp`] with the projections `[gate, up, down]` and `rows` per chunk.
fn gated_mlp(
    [gate_proj, up_proj, down_proj]: [&crate::ops::Linear; 3],
    act: Activation,
    x: ArrayView2<f32>,
    rows: usize,
) -> Array2<f32> {
    let mut out = Array2::zeros((x.nrows(), down_proj.out_features()));
    for (xc, mut oc) in x
        .axis_chunks_iter(Axis(0), rows)
        .zip(out.axis_chunks_iter_mut(Axis(0), rows))
    {
        let mut gate = gate_proj.forward(xc);
        match act {
            Activation::Silu => silu_mul(&mut gate, &up_proj.forward(xc)),
            Activation::GeluTanh => gelu_tanh_mul(&mut gate, &up_proj.forward(xc)),
        }
        oc.assign(&down_proj.forward(gate.view()));
    }
    out
}

impl Model {
    /// Checks token ids against the vocabulary and the context length.
    pub fn check_input(&self, ids: &[u32]) -> Result<()> {
        if ids.is_empty() {
            return Err(CoreError::Input("empty input: no tokens to run".into()));
        }
        if ids.len() > self.config.max_context {
            return Err(CoreError::Input(format!(
                "{} tokens is more than the context of {} ({} tokens); use a shorter input",
                ids.len(),
                self.source.display(),
                self.config.max_context
            )));
        }
        if let Some((i, &id)) = ids
            .iter()
            .enumerate()
            .find(|(_, &id)| id as usize >= self.config.vocab)
        {
            return Err(CoreError::Input(format!(
                "token id {id} at position {i} is outside the vocabulary of {} ids",
                self.config.vocab
            )));
        }
        Ok(())
    }

    /// Runs the model over `ids`; returns the final normed hidden states `[n, hidden]`.
    pub fn forward(&self, ids: &[u32], hook: &mut dyn AttentionHook) -> Result<Array2<f32>> {
        self.forward_with_progress(ids, hook, &mut |_| {})
    }

    /// As [`Model::forward`], calling `progress(layer)` after each layer.
    pub fn forward_with_progress(
        &self,
        ids: &[u32],
        hook: &mut dyn AttentionHook,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Array2<f32>> {
        self.check_input(ids)?;
        if let Some(twin) = &self.on_device {
            let out = twin.forward(ids, hook, progress)?;
            check_hidden(
                &format!("{} forward pass, final norm", twin.device()),
                out.view(),
            )?;
            return Ok(out);
        }
        let cfg = &self.config;
        let spec = self.spec;
        let n = ids.len();
        // RoPE tables for this length (dynamic NTK scaling recomputes them past its original length).
        let rope = self.rope.for_length(n);
        let rope_local = self.rope_local.as_ref().map(|r| r.for_length(n));
        // 1. Token embeddings (times sqrt(hidden) for Gemma, rounded to f32 as transformers does).
        let mut x = Array2::zeros((n, cfg.hidden));
        x.axis_iter_mut(Axis(0))
            .into_par_iter()
            .zip(ids.par_iter())
            .for_each(|(mut row, &id)| row.assign(&self.embed.row(id as usize)));
        if spec.embed_scale {
            x *= (cfg.hidden as f64).sqrt() as f32;
        }
        let norm = |x: ArrayView2<f32>, w: &Option<Array1<f32>>| match w {
            Some(w) => rms_norm(x, w, cfg.rms_eps),
            None => x.to_owned(),
        };
        for (l, layer) in self.layers.iter().enumerate() {
            // 2. Pre-attention RMSNorm (none in OLMo-2).
            let xn = norm(x.view(), &layer.attn_norm);
            // 3. Q, K, V projections (with biases where the architecture has them).
            let mut q = layer.q.forward(xn.view());
            let mut k = layer.k.forward(xn.view());
            let v = layer.v.forward(xn.view());
            // 4. q/k RMSNorm: per head (Qwen3, Gemma 3) or over the whole projection (OLMo-2).
            if let (Some(qn), Some(kn)) = (&layer.q_norm, &layer.k_norm) {
                if spec.qk_norm_whole {
                    rms_norm_inplace(q.view_mut(), qn, cfg.rms_eps);
                    rms_norm_inplace(k.view_mut(), kn, cfg.rms_eps);
                } else {
                    head_norm(&mut q, qn, cfg.head_dim, cfg.rms_eps)?;
                    head_norm(&mut k, kn, cfg.head_dim, cfg.rms_eps)?;
                }
            }
            // 5. Rotary position embedding of q and k (the local layers' own base in Gemma 3).
            let rope_l = match &rope_local {
                Some(r) if cfg.uses_local_rope(l) => r,
                _ => &rope,
            };
            rope_l.apply(q.view_mut())?;
            rope_l.apply(k.view_mut())?;
            // 6. Attention through the hook (scale, soft-capping and window of the layer's
            //    rule): dense, sparse, or the hook's exact output.
            let qkv = LayerQkv {
                layer: l,
                n_heads: cfg.n_heads,
                n_kv_heads: cfg.n_kv_heads,
                head_dim: cfg.head_dim,
                q: q.view(),
                k: k.view(),
                v: v.view(),
                rule: cfg.score_rule(l),
            };
            let attn = match hook.on_layer(&qkv)? {
                HookAction::Dense => dense_attention(&qkv),
                HookAction::Sparse(sel) => sparse_attention(&qkv, &sel)?,
                HookAction::DenseOutput(out) => out,
            };
            let width = cfg.n_heads * cfg.head_dim;
            if attn.dim() != (n, width) {
                return Err(CoreError::Input(format!(
                    "layer {l}: the attention hook returned a {:?} output, expected [{n}, {width}]",
                    attn.dim()
                )));
            }
            check_attention(l, attn.view(), cfg.head_dim)?;
            // 7. Output projection, post-attention RMSNorm (Gemma, OLMo-2), residual.
            let o = layer.o.forward(attn.view());
            x += &norm(o.view(), &layer.post_attn_norm);
            // 8. Pre-MLP RMSNorm, gated MLP (SiLU or GELU-tanh), post-MLP RMSNorm, residual.
            let xn = norm(x.view(), &layer.mlp_norm);
            let down = mlp(layer, spec.act, xn.view());
            x += &norm(down.view(), &layer.post_mlp_norm);
            // One pass over the layer's output: stop where a NaN or infinity first appears.
            check_hidden(&format!("layer {l}"), x.view())?;
            progress(l);
        }
        // 9. Final RMSNorm.
        let out = rms_norm(x.view(), &self.norm, cfg.rms_eps);
        check_hidden("final norm", out.view())?;
        Ok(out)
    }

    /// Logits `[rows, vocab]` of the given hidden states (tied or separate output head;
    /// soft-capped where the config says so, Gemma 2). An error after
    /// [`Model::release_output_head`] released a separate head.
    pub fn logits(&self, hidden: ArrayView2<f32>) -> Result<Array2<f32>> {
        let head = match &self.lm_head {
            OutputHead::Tied => &self.embed,
            OutputHead::Own(w) => w,
            OutputHead::Released => {
                return Err(CoreError::Input(format!(
                    "{}: the output head was released (this model was loaded for attention \
                     only); load it again to compute logits",
                    self.source.display()
                )))
            }
        };
        let mut y = crate::ops::matmul_t(hidden, head.view());
        if let Some(c) = self.config.attention.final_softcap {
            y.par_mapv_inplace(|x| c * (x / c).tanh());
        }
        Ok(y)
    }

    /// Frees a separate output head's weights (`[vocab, hidden]` f32: 545 MB for
    /// Qwen2.5-Coder-0.5B, 2.1 GB for Llama 3 8B) for jobs that never compute logits (the
    /// simulator reads attention only); [`Model::logits`] then refuses with an error. A head
    /// tied to the embeddings stays (the embeddings are the input too). Returns the bytes freed.
    pub fn release_output_head(&mut self) -> u64 {
        if !matches!(self.lm_head, OutputHead::Own(_)) {
            return 0;
        }
        match std::mem::replace(&mut self.lm_head, OutputHead::Released) {
            OutputHead::Own(w) => (w.len() * 4) as u64,
            _ => 0,
        }
    }

    /// Mean next-token negative log-likelihood (nats) of `ids` under the model, and the number
    /// of predicted tokens. Logits are computed in chunks so memory stays `O(chunk x vocab)`.
    pub fn mean_nll(&self, ids: &[u32], hook: &mut dyn AttentionHook) -> Result<(f64, usize)> {
        if ids.len() < 2 {
            return Err(CoreError::Input(
                "perplexity needs at least 2 tokens".to_string(),
            ));
        }
        let hidden = self.forward(ids, hook)?;
        self.nll_of_hidden(hidden.view(), ids)
    }

    /// Mean NLL of next tokens given final hidden states (see [`Model::mean_nll`]). Needs at
    /// least 2 ids, one hidden row per id (or more) and ids inside the vocabulary; a non-finite
    /// logit is an error naming the token and the vocabulary id.
    pub fn nll_of_hidden(&self, hidden: ArrayView2<f32>, ids: &[u32]) -> Result<(f64, usize)> {
        if ids.len() < 2 {
            return Err(CoreError::Input(
                "perplexity needs at least 2 tokens".to_string(),
            ));
        }
        let n = ids.len() - 1;
        if hidden.nrows() < n || hidden.ncols() != self.config.hidden {
            return Err(CoreError::Input(format!(
                "perplexity of {} ids needs [{n}, {}] hidden states, got {:?}",
                ids.len(),
                self.config.hidden,
                hidden.dim()
            )));
        }
        self.check_input(ids)?;
        let nlls = self.token_nlls(hidden.slice(s![..n, ..]), &ids[1..])?;
        Ok((mean_nll_of(&nlls), n))
    }

    /// NLL (nats) of each target under the logits of its hidden state: row `r` of `hidden`
    /// predicts `targets[r]` ([`token_nll`]). Logits are computed 256 rows at a time; a
    /// non-finite logit is an error naming the row and the vocabulary id.
    pub fn token_nlls(&self, hidden: ArrayView2<f32>, targets: &[u32]) -> Result<Vec<f64>> {
        let n = targets.len();
        if hidden.nrows() != n {
            return Err(CoreError::Input(format!(
                "{n} targets need {n} hidden states, got {}",
                hidden.nrows()
            )));
        }
        let mut nlls = Vec::with_capacity(n);
        for r0 in (0..n).step_by(256) {
            let r1 = (r0 + 256).min(n);
            let logits = self.checked_logits(hidden.slice(s![r0..r1, ..]), r0)?;
            for (r, row) in logits.outer_iter().enumerate() {
                let row = row.as_slice().expect("fresh arrays are contiguous");
                nlls.push(token_nll(row, targets[r0 + r] as usize));
            }
        }
        Ok(nlls)
    }

    /// [`Model::logits`] of hidden rows `first..`, an error naming the row (`first + r`) and
    /// the vocabulary id of the first non-finite logit.
    pub fn checked_logits(&self, hidden: ArrayView2<f32>, first: usize) -> Result<Array2<f32>> {
        let logits = self.logits(hidden)?;
        if let Some((r, j)) = super::finite::first_non_finite(logits.view()) {
            return Err(CoreError::NonFinite(format!(
                "output head: non-finite logit (token {}, vocabulary id {j})",
                first + r
            )));
        }
        Ok(logits)
    }
}

/// Negative log-likelihood (nats) of vocabulary id `target` under one row of logits: the row's
/// log-sum-exp ([`crate::ops::log_sum_exp`]) minus the target's logit. The one formula of every
/// perplexity (`attnscope ppl`, and the scored tokens of an evaluation).
pub fn token_nll(row: &[f32], target: usize) -> f64 {
    (crate::ops::log_sum_exp(row) - row[target]) as f64
}

/// Mean of per-token NLLs, summed in order: perplexity is `exp` of it.
pub fn mean_nll_of(nlls: &[f64]) -> f64 {
    nlls.iter().sum::<f64>() / nlls.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::Linear;
    use crate::rng::Rng;

    fn linear(out: usize, inp: usize, rng: &mut Rng) -> Linear {
        Linear {
            weight: Array2::from_shape_fn((out, inp), |_| rng.normal_f32() * 0.3),
            bias: None,
        }
    }

    /// The MLP over row chunks has the bits of one whole pass (chunks of whole 64-row product
    /// chunks, and a last short one), for both activations.
    #[test]
    fn chunked_mlp_is_bit_identical_to_one_pass() {
        let mut rng = Rng::new(3, "mlp");
        let (h, m, n) = (24, 40, 700);
        let projs = [
            linear(m, h, &mut rng),
            linear(m, h, &mut rng),
            linear(h, m, &mut rng),
        ];
        let x = Array2::from_shape_fn((n, h), |_| rng.normal_f32());
        for act in [Activation::Silu, Activation::GeluTanh] {
            let one = gated_mlp([&projs[0], &projs[1], &projs[2]], act, x.view(), n);
            for rows in [64, 128, 320] {
                let chunked = gated_mlp([&projs[0], &projs[1], &projs[2]], act, x.view(), rows);
                assert_eq!(chunked, one, "{act:?}, {rows} rows per chunk");
            }
            // And it is the MLP: row 5 from its definition.
            let xr = x.row(5);
            for o in [0, 7] {
                let want: f32 = (0..m)
                    .map(|j| {
                        let g = projs[0].weight.row(j).dot(&xr);
                        let u = projs[1].weight.row(j).dot(&xr);
                        let a = match act {
                            Activation::Silu => g / (1.0 + (-g).exp()),
                            Activation::GeluTanh => {
                                0.5 * g * (1.0 + (0.797_884_6 * (g + 0.044_715 * g * g * g)).tanh())
                            }
                        };
                        projs[2].weight[[o, j]] * a * u
                    })
                    .sum();
                assert!(
                    (one[[5, o]] - want).abs() < 1e-4,
                    "{act:?} [{o}]: {} vs {want}",
                    one[[5, o]]
                );
            }
        }
    }
}
