//! Shared code of the GPU tests (core/tests/gpu_*.rs): the device or a printed skip notice,
//! fresh random inputs (seed printed; ATTNSCOPE_TEST_SEED repeats a run), error measures.
#![allow(dead_code)]

use std::sync::Arc;

use attnscope_kernels::cuda::{DBuf, GpuDevice, GpuFloat};

/// The GPU, or `None` after printing why the test is skipped (no CUDA driver or device here).
pub fn device(test: &str) -> Option<Arc<GpuDevice>> {
    match GpuDevice::open(0) {
        Ok(d) => {
            println!("{test}: on {} ({})", d.label(), d.arch());
            Some(d)
        }
        Err(e) => {
            println!("SKIPPED {test}: no usable GPU here ({e})");
            eprintln!("SKIPPED {test}: no usable GPU here");
            None
        }
    }
}

/// A seed from ATTNSCOPE_TEST_SEED or the clock (printed, so a failure can be repeated).
pub fn seed(test: &str) -> u64 {
    let s = std::env::var("ATTNSCOPE_TEST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(7)
        });
    println!("{test}: seed {s} (ATTNSCOPE_TEST_SEED={s} repeats it)");
    s
}

/// The project's generator ([`attnscope_core::rng::Rng`]; seed tests with `Rng::from_state`).
pub use attnscope_core::rng::Rng;

/// Vectors of uniform floats from the project's generator.
pub trait UniformVec {
    /// `n` floats uniform in `[-scale, scale)` ([`Rng::signed_f32`]).
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32>;
}

impl UniformVec for Rng {
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.signed_f32(scale)).collect()
    }
}

/// `||a - b|| / ||b||`; panics on a non-finite value of `a` (an unwritten, poisoned element).
pub fn rel(a: &[f32], b: &[f32], what: &str) -> f64 {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    if let Some(i) = a.iter().position(|x| !x.is_finite()) {
        panic!("{what}: element {i} is {} (unwritten or NaN)", a[i]);
    }
    let (mut num, mut den) = (0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        num += (x as f64 - y as f64).powi(2);
        den += (y as f64).powi(2);
    }
    if den == 0.0 {
        num.sqrt()
    } else {
        (num / den).sqrt()
    }
}

/// Asserts `rel(a, b) <= tol`, printing the value either way.
pub fn check(a: &[f32], b: &[f32], tol: f64, what: &str) {
    let r = rel(a, b, what);
    println!("  {what:<48} rel err {r:.2e} (tol {tol:.0e})");
    assert!(r <= tol, "{what}: relative error {r:.3e} > {tol:.0e}");
}

/// Max |a - b| (non-finite a panics).
pub fn max_abs(a: &[f32], b: &[f32], what: &str) -> f64 {
    let _ = rel(a, b, what);
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).abs())
        .fold(0.0, f64::max)
}

/// Values rounded through bf16.
pub fn round_bf16(v: &[f32]) -> Vec<f32> {
    v.iter()
        .map(|&x| attnscope_kernels::cuda::bf16::from_f32(x).to_f32())
        .collect()
}

/// Uploads as `T`.
pub fn up<T: GpuFloat>(dev: &GpuDevice, v: &[f32]) -> DBuf<T> {
    let t: Vec<T> = v.iter().map(|&x| T::from_f32(x)).collect();
    dev.upload(&t, "test input").expect("upload")
}

/// Downloads as f32.
pub fn down<T: GpuFloat>(dev: &GpuDevice, b: &DBuf<T>) -> Vec<f32> {
    dev.download(b)
        .expect("download (kernel failed?)")
        .into_iter()
        .map(GpuFloat::to_f32)
        .collect()
}

/// A fresh buffer filled with NaN.
pub fn poisoned<T: GpuFloat>(dev: &GpuDevice, len: usize) -> DBuf<T> {
    let mut b = dev.alloc::<T>(len, "test output").expect("alloc");
    dev.poison(&mut b).expect("poison");
    b
}

/// The `[n, heads * d]` token-major columns of `m` as `[heads, n, d]` (head-major), flat.
pub fn head_major(m: &ndarray::Array2<f32>, heads: usize, d: usize) -> Vec<f32> {
    (0..heads)
        .flat_map(|h| {
            m.slice(ndarray::s![.., h * d..(h + 1) * d])
                .iter()
                .copied()
                .collect::<Vec<_>>()
        })
        .collect()
}
