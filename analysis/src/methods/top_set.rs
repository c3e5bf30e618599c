//! The `k` best keys of a score row as a set (ascending indices), in [`rank_desc`] order: every
//! key scoring above the `k`-th best value and, of those equal to it, the lowest indices.
//!
//! The `k`-th best value is found without selecting over the whole row: a small sorted sample
//! brackets it between two sample values, one pass counts the keys above the bracket and gathers
//! the few inside it, and only those are selected over. When the bracket misses (a sample that does
//! not represent the row), the whole row is selected over instead, so the result never depends on
//! the sample; only the speed does. A second pass gathers the kept indices without branches.
//!
//! [`rank_desc`]: super::common::rank_desc

/// `x` as a `u32` whose order is `f32::total_cmp`'s.
#[inline(always)]
pub(crate) fn ordered_bits(x: f32) -> u32 {
    let b = x.to_bits();
    if b >> 31 == 1 {
        !b
    } else {
        b | 0x8000_0000
    }
}

/// Rows shorter than this select over every value (a sample would cost as much as it saves).
const SAMPLED_FROM: usize = 512;

/// Sample size of the bracket.
const SAMPLE: usize = 128;

/// A 4-byte value and its rank order as a `u32`: scores as [`ordered_bits`], and already ordered
/// values as themselves.
trait Ranked: Copy {
    /// True when [`Ranked::rank`] is [`ordered_bits`] (false: the identity).
    const SCORE: bool;
    fn rank(self) -> u32;
}

impl Ranked for f32 {
    const SCORE: bool = true;
    #[inline(always)]
    fn rank(self) -> u32 {
        ordered_bits(self)
    }
}

impl Ranked for u32 {
    const SCORE: bool = false;
    #[inline(always)]
    fn rank(self) -> u32 {
        self
    }
}

/// The `k`-th largest [`ordered_bits`] of `scores` (`1 <= k <= scores.len()`).
pub(crate) fn kth_cut(scores: &[f32], k: usize) -> u32 {
    debug_assert!(k >= 1 && k <= scores.len());
    kth_rank(scores, k)
}

/// The `k`-th largest rank of `vals`: through sample brackets (each level keeps the values
/// inside its bracket) while the values are many, then by selection.
fn kth_rank<T: Ranked>(vals: &[T], k: usize) -> u32 {
    if vals.len() >= SAMPLED_FROM {
        let mut inside = vec![0u32; vals.len() + 16];
        if let Some((above, m)) = bracketed(vals, k, &mut inside) {
            return kth_rank(&inside[..m], k - above);
        }
    }
    let mut keys: Vec<u32> = vals.iter().map(|&x| !x.rank()).collect();
    let (_, &mut cut, _) = keys.select_nth_unstable(k - 1);
    !cut
}

/// Brackets the `k`-th largest rank of `vals` between two sample values, writes the ranks inside
/// the bracket to `inside` and returns the count above it and inside it; `None` when the bracket
/// does not hold the `k`-th largest.
fn bracketed<T: Ranked>(vals: &[T], k: usize, inside: &mut [u32]) -> Option<(usize, usize)> {
    let n = vals.len();
    let mut sample: Vec<u32> = (0..SAMPLE)
        .map(|t| vals[(2 * t + 1) * n / (2 * SAMPLE)].rank())
        .collect();
    // The cut's expected rank in the sample (descending), widened by about three standard
    // deviations; the two bracket ends are order statistics of the sample.
    let f = k as f64 / n as f64;
    let r = f * SAMPLE as f64;
    let spread = 3.0 * (SAMPLE as f64 * f * (1.0 - f)).sqrt() + 2.0;
    let hi_rank = (r - spread).floor();
    let lo_rank = (r + spread).ceil();
    let lo = if lo_rank >= SAMPLE as f64 {
        0
    } else {
        *sample.select_nth_unstable(SAMPLE - 1 - lo_rank as usize).1
    };
    let hi = if hi_rank < 0.0 {
        u32::MAX
    } else {
        *sample.select_nth_unstable(SAMPLE - 1 - hi_rank as usize).1
    };
    let (above, m) = bracket_pass(vals, lo, hi, inside);
    // A bracket that keeps (nearly) everything would not shrink the next level.
    (above < k && above + m >= k && m < n - n / 8).then_some((above, m))
}

