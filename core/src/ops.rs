//! CPU f32 building blocks of the forward pass: linear layers, RMSNorm, RoPE ([`Rope`], from
//! [`crate::rope`]), SiLU gating.
//! Matrix products: [`matmul_t`], matrixmultiply's SGEMM kernels on row chunks spread over
//! rayon's threads.

use ndarray::{Array1, Array2, ArrayView2, ArrayViewMut2, Axis, Zip};
use rayon::prelude::*;

pub use crate::rope::Rope;
use crate::tensor::HostTensor;

/// A linear layer `y = x W^T + b` with `W` stored `[out, in]` as in PyTorch.
#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: Array2<f32>,
    pub bias: Option<Array1<f32>>,
}

impl Linear {
    /// Builds a linear layer from a `[out, in]` weight and an optional `[out]` bias.
    pub fn new(weight: HostTensor, bias: Option<HostTensor>) -> Self {
        let (o, i) = (weight.shape[0], weight.shape[1]);
        Self {
            weight: to_array2(weight, o, i),
            bias: bias.map(|b| Array1::from_vec(b.data)),
        }
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        self.weight.nrows()
    }

    /// Applies the layer to `x` (`[n, in]`), returning `[n, out]`.
    pub fn forward(&self, x: ArrayView2<f32>) -> Array2<f32> {
        let mut y = matmul_t(x, self.weight.view());
        if let Some(b) = &self.bias {
            y += b;
        }
        y
    }
}

/// Rows of `x` per SGEMM call in [`matmul_t`].
const MATMUL_ROWS: usize = 64;

/// `x w^T` (`x [n, k]`, `w [m, k]`), row chunks of `x` in parallel on rayon's pool. Each output
/// entry is the same sequence of operations as one whole `x.dot(&w.t())` (SGEMM blocks over `k`,
/// not over rows), so the values do not depend on the chunking or the thread count. Spreading the
/// rows over rayon's threads, rather than matrixmultiply's own pool (at most 4 threads, shared by
/// every caller), uses every core and composes with the callers' own parallel loops.
pub fn matmul_t(x: ArrayView2<f32>, w: ArrayView2<f32>) -> Array2<f32> {
    let (n, m) = (x.nrows(), w.nrows());
    let mut y = Array2::<f32>::zeros((n, m));
    if n <= MATMUL_ROWS {
        ndarray::linalg::general_mat_mul(1.0, &x, &w.t(), 0.0, &mut y);
        return y;
    }
    y.axis_chunks_iter_mut(Axis(0), MATMUL_ROWS)
        .into_par_iter()
        .zip(x.axis_chunks_iter(Axis(0), MATMUL_ROWS).into_par_iter())
        .for_each(|(mut yc, xc)| {
            ndarray::linalg::general_mat_mul(1.0, &xc, &w.t(), 0.0, &mut yc);
        });
    y
}

/// `k` transposed into its own standard-layout array (`[d, n]` for keys `[n, d]`). Products
/// `q.dot(&kt.slice(s![.., ..m]))` have exactly the bits of `q.dot(&k.slice(s![..m, ..]).t())`
/// (SGEMM packs both into the same panels), but packing contiguous rows is about twice as fast
/// as gathering a transposed view's columns; callers that multiply many query chunks by the same
/// keys transpose once.
pub fn transposed(k: ArrayView2<f32>) -> Array2<f32> {
    k.t().as_standard_layout().into_owned()
}

/// Reshapes a host tensor into an `[rows, cols]` array (the element count was checked at load).
pub fn to_array2(t: HostTensor, rows: usize, cols: usize) -> Array2<f32> {
    Array2::from_shape_vec((rows, cols), t.data).unwrap_or_else(|_| Array2::zeros((rows, cols)))
}

