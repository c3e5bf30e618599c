//! ggml storage types and their dequantization to f32, bit-for-bit like ggml's
//! `dequantize_row_*` (ggml-quants.c) and gguf-py's `gguf.quants.dequantize`.
//!
//! Block layouts (all little-endian, `d`/`m`/`dmin` are IEEE half floats):
//! - `Q4_0` `{d, qs[16]}`, `Q4_1` `{d, m, qs[16]}`, `Q5_0` `{d, qh[4], qs[16]}`,
//!   `Q5_1` `{d, m, qh[4], qs[16]}`, `Q8_0` `{d, qs[32] as i8}`: 32 elements per block.
//! - k-quants, 256 elements per super-block: `Q2_K` `{scales[16], qs[64], d, dmin}`,
//!   `Q3_K` `{hmask[32], qs[64], scales[12], d}`, `Q4_K` `{d, dmin, scales[12], qs[128]}`,
//!   `Q5_K` `{d, dmin, scales[12], qh[32], qs[128]}`, `Q6_K` `{ql[128], qh[64], scales[16] as i8, d}`.

use half::f16;
use rayon::prelude::*;

/// A ggml tensor storage type. The 13 named variants can be dequantized; other valid ggml
/// ids (Q8_1, Q8_K, the IQ and TQ families, integer types, ...) are kept as [`GgmlType::Other`]
/// so a file that holds them can still be opened and listed.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    /// A valid ggml type id this crate cannot dequantize.
    Other(u32),
}

/// Elements per k-quant super-block.
const QK_K: usize = 256;

/// (id, name, block size, bytes per block) of every ggml type id in use.
#[rustfmt::skip]
const TYPE_TABLE: &[(u32, &str, usize, usize)] = &[
    (0, "F32", 1, 4), (1, "F16", 1, 2), (2, "Q4_0", 32, 18), (3, "Q4_1", 32, 20),
    (6, "Q5_0", 32, 22), (7, "Q5_1", 32, 24), (8, "Q8_0", 32, 34), (9, "Q8_1", 32, 40),
    (10, "Q2_K", 256, 84), (11, "Q3_K", 256, 110), (12, "Q4_K", 256, 144),
    (13, "Q5_K", 256, 176), (14, "Q6_K", 256, 210), (15, "Q8_K", 256, 292),
    (16, "IQ2_XXS", 256, 66), (17, "IQ2_XS", 256, 74), (18, "IQ3_XXS", 256, 98),
    (19, "IQ1_S", 256, 50), (20, "IQ4_NL", 32, 18), (21, "IQ3_S", 256, 110),
    (22, "IQ2_S", 256, 82), (23, "IQ4_XS", 256, 136), (24, "I8", 1, 1), (25, "I16", 1, 2),
    (26, "I32", 1, 4), (27, "I64", 1, 8), (28, "F64", 1, 8), (29, "IQ1_M", 256, 56),
    (30, "BF16", 1, 2), (34, "TQ1_0", 256, 54), (35, "TQ2_0", 256, 66),
    (39, "MXFP4", 32, 17), (40, "NVFP4", 64, 36), (41, "Q1_0", 128, 18),
];

/// Dequantizes a run of whole blocks: `src` holds `dst.len() / block_size` blocks.
type BlockFn = fn(&[u8], &mut [f32]);

/// The one registry of dequantizable types: variant, ggml id, block decoder.
const SUPPORTED: [(GgmlType, u32, BlockFn); 13] = [
    (GgmlType::F32, 0, f32_blocks),
    (GgmlType::F16, 1, f16_blocks),
    (GgmlType::BF16, 30, bf16_blocks),
    (GgmlType::Q4_0, 2, q4_0_blocks),
    (GgmlType::Q4_1, 3, q4_1_blocks),
    (GgmlType::Q5_0, 6, q5_0_blocks),
    (GgmlType::Q5_1, 7, q5_1_blocks),
    (GgmlType::Q8_0, 8, q8_0_blocks),
    (GgmlType::Q2K, 10, q2_k_blocks),
    (GgmlType::Q3K, 11, q3_k_blocks),
    (GgmlType::Q4K, 12, q4_k_blocks),
    (GgmlType::Q5K, 13, q5_k_blocks),
    (GgmlType::Q6K, 14, q6_k_blocks),
];

impl GgmlType {
    /// The type for a ggml type id; `None` for ids ggml does not define (or has removed).
    pub fn from_id(id: u32) -> Option<Self> {
        if let Some(e) = SUPPORTED.iter().find(|e| e.1 == id) {
            return Some(e.0);
        }
        TYPE_TABLE
            .iter()
            .find(|e| e.0 == id)
            .map(|_| Self::Other(id))
    }