/// Counts the values ranked above `hi` and writes the ranks in `lo..=hi` to `inside`
/// (`vals.len() + 16` long); returns the count above and the number written.
fn bracket_pass<T: Ranked>(vals: &[T], lo: u32, hi: u32, inside: &mut [u32]) -> (usize, usize) {
    #[cfg(target_arch = "x86_64")]
    if attnscope_core::exact_exp::simd_level() == attnscope_core::exact_exp::SimdLevel::Avx512 {
        // SAFETY: the CPU has AVX-512 F/BW/VL (checked by simd_level); `inside` has the slack the
        // 16-lane stores need (asserted inside).
        return unsafe { avx512::bracket_pass(vals, lo, hi, inside) };
    }
    bracket_pass_generic(vals, lo, hi, inside)
}

fn bracket_pass_generic<T: Ranked>(
    vals: &[T],
    lo: u32,
    hi: u32,
    inside: &mut [u32],
) -> (usize, usize) {
    let mut above = 0usize;
    let mut m = 0usize;
    for &x in vals {
        let o = x.rank();
        above += usize::from(o > hi);
        inside[m] = o;
        m += usize::from(o >= lo && o <= hi);
    }
    (above, m)
}

/// Writes the indices whose value is at least `cut` to `out` (ascending, `scores.len() + 16`
/// long), returning how many, and the number of values equal to `cut`.
fn gather(scores: &[f32], cut: u32, out: &mut [u32]) -> (usize, usize) {
    #[cfg(target_arch = "x86_64")]
    if attnscope_core::exact_exp::simd_level() == attnscope_core::exact_exp::SimdLevel::Avx512 {
        // SAFETY: as in `bracket_pass`.
        return unsafe { avx512::gather(scores, cut, out) };
    }
    gather_generic(scores, cut, out)
}

fn gather_generic(scores: &[f32], cut: u32, out: &mut [u32]) -> (usize, usize) {
    let mut m = 0usize;
    let mut ties = 0usize;
    for (j, &x) in scores.iter().enumerate() {
        let o = ordered_bits(x);
        out[m] = j as u32;
        m += usize::from(o >= cut);
        ties += usize::from(o == cut);
    }
    (m, ties)
}

