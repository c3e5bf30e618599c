// Causal GQA flash attention forward and the fused capture pass, bf16 in, f32 accumulation,
// on the tensor cores through mma.sync.m16n8k16 (sm_80 and later; building blocks in
// flash_tiles.cuh). Scores never leave registers.
//
// Block: NW warps; each warp owns MT m-tiles of 16 query rows (BM = 16 * MT * NW rows per block);
// key tiles of 64 rows go through shared memory (two stages, cp.async), row stride D + 8 elements
// so that ldmatrix is free of bank conflicts. Work order: the last (longest) query tiles first.
// Scores stay unscaled; exp2 takes scale * log2(e) through one FFMA (ex2.approx.ftz).
//
// Layouts: q [H, n, D], k/v [G, n, D] bf16 (head-major); out [n, H * D] bf16 (token-major);
// lse [H, n] f32 (natural log); P [H, n, nb] f32; sink [H, n] f32.

// As qk_tile, with the warp's query rows read from shared memory (qsw: its first row) by
// ldmatrix at every k-step instead of being held in registers (frees registers for 2 m-tiles at
// head dim 128, halving the K/V shared-memory reads per product).
template <int D, int MT, int LDS, int NJ>
__device__ __forceinline__ void qk_tile_smem(float (&s)[MT][NJ][4], const bf16_t* qsw,
                                             const bf16_t* ks, int lane) {
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int j = 0; j < NJ; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) s[mt][j][e] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {
        u32 a[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
            int row = mt * 16 + ((lane >> 3) & 1) * 8 + (lane & 7);
            int col = 16 * kk + (lane >> 4) * 8;
            ldsm_x4(a[mt][0], a[mt][1], a[mt][2], a[mt][3], smem_addr(qsw + row * LDS + col));
        }
#pragma unroll
        for (int jp = 0; jp < NJ / 2; jp++) {
            u32 b0, b1, b2, b3;
            int row = 16 * jp + (lane >> 4) * 8 + (lane & 7);
            int col = 16 * kk + ((lane >> 3) & 1) * 8;
            ldsm_x4(b0, b1, b2, b3, smem_addr(ks + row * LDS + col));
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                mma16816(s[mt][2 * jp], a[mt], b0, b1);
                mma16816(s[mt][2 * jp + 1], a[mt], b2, b3);
            }
        }
    }
}

