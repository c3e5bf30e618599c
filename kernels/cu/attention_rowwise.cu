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
