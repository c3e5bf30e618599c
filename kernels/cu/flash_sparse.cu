// Block-sparse causal GQA attention on the tensor cores (the flash kernel's tiles, flash_tiles.cuh):
// each block of 4 warps takes one q-head and one tile of 64 queries and reads only the keys of
// that tile's list, 64 at a time, gathered into shared memory by cp.async (two stages). Work
// order: the last query tiles (the longest lists) first.
//
// The list of (q-head h, query tile qt) is the union of the keys its queries keep, ascending,
// padded to a multiple of 64 with 0xffffffff: keys[offsets[h * ntiles + qt] ..
// offsets[h * ntiles + qt + 1]]. A 64-bit word per (query, 64 listed keys) says which of them the
// query keeps: mask[(offsets[..] / 64 + c) * 64 + r], bit j = query qt * 64 + r keeps listed key
// c * 64 + j. Pairs left out get no probability (the softmax is renormalized over the kept keys);
// a query keeping no key gets zeros. Causality is the caller's: lists hold what queries keep.
//
// Layouts: q [H, n, D], k/v [G, n, D] bf16 (head-major); out [n, H * D] bf16 (token-major).

#define SBM 64

// Rows idx[0..64) of a [n, D] head into shared memory (row stride LDS); idx >= n gives zeros.
template <int D, int LDS, int NT>
__device__ __forceinline__ void gather_tile(bf16_t* dst, const bf16_t* src, const u32* idx, int n,
                                            int tid) {
    constexpr int CPR = D / 8;  // 16-byte chunks per row
#pragma unroll
    for (int it = 0; it < (FBN * CPR) / NT; it++) {
        int c = tid + it * NT;
        int row = c / CPR, col = (c % CPR) * 8;
        u32 kr = idx[row];
        bool valid = kr < (u32)n;
        const bf16_t* s = src + (i64)(valid ? kr : 0u) * D + col;
        cp_async16(smem_addr(dst + row * LDS + col), s, valid ? 16 : 0);
    }
}

template <int D>
__device__ void flash_sparse(const bf16_t* __restrict__ q, const bf16_t* __restrict__ k,
                             const bf16_t* __restrict__ v, bf16_t* __restrict__ out,
                             const u64* __restrict__ offsets, const u32* __restrict__ keys,
                             const u64* __restrict__ mask, int n, int H, int G,
                             float scale_log2) {
    constexpr int MT = 1, NW = 4, NT = 32 * NW, LDS = D + 8, TILE = FBN * LDS, DT = D / 8, NJ = 8;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    bf16_t* ks = (bf16_t*)smem_raw;  // [2][TILE]
    bf16_t* vs = ks + 2 * TILE;      // [2][TILE]
    int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    int ntiles = (n + SBM - 1) / SBM;
    int qt = ntiles - 1 - (int)blockIdx.x, q0 = qt * SBM;  // the longest lists first
    int h = blockIdx.y, kvh = h / (H / G);
    const bf16_t* qh = q + (i64)h * n * D;
    const bf16_t* kh = k + (i64)kvh * n * D;
    const bf16_t* vh = v + (i64)kvh * n * D;
    u64 beg = offsets[(i64)h * ntiles + qt];
    int chunks = (int)((offsets[(i64)h * ntiles + qt + 1] - beg) / FBN);
    const u32* list = keys + beg;
    const u64* words = mask + beg;  // (beg / 64) * 64: word of chunk c, row r at [c * 64 + r]

    u32 qa[MT][D / 16][4];
    load_q<D, MT>(qa, qh, q0, warp, g, t, n);
    float o[MT][DT][4];
    float m[MT][2], l[MT][2];
#pragma unroll
    for (int jd = 0; jd < DT; jd++)
#pragma unroll
        for (int e = 0; e < 4; e++) o[0][jd][e] = 0.f;
    m[0][0] = m[0][1] = NEG_INF;
    l[0][0] = l[0][1] = 0.f;
    int r0 = warp * 16 + g;  // the thread's rows in the tile: r0 and r0 + 8
    if (chunks > 0) {
        gather_tile<D, LDS, NT>(ks, kh, list, n, tid);
        gather_tile<D, LDS, NT>(vs, vh, list, n, tid);
        cp_commit();
    }
    for (int c = 0; c < chunks; c++) {
        int sg = c & 1;
        u64 w0 = words[(i64)c * FBN + r0], w1 = words[(i64)c * FBN + r0 + 8];
        if (c + 1 < chunks) {
            gather_tile<D, LDS, NT>(ks + (sg ^ 1) * TILE, kh, list + (c + 1) * FBN, n, tid);
            gather_tile<D, LDS, NT>(vs + (sg ^ 1) * TILE, vh, list + (c + 1) * FBN, n, tid);
            cp_commit();
            cp_wait<1>();
        } else {
            cp_wait<0>();
        }
        __syncthreads();
        float s[MT][NJ][4];
        qk_tile<D, MT, LDS, NJ>(s, qa, ks + sg * TILE, lane);
#pragma unroll
        for (int j = 0; j < NJ; j++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                int bit = 8 * j + 2 * t + e;
                if (!((w0 >> bit) & 1ull)) s[0][j][e] = NEG_INF;
                if (!((w1 >> bit) & 1ull)) s[0][j][2 + e] = NEG_INF;
            }
        softmax_pv_tile<D, MT, LDS, NJ>(s, o, m, l, vs + sg * TILE, scale_log2, lane);
        __syncthreads();
    }
    store_rows<D, MT>(o, m, l, out, (float*)0, q0, warp, lane, n, H, h, scale_log2);
}

#define SPARSE(D)                                                                                  \
    extern "C" __global__ void __launch_bounds__(128) flash_sparse_d##D(                           \
        const bf16_t* q, const bf16_t* k, const bf16_t* v, bf16_t* out, const u64* offsets,        \
        const u32* keys, const u64* mask, int n, int H, int G, float scale_log2) {                 \
        flash_sparse<D>(q, k, v, out, offsets, keys, mask, n, H, G, scale_log2);                   \
    }
SPARSE(64)
SPARSE(128)
