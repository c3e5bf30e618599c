// Block selection and sparse measurement (analysis: gpu_methods.rs; core: gpu/blocks.rs).
//
// A block method scores, for every query token i, the key blocks visible to it from the logits
// of block representatives (computed by cuBLAS into L: [heads of the selection][queries][m]),
// keeps forced blocks (init, local, own) plus the top-k other candidates (ties by lower index,
// the CPU's rank order), and writes the kept block ids of every row. `measure_blocks` then
// computes, per (q-head, query), the exact dense attention mass of the kept keys (recall), and
// the renormalized sparse output compared with the dense output (relative L2 error, cosine).
// Arithmetic is f32; nothing n x n is ever stored.

#define NONE_BLOCK 0xffffffffu

// y = f(x) as f32: mode 0 copy, 1 max(x, 0), 2 min(x, 0).
template <typename T>
__device__ void to_f32_mode(const T* x, float* y, i64 len, int mode) {
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < len; i += (i64)blockDim.x * gridDim.x) {
        float v = ld(x + i);
        if (mode == 1) v = fmaxf(v, 0.f);
        if (mode == 2) v = fminf(v, 0.f);
        y[i] = v;
    }
}

__device__ __forceinline__ float block_reduce(float v, float* red, bool is_max) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (int off = 16; off > 0; off >>= 1) {
        float o = __shfl_xor_sync(FULL_MASK, v, off);
        v = is_max ? fmaxf(v, o) : v + o;
    }
    __syncthreads();
    if (lane == 0) red[warp] = v;
    __syncthreads();
    float r = red[0];
    for (int w = 1; w < nw; w++) r = is_max ? fmaxf(r, red[w]) : r + red[w];
    return r;
}

// Order of f32::total_cmp as an unsigned key (ascending key = ascending value).
__device__ __forceinline__ u32 ordered_bits(float x) {
    u32 b = __float_as_uint(x);
    return (b >> 31) ? ~b : (b | 0x80000000u);
}

__device__ __forceinline__ bool is_forced(int b, int own, int n_init, int local) {
    return b < min(n_init, own + 1) || (b >= own - local && b <= own);
}

