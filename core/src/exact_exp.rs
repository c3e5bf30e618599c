//! Exponentials that match the platform's `f32::exp` / `f64::exp` results bit for bit while
//! running in vectorized loops: a close `f64` approximation decides the rounded result wherever
//! it provably can, and the few values too close to a rounding boundary go to the platform's
//! own function (the capture pass and the simulator's exact attention and metrics use them).

/// The widest vectors the hot loops are compiled for on this CPU (see [`crate::simd_fn`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimdLevel {
    /// AVX-512 (F, VL, BW, DQ) with AVX2, FMA and POPCNT.
    Avx512,
    /// AVX2 with FMA and POPCNT.
    Avx2,
    /// Baseline x86-64 or another architecture.
    None,
}

/// This CPU's [`SimdLevel`], detected once; `ATTNSCOPE_SIMD=avx2` or `none` caps it (results
/// are the same at every level: the loops are written lane by lane, without fused operations
/// that the narrower levels lack).
pub fn simd_level() -> SimdLevel {
    static LEVEL: std::sync::OnceLock<SimdLevel> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| {
        let cap = std::env::var("ATTNSCOPE_SIMD").unwrap_or_default();
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            let avx2 = has!("avx2") && has!("fma") && has!("popcnt");
            let avx512 = avx2
                && has!("avx512f")
                && has!("avx512vl")
                && has!("avx512bw")
                && has!("avx512dq")
                && has!("avx512vpopcntdq");
            match cap.as_str() {
                "none" => SimdLevel::None,
                _ if avx512 && cap != "avx2" => SimdLevel::Avx512,
                _ if avx2 => SimdLevel::Avx2,
                _ => SimdLevel::None,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = cap;
            SimdLevel::None
        }
    })
}

/// Defines `fn name(args) -> ret` that runs `generic(args)` (an `#[inline(always)]` function)
/// compiled for the widest [`SimdLevel`] of this CPU: AVX-512, AVX2 with FMA, or baseline.
#[macro_export]
macro_rules! simd_fn {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? => $generic:path) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx512vpopcntdq,avx2,fma,popcnt")]
                unsafe fn wide($($arg: $ty),*) $(-> $ret)? {
                    $generic($($arg),*)
                }
                #[target_feature(enable = "avx2,fma,popcnt")]
                unsafe fn narrow($($arg: $ty),*) $(-> $ret)? {
                    $generic($($arg),*)
                }
                match $crate::exact_exp::simd_level() {
                    // SAFETY: the CPU has every feature `wide` enables (checked by simd_level).
                    $crate::exact_exp::SimdLevel::Avx512 => return unsafe { wide($($arg),*) },
                    // SAFETY: the CPU has every feature `narrow` enables (checked by simd_level).
                    $crate::exact_exp::SimdLevel::Avx2 => return unsafe { narrow($($arg),*) },
                    $crate::exact_exp::SimdLevel::None => {}
                }
            }
            $generic($($arg),*)
        }
    };
}

const SHIFT: f64 = 6_755_399_441_055_744.0; // 1.5 * 2^52: rounds to an integer in the low bits
#[allow(clippy::excessive_precision)] // fdlibm's split of ln 2, digits as published
const LN2_HI: f64 = 0.693_147_180_369_123_816_49;
#[allow(clippy::excessive_precision)]
const LN2_LO: f64 = 1.908_214_929_270_587_700_02e-10;

/// `2^k * P(r)` with `x = k ln 2 + r`, `P` the Taylor series of `e^r` to `r^DEG` (Horner,
/// fused multiply-adds); 0 below `x = -708`. Vectorizable: no branches, no calls (compile
/// the caller with FMA, see [`crate::simd_fn`], or `mul_add` becomes a library call).
#[inline(always)]
fn exp_poly<const DEG: usize>(x: f64) -> f64 {
    const INV_FACT: [f64; 14] = [
        1.0,
        1.0,
        0.5,
        1.0 / 6.0,
        1.0 / 24.0,
        1.0 / 120.0,
        1.0 / 720.0,
        1.0 / 5_040.0,
        1.0 / 40_320.0,
        1.0 / 362_880.0,
        1.0 / 3_628_800.0,
        1.0 / 39_916_800.0,
        1.0 / 479_001_600.0,
        1.0 / 6_227_020_800.0,
    ];
    let xc = x.clamp(-708.0, 709.0);
    let kd = xc * std::f64::consts::LOG2_E + SHIFT;
    let k = (kd.to_bits() as i64).wrapping_sub(SHIFT.to_bits() as i64);
    let kd = kd - SHIFT;
    let r = (-kd).mul_add(LN2_LO, (-kd).mul_add(LN2_HI, xc));
    let mut p = INV_FACT[DEG];
    for c in (0..DEG).rev() {
        p = p.mul_add(r, INV_FACT[c]);
    }
    let scale = f64::from_bits((k.wrapping_add(1023) as u64) << 52);
    if x >= -708.0 {
        p * scale
    } else {
        0.0
    }
}

