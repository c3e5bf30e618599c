//! Non-finite checks of the forward pass: one pass over a layer's output finds the first NaN or
//! infinity and says where it appeared (layer, head, token), so a run stops there instead of
//! carrying NaN into every metric.

use ndarray::ArrayView2;

use crate::error::{CoreError, Result};

/// The first non-finite element of `x` as `(row, column)`, in row-major order.
pub fn first_non_finite(x: ArrayView2<f32>) -> Option<(usize, usize)> {
    let cols = x.ncols().max(1);
    match x.as_slice() {
        Some(s) => s
            .iter()
            .position(|v| !v.is_finite())
            .map(|i| (i / cols, i % cols)),
        None => x
            .indexed_iter()
            .find(|(_, v)| !v.is_finite())
            .map(|(ij, _)| ij),
    }
}

/// Checks an attention output `[n, heads * head_dim]` of layer `layer`.
pub(crate) fn check_attention(layer: usize, x: ArrayView2<f32>, head_dim: usize) -> Result<()> {
    match first_non_finite(x) {
        None => Ok(()),
        Some((t, c)) => Err(CoreError::NonFinite(format!(
            "layer {layer}: non-finite value in the attention output (head {}, token {t})",
            c / head_dim.max(1)
        ))),
    }
}

/// Checks hidden states `[n, hidden]`; `what` says where they are (`"after layer 3"`).
pub(crate) fn check_hidden(what: &str, x: ArrayView2<f32>) -> Result<()> {
    match first_non_finite(x) {
        None => Ok(()),
        Some((t, c)) => Err(CoreError::NonFinite(format!(
            "{what}: non-finite value in the hidden state (token {t}, dimension {c})"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    #[test]
    fn finds_the_first_bad_value_and_names_head_and_token() {
        let mut x = Array2::<f32>::zeros((4, 8));
        assert_eq!(first_non_finite(x.view()), None);
        x[[2, 5]] = f32::NAN;
        x[[3, 0]] = f32::INFINITY;
        assert_eq!(first_non_finite(x.view()), Some((2, 5)));
        assert_eq!(first_non_finite(x.t()), Some((0, 3)));
        let e = check_attention(3, x.view(), 4)
            .expect_err("NaN")
            .to_string();
        assert_eq!(
            e,
            "layer 3: non-finite value in the attention output (head 1, token 2)"
        );
        let e = check_hidden("after layer 0", x.view())
            .expect_err("NaN")
            .to_string();
        assert!(
            e.contains("after layer 0") && e.contains("token 2, dimension 5"),
            "{e}"
        );
    }
}
