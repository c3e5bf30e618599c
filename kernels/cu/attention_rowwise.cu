// Exact causal GQA attention and capture, one warp per (q-head, query). The reference GPU path:
// f32 (or bf16 storage) in, f32 arithmetic, any head dim <= 128, any capture block and sink size.
// Scores are recomputed per pass and never stored: pass 1 gives the log-sum-exp (or it is given),
// pass 2 the normalized probabilities, which feed the output, the per-block mass P[i, b] (summed
// in shared memory, one row of n_blocks floats per warp) and the sink mass.
//
// Layouts: q [H, n, D], k/v [G, n, D] (head-major); out [n, H * D] (token-major, may be null);
// lse [H, n]; P [H, n, nb] (may be null); sink [H, n] (may be null).

#define RW_WARPS 4

template <typename T>
__device__ __forceinline__ float dot_row(const float* qs, const T* kr, int D) {
    float s = 0.f;
    for (int c = 0; c < D; c++) s += qs[c] * ld(kr + c);
    return s;
}

template <typename T>
__device__ void attn_rowwise(const T* __restrict__ q, const T* __restrict__ k,
                             const T* __restrict__ v, T* out, float* lse_out, const float* lse_in,
                             float* P, float* sink, int n, int H, int G, int D, int block, int nb,
                             int sink_tokens, float scale) {
    extern __shared__ float smem[];
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    i64 w = (i64)blockIdx.x * RW_WARPS + warp;
    if (w >= (i64)n * H) return;
    // Longest rows first: better balance across the grid.
    int i = n - 1 - (int)(w / H);
    int h = (int)(w % H);
    int g = h / (H / G);
    float* qs = smem + warp * (D + nb);
    float* ps = qs + D;
    const T* qrow = q + ((i64)h * n + i) * D;
    for (int c = lane; c < D; c += 32) qs[c] = ld(qrow + c);
    __syncwarp();
    const T* kb = k + (i64)g * n * D;
    const T* vb = v + (i64)g * n * D;

    float lse;
    if (lse_in) {
        lse = lse_in[(i64)h * n + i];
    } else {
        float m = NEG_INF, l = 0.f;
        for (int j = lane; j <= i; j += 32) {
            float s = dot_row(qs, kb + (i64)j * D, D) * scale;
            if (s > m) {
                l = l * expf(m - s) + 1.f;
                m = s;
            } else {
                l += expf(s - m);
            }
        }
        for (int off = 16; off > 0; off >>= 1) {
            float m2 = __shfl_xor_sync(FULL_MASK, m, off);
            float l2 = __shfl_xor_sync(FULL_MASK, l, off);
            float mn = fmaxf(m, m2);
            if (mn != NEG_INF) {
                l = l * expf(m - mn) + l2 * expf(m2 - mn);
                m = mn;
            }
        }
        lse = m + logf(l);
    }
    if (lse_out && lane == 0) lse_out[(i64)h * n + i] = lse;
    if (!out && !P && !sink) return;

    if (P) {
        for (int b = lane; b < nb; b += 32) ps[b] = 0.f;
        __syncwarp();
    }
    float o[4] = {0.f, 0.f, 0.f, 0.f};
    float sk = 0.f;
    for (int c0 = 0; c0 <= i; c0 += 32) {
        int j = c0 + lane;
        float p = 0.f;
        if (j <= i) {
            p = expf(dot_row(qs, kb + (i64)j * D, D) * scale - lse);
            if (P) atomicAdd(&ps[j / block], p);
            if (j < sink_tokens) sk += p;
        }
        if (out) {
            int cnt = min(32, i - c0 + 1);
            for (int kk = 0; kk < cnt; kk++) {
                float pk = __shfl_sync(FULL_MASK, p, kk);
                const T* vr = vb + (i64)(c0 + kk) * D;
#pragma unroll
                for (int r = 0; r < 4; r++) {
                    int d = lane + 32 * r;
                    if (d < D) o[r] += pk * ld(vr + d);
                }
            }
        }
    }
    if (out) {
#pragma unroll
        for (int r = 0; r < 4; r++) {
            int d = lane + 32 * r;
            if (d < D) st(out + (i64)i * H * D + (i64)h * D + d, o[r]);
        }
    }
    sk = warp_sum(sk);
    if (sink && lane == 0) sink[(i64)h * n + i] = sk;
    if (P) {
        __syncwarp();
        float* prow = P + ((i64)h * n + i) * nb;
        for (int b = lane; b < nb; b += 32) prow[b] = ps[b];
    }
}

