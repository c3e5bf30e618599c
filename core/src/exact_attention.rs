//! Exact attention on the host, one query tile at a time: the layer's post-RoPE Q, K, V
//! ([`LayerQkv`]), the tile sweep ([`TILE`], [`prob_tile`], [`head_tiles`], [`assemble_heads`]),
//! and the two attention outputs a layer can take: dense causal ([`dense_attention`]) and
//! restricted to a key selection ([`sparse_attention`] over a [`TokenSelection`]). Nothing here
//! ever materializes an `n x n` map.

use ndarray::{s, Array2, ArrayView2};
use rayon::prelude::*;

use crate::error::{CoreError, Result};

/// Queries per tile in the exact attention sweeps (the tile's score block is `TILE x n`).
pub const TILE: usize = 64;

/// How a layer turns `q . k` into attention logits and which keys a query sees: the logit of
/// query `i` and key `j` is `softcap(scale * q_i . k_j)` with `softcap(x) = c * tanh(x / c)`
/// (Gemma 2; none elsewhere), over the keys `j` in `(i - window, i]` of a sliding-window layer
/// (Mistral, Gemma 2/3 local layers, Phi-3) or `0..=i` otherwise. Keys outside the window are
/// not visible: they get no probability in the dense pass, in the capture and in a sparse
/// selection (a selected key outside the window is not attended).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoreRule {
    /// Multiplies `q . k` (`1 / sqrt(head_dim)`, or `query_pre_attn_scalar^-1/2` for Gemma).
    pub scale: f32,
    /// `c` of the logit soft-capping `c * tanh(x / c)`, applied after the scale.
    pub softcap: Option<f32>,
    /// Keys visible to query `i`: `(i - window, i]` (`window` keys, the query's own included).
    pub window: Option<usize>,
}

impl ScoreRule {
    /// Plain causal attention scaled by `1 / sqrt(head_dim)`.
    pub fn plain(head_dim: usize) -> Self {
        Self {
            scale: 1.0 / (head_dim as f32).sqrt(),
            softcap: None,
            window: None,
        }
    }

    /// The first key query `i` sees.
    pub fn first_visible(&self, i: usize) -> usize {
        match self.window {
            Some(w) => (i + 1).saturating_sub(w),
            None => 0,
        }
    }

    /// True when query `i` sees key `j`.
    pub fn visible(&self, i: usize, j: usize) -> bool {
        j <= i && j >= self.first_visible(i)
    }

    /// The logit of a raw dot product `q . k`.
    pub fn logit(&self, dot: f32) -> f32 {
        let x = dot * self.scale;
        match self.softcap {
            Some(c) => c * (x / c).tanh(),
            None => x,
        }
    }

    /// True when the rule is [`ScoreRule::plain`]'s shape (no cap, no window).
    pub fn is_plain_causal(&self) -> bool {
        self.softcap.is_none() && self.window.is_none()
    }
}

/// One layer's post-RoPE queries, keys and values, token-major: row `i` is position `i`.
#[derive(Debug, Clone, Copy)]
pub struct LayerQkv<'a> {
    pub layer: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// `[n, n_heads * head_dim]`.
    pub q: ArrayView2<'a, f32>,
    /// `[n, n_kv_heads * head_dim]`.
    pub k: ArrayView2<'a, f32>,
    /// `[n, n_kv_heads * head_dim]`.
    pub v: ArrayView2<'a, f32>,
    /// The layer's logit scale, soft-capping and sliding window.
    pub rule: ScoreRule,
}