    /// The ggml type id.
    pub fn id(self) -> u32 {
        match self {
            Self::Other(id) => id,
            t => SUPPORTED
                .iter()
                .find(|e| e.0 == t)
                .map_or(u32::MAX, |e| e.1),
        }
    }

    fn entry(self) -> (u32, &'static str, usize, usize) {
        let id = self.id();
        TYPE_TABLE
            .iter()
            .copied()
            .find(|e| e.0 == id)
            .unwrap_or((id, "unknown", 1, 0))
    }

    /// The ggml name (`"Q4_K"`, `"BF16"`, ...).
    pub fn name(self) -> &'static str {
        self.entry().1
    }

    /// Elements per block (1 for the float types).
    pub fn block_size(self) -> usize {
        self.entry().2
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        self.entry().3
    }

    /// True when [`dequantize`] handles this type.
    pub fn can_dequantize(self) -> bool {
        !matches!(self, Self::Other(_))
    }
}

/// Dequantizes `n_elements` values stored as `ty` in `bytes` (exactly
/// `n_elements / block_size * type_size` bytes). Large inputs are split over rayon.
pub fn dequantize(ty: GgmlType, bytes: &[u8], n_elements: usize) -> Result<Vec<f32>, String> {
    let (bs, ts) = (ty.block_size(), ty.type_size());
    let Some(&(_, _, run)) = SUPPORTED.iter().find(|e| e.0 == ty) else {
        return Err(format!(
            "ggml type {} (id {}) cannot be dequantized; supported: F32 F16 BF16 Q4_0 Q4_1 \
             Q5_0 Q5_1 Q8_0 Q2_K Q3_K Q4_K Q5_K Q6_K",
            ty.name(),
            ty.id()
        ));
    };
    if !n_elements.is_multiple_of(bs) {
        return Err(format!(
            "{n_elements} elements are not a multiple of the {} block size {bs}",
            ty.name()
        ));
    }
    let n_blocks = n_elements / bs;
    if n_blocks.checked_mul(ts) != Some(bytes.len()) {
        return Err(format!(
            "{n_elements} {} elements need {} bytes, got {}",
            ty.name(),
            n_blocks.saturating_mul(ts),
            bytes.len()
        ));
    }
    let mut out = vec![0f32; n_elements];
    // About 16k elements per task; small tensors run on the calling thread.
    let blocks_per_task = (16_384 / bs).max(1);
    if n_blocks <= blocks_per_task {
        run(bytes, &mut out);
    } else {
        out.par_chunks_mut(blocks_per_task * bs)
            .zip(bytes.par_chunks(blocks_per_task * ts))
            .for_each(|(o, b)| run(b, o));
    }
    Ok(out)
}

