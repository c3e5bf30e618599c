//! Post-RoPE Q/K/V of one layer kept by the simulator (`--save-qkv`), head-major, for live
//! re-selection in the viewer; [`crate::bundle::qkv`] writes and reads them as safetensors.

use attnscope_core::attention::LayerQkv;

/// One captured layer.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SavedLayer {
    pub layer: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub n: usize,
    /// `[n_heads, n, head_dim]`.
    pub q: Vec<f32>,
    /// `[n_kv_heads, n, head_dim]`.
    pub k: Vec<f32>,
    pub v: Vec<f32>,
}

fn head_major(a: ndarray::ArrayView2<'_, f32>, heads: usize, d: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(a.len());
    for h in 0..heads {
        for row in a.rows() {
            out.extend(row.iter().skip(h * d).take(d));
        }
    }
    out
}

impl SavedLayer {
    /// Copies a layer's Q/K/V (token-major in the hook) to head-major order.
    pub fn from_layer(qkv: &LayerQkv<'_>) -> Self {
        let d = qkv.head_dim;
        Self {
            layer: qkv.layer,
            n_heads: qkv.n_heads,
            n_kv_heads: qkv.n_kv_heads,
            head_dim: d,
            n: qkv.len(),
            q: head_major(qkv.q, qkv.n_heads, d),
            k: head_major(qkv.k, qkv.n_kv_heads, d),
            v: head_major(qkv.v, qkv.n_kv_heads, d),
        }
    }

    /// Q, K, V back in the hook's token-major order (`[n, heads * head_dim]`), for a
    /// [`LayerQkv`] view.
    pub fn token_major(
        &self,
    ) -> (
        ndarray::Array2<f32>,
        ndarray::Array2<f32>,
        ndarray::Array2<f32>,
    ) {
        let (n, d) = (self.n, self.head_dim);
        let tm = |x: &[f32], heads: usize| {
            ndarray::Array2::from_shape_fn((n, heads * d), |(i, c)| {
                x[(c / d) * n * d + i * d + c % d]
            })
        };
        (
            tm(&self.q, self.n_heads),
            tm(&self.k, self.n_kv_heads),
            tm(&self.v, self.n_kv_heads),
        )
    }
}