impl<'a> LayerQkv<'a> {
    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.q.nrows()
    }

    /// True when the layer saw no token.
    pub fn is_empty(&self) -> bool {
        self.q.nrows() == 0
    }

    /// The KV head that q-head `h` reads (GQA).
    pub fn kv_of(&self, h: usize) -> usize {
        h / (self.n_heads / self.n_kv_heads)
    }

    /// `[n, head_dim]` queries of q-head `h`.
    pub fn q_head(&self, h: usize) -> ArrayView2<'a, f32> {
        let d = self.head_dim;
        self.q.slice_move(s![.., h * d..(h + 1) * d])
    }

    /// `[n, head_dim]` keys of KV head `g`.
    pub fn k_head(&self, g: usize) -> ArrayView2<'a, f32> {
        let d = self.head_dim;
        self.k.slice_move(s![.., g * d..(g + 1) * d])
    }

    /// Every KV head's keys transposed (`[head_dim, n]` each, [`crate::ops::transposed`]).
    pub fn keys_transposed(&self) -> Vec<Array2<f32>> {
        (0..self.n_kv_heads)
            .map(|g| crate::ops::transposed(self.k_head(g)))
            .collect()
    }

    /// `[n, head_dim]` values of KV head `g`.
    pub fn v_head(&self, g: usize) -> ArrayView2<'a, f32> {
        let d = self.head_dim;
        self.v.slice_move(s![.., g * d..(g + 1) * d])
    }

    /// The scale of `q . k` (`1 / sqrt(head_dim)` unless the architecture says otherwise).
    pub fn scale(&self) -> f32 {
        self.rule.scale
    }
}

/// Per-(q-head, query) sorted key positions, stored compactly (CSR).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSelection {
    n_heads: usize,
    n_queries: usize,
    offsets: Vec<usize>,
    keys: Vec<u32>,
}

impl TokenSelection {
    /// Builds a selection from a rule `f(head, query) -> keys`; keys are sorted and deduplicated.
    pub fn from_fn(n_heads: usize, n_queries: usize, f: impl Fn(usize, usize) -> Vec<u32>) -> Self {
        let mut offsets = Vec::with_capacity(n_heads * n_queries + 1);
        let mut keys = Vec::new();
        offsets.push(0);
        for h in 0..n_heads {
            for i in 0..n_queries {
                let mut ks = f(h, i);
                ks.sort_unstable();
                ks.dedup();
                keys.extend_from_slice(&ks);
                offsets.push(keys.len());
            }
        }
        Self {
            n_heads,
            n_queries,
            offsets,
            keys,
        }
    }

    /// Sorted key positions kept by query `i` of q-head `h`.
    pub fn keys(&self, h: usize, i: usize) -> &[u32] {
        let r = h * self.n_queries + i;
        &self.keys[self.offsets[r]..self.offsets[r + 1]]
    }

    /// The compressed rows: `offsets` (`n_heads * n_queries + 1`, row `h * n_queries + i`) into
    /// `keys` (each row ascending).
    pub fn csr(&self) -> (&[usize], &[u32]) {
        (&self.offsets, &self.keys)
    }

    /// Total kept (query, key) pairs over all heads.
    pub fn total_kept(&self) -> usize {
        self.keys.len()
    }