#[inline]
fn half_at(b: &[u8], i: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

fn f32_blocks(src: &[u8], dst: &mut [f32]) {
    for (y, b) in dst.iter_mut().zip(src.chunks_exact(4)) {
        *y = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
}

fn f16_blocks(src: &[u8], dst: &mut [f32]) {
    for (y, b) in dst.iter_mut().zip(src.chunks_exact(2)) {
        *y = half_at(b, 0);
    }
}

fn bf16_blocks(src: &[u8], dst: &mut [f32]) {
    for (y, b) in dst.iter_mut().zip(src.chunks_exact(2)) {
        *y = f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16);
    }
}

fn q4_0_blocks(src: &[u8], dst: &mut [f32]) {
    for (y, b) in dst.chunks_exact_mut(32).zip(src.chunks_exact(18)) {
        let d = half_at(b, 0);
        let qs = &b[2..18];
        for j in 0..16 {
            y[j] = ((qs[j] & 0x0F) as i32 - 8) as f32 * d;
            y[j + 16] = ((qs[j] >> 4) as i32 - 8) as f32 * d;
        }
    }
}

fn q4_1_blocks(src: &[u8], dst: &mut [f32]) {
    for (y, b) in dst.chunks_exact_mut(32).zip(src.chunks_exact(20)) {
        let (d, m) = (half_at(b, 0), half_at(b, 2));
        let qs = &b[4..20];
        for j in 0..16 {
            y[j] = (qs[j] & 0x0F) as f32 * d + m;
            y[j + 16] = (qs[j] >> 4) as f32 * d + m;
        }
    }
}

fn q5_0_blocks(src: &[u8], dst: &mut [f32]) {
    for (y, b) in dst.chunks_exact_mut(32).zip(src.chunks_exact(22)) {
        let d = half_at(b, 0);
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        let qs = &b[6..22];
        for j in 0..16 {
            let xh0 = ((qh >> j) << 4) & 0x10;
            let xh1 = (qh >> (j + 12)) & 0x10;
            let x0 = ((qs[j] as u32 & 0x0F) | xh0) as i32 - 16;
            let x1 = ((qs[j] as u32 >> 4) | xh1) as i32 - 16;
            y[j] = x0 as f32 * d;
            y[j + 16] = x1 as f32 * d;
        }
    }
}

fn q5_1_blocks(src: &[u8], dst: &mut [f32]) {
    for (y, b) in dst.chunks_exact_mut(32).zip(src.chunks_exact(24)) {
        let (d, m) = (half_at(b, 0), half_at(b, 2));
        let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        let qs = &b[8..24];
        for j in 0..16 {
            let xh0 = ((qh >> j) << 4) & 0x10;
            let xh1 = (qh >> (j + 12)) & 0x10;
            y[j] = ((qs[j] as u32 & 0x0F) | xh0) as f32 * d + m;
            y[j + 16] = ((qs[j] as u32 >> 4) | xh1) as f32 * d + m;
        }
    }
}

fn q8_0_blocks(src: &[u8], dst: &mut [f32]) {
    for (y, b) in dst.chunks_exact_mut(32).zip(src.chunks_exact(34)) {
        let d = half_at(b, 0);
        for j in 0..32 {
            y[j] = (b[2 + j] as i8) as f32 * d;
        }
    }
}

fn q2_k_blocks(src: &[u8], dst: &mut [f32]) {
    for (y, b) in dst.chunks_exact_mut(QK_K).zip(src.chunks_exact(84)) {
        let (scales, qs) = (&b[0..16], &b[16..80]);
        let (d, dmin) = (half_at(b, 80), half_at(b, 82));
        let mut is = 0;
        let mut o = 0;
        for n in 0..2 {
            let q = &qs[32 * n..32 * n + 32];
            for shift in [0u32, 2, 4, 6] {
                for part in 0..2 {
                    let sc = scales[is];
                    is += 1;
                    let dl = d * (sc & 0x0F) as f32;
                    let ml = dmin * (sc >> 4) as f32;
                    for l in 0..16 {
                        y[o] = dl * ((q[l + 16 * part] >> shift) & 3) as f32 - ml;
                        o += 1;
                    }
                }
            }
        }
    }
}

/// The sixteen signed 6-bit scales of a Q3_K block, packed as in ggml.
fn q3_k_scales(s: &[u8]) -> [i8; 16] {
    let mut out = [0i8; 16];
    for (j, v) in out.iter_mut().enumerate() {
        let low = (s[j % 8] >> (4 * (j / 8))) & 0x0F;
        let high = (s[8 + j % 4] >> (2 * (j / 4))) & 0x03;
        *v = (low | (high << 4)) as i8 - 32;
    }
    out
}

fn q3_k_blocks(src: &[u8], dst: &mut [f32]) {
    for (y, b) in dst.chunks_exact_mut(QK_K).zip(src.chunks_exact(110)) {
        let (hmask, qs) = (&b[0..32], &b[32..96]);
        let scales = q3_k_scales(&b[96..108]);
        let d_all = half_at(b, 108);
        let (mut is, mut o, mut m) = (0, 0, 1u8);
        for n in 0..2 {
            let q = &qs[32 * n..32 * n + 32];
            for shift in [0u32, 2, 4, 6] {
                for h in [0, 16] {
                    let dl = d_all * scales[is] as f32;
                    is += 1;
                    for l in h..h + 16 {
                        let hi = if hmask[l] & m != 0 { 0 } else { 4 };
                        y[o] = dl * (((q[l] >> shift) & 3) as i8 - hi) as f32;
                        o += 1;
                    }
                }
                m <<= 1;
            }
        }
    }
}

/// ggml's `get_scale_min_k4`: scale and min of sub-block `j` (0..8) of a Q4_K/Q5_K block.
#[inline]
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

fn q4_k_blocks(src: &[u8], dst: &mut [f32]) {
    for (y, b) in dst.chunks_exact_mut(QK_K).zip(src.chunks_exact(144)) {
        let (d, dmin) = (half_at(b, 0), half_at(b, 2));
        let (scales, qs) = (&b[4..16], &b[16..144]);
        for (j, yc) in y.chunks_exact_mut(64).enumerate() {
            let (sc1, m1) = scale_min_k4(2 * j, scales);
            let (sc2, m2) = scale_min_k4(2 * j + 1, scales);
            let (d1, m1) = (d * sc1 as f32, dmin * m1 as f32);
            let (d2, m2) = (d * sc2 as f32, dmin * m2 as f32);
            let q = &qs[32 * j..32 * j + 32];
            for l in 0..32 {
                yc[l] = d1 * (q[l] & 0x0F) as f32 - m1;
                yc[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
            }
        }
    }
}

fn q5_k_blocks(src: &[u8], dst: &mut [f32]) {
    for (y, b) in dst.chunks_exact_mut(QK_K).zip(src.chunks_exact(176)) {
        let (d, dmin) = (half_at(b, 0), half_at(b, 2));
        let (scales, qh, qs) = (&b[4..16], &b[16..48], &b[48..176]);
        for (j, yc) in y.chunks_exact_mut(64).enumerate() {
            let (sc1, m1) = scale_min_k4(2 * j, scales);
            let (sc2, m2) = scale_min_k4(2 * j + 1, scales);
            let (d1, m1) = (d * sc1 as f32, dmin * m1 as f32);
            let (d2, m2) = (d * sc2 as f32, dmin * m2 as f32);
            let (u1, u2) = (1u8 << (2 * j), 2u8 << (2 * j));
            let q = &qs[32 * j..32 * j + 32];
            for l in 0..32 {
                let h1 = if qh[l] & u1 != 0 { 16 } else { 0 };
                let h2 = if qh[l] & u2 != 0 { 16 } else { 0 };
                yc[l] = d1 * ((q[l] & 0x0F) + h1) as f32 - m1;
                yc[l + 32] = d2 * ((q[l] >> 4) + h2) as f32 - m2;
            }
        }
    }
}

fn q6_k_blocks(src: &[u8], dst: &mut [f32]) {
    for (y, b) in dst.chunks_exact_mut(QK_K).zip(src.chunks_exact(210)) {
        let d = half_at(b, 208);
        for n in 0..2 {
            let ql = &b[64 * n..64 * n + 64];
            let qh = &b[128 + 32 * n..128 + 32 * n + 32];
            let sc = &b[192 + 8 * n..192 + 8 * n + 8];
            let yc = &mut y[128 * n..128 * n + 128];
            for l in 0..32 {
                let is = l / 16;
                let q1 = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) as i8 - 32;
                let q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
                let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
                yc[l] = d * (sc[is] as i8) as f32 * q1 as f32;
                yc[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
                yc[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
                yc[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_ggml() {
        for (id, name, bs, ts) in TYPE_TABLE.iter().copied() {
            let t = GgmlType::from_id(id).expect("listed id");
            assert_eq!(
                (t.id(), t.name(), t.block_size(), t.type_size()),
                (id, name, bs, ts)
            );
        }
        assert_eq!(GgmlType::from_id(4), None);
        assert_eq!(GgmlType::from_id(1000), None);
        assert!(!GgmlType::from_id(9).expect("Q8_1").can_dequantize());
    }

    #[test]
    fn q8_0_by_hand() {
        // d = 0.5 (f16 0x3800), q = -2, -1, 0, 1, ...
        let mut b = vec![0x00, 0x38];
        b.extend((0..32).map(|i| (i as i8 - 2) as u8));
        let y = dequantize(GgmlType::Q8_0, &b, 32).expect("dequantize");
        assert_eq!(&y[..4], &[-1.0, -0.5, 0.0, 0.5]);
    }

    #[test]
    fn q4_0_by_hand_and_errors() {
        // d = 1.0 (0x3C00); low nibbles 0..15 -> -8..7, high nibbles 15 -> 7.
        let mut b = vec![0x00, 0x3C];
        b.extend((0..16u8).map(|i| i | 0xF0));
        let y = dequantize(GgmlType::Q4_0, &b, 32).expect("dequantize");
        assert_eq!(y[0], -8.0);
        assert_eq!(y[15], 7.0);
        assert!(y[16..].iter().all(|&v| v == 7.0));
        let e = dequantize(GgmlType::Q4_0, &b, 31).expect_err("not a multiple");
        assert!(e.contains("block size 32"), "{e}");
        let e = dequantize(GgmlType::Q4_0, &b[..10], 32).expect_err("short");
        assert!(e.contains("need 18 bytes"), "{e}");
        let e = dequantize(GgmlType::Other(9), &[0; 40], 32).expect_err("Q8_1");
        assert!(e.contains("Q8_1"), "{e}");
    }

    #[test]
    fn parallel_path_equals_serial() {
        let n_blocks = 300; // above one task's worth of Q4_K blocks
        let bytes: Vec<u8> = (0..n_blocks * 144)
            .map(|i| {
                if i % 144 < 4 {
                    0x10
                } else {
                    (i * 31 % 251) as u8
                }
            })
            .collect();
        let all = dequantize(GgmlType::Q4K, &bytes, n_blocks * 256).expect("dequantize");
        let one = dequantize(GgmlType::Q4K, &bytes[144..288], 256).expect("dequantize");
        assert_eq!(&all[256..512], &one[..]);
    }
}