/// `e^x` within 1e-15 (relative) for `x >= -708`, 0 below.
#[inline(always)]
pub fn exp_f64(x: f64) -> f64 {
    exp_poly::<13>(x)
}

#[inline(always)]
fn exp_f64_slice_generic(x: &mut [f64]) {
    for v in x.iter_mut() {
        *v = exp_f64(*v);
    }
}

crate::simd_fn! {
    /// [`exp_f64`] of every element, vectorized where the CPU allows.
    pub fn exp_f64_slice(x: &mut [f64]) => exp_f64_slice_generic
}

/// `e^x` within 1e-11 (relative) for `x >= -708`, 0 below.
#[inline(always)]
pub fn exp_f64_coarse(x: f64) -> f64 {
    exp_poly::<9>(x)
}

/// The platform's `f32::exp` of every `x`, in `out`. The platform's `expf` rounds a `f64`
/// value within `2e-10` (relative) of `e^x`; this approximation is within `1e-11`, so
/// wherever every value within `4e-10` of it rounds to the same `f32`, that is the result.
#[inline(always)]
pub fn expf_into(x: &[f32], out: &mut [f32]) {
    const EPS: f64 = 4e-10;
    for (o, &a) in out.iter_mut().zip(x) {
        let y = exp_f64_coarse(a as f64);
        let (lo, hi) = ((y * (1.0 - EPS)) as f32, (y * (1.0 + EPS)) as f32);
        // Far from underflow only, where the platform takes the same path throughout.
        *o = if lo == hi && a > -87.0 { lo } else { f32::NAN };
    }
    for (o, &a) in out.iter_mut().zip(x) {
        if o.is_nan() {
            *o = a.exp();
        }
    }
}

crate::simd_fn! {
    /// `m + ln(sum_j e^(x_j - m)) as f32` with `m` the maximum, the terms in `f64` summed in
    /// order (bit for bit what a plain loop with `f64::exp` gives).
    pub fn log_sum_exp(xs: &[f32]) -> f32 => log_sum_exp_generic
}

#[inline(always)]
fn log_sum_exp_generic(xs: &[f32]) -> f32 {
    let m = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exact = || m + xs.iter().map(|&x| ((x - m) as f64).exp()).sum::<f64>().ln() as f32;
    if !m.is_finite() {
        return exact();
    }
    let mut lanes = [0f64; 8];
    let chunks = xs.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..8 {
            lanes[l] += exp_f64((c[l] - m) as f64);
        }
    }
    let mut sum: f64 = lanes.iter().sum();
    for &x in rest {
        sum += exp_f64((x - m) as f64);
    }
    // Both sums hold terms within a few ulp of each other, each rounded at most n times:
    // their logs differ by less than `delta`; if no f32 rounding boundary lies that close,
    // the cast agrees.
    let y = sum.ln();
    let delta = 4e-16 * xs.len() as f64 + 1e-14;
    if (y - delta) as f32 == (y + delta) as f32 {
        m + y as f32
    } else {
        exact()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_platform_bit_for_bit() {
        let mut rng = crate::rng::Rng::from_state(99);
        let mut xs: Vec<f32> = (0..400_000)
            .map(|t| match t % 4 {
                0 => -rng.unit_f32() * 30.0,
                1 => -rng.unit_f32() * 120.0,
                2 => (rng.unit_f32() - 0.5) * 2.0,
                _ => -rng.unit_f32() * 1e-3,
            })
            .collect();
        xs.extend([
            0.0,
            -0.0,
            -87.0,
            -87.5,
            -103.9,
            -104.0,
            -150.0,
            1.0,
            88.0,
            f32::NEG_INFINITY,
        ]);
        let mut out = vec![0f32; xs.len()];
        expf_into(&xs, &mut out);
        for (x, o) in xs.iter().zip(&out) {
            assert_eq!(o.to_bits(), x.exp().to_bits(), "exp({x})");
        }
        for t in 0..200_000 {
            let x = -(t as f64) * 0.0035 + (t % 7) as f64 * 1e-5;
            let want = x.exp();
            let rel = (exp_f64(x) - want).abs() / want;
            assert!(rel < 1e-15, "{x}: {rel}");
            let rel = (exp_f64_coarse(x) - want).abs() / want;
            assert!(rel < 1e-11, "{x}: {rel}");
        }
        for len in [1, 3, 17, 1000, 8192] {
            for _ in 0..20 {
                let row: Vec<f32> = (0..len).map(|_| rng.normal_f32() * 6.0).collect();
                let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let want = m + row
                    .iter()
                    .map(|&x| ((x - m) as f64).exp())
                    .sum::<f64>()
                    .ln() as f32;
                assert_eq!(log_sum_exp(&row).to_bits(), want.to_bits());
            }
        }
    }
}