template <int D, int MT, int NW, bool QS, int SUB>
__device__ void flash_fwd(const bf16_t* __restrict__ q, const bf16_t* __restrict__ k,
                          const bf16_t* __restrict__ v, bf16_t* __restrict__ out,
                          float* __restrict__ lse, int n, int H, int G, float scale_log2) {
    constexpr int BM = 16 * MT * NW, NT = 32 * NW, LDS = D + 8, TILE = FBN * LDS, DT = D / 8;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    bf16_t* qs = (bf16_t*)smem_raw;              // [BM][LDS] when QS
    bf16_t* ks = qs + (QS ? BM * LDS : 0);       // [2][TILE]
    bf16_t* vs = ks + 2 * TILE;                  // [2][TILE]
    int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    int nqt = (n + BM - 1) / BM;
    int q0 = (nqt - 1 - (int)blockIdx.x) * BM;
    int h = blockIdx.y, kvh = h / (H / G);
    const bf16_t* qh = q + (i64)h * n * D;
    const bf16_t* kh = k + (i64)kvh * n * D;
    const bf16_t* vh = v + (i64)kvh * n * D;

    u32 qa[MT][D / 16][4];
    if constexpr (QS) {
        // The block's query rows into shared memory (same cp.async group as the first K/V tile).
        for (int base = 0; base < BM; base += FBN)
            load_tile<D, LDS, NT>(qs + base * LDS, qh + (i64)q0 * D, base, n - q0, tid);
    } else {
        load_q<D, MT>(qa, qh, q0, warp, g, t, n);
    }
    float o[MT][DT][4];
    // Running max of the raw (unscaled) scores; per-thread partial row sums (reduced at the end).
    float m[MT][2], l[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
#pragma unroll
        for (int jd = 0; jd < DT; jd++)
#pragma unroll
            for (int e = 0; e < 4; e++) o[mt][jd][e] = 0.f;
        m[mt][0] = m[mt][1] = NEG_INF;
        l[mt][0] = l[mt][1] = 0.f;
    }
    int last = min(q0 + BM - 1, n - 1) / FBN;
    load_tile<D, LDS, NT>(ks, kh, 0, n, tid);
    load_tile<D, LDS, NT>(vs, vh, 0, n, tid);
    cp_commit();
    for (int kt = 0; kt <= last; kt++) {
        int sg = kt & 1;
        if (kt < last) {
            load_tile<D, LDS, NT>(ks + (sg ^ 1) * TILE, kh, (kt + 1) * FBN, n, tid);
            load_tile<D, LDS, NT>(vs + (sg ^ 1) * TILE, vh, (kt + 1) * FBN, n, tid);
            cp_commit();
            cp_wait<1>();
        } else {
            cp_wait<0>();
        }
        __syncthreads();
        // The 64-key tile in SUB sub-tiles of BNS keys (fewer live score registers when SUB = 2).
        constexpr int BNS = FBN / SUB, NJ = BNS / 8;
#pragma unroll 1
        for (int sub = 0; sub < SUB; sub++) {
        const bf16_t* kts = ks + sg * TILE + sub * BNS * LDS;
        const bf16_t* vts = vs + sg * TILE + sub * BNS * LDS;
        float s[MT][NJ][4];
        if constexpr (QS) {
            qk_tile_smem<D, MT, LDS, NJ>(s, qs + warp * MT * 16 * LDS, kts, lane);
        } else {
            qk_tile<D, MT, LDS, NJ>(s, qa, kts, lane);
        }
        int k0 = kt * FBN + sub * BNS;
        if (k0 + BNS - 1 > q0) {
            // The diagonal tile: keys after the row get no probability.
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int hf = 0; hf < 2; hf++) {
                    int row = q0 + (warp * MT + mt) * 16 + g + 8 * hf;
#pragma unroll
                    for (int j = 0; j < NJ; j++)
#pragma unroll
                        for (int e = 0; e < 2; e++)
                            if (k0 + 8 * j + 2 * t + e > row) s[mt][j][2 * hf + e] = NEG_INF;
                }
        }
        softmax_pv_tile<D, MT, LDS, NJ>(s, o, m, l, vts, scale_log2, lane);
        }
        __syncthreads();
    }
    store_rows<D, MT>(o, m, l, out, lse, q0, warp, lane, n, H, h, scale_log2);
}