    /// Checks shape and causality: every query keeps at least one key and none after itself.
    pub fn validate(&self, n_heads: usize, n_queries: usize) -> Result<()> {
        if self.n_heads != n_heads || self.n_queries != n_queries {
            return Err(CoreError::Input(format!(
                "sparse selection is for {} heads x {} queries, the layer has {n_heads} x {n_queries}",
                self.n_heads, self.n_queries
            )));
        }
        for h in 0..n_heads {
            for i in 0..n_queries {
                let ks = self.keys(h, i);
                match ks.last() {
                    None => {
                        return Err(CoreError::Input(format!(
                            "sparse selection keeps no key for head {h}, query {i}"
                        )))
                    }
                    Some(&last) if last as usize > i => {
                        return Err(CoreError::Input(format!(
                            "sparse selection is not causal: head {h}, query {i} keeps key {last}"
                        )))
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

/// Exact causal softmax probabilities of queries `t0..t0 + q_tile.nrows()` over keys `0..t1`
/// (`kt_prefix` `[d, t1]` holds exactly those keys, transposed: see [`crate::ops::transposed`]).
/// Returns `probs [t, t1]` (zero above the diagonal) and the per-query log-sum-exp of the scaled
/// scores.
pub fn prob_tile(
    q_tile: ArrayView2<f32>,
    kt_prefix: ArrayView2<f32>,
    t0: usize,
    scale: f32,
) -> (Array2<f32>, Vec<f32>) {
    let rule = ScoreRule {
        scale,
        softcap: None,
        window: None,
    };
    prob_tile_rule(q_tile, kt_prefix, t0, &rule)
}

/// As [`prob_tile`] under a layer's [`ScoreRule`]: logits soft-capped where the rule caps them,
/// keys before [`ScoreRule::first_visible`] get probability zero and are left out of the
/// log-sum-exp.
pub fn prob_tile_rule(
    q_tile: ArrayView2<f32>,
    kt_prefix: ArrayView2<f32>,
    t0: usize,
    rule: &ScoreRule,
) -> (Array2<f32>, Vec<f32>) {
    // Keys before the tile's first visible key are never seen: leave them out of the product
    // (a sliding window then costs `TILE x (window + TILE)`, not `TILE x t1`).
    let lo_tile = tile_first_key(rule, t0);
    let mut p = if lo_tile == 0 {
        q_tile.dot(&kt_prefix)
    } else {
        let mut p = Array2::zeros((q_tile.nrows(), kt_prefix.ncols()));
        p.slice_mut(s![.., lo_tile..])
            .assign(&q_tile.dot(&kt_prefix.slice(s![.., lo_tile..])));
        p
    };
    let mut lse = Vec::with_capacity(p.nrows());
    let mut scratch = vec![0f32; p.ncols()];
    for (r, mut row) in p.outer_iter_mut().enumerate() {
        let i = t0 + r;
        // Invariant: `p` was just created (by `dot` or `zeros`): standard row-major layout.
        let row = row.as_slice_mut().expect("fresh arrays are contiguous");
        let lo = rule.first_visible(i);
        let (head, masked) = row.split_at_mut(i + 1);
        masked.fill(0.0);
        let (hidden, vis) = head.split_at_mut(lo);
        hidden.fill(0.0);
        let scale = match rule.softcap {
            Some(c) => {
                vis.iter_mut()
                    .for_each(|x| *x = c * (*x * rule.scale / c).tanh());
                1.0
            }
            None => rule.scale,
        };
        lse.push(softmax_row(vis, scale, &mut scratch[..vis.len()]));
    }
    (p, lse)
}

/// The first key any query of the tile starting at `t0` sees (0 without a window).
pub fn tile_first_key(rule: &ScoreRule, t0: usize) -> usize {
    rule.first_visible(t0)
}

/// `p [t, t1] . v[..t1]` for a tile whose keys before `lo` have probability zero: the product
/// over keys `lo..t1` only (the whole product when `lo` is 0, bit for bit as before).
pub fn tile_output(p: ArrayView2<f32>, v: ArrayView2<f32>, lo: usize) -> Array2<f32> {
    let t1 = p.ncols();
    if lo == 0 {
        p.dot(&v.slice(s![..t1, ..]))
    } else {
        p.slice(s![.., lo..]).dot(&v.slice(s![lo..t1, ..]))
    }
}

crate::simd_fn! {
    /// Scales `x` by `scale`, replaces it with its softmax and returns its log-sum-exp: the
    /// maximum `m`, the platform's `f32::exp(x - m)` ([`crate::exact_exp::expf_into`]), their
    /// sum in eight interleaved partial sums, then `m + ln(sum)`. `tmp` is scratch of `x.len()`.
    fn softmax_row(x: &mut [f32], scale: f32, tmp: &mut [f32]) -> f32 => softmax_row_generic
}

#[inline(always)]
fn softmax_row_generic(x: &mut [f32], scale: f32, tmp: &mut [f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    for c in x.chunks_mut(8) {
        for (l, v) in c.iter_mut().enumerate() {
            *v *= scale;
            lanes[l] = lanes[l].max(*v);
        }
    }
    let m = lanes.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for (t, &v) in tmp.iter_mut().zip(x.iter()) {
        *t = v - m;
    }
    crate::exact_exp::expf_into(tmp, x);
    let mut sums = [0f32; 8];
    for c in x.chunks(8) {
        for (l, &v) in c.iter().enumerate() {
            sums[l] += v;
        }
    }
    let sum =
        ((sums[0] + sums[4]) + (sums[1] + sums[5])) + ((sums[2] + sums[6]) + (sums[3] + sums[7]));
    let inv = 1.0 / sum;
    x.iter_mut().for_each(|v| *v *= inv);
    m + sum.ln()
}

/// The (head, tile start) pairs of an `n`-token layer, for parallel sweeps.
pub fn head_tiles(n_heads: usize, n: usize) -> Vec<(usize, usize)> {
    (0..n_heads)
        .flat_map(|h| (0..n).step_by(TILE).map(move |t0| (h, t0)))
        .collect()
}

/// Writes per-(head, tile) output blocks `[t, head_dim]` into a `[n, n_heads * head_dim]` array.
pub fn assemble_heads(
    n: usize,
    head_dim: usize,
    n_heads: usize,
    blocks: Vec<((usize, usize), Array2<f32>)>,
) -> Array2<f32> {
    let mut out = Array2::zeros((n, n_heads * head_dim));
    for ((h, t0), b) in blocks {
        out.slice_mut(s![t0..t0 + b.nrows(), h * head_dim..(h + 1) * head_dim])
            .assign(&b);
    }
    out
}

/// Exact dense causal attention of a layer: `[n, n_heads * head_dim]`.
pub fn dense_attention(qkv: &LayerQkv<'_>) -> Array2<f32> {
    let n = qkv.len();
    let kts = qkv.keys_transposed();
    let blocks = head_tiles(qkv.n_heads, n)
        .into_par_iter()
        .map(|(h, t0)| {
            let t1 = (t0 + TILE).min(n);
            let g = qkv.kv_of(h);
            let q = qkv.q_head(h);
            let (p, _) = prob_tile_rule(
                q.slice(s![t0..t1, ..]),
                kts[g].slice(s![.., ..t1]),
                t0,
                &qkv.rule,
            );
            let lo = tile_first_key(&qkv.rule, t0);
            ((h, t0), tile_output(p.view(), qkv.v_head(g), lo))
        })
        .collect();
    assemble_heads(n, qkv.head_dim, qkv.n_heads, blocks)
}

/// Attention restricted to a selection: each query's softmax runs over its kept keys only.
/// Selected keys outside the layer's sliding window are not attended (the model cannot see
/// them); a query left with no visible key is an error.
pub fn sparse_attention(qkv: &LayerQkv<'_>, sel: &TokenSelection) -> Result<Array2<f32>> {
    let (n, d) = (qkv.len(), qkv.head_dim);
    sel.validate(qkv.n_heads, n)?;
    let rule = qkv.rule;
    if rule.window.is_some() {
        for h in 0..qkv.n_heads {
            for i in 0..n {
                if sel
                    .keys(h, i)
                    .iter()
                    .all(|&j| (j as usize) < rule.first_visible(i))
                {
                    return Err(CoreError::Input(format!(
                        "sparse selection keeps no key inside the sliding window of {} for \
                         layer {}, head {h}, query {i}",
                        rule.window.unwrap_or(0),
                        qkv.layer
                    )));
                }
            }
        }
    }
    let mut out = Array2::<f32>::zeros((n, qkv.n_heads * d));
    out.outer_iter_mut()
        .into_par_iter()
        .enumerate()
        .for_each(|(i, mut row)| {
            let mut w = Vec::new();
            for h in 0..qkv.n_heads {
                let g = qkv.kv_of(h);
                let (q, k, v) = (qkv.q_head(h), qkv.k_head(g), qkv.v_head(g));
                let all = sel.keys(h, i);
                let lo = all.partition_point(|&j| (j as usize) < rule.first_visible(i));
                let keys = &all[lo..];
                w.clear();
                w.extend(
                    keys.iter()
                        .map(|&j| rule.logit(q.row(i).dot(&k.row(j as usize)))),
                );
                let m = w.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0.0;
                w.iter_mut().for_each(|x| {
                    *x = (*x - m).exp();
                    sum += *x;
                });
                let mut o = row.slice_mut(s![h * d..(h + 1) * d]);
                for (&j, &wj) in keys.iter().zip(&w) {
                    o.scaled_add(wj / sum, &v.row(j as usize));
                }
            }
        });
    Ok(out)
}
