// Tensor-core building blocks of the flash kernels (flash.cu, flash_sparse.cu): cp.async tile
// loads, ldmatrix, mma.sync.m16n8k16 (bf16 in, f32 accumulation), the online-softmax step and
// the store of the finished rows. Prepended to those sources after common.cuh.
//
// Fragment layout (PTX m16n8k16): lane = 4 g + t; a thread holds rows g and g + 8 of each 16-row
// m-tile and columns 2 t, 2 t + 1 of each 8-column n-tile.

#define FBN 64
#define LOG2E 1.4426950408889634f
#define LN2 0.6931471805599453f

__device__ __forceinline__ u32 smem_addr(const void* p) {
    u32 a;
    asm volatile("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}

__device__ __forceinline__ void cp_async16(u32 dst, const void* src, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(src_bytes));
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;"); }
template <int N>
__device__ __forceinline__ void cp_wait() {
    asm volatile("cp.async.wait_group %0;" ::"n"(N));
}

__device__ __forceinline__ void ldsm_x4(u32& r0, u32& r1, u32& r2, u32& r3, u32 addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4_t(u32& r0, u32& r1, u32& r2, u32& r3, u32 addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(addr));
}

// c += a (16x16, row) * b (16x8, col), bf16 in, f32 accumulate.
__device__ __forceinline__ void mma16816(float* c, const u32* a, u32 b0, u32 b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// 2^x on the SFU, flushing denormal results to zero (they are below any probability we keep).
__device__ __forceinline__ float ex2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

// Two floats to packed bf16x2 (lo in the low half), round to nearest even.
__device__ __forceinline__ u32 pack_bf16(float lo, float hi) {
    u32 r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

// Rows [k0, k0 + 64) of a [n, D] head into shared memory (row stride LDS); rows >= n are zeros.
template <int D, int LDS, int NT>
__device__ __forceinline__ void load_tile(bf16_t* dst, const bf16_t* src, int k0, int n, int tid) {
    constexpr int CPR = D / 8;  // 16-byte chunks per row
#pragma unroll
    for (int it = 0; it < (FBN * CPR) / NT; it++) {
        int c = tid + it * NT;
        int row = c / CPR, col = (c % CPR) * 8;
        int kr = k0 + row;
        bool valid = kr < n;
        const bf16_t* s = src + (i64)(valid ? kr : 0) * D + col;
        cp_async16(smem_addr(dst + row * LDS + col), s, valid ? 16 : 0);
    }
}

// A fragments of the warp's query rows (rows >= n are zeros).
template <int D, int MT>
__device__ __forceinline__ void load_q(u32 (&qa)[MT][D / 16][4], const bf16_t* qh, int q0, int warp,
                                       int g, int t, int n) {
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
        int r0 = q0 + (warp * MT + mt) * 16 + g, r1 = r0 + 8;
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++) {
            int c = 16 * kk + 2 * t;
            qa[mt][kk][0] = r0 < n ? *(const u32*)(qh + (i64)r0 * D + c) : 0u;
            qa[mt][kk][1] = r1 < n ? *(const u32*)(qh + (i64)r1 * D + c) : 0u;
            qa[mt][kk][2] = r0 < n ? *(const u32*)(qh + (i64)r0 * D + c + 8) : 0u;
            qa[mt][kk][3] = r1 < n ? *(const u32*)(qh + (i64)r1 * D + c + 8) : 0u;
        }
    }
}

// s = Q K^T for the warp's rows and the 64 keys of the tile in shared memory.
// (NJ n-tiles of 8 keys starting at ks.)
template <int D, int MT, int LDS, int NJ>
__device__ __forceinline__ void qk_tile(float (&s)[MT][NJ][4], const u32 (&qa)[MT][D / 16][4],
                                        const bf16_t* ks, int lane) {
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int j = 0; j < NJ; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) s[mt][j][e] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {
#pragma unroll
        for (int jp = 0; jp < NJ / 2; jp++) {
            u32 b0, b1, b2, b3;
            int row = 16 * jp + (lane >> 4) * 8 + (lane & 7);
            int col = 16 * kk + ((lane >> 3) & 1) * 8;
            ldsm_x4(b0, b1, b2, b3, smem_addr(ks + row * LDS + col));
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                mma16816(s[mt][2 * jp], qa[mt][kk], b0, b1);
                mma16816(s[mt][2 * jp + 1], qa[mt][kk], b2, b3);
            }
        }
    }
}

