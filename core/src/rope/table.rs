//! The CPU RoPE tables and their application (rotate-half convention, as in Hugging Face models).

use std::borrow::Cow;

use ndarray::{Array2, ArrayViewMut2, Axis};
use rayon::prelude::*;

use super::{tables, RopeFreqs, RopeScaling};
use crate::error::{CoreError, Result};

/// Rotary position embedding tables (rotate-half convention, as in Hugging Face models).
#[derive(Debug, Clone)]
pub struct Rope {
    head_dim: usize,
    theta: f32,
    scaling: RopeScaling,
    /// `cos[p, j]`, `sin[p, j]` for position `p` and frequency index `j < head_dim / 2`, already
    /// multiplied by the attention factor.
    cos: Array2<f32>,
    sin: Array2<f32>,
}

impl Rope {
    /// Plain RoPE tables for positions `0..max_pos` with base `theta`.
    pub fn new(head_dim: usize, theta: f32, max_pos: usize) -> Self {
        Self::scaled(head_dim, theta, RopeScaling::Default, max_pos)
    }

    /// Tables for positions `0..max_pos` with `scaling` (a `dynamic` scaling is built for a
    /// short pass; [`Rope::for_length`] rebuilds it for longer ones).
    pub fn scaled(head_dim: usize, theta: f32, scaling: RopeScaling, max_pos: usize) -> Self {
        let freqs = scaling.frequencies(head_dim, theta, 0);
        let (cos, sin) = Self::arrays(&freqs, max_pos);
        Self {
            head_dim,
            theta,
            scaling,
            cos,
            sin,
        }
    }

    fn arrays(freqs: &RopeFreqs, positions: usize) -> (Array2<f32>, Array2<f32>) {
        let half = freqs.inv_freq.len();
        let (c, s) = tables(freqs, positions);
        let shape = |v: Vec<f32>| {
            Array2::from_shape_vec((positions, half), v)
                .unwrap_or_else(|_| Array2::zeros((positions, half)))
        };
        (shape(c), shape(s))
    }

    /// The tables a forward pass of `n` tokens uses: these, or (dynamic NTK beyond its original
    /// length) tables recomputed for `n` as transformers does for one forward pass of `n` tokens.
    pub fn for_length(&self, n: usize) -> Cow<'_, Self> {
        if !self.scaling.depends_on_length(n) {
            return Cow::Borrowed(self);
        }
        let freqs = self.scaling.frequencies(self.head_dim, self.theta, n);
        let (cos, sin) = Self::arrays(&freqs, n);
        Cow::Owned(Self {
            head_dim: self.head_dim,
            theta: self.theta,
            scaling: self.scaling.clone(),
            cos,
            sin,
        })
    }

    /// The scaling these tables were built with.
    pub fn scaling(&self) -> &RopeScaling {
        &self.scaling
    }

    /// Rotates `x` (`[n, heads * head_dim]`, row `i` at position `i`) in place. An error when
    /// `x` has more rows than the table has positions or a width that is not whole heads.
    pub fn apply(&self, mut x: ArrayViewMut2<f32>) -> Result<()> {
        let (d, half) = (self.head_dim, self.head_dim / 2);
        let (n, width) = x.dim();
        if n > self.cos.nrows() || d == 0 || !width.is_multiple_of(d) {
            return Err(CoreError::Input(format!(
                "RoPE of a [{n}, {width}] array: the tables hold {} positions of head dim {d}",
                self.cos.nrows()
            )));
        }
        x.axis_iter_mut(Axis(0))
            .into_par_iter()
            .enumerate()
            .for_each(|(p, mut row)| {
                let (c, s) = (self.cos.row(p), self.sin.row(p));
                let rotate = |head: &mut [f32]| {
                    for j in 0..half {
                        let (a, b) = (head[j], head[j + half]);
                        head[j] = a * c[j] - b * s[j];
                        head[j + half] = b * c[j] + a * s[j];
                    }
                };
                match row.as_slice_mut() {
                    Some(row) => row.chunks_mut(d).for_each(rotate),
                    None => {
                        // A strided view (e.g. a column slice): rotate a copy and write it back.
                        let mut tmp = row.to_vec();
                        tmp.chunks_mut(d).for_each(rotate);
                        row.iter_mut().zip(tmp).for_each(|(dst, v)| *dst = v);
                    }
                }
            });
        Ok(())
    }

    /// Longest sequence the tables cover.
    pub fn max_positions(&self) -> usize {
        self.cos.nrows()
    }
}