/// RMSNorm over the last axis: `x * w / sqrt(mean(x^2) + eps)`, row by row.
pub fn rms_norm(x: ArrayView2<f32>, weight: &Array1<f32>, eps: f32) -> Array2<f32> {
    let mut out = x.to_owned();
    rms_norm_inplace(out.view_mut(), weight, eps);
    out
}

/// In-place RMSNorm of every row of `x` (rows may be heads: `[n * heads, head_dim]`).
pub fn rms_norm_inplace(mut x: ArrayViewMut2<f32>, weight: &Array1<f32>, eps: f32) {
    x.axis_iter_mut(Axis(0))
        .into_par_iter()
        .for_each(|mut row| {
            let ms = row.iter().map(|v| v * v).sum::<f32>() / row.len() as f32;
            let inv = 1.0 / (ms + eps).sqrt();
            Zip::from(&mut row)
                .and(weight)
                .for_each(|v, &w| *v = *v * inv * w);
        });
}

/// `silu(gate) * up`, element-wise, written into `gate`.
pub fn silu_mul(gate: &mut Array2<f32>, up: &Array2<f32>) {
    Zip::from(gate).and(up).par_for_each(|g, &u| {
        *g = *g / (1.0 + (-*g).exp()) * u;
    });
}

/// `gelu_tanh(gate) * up` (PyTorch's `gelu(approximate="tanh")`), element-wise, into `gate`.
pub fn gelu_tanh_mul(gate: &mut Array2<f32>, up: &Array2<f32>) {
    const C: f32 = 0.797_884_6; // sqrt(2 / pi)
    Zip::from(gate).and(up).par_for_each(|g, &u| {
        let x = *g;
        *g = 0.5 * x * (1.0 + (C * (x + 0.044_715 * x * x * x)).tanh()) * u;
    });
}

/// Numerically stable log-sum-exp of a slice (`-inf` for an empty slice).
pub fn log_sum_exp(xs: &[f32]) -> f32 {
    let m = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if m == f32::NEG_INFINITY {
        return m;
    }
    m + xs.iter().map(|&x| (x - m).exp()).sum::<f32>().ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rope_position_zero_is_identity_and_preserves_norm() {
        let rope = Rope::new(8, 10_000.0, 4);
        let mut x = Array2::from_shape_fn((4, 16), |(i, j)| (i * 16 + j) as f32 * 0.1 - 3.0);
        let before = x.clone();
        rope.apply(x.view_mut()).expect("fits the table");
        assert_eq!(x.row(0), before.row(0));
        // A strided view rotates the same as a contiguous one.
        let mut wide = Array2::zeros((4, 32));
        wide.slice_mut(ndarray::s![.., ..16]).assign(&before);
        rope.apply(wide.slice_mut(ndarray::s![.., ..16]))
            .expect("strided");
        assert_eq!(wide.slice(ndarray::s![.., ..16]), x);
        // More rows than positions, or a width of partial heads: errors, not panics.
        let mut long = Array2::zeros((5, 16));
        assert!(rope.apply(long.view_mut()).is_err());
        let mut odd = Array2::zeros((2, 12));
        assert!(rope.apply(odd.view_mut()).is_err());
        for i in 0..4 {
            for h in 0..2 {
                let n0: f32 = before
                    .row(i)
                    .iter()
                    .skip(h * 8)
                    .take(8)
                    .map(|v| v * v)
                    .sum();
                let n1: f32 = x.row(i).iter().skip(h * 8).take(8).map(|v| v * v).sum();
                assert!((n0 - n1).abs() < 1e-4 * n0.max(1.0));
            }
        }
    }

    #[test]
    fn log_sum_exp_matches_direct_formula() {
        let xs = [0.5f32, -1.0, 2.0];
        let direct = xs.iter().map(|x| x.exp()).sum::<f32>().ln();
        assert!((log_sum_exp(&xs) - direct).abs() < 1e-6);
        assert_eq!(log_sum_exp(&[]), f32::NEG_INFINITY);
    }
}