// One key tile of the online softmax for the warp's rows: `s` holds the raw scores of NJ * 8 keys
// (NEG_INF where a pair is left out: causality, a sparse selection). Updates the running max `m`
// (raw scores) and the per-thread partial sums `l`, rescales `o` when a row's max moved, and
// adds P V with the keys' values `vts` (shared memory, row stride LDS).
template <int D, int MT, int LDS, int NJ>
__device__ __forceinline__ void softmax_pv_tile(float (&s)[MT][NJ][4], float (&o)[MT][D / 8][4],
                                                float (&m)[MT][2], float (&l)[MT][2],
                                                const bf16_t* vts, float scale_log2, int lane) {
    float alpha[MT][2];
    bool moved = false;
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
#pragma unroll
        for (int hf = 0; hf < 2; hf++) {
            float mx = NEG_INF;
#pragma unroll
            for (int j = 0; j < NJ; j++)
#pragma unroll
                for (int e = 0; e < 2; e++) mx = fmaxf(mx, s[mt][j][2 * hf + e]);
            mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, 2));
            float mn = fmaxf(m[mt][hf], mx);
            float mref = mn == NEG_INF ? 0.f : mn * scale_log2;
            float a = ex2(fmaf(m[mt][hf], scale_log2, -mref));
            moved |= a != 1.f;
            alpha[mt][hf] = a;
            float sum = 0.f;
#pragma unroll
            for (int j = 0; j < NJ; j++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    float p = ex2(fmaf(s[mt][j][2 * hf + e], scale_log2, -mref));
                    s[mt][j][2 * hf + e] = p;
                    sum += p;
                }
            l[mt][hf] = l[mt][hf] * a + sum;
            m[mt][hf] = mn;
        }
    }
    // Rescale the output only when some row's max moved (rare once a row has seen its sink).
    if (__any_sync(FULL_MASK, moved)) {
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int jd = 0; jd < D / 8; jd++) {
                o[mt][jd][0] *= alpha[mt][0];
                o[mt][jd][1] *= alpha[mt][0];
                o[mt][jd][2] *= alpha[mt][1];
                o[mt][jd][3] *= alpha[mt][1];
            }
    }
#pragma unroll
    for (int kk = 0; kk < NJ / 2; kk++) {
        u32 pa[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
            pa[mt][0] = pack_bf16(s[mt][2 * kk][0], s[mt][2 * kk][1]);
            pa[mt][1] = pack_bf16(s[mt][2 * kk][2], s[mt][2 * kk][3]);
            pa[mt][2] = pack_bf16(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
            pa[mt][3] = pack_bf16(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
        }
#pragma unroll
        for (int jdp = 0; jdp < D / 16; jdp++) {
            u32 b0, b1, b2, b3;
            int row = 16 * kk + ((lane >> 3) & 1) * 8 + (lane & 7);
            int col = 16 * jdp + (lane >> 4) * 8;
            ldsm_x4_t(b0, b1, b2, b3, smem_addr(vts + row * LDS + col));
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                mma16816(o[mt][2 * jdp], pa[mt], b0, b1);
                mma16816(o[mt][2 * jdp + 1], pa[mt], b2, b3);
            }
        }
    }
}

// The warp's finished rows: out = o / l (bf16, token-major; zeros for a row that kept no key) and,
// when lse is given, the natural-log LSE of the scaled scores.
template <int D, int MT>
__device__ __forceinline__ void store_rows(const float (&o)[MT][D / 8][4], const float (&m)[MT][2],
                                           const float (&l)[MT][2], bf16_t* __restrict__ out,
                                           float* __restrict__ lse, int q0, int warp, int lane,
                                           int n, int H, int h, float scale_log2) {
    int g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
#pragma unroll
        for (int hf = 0; hf < 2; hf++) {
            float L = l[mt][hf];
            L += __shfl_xor_sync(FULL_MASK, L, 1);
            L += __shfl_xor_sync(FULL_MASK, L, 2);
            int row = q0 + (warp * MT + mt) * 16 + g + 8 * hf;
            if (row < n) {
                float inv = L > 0.f ? 1.f / L : 0.f;
                bf16_t* orow = out + (i64)row * H * D + (i64)h * D;
#pragma unroll
                for (int jd = 0; jd < D / 8; jd++)
                    *(u32*)(orow + 8 * jd + 2 * t) =
                        pack_bf16(o[mt][jd][2 * hf] * inv, o[mt][jd][2 * hf + 1] * inv);
                if (lse && t == 0)
                    lse[(i64)h * n + row] = (m[mt][hf] * scale_log2 + log2f(L)) * LN2;
            }
        }
    }
}
