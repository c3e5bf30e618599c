// Element-wise and row-wise kernels of the forward pass. Every kernel exists for f32 and bf16
// storage (suffix _f32 / _bf16); arithmetic is f32. Grid-stride loops with 64-bit indices.

#define GRID_STRIDE(i, total) \
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (total); i += (i64)blockDim.x * gridDim.x)

// 2-D launches for row-structured kernels: blockIdx.y walks rows, x threads walk columns; no
// 64-bit division per element.
#define ROWS(r, n) for (int r = blockIdx.y; r < (n); r += gridDim.y)
#define COLS(c, w) for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < (w); c += blockDim.x * gridDim.x)

// out[r, :] (f32) = table[ids[r], :]
template <typename T>
__device__ void embed_gather(const T* table, const u32* ids, float* out, int n, int h) {
    ROWS(r, n) {
        const T* src = table + (i64)ids[r] * h;
        COLS(c, h) out[(i64)r * h + c] = ld(src + c);
    }
}

// RMSNorm of logical rows: row r is `cols` values at (r / per_row) * ld + col_off + (r % per_row) * cols
// (per_row > 1: per-head norm inside a wider row). y may alias x. One warp per row.
template <typename TI, typename TO>
__device__ void rms_norm(const TI* x, TO* y, const float* w, int rows, int cols, int per_row,
                         int ld_, int col_off, float eps) {
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    i64 r = (i64)blockIdx.x * (blockDim.x >> 5) + warp;
    if (r >= rows) return;
    i64 base = (r / per_row) * ld_ + col_off + (r % per_row) * cols;
    float ss = 0.f;
    for (int c = lane; c < cols; c += 32) {
        float v = ld(x + base + c);
        ss += v * v;
    }
    ss = warp_sum(ss);
    float inv = 1.0f / sqrtf(ss / (float)cols + eps);
    for (int c = lane; c < cols; c += 32) {
        float v = ld(x + base + c);
        st(y + base + c, v * inv * w[c]);
    }
}

// Rotate-half RoPE in place on `heads` heads of dim d starting at column col_off of each row
// (row r at position r); cos/sin are [max_pos, d/2].
template <typename T>
__device__ void rope(T* x, const float* cosb, const float* sinb, int n, int heads, int d, int ld_,
                     int col_off) {
    int half = d / 2;
    ROWS(r, n) {
        T* row = x + (i64)r * ld_ + col_off;
        const float* cr = cosb + (i64)r * half;
        const float* sr = sinb + (i64)r * half;
        COLS(idx, heads * half) {
            int hh = idx / half, j = idx - hh * half;
            T* p = row + hh * d;
            float c = cr[j], s = sr[j];
            float a = ld(p + j), b = ld(p + j + half);
            st(p + j, a * c - b * s);
            st(p + j + half, b * c + a * s);
        }
    }
}

// x[r, col_off + c] += bias[c], c < width.
template <typename T>
__device__ void add_bias(T* x, const float* bias, int n, int width, int ld_, int col_off) {
    ROWS(r, n) {
        T* row = x + (i64)r * ld_ + col_off;
        COLS(c, width) st(row + c, ld(row + c) + bias[c]);
    }
}

// dst[hh, r, c] = src[r, col_off + hh * d + c]: token-major columns to head-major [heads, n, d].
template <typename T>
__device__ void to_head_major(const T* src, T* dst, int n, int heads, int d, int ld_, int col_off) {
    ROWS(r, n) {
        const T* row = src + (i64)r * ld_ + col_off;
        COLS(c, heads * d) {
            int hh = c / d;
            dst[((i64)hh * n + r) * d + (c - hh * d)] = row[c];
        }
    }
}

// out[r, c] = silu(gu[r, c]) * gu[r, f + c] for the fused [n, 2f] gate|up product; two columns
// per thread (f even: one 4- or 8-byte load of each half).
__device__ __forceinline__ float silu_f(float g, float u) { return g / (1.0f + expf(-g)) * u; }
template <typename T>
__device__ void silu_mul(const T* gu, T* out, int n, int f) {
    ROWS(r, n) {
        const T* g = gu + (i64)r * 2 * f;
        const T* u = g + f;
        T* o = out + (i64)r * f;
        if ((f & 1) == 0) {
            COLS(c2, f / 2) {
                int c = 2 * c2;
                float g0, g1, u0, u1;
                ld2(g + c, g0, g1);
                ld2(u + c, u0, u1);
                st2(o + c, silu_f(g0, u0), silu_f(g1, u1));
            }
        } else {
            COLS(c, f) st(o + c, silu_f(ld(g + c), ld(u + c)));
        }
    }
}