// One CTA per query row of one selection head.
//   L        logits [G][nq][m] of this chunk (row r = query i0 + r), unscaled
//   out      kept blocks [n][width] of this selection head (row i), NONE_BLOCK padded
//   transform  0 raw scaled logits, 1 softmax over the visible representatives of each head,
//            2 ReLU of the scaled logit (summed over the G heads)
//   pool     0: block b's score is s[b]; 1: max of s over [per b - 1, per b + per - 1];
//            2: sum of s over [per b - 1, per (b + 1)), each window (two strides wide) times its
//               overlap with the block in strides: 1 at either edge, 2 inside
// Shared memory: s[m] floats, then keys[p2] u64 (p2: a power of two >= every row's candidates).
extern "C" __global__ void block_rows(const float* L, int G, int nq, int m, int i0, float scale,
                                      int vis_w, int vis_s, int transform, int pool, int per, int block,
                                      int n_init, int local, int k, int width, int p2, u32* out) {
    extern __shared__ unsigned char smraw[];
    float* s = reinterpret_cast<float*>(smraw);
    u64* keys = reinterpret_cast<u64*>(smraw + (((size_t)m * 4 + 15) / 16) * 16);
    __shared__ float red[32];
    int r = blockIdx.x;
    if (r >= nq) return;
    int i = i0 + r;
    int vis = (i + 1 >= vis_w) ? min(m, (i + 1 - vis_w) / vis_s + 1) : 0;
    int tid = threadIdx.x, nt = blockDim.x;
    for (int j = tid; j < vis; j += nt) s[j] = 0.f;
    __syncthreads();
    for (int h = 0; h < G; h++) {
        const float* row = L + ((i64)h * nq + r) * m;
        if (transform == 1) {
            float mx = NEG_INF;
            for (int j = tid; j < vis; j += nt) mx = fmaxf(mx, row[j] * scale);
            mx = block_reduce(mx, red, true);
            float sum = 0.f;
            for (int j = tid; j < vis; j += nt) sum += expf(row[j] * scale - mx);
            sum = block_reduce(sum, red, false);
            for (int j = tid; j < vis; j += nt) s[j] += expf(row[j] * scale - mx) / sum;
        } else if (transform == 2) {
            for (int j = tid; j < vis; j += nt) s[j] += fmaxf(row[j] * scale, 0.f);
        } else {
            for (int j = tid; j < vis; j += nt) s[j] += row[j] * scale;
        }
        __syncthreads();
    }
    int own = i / block;
    int lim = pool == 0 ? vis : (pool == 2 ? own : own + 1);
    lim = min(lim, p2);
    for (int b = tid; b < p2; b += nt) {
        u64 key = ~0ull;
        if (b < lim && !is_forced(b, own, n_init, local)) {
            bool valid = true;
            float v = 0.f;
            if (pool == 0) {
                v = s[b];
            } else {
                int lo = max(per * b - 1, 0);
                if (pool == 1) {
                    int hi = min(per * b + per - 1, vis - 1);
                    valid = vis > 0 && lo <= hi && lo < vis;
                    v = NEG_INF;
                    if (valid)
                        for (int j = lo; j <= hi; j++) v = fmaxf(v, s[j]);
                } else {
                    int hi = min(per * (b + 1), vis);
                    for (int j = lo; j < hi; j++) {
                        int w = min(j + 2, per * (b + 1)) - max(j, per * b);
                        v += (float)w * s[j];
                    }
                }
            }
            if (valid) key = ((u64)(~ordered_bits(v)) << 32) | (u64)b;
        }
        keys[b] = key;
    }
    __syncthreads();
    // Bitonic sort, ascending (best first).
    for (int size = 2; size <= p2; size <<= 1) {
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            for (int t = tid; t < p2 / 2; t += nt) {
                int a = 2 * t - (t & (stride - 1));
                int c = a + stride;
                bool up = (a & size) == 0;
                u64 x = keys[a], y = keys[c];
                if ((x > y) == up) {
                    keys[a] = y;
                    keys[c] = x;
                }
            }
            __syncthreads();
        }
    }
    u32* o = out + (i64)i * width;
    if (tid == 0) {
        int w = 0;
        int ni = min(n_init, own + 1);
        for (int b = 0; b < ni && w < width; b++) o[w++] = (u32)b;
        for (int b = max(own - local, ni); b <= own && w < width; b++) o[w++] = (u32)b;
        for (int t = 0; t < k && t < p2 && w < width; t++) {
            u64 key = keys[t];
            if (key == ~0ull) break;
            o[w++] = (u32)(key & 0xffffffffu);
        }
        while (w < width) o[w++] = NONE_BLOCK;
    }
}