// The capture pass: with the exact per-query LSE from flash_fwd, recomputes each score tile and
// reduces exp(s - lse) to the key-block mass P[i, b] (block a multiple of 64) and the sink mass
// (first sink_tokens <= 64 keys). Blocks past the query tile's diagonal are written as zeros.
template <int D, int MT, int NW>
__device__ void flash_capture(const bf16_t* __restrict__ q, const bf16_t* __restrict__ k,
                              const float* __restrict__ lse, float* __restrict__ P,
                              float* __restrict__ sink, int n, int H, int G, int block, int nb,
                              int sink_tokens, float scale_log2) {
    constexpr int BM = 16 * MT * NW, NT = 32 * NW, LDS = D + 8, TILE = FBN * LDS;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    bf16_t* ks = (bf16_t*)smem_raw;  // [2][TILE]
    int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    int nqt = (n + BM - 1) / BM;
    int q0 = (nqt - 1 - (int)blockIdx.x) * BM;
    int h = blockIdx.y, kvh = h / (H / G);
    const bf16_t* qh = q + (i64)h * n * D;
    const bf16_t* kh = k + (i64)kvh * n * D;

    u32 qa[MT][D / 16][4];
    load_q<D, MT>(qa, qh, q0, warp, g, t, n);
    float lse2[MT][2], rs[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int hf = 0; hf < 2; hf++) {
            int row = q0 + (warp * MT + mt) * 16 + g + 8 * hf;
            lse2[mt][hf] = row < n ? lse[(i64)h * n + row] * LOG2E : 0.f;
            rs[mt][hf] = 0.f;
        }
    int last = min(q0 + BM - 1, n - 1) / FBN;
    load_tile<D, LDS, NT>(ks, kh, 0, n, tid);
    cp_commit();
    for (int kt = 0; kt <= last; kt++) {
        int sg = kt & 1;
        if (kt < last) {
            load_tile<D, LDS, NT>(ks + (sg ^ 1) * TILE, kh, (kt + 1) * FBN, n, tid);
            cp_commit();
            cp_wait<1>();
        } else {
            cp_wait<0>();
        }
        __syncthreads();
        float s[MT][8][4];
        qk_tile<D, MT, LDS, 8>(s, qa, ks + sg * TILE, lane);
        int k0 = kt * FBN;
        bool diag = k0 + FBN - 1 > q0;
        bool flush = ((kt + 1) * FBN) % block == 0 || kt == last;
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
#pragma unroll
            for (int hf = 0; hf < 2; hf++) {
                int row = q0 + (warp * MT + mt) * 16 + g + 8 * hf;
                float sum = 0.f;
#pragma unroll
                for (int j = 0; j < 8; j++)
#pragma unroll
                    for (int e = 0; e < 2; e++) {
                        float p = ex2(fmaf(s[mt][j][2 * hf + e], scale_log2, -lse2[mt][hf]));
                        if (diag && k0 + 8 * j + 2 * t + e > row) p = 0.f;
                        s[mt][j][2 * hf + e] = p;
                        sum += p;
                    }
                rs[mt][hf] += sum;
                if (kt == 0) {
                    float sk = 0.f;
#pragma unroll
                    for (int j = 0; j < 8; j++)
#pragma unroll
                        for (int e = 0; e < 2; e++)
                            if (8 * j + 2 * t + e < sink_tokens) sk += s[mt][j][2 * hf + e];
                    sk += __shfl_xor_sync(FULL_MASK, sk, 1);
                    sk += __shfl_xor_sync(FULL_MASK, sk, 2);
                    if (t == 0 && row < n && sink) sink[(i64)h * n + row] = sk;
                }
                if (flush) {
                    float v = rs[mt][hf];
                    v += __shfl_xor_sync(FULL_MASK, v, 1);
                    v += __shfl_xor_sync(FULL_MASK, v, 2);
                    if (t == 0 && row < n) P[((i64)h * n + row) * nb + k0 / block] = v;
                    rs[mt][hf] = 0.f;
                }
            }
        }
        __syncthreads();
    }
    int first_zero = (last * FBN) / block + 1;
    int width = nb - first_zero;
    if (width > 0) {
        for (int idx = tid; idx < BM * width; idx += NT) {
            int row = q0 + idx / width;
            if (row < n) P[((i64)h * n + row) * nb + first_zero + idx % width] = 0.f;
        }
    }
}

// Instantiations: flash_fwd_d{D}_w{warps} and flash_capture_d{D}_m{m-tiles per warp}, 4 warps.
#define FWD(D, MT, NW)                                                                             \
    extern "C" __global__ void __launch_bounds__(32 * NW) flash_fwd_d##D##_w##NW(                  \
        const bf16_t* q, const bf16_t* k, const bf16_t* v, bf16_t* out, float* lse, int n, int H,  \
        int G, float scale_log2) {                                                                 \
        flash_fwd<D, MT, NW, false, 1>(q, k, v, out, lse, n, H, G, scale_log2);                    \
    }
#define CAP(D, MT)                                                                                 \
    extern "C" __global__ void __launch_bounds__(128) flash_capture_d##D##_m##MT(                  \
        const bf16_t* q, const bf16_t* k, const float* lse, float* P, float* sink, int n, int H,   \
        int G, int block, int nb, int sink_tokens, float scale_log2) {                             \
        flash_capture<D, MT, 4>(q, k, lse, P, sink, n, H, G, block, nb, sink_tokens, scale_log2); \
    }

FWD(64, 2, 4)
FWD(64, 2, 8)
FWD(128, 1, 4)
FWD(128, 1, 8)
// Head dim 128 with 2 m-tiles per warp, the queries in shared memory and 32-key sub-tiles.
#define FWDQ(NW)                                                                                   \
    extern "C" __global__ void __launch_bounds__(32 * NW) flash_fwd_d128_q##NW(                    \
        const bf16_t* q, const bf16_t* k, const bf16_t* v, bf16_t* out, float* lse, int n, int H,  \
        int G, float scale_log2) {                                                                 \
        flash_fwd<128, 2, NW, true, 2>(q, k, v, out, lse, n, H, G, scale_log2);                    \
    }
FWDQ(4)
FWDQ(8)
CAP(64, 2)
CAP(64, 1)
CAP(128, 1)