/// The two passes with AVX-512 compares and in-register compression, 16 values at a time (the
/// tail by the generic code).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// [`super::ordered_bits`] of 16 lanes: `b ^ 0x8000_0000` when the sign is clear, `!b` when
    /// it is set.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn ordered(b: __m512i) -> __m512i {
        let flip = _mm512_or_si512(_mm512_srai_epi32::<31>(b), _mm512_set1_epi32(i32::MIN));
        _mm512_xor_si512(b, flip)
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,popcnt")]
    pub(super) unsafe fn bracket_pass<T: super::Ranked>(
        vals: &[T],
        lo: u32,
        hi: u32,
        inside: &mut [u32],
    ) -> (usize, usize) {
        assert!(inside.len() >= vals.len() + 16);
        const { assert!(std::mem::size_of::<T>() == 4) };
        let (lov, hiv) = (_mm512_set1_epi32(lo as i32), _mm512_set1_epi32(hi as i32));
        let (mut above, mut m) = (0usize, 0usize);
        let chunks = vals.chunks_exact(16);
        let tail = chunks.remainder();
        for c in chunks {
            // SAFETY: `c` holds 16 values of 4 bytes; unaligned loads and stores are allowed.
            let b = unsafe { _mm512_loadu_si512(c.as_ptr().cast()) };
            let o = if T::SCORE { ordered(b) } else { b };
            above += _mm512_cmpgt_epu32_mask(o, hiv).count_ones() as usize;
            let keep = _mm512_cmpge_epu32_mask(o, lov) & _mm512_cmple_epu32_mask(o, hiv);
            // SAFETY: `m <= vals.len()` before this chunk's 16 values, and `inside` is 16
            // longer than `vals`.
            unsafe {
                _mm512_storeu_si512(
                    inside.as_mut_ptr().add(m).cast(),
                    _mm512_maskz_compress_epi32(keep, o),
                );
            }
            m += keep.count_ones() as usize;
        }
        let (a, t) = super::bracket_pass_generic(tail, lo, hi, &mut inside[m..]);
        (above + a, m + t)
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,popcnt")]
    pub(super) unsafe fn gather(scores: &[f32], cut: u32, out: &mut [u32]) -> (usize, usize) {
        assert!(out.len() >= scores.len() + 16);
        let cutv = _mm512_set1_epi32(cut as i32);
        let step = _mm512_set1_epi32(16);
        let mut idx = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        let (mut m, mut ties) = (0usize, 0usize);
        let chunks = scores.chunks_exact(16);
        let tail = chunks.remainder();
        let done = scores.len() - tail.len();
        for c in chunks {
            // SAFETY: `c` holds 16 floats.
            let o = ordered(unsafe { _mm512_loadu_si512(c.as_ptr().cast()) });
            let keep = _mm512_cmpge_epu32_mask(o, cutv);
            ties += _mm512_cmpeq_epu32_mask(o, cutv).count_ones() as usize;
            // SAFETY: as in `bracket_pass`.
            unsafe {
                _mm512_storeu_si512(
                    out.as_mut_ptr().add(m).cast(),
                    _mm512_maskz_compress_epi32(keep, idx),
                );
            }
            m += keep.count_ones() as usize;
            idx = _mm512_add_epi32(idx, step);
        }
        let (t, tt) = super::gather_generic(tail, cut, &mut out[m..]);
        for x in &mut out[m..m + t] {
            *x += done as u32;
        }
        (m + t, ties + tt)
    }

    #[target_feature(enable = "avx512f,avx512bw,bmi1")]
    pub(super) unsafe fn for_each_equal(bytes: &[u8], b: u8, f: &mut impl FnMut(usize)) {
        let bv = _mm512_set1_epi8(b as i8);
        let chunks = bytes.chunks_exact(64);
        let tail = chunks.remainder();
        let done = bytes.len() - tail.len();
        for (c, x) in chunks.enumerate() {
            // SAFETY: `x` holds 64 bytes.
            let mut mask =
                _mm512_cmpeq_epi8_mask(unsafe { _mm512_loadu_si512(x.as_ptr().cast()) }, bv);
            while mask != 0 {
                f(c * 64 + mask.trailing_zeros() as usize);
                mask &= mask - 1;
            }
        }
        for (j, &x) in tail.iter().enumerate() {
            if x == b {
                f(done + j);
            }
        }
    }
}

/// The `k` best indices of `scores` in [`rank_desc`](super::common::rank_desc) order, ascending by
/// index (see the module documentation).
pub fn top_token_set(scores: &[f32], k: usize) -> Vec<u32> {
    let k = k.min(scores.len());
    if k == 0 {
        return Vec::new();
    }
    if k == scores.len() {
        return (0..k as u32).collect();
    }
    let cut = kth_cut(scores, k);
    let mut top = vec![0u32; scores.len() + 16];
    let (m, ties) = gather(scores, cut, &mut top);
    top.truncate(m);
    if m > k {
        // Too many ties at the cut: keep the lowest indices among them.
        let mut keep = ties - (m - k);
        top.retain(|&j| {
            if ordered_bits(scores[j as usize]) != cut {
                return true;
            }
            let kept = keep > 0;
            keep = keep.saturating_sub(1);
            kept
        });
    }
    top
}

/// Every index of `scores` ranked at or before index `last` in
/// [`rank_desc`](super::common::rank_desc) order (higher scores first, ties by lower index),
/// ascending.
pub(crate) fn ranked_through(scores: &[f32], last: u32) -> Vec<u32> {
    let cut = ordered_bits(scores[last as usize]);
    let mut out = vec![0u32; scores.len() + 16];
    let (m, ties) = gather(scores, cut, &mut out);
    out.truncate(m);
    if ties > 1 {
        out.retain(|&j| j <= last || ordered_bits(scores[j as usize]) != cut);
    }
    out
}