// x (f32) += y: the residual add.
template <typename T>
__device__ void add_into(float* x, const T* y, i64 len) {
    GRID_STRIDE(idx, len) { x[idx] += ld(y + idx); }
}

// dst = (T) src.
template <typename T>
__device__ void cast_from_f32(const float* src, T* dst, i64 len) {
    GRID_STRIDE(idx, len) { st(dst + idx, src[idx]); }
}

// dst = offset + scale * u, u uniform in [-1, 1) from a counter hash of (seed, index).
template <typename T>
__device__ void fill_uniform(T* dst, i64 len, u64 seed, float scale, float offset) {
    GRID_STRIDE(idx, len) {
        u64 z = (u64)idx + seed * 0x9E3779B97F4A7C15ull;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        float u = (float)(z >> 40) * (1.0f / 8388608.0f) - 1.0f;  // 24 bits -> [-1, 1)
        st(dst + idx, offset + scale * u);
    }
}

// Raw fills (poisoning, zeroing): 32- and 16-bit patterns.
extern "C" __global__ void fill_u32(u32* dst, i64 len, u32 v) { GRID_STRIDE(idx, len) dst[idx] = v; }
extern "C" __global__ void fill_u16(unsigned short* dst, i64 len, u32 v) {
    GRID_STRIDE(idx, len) dst[idx] = (unsigned short)v;
}

#define INST_T(T, S)                                                                                  \
    extern "C" __global__ void embed_gather_##S(const T* t, const u32* ids, float* o, int n, int h) { \
        embed_gather<T>(t, ids, o, n, h);                                                             \
    }                                                                                                 \
    extern "C" __global__ void rms_norm_f32_##S(const float* x, T* y, const float* w, int rows,      \
                                                 int cols, int per_row, int ld_, int off, float e) {  \
        rms_norm<float, T>(x, y, w, rows, cols, per_row, ld_, off, e);                                \
    }                                                                                                 \
    extern "C" __global__ void rope_##S(T* x, const float* c, const float* s, int n, int heads,      \
                                        int d, int ld_, int off) {                                    \
        rope<T>(x, c, s, n, heads, d, ld_, off);                                                      \
    }                                                                                                 \
    extern "C" __global__ void add_bias_##S(T* x, const float* b, int n, int w, int ld_, int off) {  \
        add_bias<T>(x, b, n, w, ld_, off);                                                            \
    }                                                                                                 \
    extern "C" __global__ void to_head_major_##S(const T* s, T* d, int n, int heads, int hd,         \
                                                 int ld_, int off) {                                  \
        to_head_major<T>(s, d, n, heads, hd, ld_, off);                                               \
    }                                                                                                 \
    extern "C" __global__ void silu_mul_##S(const T* gu, T* o, int n, int f) { silu_mul<T>(gu, o, n, f); } \
    extern "C" __global__ void add_into_##S(float* x, const T* y, i64 len) { add_into<T>(x, y, len); } \
    extern "C" __global__ void cast_from_f32_##S(const float* s, T* d, i64 len) {                     \
        cast_from_f32<T>(s, d, len);                                                                  \
    }                                                                                                 \
    extern "C" __global__ void fill_uniform_##S(T* d, i64 len, u64 seed, float sc, float off) {       \
        fill_uniform<T>(d, len, seed, sc, off);                                                       \
    }

INST_T(float, f32)
INST_T(bf16_t, bf16)

extern "C" __global__ void rms_norm_bf16_bf16(const bf16_t* x, bf16_t* y, const float* w, int rows,
                                              int cols, int per_row, int ld_, int off, float e) {
    rms_norm<bf16_t, bf16_t>(x, y, w, rows, cols, per_row, ld_, off, e);
}

// pooled[h, qb, b] = mean over the rows r of query block qb of P[h, r, b]. Grid (n_qblocks, H).
extern "C" __global__ void pool_rows(const float* P, float* pooled, int n, int nb, int block) {
    int qb = blockIdx.x, h = blockIdx.y, nqb = gridDim.x;
    int r0 = qb * block, r1 = min(n, r0 + block);
    float inv = 1.0f / (float)(r1 - r0);
    for (int b = threadIdx.x; b < nb; b += blockDim.x) {
        float s = 0.f;
        for (int r = r0; r < r1; r++) s += P[((i64)h * n + r) * nb + b];
        pooled[((i64)h * nqb + qb) * nb + b] = s * inv;
    }
}