#define INST_RW(T, S)                                                                              \
    extern "C" __global__ void attn_rowwise_##S(const T* q, const T* k, const T* v, T* out,       \
                                                float* lse_out, const float* lse_in, float* P,    \
                                                float* sink, int n, int H, int G, int D,          \
                                                int block, int nb, int sink_tokens, float scale) { \
        attn_rowwise<T>(q, k, v, out, lse_out, lse_in, P, sink, n, H, G, D, block, nb,            \
                        sink_tokens, scale);                                                       \
    }

INST_RW(float, f32)
INST_RW(bf16_t, bf16)

// Sparse attention (a hook's selection, HookAction::Sparse): one warp per (q-head, query), the
// softmax of scale q_i . k_j renormalized over the query's selected keys (CSR: offsets
// [nh n + 1], row h n + i; keys ascending), times V, written to out [n][nh d] (token-major, the
// layer's attention output). Keys are taken 32 at a time, staged in shared memory like
// measure_tokens (blocksel.cu), with an online maximum; a query with no key gets zeros.
// Shared memory per warp: q (d floats) + keys (32 (d + 1) floats).
template <typename T>
__device__ void sparse_rows(const T* q, const T* k, const T* v, const u64* offsets,
                            const u32* keys, int nh, int nkv, int n, int d, float scale, T* out) {
    extern __shared__ float sm[];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    int h = blockIdx.y;
    int i = blockIdx.x * nw + warp;
    int dp = d + 1;
    float* qw = sm + warp * (d + 32 * dp);
    float* ks = qw + d;
    if (i >= n) return;
    int g = h / (nh / nkv);
    const T* qi = q + ((i64)h * n + i) * d;
    for (int c = lane; c < d; c += 32) qw[c] = ld(qi + c);
    __syncwarp();
    const T* kg = k + (i64)g * n * d;
    const T* vg = v + (i64)g * n * d;
    u64 beg = offsets[(i64)h * n + i], end = offsets[(i64)h * n + i + 1];
    float acc[4] = {0.f, 0.f, 0.f, 0.f};
    float m = NEG_INF, sum = 0.f;
    for (u64 e0 = beg; e0 < end; e0 += 32) {
        bool ok = e0 + lane < end;
        u32 jj = ok ? keys[e0 + lane] : 0u;
        int cnt = (int)min((u64)32, end - e0);
        __syncwarp();
        for (int r = 0; r < cnt; r++) {
            u32 j = __shfl_sync(FULL_MASK, jj, r);
            const T* kr = kg + (i64)j * d;
            for (int c = 2 * lane; c < d; c += 64) {
                float a0, a1;
                ld2(kr + c, a0, a1);
                ks[r * dp + c] = a0;
                ks[r * dp + c + 1] = a1;
            }
        }
        __syncwarp();
        float l = NEG_INF;
        if (ok) {
            const float* kr = ks + lane * dp;
            float dot = 0.f;
            for (int c = 0; c < d; c++) dot = fmaf(qw[c], kr[c], dot);
            l = dot * scale;
        }
        float cm = l;
        for (int off = 16; off > 0; off >>= 1) cm = fmaxf(cm, __shfl_xor_sync(FULL_MASK, cm, off));
        float nm = fmaxf(m, cm);
        float f = (m == NEG_INF) ? 0.f : expf(m - nm);
        for (int c = 0; c < 4; c++) acc[c] *= f;
        sum *= f;
        m = nm;
        float p = ok ? expf(l - m) : 0.f;
        sum += p;
        for (int t = 0; t < cnt; t++) {
            float pt = __shfl_sync(FULL_MASK, p, t);
            u32 j = __shfl_sync(FULL_MASK, jj, t);
            const T* vr = vg + (i64)j * d;
            for (int c = 0; c < 4; c++) {
                int col = lane + 32 * c;
                if (col < d) acc[c] = fmaf(pt, ld(vr + col), acc[c]);
            }
        }
    }
    sum = warp_sum(sum);
    T* o = out + (i64)i * nh * d + (i64)h * d;
    for (int c = 0; c < 4; c++) {
        int col = lane + 32 * c;
        if (col < d) st(o + col, sum > 0.f ? acc[c] / sum : 0.f);
    }
}

#define INST_SP(T, S)                                                                              \
    extern "C" __global__ void sparse_rows_##S(const T* q, const T* k, const T* v,                \
                                               const u64* offsets, const u32* keys, int nh,      \
                                               int nkv, int n, int d, float scale, T* out) {     \
        sparse_rows<T>(q, k, v, offsets, keys, nh, nkv, n, d, scale, out);                        \
    }

INST_SP(float, f32)
INST_SP(bf16_t, bf16)