/// Calls `f(j)` for every `j` with `bytes[j] == b`, ascending.
pub(crate) fn for_each_equal(bytes: &[u8], b: u8, mut f: impl FnMut(usize)) {
    #[cfg(target_arch = "x86_64")]
    if attnscope_core::exact_exp::simd_level() == attnscope_core::exact_exp::SimdLevel::Avx512 {
        // SAFETY: the CPU has AVX-512 F/BW (checked by simd_level).
        unsafe { avx512::for_each_equal(bytes, b, &mut f) };
        return;
    }
    for (j, &x) in bytes.iter().enumerate() {
        if x == b {
            f(j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::methods::common::rank_desc;
    use attnscope_core::rng::Rng;

    /// `len` normal values, or (`levels` > 0) integers below `levels`: few distinct values, so
    /// ties straddle every cut.
    fn random_row(rng: &mut Rng, len: usize, levels: u64) -> Vec<f32> {
        (0..len)
            .map(|_| {
                if levels > 0 {
                    (rng.next_u64() % levels) as f32
                } else {
                    rng.normal_f32()
                }
            })
            .collect()
    }

    fn check(xs: &[f32], ks: &[usize]) {
        let all = rank_desc(xs);
        for &k in ks {
            let mut want = all[..k.min(xs.len())].to_vec();
            want.sort_unstable();
            assert_eq!(top_token_set(xs, k), want, "len {} k {k}", xs.len());
        }
    }

    #[test]
    fn top_token_set_is_the_rank_desc_prefix() {
        let mut rng = Rng::from_state(21);
        for (len, levels) in [
            (40, 0),
            (700, 0),
            (3000, 5),
            (5000, 0),
            (2048, 1),
            (9000, 0),
        ] {
            let xs = random_row(&mut rng, len, levels);
            check(&xs, &[1, 7, 48, 64, 100, 333, len / 2, len - 1, len]);
        }
    }

    #[test]
    fn ranked_through_is_a_rank_desc_prefix() {
        let mut rng = Rng::from_state(8);
        for levels in [0u64, 3] {
            let xs = random_row(&mut rng, 1000, levels);
            let all = rank_desc(&xs);
            for t in [0, 1, 5, 333, 998, 999] {
                let mut want = all[..=t].to_vec();
                want.sort_unstable();
                assert_eq!(ranked_through(&xs, all[t]), want, "levels {levels} t {t}");
            }
        }
    }

    #[test]
    fn for_each_equal_finds_every_match() {
        let mut rng = Rng::from_state(3);
        let bytes: Vec<u8> = (0..1000).map(|_| (rng.next_u64() % 7) as u8).collect();
        for len in [0, 63, 64, 65, 1000] {
            let mut got = Vec::new();
            for_each_equal(&bytes[..len], 3, |j| got.push(j));
            let want: Vec<usize> = (0..len).filter(|&j| bytes[j] == 3).collect();
            assert_eq!(got, want, "len {len}");
        }
    }

    #[test]
    fn unrepresentative_samples_fall_back_to_the_whole_row() {
        // The sample reads every (n / 128)-th value from the middle of each stride: here those
        // are all the lowest values, and the best keys sit between them; then a row whose best
        // values are all in its first and last few keys; and signed zeros, infinities and NaN.
        let n = 4096;
        let stride = n / SAMPLE;
        let fooled: Vec<f32> = (0..n)
            .map(|j| {
                if j % stride == stride / 2 {
                    -1.0
                } else {
                    j as f32
                }
            })
            .collect();
        check(&fooled, &[1, 5, 64, 400, 2000, 4000]);
        let edges: Vec<f32> = (0..n)
            .map(|j| {
                if j < 3 || j + 3 >= n {
                    10.0 + j as f32
                } else {
                    0.5
                }
            })
            .collect();
        check(&edges, &[1, 3, 6, 7, 100, 4095]);
        let mut rng = Rng::from_state(5);
        let odd: Vec<f32> = (0..n)
            .map(|j| match j % 97 {
                0 => f32::NAN,
                1 => f32::INFINITY,
                2 => f32::NEG_INFINITY,
                3 => -0.0,
                4 => 0.0,
                _ => rng.normal_f32(),
            })
            .collect();
        check(&odd, &[1, 30, 42, 43, 44, 500, 4000]);
    }
}
