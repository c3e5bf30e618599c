//! The project's one pseudo-random generator: SplitMix64, small and self-contained, so the same
//! seed gives the same stream on every platform and every version of the dependencies (samples,
//! synthetic inputs and test data are reproducible byte for byte).
//!
//! Two ways to seed it: [`Rng::new`] mixes a seed with a stream name (so two consumers given the
//! same seed draw different numbers; the synthetic tasks of `attnscope-datasets` use it), and
//! [`Rng::from_state`] starts from a raw SplitMix64 state (the classic `splitmix64(seed)`).
//!
//! ```
//! use attnscope_core::rng::Rng;
//! let mut a = Rng::new(7, "niah-single");
//! let mut b = Rng::new(7, "niah-single");
//! assert_eq!(a.next_u64(), b.next_u64());
//! // The reference SplitMix64 stream for state 0.
//! assert_eq!(Rng::from_state(0).next_u64(), 0xe220_a839_7b1d_cdaf);
//! let u = a.unit();
//! assert!((0.0..1.0).contains(&u));
//! ```

/// SplitMix64 (Steele, Lea and Flood 2014), as in `java.util.SplittableRandom`.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator for `seed`, mixed with a stream name so that two tasks given the same seed draw
    /// different numbers.
    pub fn new(seed: u64, stream: &str) -> Self {
        // FNV-1a over the stream name.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in stream.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        Self::from_state(seed ^ h.rotate_left(17))
    }

    /// A generator starting from the raw SplitMix64 state `state` (no stream mixing): the first
    /// draw is `splitmix64(state)`.
    pub fn from_state(state: u64) -> Self {
        Self { state }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`; 0 when `n == 0`), without modulo bias (rejection sampling).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let x = self.next_u64();
            if x < zone {
                return x % n;
            }
        }
    }

    /// In `0..n` (`n > 0`) from exactly one draw, by the high half of `x * n`: no rejection,
    /// bias below `n / 2^64`. For resampling loops that must consume one draw per index.
    pub fn below_fast(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[0, 1)` with 24 random bits (every value exact in `f32`).
    pub fn unit_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in `[-scale, scale)` with 24 random bits.
    pub fn signed_f32(&mut self, scale: f32) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0) * scale
    }

    /// Approximately standard normal: the sum of four [`Rng::unit_f32`] draws, centred and scaled
    /// to unit variance (support `[-3.464, 3.464)`).
    pub fn normal_f32(&mut self) -> f32 {
        (0..4).map(|_| self.unit_f32()).sum::<f32>() * 1.732 - 3.464
    }

    /// A uniformly chosen element (`None` for an empty slice).
    pub fn choose<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            return None;
        }
        items.get(self.below(items.len() as u64) as usize)
    }

    /// A number with exactly `digits` decimal digits (no leading zero), `1 <= digits <= 18`.
    pub fn number(&mut self, digits: u32) -> String {
        let digits = digits.clamp(1, 18);
        let lo = 10u64.pow(digits - 1);
        (lo + self.below(9 * lo)).to_string()
    }

    /// `len` random uppercase ASCII letters.
    pub fn upper_word(&mut self, len: usize) -> String {
        (0..len)
            .map(|_| char::from(b'A' + self.below(26) as u8))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn same_seed_same_stream_and_streams_differ() {
        let a: Vec<u64> = (0..4)
            .map({
                let mut r = Rng::new(7, "x");
                move |_| r.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..4)
            .map({
                let mut r = Rng::new(7, "x");
                move |_| r.next_u64()
            })
            .collect();
        let c = Rng::new(7, "y").next_u64();
        assert_eq!(a, b);
        assert_ne!(a[0], c);
        let mut r = Rng::new(1, "n");
        for _ in 0..100 {
            assert_eq!(r.number(7).len(), 7);
            assert!(r.below(5) < 5);
            assert!(r.below_fast(5) < 5);
            let u = r.unit();
            assert!((0.0..1.0).contains(&u));
            let f = r.unit_f32();
            assert!((0.0..1.0).contains(&f));
            let s = r.signed_f32(2.0);
            assert!((-2.0..2.0).contains(&s));
        }
    }

    /// The streams are pinned: task samples and synthetic inputs built from them must not move.
    #[test]
    fn streams_are_pinned() {
        let mut r = Rng::from_state(0);
        assert_eq!(
            [r.next_u64(), r.next_u64(), r.next_u64()],
            [
                0xe220_a839_7b1d_cdaf,
                0x6e78_9e6a_a1b9_65f4,
                0x06c4_5d18_8009_454f
            ]
        );
        let mut r = Rng::new(7, "niah-single");
        assert_eq!(
            [r.next_u64(), r.next_u64(), r.next_u64()],
            [
                0x7a10_caa1_5c72_e92a,
                0xb5bc_a0e1_893e_3eda,
                0xa924_3e6c_7f99_b592
            ]
        );
    }
}