// Own-block rank by exact block mass: rank[t] (t = h n + i) = the number of blocks
// b < own = i / block with P[h, i, b] >= P[h, i, own] in f32 total order, i.e. the own block's place (0 = best) in
// the row's ranking (descending, ties to the lower block): whether the partial own block is among
// the top k, the one score-dependent part of the kept-pair count. One warp per row; P is the
// capture's [nh][n][nb]; rank is u32 bits in an f32 buffer (poisoned with NaN by the caller).
extern "C" __global__ void own_block_rank(const float* P, int nh, int n, int nb, int block,
                                          u32* rank) {
    int lane = threadIdx.x & 31;
    i64 t = (i64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (t >= (i64)nh * n) return;
    int i = (int)(t % n);
    int own = i / block;
    const float* row = P + t * nb;
    u32 o = ordered_bits(row[own]);
    u32 c = 0;
    for (int b = lane; b < own; b += 32) c += ordered_bits(row[b]) >= o ? 1u : 0u;
    for (int off = 16; off > 0; off >>= 1) c += __shfl_xor_sync(FULL_MASK, c, off);
    if (lane == 0) rank[t] = c;
}

// The per-(q-head, query) outputs of a warp's sparse sums: recall (the kept mass), and the
// renormalized sparse output's relative L2 error and cosine against the dense output.
template <typename T>
__device__ __forceinline__ void finish_measure(const T* dense, const float* acc, float mass,
                                               u32 kept, int h, int i, int nh, int n, int d,
                                               float* recall, float* rel_err, float* cosine,
                                               u32* kept_out) {
    int lane = threadIdx.x & 31;
    mass = warp_sum(mass);
    const T* di = dense + (i64)i * nh * d + (i64)h * d;
    float diff2 = 0.f, dn2 = 0.f, sn2 = 0.f, dt = 0.f;
    for (int c = 0; c < 4; c++) {
        int col = lane + 32 * c;
        if (col < d) {
            float os = mass > 0.f ? acc[c] / mass : 0.f;
            float od = ld(di + col);
            diff2 += (os - od) * (os - od);
            dn2 += od * od;
            sn2 += os * os;
            dt += os * od;
        }
    }
    diff2 = warp_sum(diff2);
    dn2 = warp_sum(dn2);
    sn2 = warp_sum(sn2);
    dt = warp_sum(dt);
    if (lane == 0) {
        const float tiny = 1.17549435e-38f;
        i64 o = (i64)h * n + i;
        recall[o] = fminf(mass, 1.f);
        rel_err[o] = sqrtf(diff2) / fmaxf(sqrtf(dn2), tiny);
        cosine[o] = dt / fmaxf(sqrtf(sn2) * sqrtf(dn2), tiny);
        kept_out[o] = kept;
    }
}

// Per (q-head, query), one warp: recall, output error and cosine of the kept keys.
//   sel      [n_sel][rows][width] kept blocks; q-head h reads selection head h / heads_per_sel,
//            query i reads row i / qblock; a block b covers keys [b unit, (b + 1) unit) & <= i
//   dense    [n][nh d] exact dense attention output (token-major)
// Keys are taken 32 at a time: the warp copies the 32 contiguous key rows to shared memory
// (coalesced; rows padded to d + 1 floats, so lane l reading row l hits its own bank), then
// lane l computes key l's probability, and the warp accumulates p v with lanes over columns.
// Shared memory per warp: q (d floats) + keys (32 (d + 1) floats).
template <typename T>
__device__ void measure_blocks(const T* q, const T* k, const T* v, const float* lse, const T* dense,
                               const u32* sel, int width, int unit, int qblock, int heads_per_sel,
                               int nh, int nkv, int n, int d, float scale, float* recall,
                               float* rel_err, float* cosine, u32* kept_out) {
    extern __shared__ float qs[];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    int h = blockIdx.y;
    int i = blockIdx.x * nw + warp;
    int dp = d + 1;
    float* qw = qs + warp * (d + 32 * dp);
    float* ks = qw + d;
    if (i >= n) return;
    int g = h / (nh / nkv);
    const T* qi = q + ((i64)h * n + i) * d;
    for (int c = lane; c < d; c += 32) qw[c] = ld(qi + c);
    __syncwarp();
    const T* kg = k + (i64)g * n * d;
    const T* vg = v + (i64)g * n * d;
    int rows = (n + qblock - 1) / qblock;
    const u32* srow = sel + ((i64)(h / heads_per_sel) * rows + i / qblock) * width;
    float l = lse[(i64)h * n + i];
    float acc[4] = {0.f, 0.f, 0.f, 0.f};
    float mass = 0.f;
    u32 kept = 0;
    for (int e = 0; e < width; e++) {
        u32 b = srow[e];
        if (b == NONE_BLOCK) continue;
        i64 s0 = (i64)b * unit;
        if (s0 > i) continue;
        int s = (int)s0, e1 = min((int)s0 + unit, i + 1);
        kept += (u32)(e1 - s);
        for (int j0 = s; j0 < e1; j0 += 32) {
            int cnt = min(32, e1 - j0);
            const T* kc = kg + (i64)j0 * d;
            __syncwarp();
            for (int r = 0; r < cnt; r++) {
                for (int c = 2 * lane; c < d; c += 64) {
                    float a0, a1;
                    ld2(kc + r * d + c, a0, a1);
                    ks[r * dp + c] = a0;
                    ks[r * dp + c + 1] = a1;
                }
            }
            __syncwarp();
            float p = 0.f;
            if (lane < cnt) {
                const float* kr = ks + lane * dp;
                float dot = 0.f;
                for (int c = 0; c < d; c++) dot = fmaf(qw[c], kr[c], dot);
                p = expf(dot * scale - l);
            }
            mass += p;
            for (int t = 0; t < cnt; t++) {
                float pt = __shfl_sync(FULL_MASK, p, t);
                const T* vr = vg + (i64)(j0 + t) * d;
                for (int c = 0; c < 4; c++) {
                    int col = lane + 32 * c;
                    if (col < d) acc[c] = fmaf(pt, ld(vr + col), acc[c]);
                }
            }
        }
    }
    finish_measure(dense, acc, mass, kept, h, i, nh, n, d, recall, rel_err, cosine, kept_out);
}

// measure_blocks over lists of single keys (unit 1: token-level selections, NONE_BLOCK padded):
// the warp takes 32 list entries at a time, copies their key rows to shared memory (one row per
// entry, lanes over columns), then proceeds as measure_blocks (the same arithmetic per key).
template <typename T>
__device__ void measure_tokens(const T* q, const T* k, const T* v, const float* lse, const T* dense,
                               const u32* sel, int width, int qblock, int heads_per_sel, int nh,
                               int nkv, int n, int d, float scale, float* recall, float* rel_err,
                               float* cosine, u32* kept_out) {
    extern __shared__ float qs[];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    int h = blockIdx.y;
    int i = blockIdx.x * nw + warp;
    int dp = d + 1;
    float* qw = qs + warp * (d + 32 * dp);
    float* ks = qw + d;
    if (i >= n) return;
    int g = h / (nh / nkv);
    const T* qi = q + ((i64)h * n + i) * d;
    for (int c = lane; c < d; c += 32) qw[c] = ld(qi + c);
    __syncwarp();
    const T* kg = k + (i64)g * n * d;
    const T* vg = v + (i64)g * n * d;
    int rows = (n + qblock - 1) / qblock;
    const u32* srow = sel + ((i64)(h / heads_per_sel) * rows + i / qblock) * width;
    float l = lse[(i64)h * n + i];
    float acc[4] = {0.f, 0.f, 0.f, 0.f};
    float mass = 0.f;
    u32 kept = 0;
    for (int e0 = 0; e0 < width; e0 += 32) {
        u32 jj = e0 + lane < width ? srow[e0 + lane] : NONE_BLOCK;
        bool ok = jj != NONE_BLOCK && (i64)jj <= (i64)i;
        u32 live = __ballot_sync(FULL_MASK, ok);
        if (live == 0) continue;
        kept += (u32)__popc(live);
        __syncwarp();
        for (int r = 0; r < 32; r++) {
            u32 j = __shfl_sync(FULL_MASK, jj, r);
            if (!((live >> r) & 1u)) continue;
            const T* kr = kg + (i64)j * d;
            for (int c = 2 * lane; c < d; c += 64) {
                float a0, a1;
                ld2(kr + c, a0, a1);
                ks[r * dp + c] = a0;
                ks[r * dp + c + 1] = a1;
            }
        }
        __syncwarp();
        float p = 0.f;
        if (ok) {
            const float* kr = ks + lane * dp;
            float dot = 0.f;
            for (int c = 0; c < d; c++) dot = fmaf(qw[c], kr[c], dot);
            p = expf(dot * scale - l);
        }
        mass += p;
        for (int t = 0; t < 32; t++) {
            float pt = __shfl_sync(FULL_MASK, p, t);
            u32 j = __shfl_sync(FULL_MASK, jj, t);
            if (!((live >> t) & 1u)) continue;
            const T* vr = vg + (i64)j * d;
            for (int c = 0; c < 4; c++) {
                int col = lane + 32 * c;
                if (col < d) acc[c] = fmaf(pt, ld(vr + col), acc[c]);
            }
        }
    }
    finish_measure(dense, acc, mass, kept, h, i, nh, n, d, recall, rel_err, cosine, kept_out);
}

// Block tile maxima of the exact attention: G[h, r, c] = max over queries i of query block r
// and keys j <= i of key block c of exp(q_i . k_j scale - lse_i), for c <= r (as exp of the largest logit of each
// query, the same value). One CTA of 256 threads per (r, h), grid (nb, nh); block <= 64. The
// query block and each key block sit in shared memory (rows padded to d + 1); thread t holds
// queries 4 (t / 16) + 0..3 and keys t % 16 + 16 * 0..3. Output [nh][nb][nb], c > r untouched.
template <typename T>
__device__ void block_tile_max(const T* q, const T* k, const float* lse, float* G, int nh, int nkv,
                                 int n, int d, int block, float scale) {
    extern __shared__ float qsm[];  // [64][d + 1] queries, then [64][d + 1] keys
    __shared__ float red[8];
    int r = blockIdx.x, h = blockIdx.y;
    int nb = (n + block - 1) / block;
    int g = h / (nh / nkv);
    int dp = d + 1;
    float* ksm = qsm + 64 * dp;
    int q0 = r * block, nqr = min(n, q0 + block) - q0;
    int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    int qg = tid >> 4, kg = tid & 15;
    for (int rr = warp; rr < nqr; rr += (int)(blockDim.x >> 5))
        for (int c = lane; c < d; c += 32) qsm[rr * dp + c] = ld(q + ((i64)h * n + q0 + rr) * d + c);
    float lq[4];
    for (int a = 0; a < 4; a++) {
        int qi = 4 * qg + a;
        lq[a] = qi < nqr ? lse[(i64)h * n + q0 + qi] : 0.f;
    }
    const T* kgp = k + (i64)g * n * d;
    for (int c = 0; c <= r; c++) {
        int k0 = c * block, nkc = min(n, k0 + block) - k0;
        __syncthreads();
        for (int rr = warp; rr < nkc; rr += (int)(blockDim.x >> 5))
            for (int cc = lane; cc < d; cc += 32) ksm[rr * dp + cc] = ld(kgp + (i64)(k0 + rr) * d + cc);
        __syncthreads();
        float acc[4][4];
        for (int a = 0; a < 4; a++)
            for (int b = 0; b < 4; b++) acc[a][b] = 0.f;
        for (int cc = 0; cc < d; cc++) {
            float qv[4], kv[4];
            for (int a = 0; a < 4; a++) qv[a] = qsm[(4 * qg + a) * dp + cc];
            for (int b = 0; b < 4; b++) kv[b] = ksm[(kg + 16 * b) * dp + cc];
            for (int a = 0; a < 4; a++)
                for (int b = 0; b < 4; b++) acc[a][b] = fmaf(qv[a], kv[b], acc[a][b]);
        }
        float best = 0.f;
        for (int a = 0; a < 4; a++) {
            int qi = 4 * qg + a;
            float m = NEG_INF;
            for (int b = 0; b < 4; b++) {
                int kj = kg + 16 * b;
                bool ok = qi < nqr && kj < nkc && (k0 + kj) <= (q0 + qi);
                if (ok) m = fmaxf(m, acc[a][b]);
            }
            // The 16 threads of these queries hold all 64 keys: the row maximum.
            for (int off = 8; off > 0; off >>= 1) m = fmaxf(m, __shfl_xor_sync(FULL_MASK, m, off));
            if (qi < nqr && m != NEG_INF) best = fmaxf(best, expf(m * scale - lq[a]));
        }
        for (int off = 16; off > 0; off >>= 1) best = fmaxf(best, __shfl_xor_sync(FULL_MASK, best, off));
        if (lane == 0) red[warp] = best;
        __syncthreads();
        if (tid == 0) {
            float b = red[0];
            for (int w = 1; w < (int)(blockDim.x >> 5); w++) b = fmaxf(b, red[w]);
            G[((i64)h * nb + r) * nb + c] = b;
        }
    }
}

#define INST_B(T, S)                                                                                \
    extern "C" __global__ void to_f32_mode_##S(const T* x, float* y, i64 len, int mode) {           \
        to_f32_mode<T>(x, y, len, mode);                                                            \
    }                                                                                               \
    extern "C" __global__ void measure_blocks_##S(                                                  \
        const T* q, const T* k, const T* v, const float* lse, const T* dense, const u32* sel,      \
        int width, int unit, int qblock, int hps, int nh, int nkv, int n, int d, float scale,      \
        float* recall, float* rel, float* cosv, u32* kept) {                                        \
        measure_blocks<T>(q, k, v, lse, dense, sel, width, unit, qblock, hps, nh, nkv, n, d, scale, \
                          recall, rel, cosv, kept);                                                 \
    }                                                                                               \
    extern "C" __global__ void measure_tokens_##S(                                                  \
        const T* q, const T* k, const T* v, const float* lse, const T* dense, const u32* sel,      \
        int width, int qblock, int hps, int nh, int nkv, int n, int d, float scale, float* recall,  \
        float* rel, float* cosv, u32* kept) {                                                       \
        measure_tokens<T>(q, k, v, lse, dense, sel, width, qblock, hps, nh, nkv, n, d, scale,      \
                          recall, rel, cosv, kept);                                                 \
    }                                                                                               \
    extern "C" __global__ void block_tile_max_##S(const T* q, const T* k, const float* lse,         \
                                                    float* G, int nh, int nkv, int n, int d,        \
                                                    int block, float scale) {                       \
        block_tile_max<T>(q, k, lse, G, nh, nkv, n, d, block, scale);                               \
    }

INST_B(float, f32)
INST_B(bf16_t, bf16)
