// Row selection by radix select (core: gpu/blocks.rs; analysis: device/mod.rs), for rules whose
// candidates are too many for blocksel.cu's in-shared-memory sort: token-level methods (one key
// per "block", 32k candidates per row at 32k tokens) and static patterns.
//
// The rule is block_rows' with identity pooling: per query row i, the scores of the visible
// representatives j (i + 1 >= vis_w, j <= (i + 1 - vis_w) / vis_s) are combined over the heads of
// the selection (raw, softmax-normalized, or ReLU of the scaled logit, summed in head order from
// zero) into S (global scratch, one row per CTA); the forced blocks (the first n_init, and when
// local >= 0 the own block and the local blocks before it) are kept, and of the other candidates
// (j < vis) the k of largest score (ties by lower index: the CPU's rank order). The k-th largest
// key is found by four passes of an 8-bit radix histogram over the f32 total-order bits; the kept
// candidates are then written in index order (forced first), padded with NONE_TOKEN.

#define NONE_TOKEN 0xffffffffu

__device__ __forceinline__ u32 total_order_bits(float x) {
    u32 b = __float_as_uint(x);
    return (b >> 31) ? ~b : (b | 0x80000000u);
}

__device__ __forceinline__ float reduce_block(float v, float* red, bool is_max) {
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

// Exclusive prefix sum of v over the CTA (thread order); *total receives the sum. Every thread
// must call it. tmp: 33 u32 of shared memory.
__device__ __forceinline__ u32 scan_block(u32 v, u32* tmp, u32* total) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    u32 x = v;
    for (int off = 1; off < 32; off <<= 1) {
        u32 y = __shfl_up_sync(FULL_MASK, x, off);
        if (lane >= off) x += y;
    }
    __syncthreads();
    if (lane == 31) tmp[warp] = x;
    __syncthreads();
    if (threadIdx.x == 0) {
        u32 acc = 0;
        for (int w = 0; w < nw; w++) {
            u32 t = tmp[w];
            tmp[w] = acc;
            acc += t;
        }
        tmp[32] = acc;
    }
    __syncthreads();
    *total = tmp[32];
    return tmp[warp] + x - v;
}

__device__ __forceinline__ bool forced_block(int b, int own, int n_init, int local) {
    return b < min(n_init, own + 1) || (local >= 0 && b >= own - local && b <= own);
}

// One CTA per query row of one selection head (see the file comment).
//   L      logits [G][nq][m] of this chunk (row r = query i0 + r), unscaled
//   S      scratch [nq][m]
//   out    kept blocks [n][width] of this selection head (row i)
//   transform  0 raw, 1 softmax over the visible representatives of each head, 2 ReLU
extern "C" __global__ void select_rows_radix(const float* L, int G, int nq, int m, int i0,
                                             float scale, int vis_w, int vis_s, int transform,
                                             int block, int n_init, int local, int k, int width,
                                             float* S, u32* out) {
    __shared__ float red[32];
    __shared__ u32 hist[256];
    __shared__ u32 tmp[33];
    __shared__ u32 pick[2];
    int r = blockIdx.x;
    if (r >= nq) return;
    int i = i0 + r;
    int vis = (i + 1 >= vis_w) ? min(m, (i + 1 - vis_w) / vis_s + 1) : 0;
    int tid = threadIdx.x, nt = blockDim.x;
    float* s = S + (i64)r * m;
    for (int j = tid; j < vis; j += nt) s[j] = 0.f;
    __syncthreads();
    for (int h = 0; h < G; h++) {
        const float* row = L + ((i64)h * nq + r) * m;
        if (transform == 1) {
            float mx = NEG_INF;
            for (int j = tid; j < vis; j += nt) mx = fmaxf(mx, row[j] * scale);
            mx = reduce_block(mx, red, true);
            float sum = 0.f;
            for (int j = tid; j < vis; j += nt) sum += expf(row[j] * scale - mx);
            sum = reduce_block(sum, red, false);
            for (int j = tid; j < vis; j += nt) s[j] += expf(row[j] * scale - mx) / sum;
        } else if (transform == 2) {
            for (int j = tid; j < vis; j += nt) s[j] += fmaxf(row[j] * scale, 0.f);
        } else {
            for (int j = tid; j < vis; j += nt) s[j] += row[j] * scale;
        }
        __syncthreads();
    }
    int own = i / block;
    // Candidates and the k-th largest key among them (prefix), with `need` of its ties to keep.
    u32 cand = 0;
    for (int j = tid; j < vis; j += nt) cand += forced_block(j, own, n_init, local) ? 0u : 1u;
    u32 n_cand;
    scan_block(cand, tmp, &n_cand);
    bool take_all = (u32)k >= n_cand;
    u32 prefix = 0, mask = 0, need = (u32)k;
    for (int shift = 24; shift >= 0 && !take_all && k > 0; shift -= 8) {
        for (int t = tid; t < 256; t += nt) hist[t] = 0;
        __syncthreads();
        for (int j = tid; j < vis; j += nt) {
            if (forced_block(j, own, n_init, local)) continue;
            u32 key = total_order_bits(s[j]);
            if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 255u], 1u);
        }
        __syncthreads();
        if (tid == 0) {
            u32 above = 0;
            int dg = 0;
            for (int d = 255; d >= 0; d--) {
                if (above + hist[d] >= need) {
                    dg = d;
                    break;
                }
                above += hist[d];
            }
            pick[0] = (u32)dg;
            pick[1] = need - above;
        }
        __syncthreads();
        prefix |= pick[0] << shift;
        mask |= 255u << shift;
        need = pick[1];
        __syncthreads();
    }
    // Forced blocks first: the first ni, then lo..=own.
    u32* o = out + (i64)i * width;
    int ni = min(n_init, own + 1);
    int lo = max(own - local, ni);
    int n_local = local >= 0 ? max(own - lo + 1, 0) : 0;
    int n_forced = ni + n_local;
    for (int t = tid; t < n_forced && t < width; t += nt) o[t] = (u32)(t < ni ? t : lo + (t - ni));
    // Then the kept candidates in index order.
    u32 taken = 0, ties = 0;
    if (k > 0) {
        for (int base = 0; base < vis; base += nt) {
            int j = base + tid;
            bool c = j < vis && !forced_block(j, own, n_init, local);
            u32 key = c ? total_order_bits(s[j]) : 0u;
            bool gt = c && (take_all || key > prefix);
            bool eq = c && !take_all && key == prefix;
            u32 eq_total, take_total;
            u32 eq_rank = ties + scan_block(eq ? 1u : 0u, tmp, &eq_total);
            bool take = gt || (eq && eq_rank < need);
            u32 pos = taken + scan_block(take ? 1u : 0u, tmp, &take_total);
            if (take && n_forced + (int)pos < width) o[n_forced + pos] = (u32)j;
            ties += eq_total;
            taken += take_total;
        }
    }
    for (int p = n_forced + (int)taken + tid; p < width; p += nt) o[p] = NONE_TOKEN;
}

// q[h, i, c] *= w[h, c] over q [nh][n][d] (f32): per q-head weights of the query dimensions
// before a rule scores them (FASA's dominant dimensions as a 0/1 mask).
extern "C" __global__ void scale_query_dims(float* q, const float* w, int nh, int n, int d) {
    i64 len = (i64)nh * n * d;
    for (i64 t = (i64)blockIdx.x * blockDim.x + threadIdx.x; t < len; t += (i64)blockDim.x * gridDim.x) {
        int c = (int)(t % d);
        int h = (int)(t / ((i64)n * d));
        q[t] *= w[(i64)h * d + c];
    }
}
