// Causal scaled dot-product self-attention, flash style (f32): forward and backward. Same
// contract as kernels/src/cpu/attention.rs: q, k, v, out, dout, dq, dk, dv are [BH, T, D]
// contiguous (batch and heads folded into BH), lse is [BH, T]. Per head, with s = 1/sqrt(D):
//
//   S = s * Q K^T, query i sees keys j <= i;  P = softmax_row(S);  O = P V;
//   lse_i = log sum_{j<=i} exp(S_ij)          (saved: the backward rebuilds P from it)
//   backward, given dO:
//   D_i = dO_i . O_i;  dP = dO V^T;  dS = P o (dP - D);  dV = P^T dO;  dQ = s dS K;  dK = s dS^T Q
//
// No T x T matrix is ever stored. The forward walks the keys in tiles of 32 and keeps, per
// query row, the running max m, the running sum l of exp(S - m) and the unnormalised output o
// ("online softmax"): when a tile raises the max to m', the old l and o are rescaled by
// exp(m - m'). At the end O = o / l and lse = m + log l.
//
// Work split (all kernels): D <= 128 (lane l owns output columns l, l+32, l+64, l+96).
//   * attention_fwd_f32: grid = (ceil(T/16), BH), block = 128 threads = 4 warps, dynamic shared
//     memory (16*D + 2*32*(D+1)) floats. The block owns 16 query rows of one head; warp w owns
//     rows 4w..4w+3 of them. Per key tile the 128 threads copy 32 rows of K and V into shared
//     memory; then, for each of its rows, LANE j OF THE WARP SCORES KEY j of the tile (a dot
//     product of length D read from shared memory), the warp combines max and sum with shuffles,
//     and every lane updates its output columns with the 32 probabilities (each broadcast from
//     its lane with __shfl_sync).
//   * attention_bwd_dot_f32: D_i = dO_i . O_i, one warp per row.
//   * attention_bwd_dq_f32: as the forward, 8 query rows per block (2 per warp): lane j
//     recomputes P_ij = exp(s q_i.k_j - lse_i) and dP_ij = dO_i.v_j, and the warp accumulates
//     dQ_i += dS_ij k_j.
//   * attention_bwd_dkdv_f32: the transpose: 8 KEY rows per block (2 per warp), walking the
//     query tiles i >= first key; lane i of the warp handles query i of the tile; the warp
//     accumulates dV_j += P_ij dO_i and dK_j += dS_ij q_i.
// dQ and dK/dV are separate kernels so that every output element is written by exactly one
// thread, in a fixed order: no atomics, bitwise reproducible results.
//
// scripts/cuda-fragment-emulator.py re-runs these kernels' work split and indexing with a warp's
// lanes as vectors (run by scripts/cuda-check-no-gpu.sh): change both together.
//
// Shared rows of the 32-row tiles are padded to D+1 floats: lane j reads row j at column d,
// address j*(D+1) + d, so for even D the 32 lanes hit 32 different banks.

#define WARP 32
// NVRTC has no <math.h>: +infinity from its bit pattern.
#ifndef INFINITY
#define INFINITY __int_as_float(0x7f800000)
#endif
#define FULL_MASK 0xffffffffu
#define ATT_WARPS 4
#define ATT_THREADS (WARP * ATT_WARPS)
#define ATT_BC 32          // keys (or queries) per shared tile: one per lane
#define ATT_FWD_ROWS 4     // query rows per warp, forward
#define ATT_BWD_ROWS 2     // rows per warp, backward kernels
#define ATT_DCOLS 4        // output columns per lane: D <= 32 * ATT_DCOLS = 128

__device__ __forceinline__ float att_warp_sum(float v) {
#pragma unroll
    for (int o = WARP / 2; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}
__device__ __forceinline__ float att_warp_max(float v) {
#pragma unroll
    for (int o = WARP / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}

// Copies rows r0 .. r0+nrows-1 of a [T, D] matrix into shared memory with row stride `stride`;
// rows at or past T become zeros. All threads of the block take part (coalesced: consecutive
// threads copy consecutive floats of a row).
__device__ __forceinline__ void att_load_rows(float* s, int stride, const float* __restrict__ g,
                                              int r0, int nrows, int T, int D) {
    for (int e = threadIdx.x; e < nrows * D; e += ATT_THREADS) {
        const int r = e / D, c = e % D;
        s[r * stride + c] = (r0 + r < T) ? g[(size_t)(r0 + r) * D + c] : 0.0f;
    }
}

// dot(a[0..D), b[0..D)) from shared memory.
__device__ __forceinline__ float att_dot(const float* a, const float* b, int D) {
    float s = 0.0f;
    for (int d = 0; d < D; ++d) s = fmaf(a[d], b[d], s);
    return s;
}

extern "C" __global__ void __launch_bounds__(ATT_THREADS)
attention_fwd_f32(const float* __restrict__ q, const float* __restrict__ k,
                  const float* __restrict__ v, float* __restrict__ out, float* __restrict__ lse,
                  int T, int D, float scale) {
    extern __shared__ float smem[];
    constexpr int BR = ATT_WARPS * ATT_FWD_ROWS;  // 16 query rows per block
    float* Qs = smem;                   // [BR][D]
    float* Ks = Qs + BR * D;            // [32][D+1]
    float* Vs = Ks + ATT_BC * (D + 1);  // [32][D+1]

    const int lane = threadIdx.x % WARP;
    const int warp = threadIdx.x / WARP;
    // Blocks with the last queries have the most keys to visit: launch them first.
    const int q0 = (gridDim.x - 1 - blockIdx.x) * BR;
    const size_t base = (size_t)blockIdx.y * T * D;  // this head's [T, D] matrices
    q += base; k += base; v += base; out += base;
    lse += (size_t)blockIdx.y * T;

    att_load_rows(Qs, D, q, q0, BR, T, D);

    float m[ATT_FWD_ROWS], l[ATT_FWD_ROWS], o[ATT_FWD_ROWS][ATT_DCOLS];
#pragma unroll
    for (int r = 0; r < ATT_FWD_ROWS; ++r) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
#pragma unroll
        for (int c = 0; c < ATT_DCOLS; ++c) o[r][c] = 0.0f;
    }

    const int last_key = min(q0 + BR, T) - 1;  // the block's last query sees keys 0..last_key
    for (int k0 = 0; k0 <= last_key; k0 += ATT_BC) {
        __syncthreads();  // the previous tile is no longer read (and Qs is complete, first time)
        att_load_rows(Ks, D + 1, k, k0, ATT_BC, T, D);
        att_load_rows(Vs, D + 1, v, k0, ATT_BC, T, D);
        __syncthreads();  // the tile is complete before anyone reads it

#pragma unroll
        for (int r = 0; r < ATT_FWD_ROWS; ++r) {
            const int li = warp * ATT_FWD_ROWS + r;  // row within the block
            const int i = q0 + li;                   // query index (same for the whole warp)
            if (i >= T || k0 > i) continue;          // warp-uniform: no divergence in shuffles
            const int j = k0 + lane;                 // this lane's key
            float s = scale * att_dot(Qs + li * D, Ks + lane * (D + 1), D);
            if (j > i) s = -INFINITY;  // causal mask (also covers j >= T, since i < T)
            // Online softmax. The first tile (k0 = 0) contains key 0 <= i, so m_new is finite
            // from then on, and exp(-inf - m_new) = 0 for masked keys.
            const float m_new = fmaxf(m[r], att_warp_max(s));
            const float corr = expf(m[r] - m_new);  // 0 on the first tile (m = -inf)
            const float p = expf(s - m_new);
            l[r] = l[r] * corr + att_warp_sum(p);
            m[r] = m_new;
#pragma unroll
            for (int c = 0; c < ATT_DCOLS; ++c) o[r][c] *= corr;
            const int jn = min(ATT_BC, i - k0 + 1);  // keys of this tile that row i sees
            for (int jj = 0; jj < jn; ++jj) {
                const float pj = __shfl_sync(FULL_MASK, p, jj);
#pragma unroll
                for (int c = 0; c < ATT_DCOLS; ++c) {
                    const int d = lane + c * WARP;
                    if (d < D) o[r][c] = fmaf(pj, Vs[jj * (D + 1) + d], o[r][c]);
                }
            }
        }
    }

#pragma unroll
    for (int r = 0; r < ATT_FWD_ROWS; ++r) {
        const int i = q0 + warp * ATT_FWD_ROWS + r;
        if (i >= T) continue;
        const float inv = 1.0f / l[r];
#pragma unroll
        for (int c = 0; c < ATT_DCOLS; ++c) {
            const int d = lane + c * WARP;
            if (d < D) out[(size_t)i * D + d] = o[r][c] * inv;
        }
        if (lane == 0) lse[i] = m[r] + logf(l[r]);
    }
}

// D_i = dO_i . O_i for every row of [rows, D]. grid = ceil(rows / 4), block = (32, 4).
extern "C" __global__ void __launch_bounds__(ATT_THREADS)
attention_bwd_dot_f32(const float* __restrict__ dout, const float* __restrict__ out,
                      float* __restrict__ dvec, int rows, int D) {
    const int row = blockIdx.x * ATT_WARPS + threadIdx.y;
    if (row >= rows) return;  // whole warp
    float s = 0.0f;
    for (int d = threadIdx.x; d < D; d += WARP)
        s = fmaf(dout[(size_t)row * D + d], out[(size_t)row * D + d], s);
    s = att_warp_sum(s);
    if (threadIdx.x == 0) dvec[row] = s;
}

// dQ. grid = (ceil(T/8), BH), block = 128, dynamic shared (2*8*D + 2*32*(D+1)) floats.
extern "C" __global__ void __launch_bounds__(ATT_THREADS)
attention_bwd_dq_f32(const float* __restrict__ q, const float* __restrict__ k,
                     const float* __restrict__ v, const float* __restrict__ dout,
                     const float* __restrict__ lse, const float* __restrict__ dvec,
                     float* __restrict__ dq, int T, int D, float scale) {
    extern __shared__ float smem[];
    constexpr int BR = ATT_WARPS * ATT_BWD_ROWS;  // 8 query rows per block
    float* Qs = smem;                   // [BR][D]
    float* dOs = Qs + BR * D;           // [BR][D]
    float* Ks = dOs + BR * D;           // [32][D+1]
    float* Vs = Ks + ATT_BC * (D + 1);  // [32][D+1]

    const int lane = threadIdx.x % WARP;
    const int warp = threadIdx.x / WARP;
    const int q0 = (gridDim.x - 1 - blockIdx.x) * BR;
    const size_t base = (size_t)blockIdx.y * T * D;
    q += base; k += base; v += base; dout += base; dq += base;
    lse += (size_t)blockIdx.y * T;
    dvec += (size_t)blockIdx.y * T;

    att_load_rows(Qs, D, q, q0, BR, T, D);
    att_load_rows(dOs, D, dout, q0, BR, T, D);

    float lse_r[ATT_BWD_ROWS], d_r[ATT_BWD_ROWS], acc[ATT_BWD_ROWS][ATT_DCOLS];
#pragma unroll
    for (int r = 0; r < ATT_BWD_ROWS; ++r) {
        const int i = q0 + warp * ATT_BWD_ROWS + r;
        lse_r[r] = (i < T) ? lse[i] : 0.0f;
        d_r[r] = (i < T) ? dvec[i] : 0.0f;
#pragma unroll
        for (int c = 0; c < ATT_DCOLS; ++c) acc[r][c] = 0.0f;
    }

    const int last_key = min(q0 + BR, T) - 1;
    for (int k0 = 0; k0 <= last_key; k0 += ATT_BC) {
        __syncthreads();
        att_load_rows(Ks, D + 1, k, k0, ATT_BC, T, D);
        att_load_rows(Vs, D + 1, v, k0, ATT_BC, T, D);
        __syncthreads();
#pragma unroll
        for (int r = 0; r < ATT_BWD_ROWS; ++r) {
            const int li = warp * ATT_BWD_ROWS + r;
            const int i = q0 + li;
            if (i >= T || k0 > i) continue;  // warp-uniform
            const int j = k0 + lane;
            // Both dot products in one sweep over d: q_i.k_j and dO_i.v_j.
            const float* qi = Qs + li * D;
            const float* doi = dOs + li * D;
            const float* kj = Ks + lane * (D + 1);
            const float* vj = Vs + lane * (D + 1);
            float qk = 0.0f, dov = 0.0f;
            for (int d = 0; d < D; ++d) {
                qk = fmaf(qi[d], kj[d], qk);
                dov = fmaf(doi[d], vj[d], dov);
            }
            const float p = (j <= i) ? expf(scale * qk - lse_r[r]) : 0.0f;
            const float ds = p * (dov - d_r[r]);
            const int jn = min(ATT_BC, i - k0 + 1);
            for (int jj = 0; jj < jn; ++jj) {
                const float dsj = __shfl_sync(FULL_MASK, ds, jj);
#pragma unroll
                for (int c = 0; c < ATT_DCOLS; ++c) {
                    const int d = lane + c * WARP;
                    if (d < D) acc[r][c] = fmaf(dsj, Ks[jj * (D + 1) + d], acc[r][c]);
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < ATT_BWD_ROWS; ++r) {
        const int i = q0 + warp * ATT_BWD_ROWS + r;
        if (i >= T) continue;
#pragma unroll
        for (int c = 0; c < ATT_DCOLS; ++c) {
            const int d = lane + c * WARP;
            if (d < D) dq[(size_t)i * D + d] = scale * acc[r][c];
        }
    }
}

// dK and dV. grid = (ceil(T/8), BH), block = 128, dynamic shared
// (2*8*D + 2*32*(D+1) + 2*32) floats.
extern "C" __global__ void __launch_bounds__(ATT_THREADS)
attention_bwd_dkdv_f32(const float* __restrict__ q, const float* __restrict__ k,
                       const float* __restrict__ v, const float* __restrict__ dout,
                       const float* __restrict__ lse, const float* __restrict__ dvec,
                       float* __restrict__ dk, float* __restrict__ dv, int T, int D,
                       float scale) {
    extern __shared__ float smem[];
    constexpr int BR = ATT_WARPS * ATT_BWD_ROWS;  // 8 key rows per block
    float* Kown = smem;                   // [BR][D]: this block's keys
    float* Vown = Kown + BR * D;          // [BR][D]
    float* Qt = Vown + BR * D;            // [32][D+1]: a tile of queries
    float* dOt = Qt + ATT_BC * (D + 1);   // [32][D+1]
    float* lse_t = dOt + ATT_BC * (D + 1);  // [32]
    float* d_t = lse_t + ATT_BC;          // [32]

    const int lane = threadIdx.x % WARP;
    const int warp = threadIdx.x / WARP;
    const int j0 = blockIdx.x * BR;  // first key of the block (low keys see the most queries)
    const size_t base = (size_t)blockIdx.y * T * D;
    q += base; k += base; v += base; dout += base; dk += base; dv += base;
    lse += (size_t)blockIdx.y * T;
    dvec += (size_t)blockIdx.y * T;

    att_load_rows(Kown, D, k, j0, BR, T, D);
    att_load_rows(Vown, D, v, j0, BR, T, D);

    float ak[ATT_BWD_ROWS][ATT_DCOLS], av[ATT_BWD_ROWS][ATT_DCOLS];
#pragma unroll
    for (int r = 0; r < ATT_BWD_ROWS; ++r)
#pragma unroll
        for (int c = 0; c < ATT_DCOLS; ++c) ak[r][c] = av[r][c] = 0.0f;

    // Query tiles that can see key j0 or later: those with some query >= j0.
    for (int i0 = (j0 / ATT_BC) * ATT_BC; i0 < T; i0 += ATT_BC) {
        __syncthreads();  // previous tile no longer read (and Kown/Vown complete, first time)
        att_load_rows(Qt, D + 1, q, i0, ATT_BC, T, D);
        att_load_rows(dOt, D + 1, dout, i0, ATT_BC, T, D);
        if (threadIdx.x < ATT_BC) {
            const int i = i0 + threadIdx.x;
            lse_t[threadIdx.x] = (i < T) ? lse[i] : 0.0f;
            d_t[threadIdx.x] = (i < T) ? dvec[i] : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int r = 0; r < ATT_BWD_ROWS; ++r) {
            const int lj = warp * ATT_BWD_ROWS + r;
            const int j = j0 + lj;  // this warp's key (same for the whole warp)
            if (j >= T || i0 + ATT_BC - 1 < j) continue;  // warp-uniform: no query sees it
            const int i = i0 + lane;  // this lane's query
            const float* qi = Qt + lane * (D + 1);
            const float* doi = dOt + lane * (D + 1);
            const float* kj = Kown + lj * D;
            const float* vj = Vown + lj * D;
            float qk = 0.0f, dov = 0.0f;  // q_i.k_j and dO_i.v_j, one sweep over d
            for (int d = 0; d < D; ++d) {
                qk = fmaf(qi[d], kj[d], qk);
                dov = fmaf(doi[d], vj[d], dov);
            }
            // Only queries i >= j (and i < T) see key j.
            const float p = (i >= j && i < T) ? expf(scale * qk - lse_t[lane]) : 0.0f;
            const float ds = p * (dov - d_t[lane]);
            // Lanes below j - i0 have p = ds = 0: start the sum at the first query that counts.
            for (int ii = max(0, j - i0); ii < ATT_BC; ++ii) {
                const float pi = __shfl_sync(FULL_MASK, p, ii);
                const float dsi = __shfl_sync(FULL_MASK, ds, ii);
#pragma unroll
                for (int c = 0; c < ATT_DCOLS; ++c) {
                    const int d = lane + c * WARP;
                    if (d < D) {
                        av[r][c] = fmaf(pi, dOt[ii * (D + 1) + d], av[r][c]);
                        ak[r][c] = fmaf(dsi, Qt[ii * (D + 1) + d], ak[r][c]);
                    }
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < ATT_BWD_ROWS; ++r) {
        const int j = j0 + warp * ATT_BWD_ROWS + r;
        if (j >= T) continue;
#pragma unroll
        for (int c = 0; c < ATT_DCOLS; ++c) {
            const int d = lane + c * WARP;
            if (d < D) {
                dk[(size_t)j * D + d] = scale * ak[r][c];
                dv[(size_t)j * D + d] = av[r][c];
            }
        }
    }
}

// =============================================================================================
// bf16 flash attention forward on the tensor cores (sm_80+), head dimension 64.
// =============================================================================================
//
// Same math and layout as attention_fwd_f32, with q, k, v and out in bf16 (raw 16-bit
// patterns) and lse in f32; the scores, the softmax statistics and the output accumulators are
// f32. FlashAttention-2's work split:
//   * GRID: (ceil(T/64), BH); block (x, h) owns the 64 query rows starting at
//     q0 = (gridDim.x - 1 - x) * 64 of head h (the heaviest blocks, with the most keys, first).
//   * BLOCK: 128 threads = 4 warps; warp w owns the 16 query rows q0 + 16w .. q0 + 16w + 15.
//     The block streams the keys in tiles of 64 (K and V tiles, 64 x 64 bf16 each, copied with
//     cp.async into a second shared buffer while the current one is used).
//   * WARP, per key tile: S = Q K^T (16 x 64: 4 k-steps x 8 mma.m16n8k16, Q's fragments kept in
//     registers for the whole kernel, K's read with ldmatrix), then the online softmax on the
//     accumulators, then O += P V (16 x 64: 4 k-steps x 8 mma, V read with ldmatrix.trans).
//     P never leaves the registers: the accumulator fragment of S (lane l holds rows l/4 and
//     l/4 + 8, columns 2(l%4), 2(l%4) + 1 of each 8-column tile) is exactly the A-operand
//     fragment of the next mma once two neighbouring 8-column tiles are packed to bf16.
//   * THREAD: row statistics. A row's 64 scores of the tile live in the 4 lanes of a quad
//     (lanes 4g .. 4g+3), 16 each; the row max is combined over the quad with two shuffles. The
//     row sum l is kept per lane (each lane's share, rescaled with the quad's common max) and
//     added over the quad once, at the end.
// Exponentials are base 2: x = s * (1/sqrt(D)) * log2(e), p = 2^(x - m), and
// lse = m * ln(2) + ln(l). Masking: key j > query i gets x = -inf (keys >= T are > every real
// query; their zero-filled K/V rows contribute p = 0). Query rows >= T are computed on zeros
// and not written.

// scripts/cuda-fragment-emulator.py re-runs the index arithmetic of the bf16 kernels below on
// emulated ldmatrix / mma / cp.async (run by scripts/cuda-check-no-gpu.sh): change both together.

#define FA_BR 64             // query rows per block
#define FA_BC 64             // keys per tile
#define FA_D 64              // head dimension
#define FA_S (FA_D + 8)      // padded shared row (bf16): 144 bytes, conflict-free ldmatrix
#define FA_THREADS 128
#define FA_LN2 0.6931471805599453f

typedef unsigned short bf16_t;

__device__ __forceinline__ unsigned fa_smem(const void* p) {
    return (unsigned)__cvta_generic_to_shared(p);
}
__device__ __forceinline__ void fa_cp_async_16(void* dst, const void* src, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(fa_smem(dst)), "l"(src),
                 "r"(src_bytes));
}
__device__ __forceinline__ void fa_ldmatrix_x4(unsigned (&r)[4], const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(fa_smem(p)));
}
__device__ __forceinline__ void fa_ldmatrix_x4_trans(unsigned (&r)[4], const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(fa_smem(p)));
}
__device__ __forceinline__ void fa_mma(float (&d)[4], const unsigned (&a)[4], unsigned b0,
                                       unsigned b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// Two f32 -> one register of two bf16 (round to nearest even): lo in bits 0..15, hi in 16..31.
// (cvt's first source goes to the upper half.)
__device__ __forceinline__ unsigned fa_pack_bf16(float lo, float hi) {
    unsigned r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

// Copies rows r0 .. r0+63 of a [T, 64] bf16 matrix into shared memory (row stride FA_S) with
// cp.async: 64 rows x 8 chunks of 16 bytes, 4 chunks per thread; rows >= T become zeros.
__device__ __forceinline__ void fa_load_tile(bf16_t* s, const bf16_t* __restrict__ g, int r0,
                                             int T) {
#pragma unroll
    for (int l = 0; l < (FA_BC * FA_D / 8) / FA_THREADS; ++l) {
        const int q = threadIdx.x + l * FA_THREADS;
        const int r = q / (FA_D / 8), c = (q % (FA_D / 8)) * 8;
        const bool ok = r0 + r < T;
        // When !ok nothing is read (src-size 0); g (row 0 of the head) is a safe address.
        fa_cp_async_16(s + r * FA_S + c, ok ? g + (size_t)(r0 + r) * FA_D + c : g, ok ? 16 : 0);
    }
}

extern "C" __global__ void __launch_bounds__(FA_THREADS)
attention_fwd_bf16_d64(const bf16_t* __restrict__ q, const bf16_t* __restrict__ k,
                       const bf16_t* __restrict__ v, bf16_t* __restrict__ out,
                       float* __restrict__ lse, int T, float scale_log2) {
    __shared__ __align__(16) bf16_t Qs[FA_BR * FA_S];
    __shared__ __align__(16) bf16_t Ks[2][FA_BC * FA_S];
    __shared__ __align__(16) bf16_t Vs[2][FA_BC * FA_S];

    const int lane = threadIdx.x % WARP;
    const int warp = threadIdx.x / WARP;
    const int g = lane / 4;    // row within the warp's 16 (and g + 8)
    const int t4 = lane % 4;   // column pair within an 8-column tile
    const int mat = lane / 8;  // ldmatrix: which 8x8 matrix this lane addresses
    const int mrow = lane % 8; // ... and which of its rows
    const int q0 = (gridDim.x - 1 - blockIdx.x) * FA_BR;
    const size_t base = (size_t)blockIdx.y * T * FA_D;
    q += base; k += base; v += base; out += base;
    lse += (size_t)blockIdx.y * T;

    const int row_a = q0 + warp * 16 + g;  // the two query rows this lane holds values of
    const int row_b = row_a + 8;
    const int ntiles = q0 / FA_BC + 1;     // key tiles 0 .. the diagonal one

    fa_load_tile(Qs, q, q0, T);
    fa_load_tile(Ks[0], k, 0, T);
    fa_load_tile(Vs[0], v, 0, T);
    asm volatile("cp.async.commit_group;\n" ::);

    unsigned qf[FA_D / 16][4];  // Q fragments, one per 16-wide step of d
    float o[FA_D / 8][4];       // O accumulators: 8 tiles of 16 x 8
#pragma unroll
    for (int j = 0; j < FA_D / 8; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) o[j][e] = 0.0f;
    float m_a = -INFINITY, m_b = -INFINITY;  // running max of rows a, b (log2 units)
    float l_a = 0.0f, l_b = 0.0f;            // this lane's share of the running sums

    for (int kt = 0; kt < ntiles; ++kt) {
        const int st = kt & 1;
        if (kt + 1 < ntiles) {  // prefetch the next K/V tile into the other buffer
            fa_load_tile(Ks[st ^ 1], k, (kt + 1) * FA_BC, T);
            fa_load_tile(Vs[st ^ 1], v, (kt + 1) * FA_BC, T);
        }
        asm volatile("cp.async.commit_group;\n" ::);
        asm volatile("cp.async.wait_group 1;\n" ::);  // tile kt (and Q) landed, for my copies
        __syncthreads();                                // ... and for everyone's

        if (kt == 0) {
#pragma unroll
            for (int kk = 0; kk < FA_D / 16; ++kk)
                fa_ldmatrix_x4(qf[kk], Qs + (warp * 16 + lane % 16) * FA_S + kk * 16 +
                                           (lane / 16) * 8);
        }

        // S = Q K^T for this warp's 16 rows and the tile's 64 keys.
        float s[FA_BC / 8][4];
#pragma unroll
        for (int j = 0; j < FA_BC / 8; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) s[j][e] = 0.0f;
        const bf16_t* ks = Ks[st];
#pragma unroll
        for (int kk = 0; kk < FA_D / 16; ++kk) {
#pragma unroll
            for (int np = 0; np < FA_BC / 16; ++np) {
                // K stored [key][d] is the "col" B operand: rows = keys, no transpose.
                unsigned r[4];
                fa_ldmatrix_x4(r, ks + (np * 16 + (mat / 2) * 8 + mrow) * FA_S + kk * 16 +
                                      (mat % 2) * 8);
                fa_mma(s[2 * np], qf[kk], r[0], r[1]);
                fa_mma(s[2 * np + 1], qf[kk], r[2], r[3]);
            }
        }

        // Scale to log2 units, mask, and take the tile's row maxima.
        const int k0 = kt * FA_BC;
        float mx_a = -INFINITY, mx_b = -INFINITY;
#pragma unroll
        for (int j = 0; j < FA_BC / 8; ++j) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int key = k0 + j * 8 + 2 * t4 + (e % 2);
                const int row = (e < 2) ? row_a : row_b;
                const float x = (key > row) ? -INFINITY : s[j][e] * scale_log2;
                s[j][e] = x;
                if (e < 2) mx_a = fmaxf(mx_a, x);
                else mx_b = fmaxf(mx_b, x);
            }
        }
        // The quad (4 lanes of one row pair) agrees on the maxima.
        mx_a = fmaxf(mx_a, __shfl_xor_sync(FULL_MASK, mx_a, 1));
        mx_a = fmaxf(mx_a, __shfl_xor_sync(FULL_MASK, mx_a, 2));
        mx_b = fmaxf(mx_b, __shfl_xor_sync(FULL_MASK, mx_b, 1));
        mx_b = fmaxf(mx_b, __shfl_xor_sync(FULL_MASK, mx_b, 2));
        // Tile 0 holds key 0 <= every row, so the new maxima are finite from the first tile on.
        const float mn_a = fmaxf(m_a, mx_a), mn_b = fmaxf(m_b, mx_b);
        const float corr_a = exp2f(m_a - mn_a), corr_b = exp2f(m_b - mn_b);  // 0 at first
        m_a = mn_a;
        m_b = mn_b;
        float sum_a = 0.0f, sum_b = 0.0f;
#pragma unroll
        for (int j = 0; j < FA_BC / 8; ++j) {
            s[j][0] = exp2f(s[j][0] - m_a);
            s[j][1] = exp2f(s[j][1] - m_a);
            s[j][2] = exp2f(s[j][2] - m_b);
            s[j][3] = exp2f(s[j][3] - m_b);
            sum_a += s[j][0] + s[j][1];
            sum_b += s[j][2] + s[j][3];
        }
        l_a = l_a * corr_a + sum_a;
        l_b = l_b * corr_b + sum_b;
#pragma unroll
        for (int j = 0; j < FA_D / 8; ++j) {
            o[j][0] *= corr_a;
            o[j][1] *= corr_a;
            o[j][2] *= corr_b;
            o[j][3] *= corr_b;
        }

        // O += P V. P's A fragment for keys 16kk .. 16kk+15: tiles 2kk and 2kk+1 of s.
        const bf16_t* vs = Vs[st];
#pragma unroll
        for (int kk = 0; kk < FA_BC / 16; ++kk) {
            unsigned pa[4];
            pa[0] = fa_pack_bf16(s[2 * kk][0], s[2 * kk][1]);          // row g,   keys 2t..
            pa[1] = fa_pack_bf16(s[2 * kk][2], s[2 * kk][3]);          // row g+8, keys 2t..
            pa[2] = fa_pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]);  // row g,   keys 8+2t..
            pa[3] = fa_pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3]);  // row g+8, keys 8+2t..
#pragma unroll
            for (int dp = 0; dp < FA_D / 16; ++dp) {
                // V stored [key][d] is a row-major [k][n] B operand: ldmatrix.trans.
                unsigned r[4];
                fa_ldmatrix_x4_trans(r, vs + (kk * 16 + (mat % 2) * 8 + mrow) * FA_S + dp * 16 +
                                            (mat / 2) * 8);
                fa_mma(o[2 * dp], pa, r[0], r[1]);
                fa_mma(o[2 * dp + 1], pa, r[2], r[3]);
            }
        }
        __syncthreads();  // everyone is done with buffer st before it is refilled
    }
    asm volatile("cp.async.wait_group 0;\n" ::);

    // Full row sums over the quad, then O / l and lse.
    l_a += __shfl_xor_sync(FULL_MASK, l_a, 1);
    l_a += __shfl_xor_sync(FULL_MASK, l_a, 2);
    l_b += __shfl_xor_sync(FULL_MASK, l_b, 1);
    l_b += __shfl_xor_sync(FULL_MASK, l_b, 2);
    const float inv_a = 1.0f / l_a, inv_b = 1.0f / l_b;
#pragma unroll
    for (int j = 0; j < FA_D / 8; ++j) {
        const int d = j * 8 + 2 * t4;  // even: the bf16 pair is one aligned 32-bit store
        if (row_a < T)
            *(unsigned*)(out + (size_t)row_a * FA_D + d) =
                fa_pack_bf16(o[j][0] * inv_a, o[j][1] * inv_a);
        if (row_b < T)
            *(unsigned*)(out + (size_t)row_b * FA_D + d) =
                fa_pack_bf16(o[j][2] * inv_b, o[j][3] * inv_b);
    }
    if (t4 == 0) {
        if (row_a < T) lse[row_a] = m_a * FA_LN2 + logf(l_a);
        if (row_b < T) lse[row_b] = m_b * FA_LN2 + logf(l_b);
    }
}

// =============================================================================================
// bf16 flash attention backward on the tensor cores (sm_80+), head dimension 64.
// =============================================================================================
//
// Inputs q, k, v, out, dout in bf16, lse (from attention_fwd_bf16_d64) in f32; outputs dq, dk,
// dv in f32 (gradients are accumulated in f32 by the caller). Same math as the f32 backward:
//   D_i = dO_i . O_i,  P = exp(s QK^T - lse),  dP = dO V^T,  dS = P o (dP - D),
//   dV = P^T dO,  dK = s dS^T Q,  dQ = s dS K.
// Three kernels, as FlashAttention-2 does it but with dQ in its own pass so that nothing needs
// atomics (every output element has one owner, results are reproducible):
//   * attention_bwd_dot_bf16: D_i, one warp per row (as attention_bwd_dot_f32).
//   * attention_bwd_dq_bf16_d64: grid (ceil(T/64), BH), 4 warps x 16 query rows, like the
//     forward: per tile of 64 keys, S = Q K^T and dP = dO V^T (the warp's Q and dO fragments
//     stay in registers), P and dS on the accumulators, then dQ += dS K with dS packed from the
//     accumulators into A fragments and K read with ldmatrix.trans.
//   * attention_bwd_dkdv_bf16_d64: grid (ceil(T/64), BH), 4 warps x 16 KEY rows: the transposed
//     computation. Per tile of 64 queries (from the one holding the block's first key to the
//     last), S^T = K Q^T and dP^T = V dO^T (K and V fragments in registers), then
//     dV += P^T dO and dK += dS^T Q. lse and D of the tile's queries sit in shared memory, since
//     they vary along the accumulator columns here.
// The own rows (Q and dO for dq, K and V for dk/dv) are loaded once through the second shared
// buffer into registers before the double-buffered loop starts using it. Masks: P = 0 where the
// key is after the query, and (dk/dv) where the query is at or past T (its zero-filled row
// would otherwise give exp(0 - 0) = 1).

#define FA_LOG2E 1.4426950408889634f

__device__ __forceinline__ float fa_bf16_f32(bf16_t h) { return __uint_as_float(((unsigned)h) << 16); }

// D_i = dO_i . O_i for bf16 rows of length D. grid = ceil(rows / 4), block = (32, 4).
extern "C" __global__ void __launch_bounds__(ATT_THREADS)
attention_bwd_dot_bf16(const bf16_t* __restrict__ dout, const bf16_t* __restrict__ out,
                       float* __restrict__ dvec, int rows, int D) {
    const int row = blockIdx.x * ATT_WARPS + threadIdx.y;
    if (row >= rows) return;  // whole warp
    float s = 0.0f;
    for (int d = threadIdx.x; d < D; d += WARP)
        s = fmaf(fa_bf16_f32(dout[(size_t)row * D + d]), fa_bf16_f32(out[(size_t)row * D + d]), s);
    s = att_warp_sum(s);
    if (threadIdx.x == 0) dvec[row] = s;
}

// S (or S^T) of one warp: 16 rows of `af` (A fragments, 4 d-steps) against the 64 rows of the
// shared tile `tile` (stored [row][d], the "col" operand: ldmatrix without .trans).
__device__ __forceinline__ void fa_rows_times_tile_t(float (&s)[FA_BC / 8][4],
                                                     const unsigned (&af)[FA_D / 16][4],
                                                     const bf16_t* tile, int mat, int mrow) {
#pragma unroll
    for (int j = 0; j < FA_BC / 8; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[j][e] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < FA_D / 16; ++kk) {
#pragma unroll
        for (int np = 0; np < FA_BC / 16; ++np) {
            unsigned r[4];
            fa_ldmatrix_x4(r, tile + (np * 16 + (mat / 2) * 8 + mrow) * FA_S + kk * 16 +
                                  (mat % 2) * 8);
            fa_mma(s[2 * np], af[kk], r[0], r[1]);
            fa_mma(s[2 * np + 1], af[kk], r[2], r[3]);
        }
    }
}

// acc (16 x 64 over d) += X (16 x 64 over the tile's rows, f32 accumulator fragments, packed
// to bf16 here) times the shared tile (stored [row][d] = row-major [k][n]: ldmatrix.trans).
__device__ __forceinline__ void fa_acc_times_tile(float (&acc)[FA_D / 8][4],
                                                  const float (&x)[FA_BC / 8][4],
                                                  const bf16_t* tile, int mat, int mrow) {
#pragma unroll
    for (int kk = 0; kk < FA_BC / 16; ++kk) {
        unsigned a[4];
        a[0] = fa_pack_bf16(x[2 * kk][0], x[2 * kk][1]);
        a[1] = fa_pack_bf16(x[2 * kk][2], x[2 * kk][3]);
        a[2] = fa_pack_bf16(x[2 * kk + 1][0], x[2 * kk + 1][1]);
        a[3] = fa_pack_bf16(x[2 * kk + 1][2], x[2 * kk + 1][3]);
#pragma unroll
        for (int dp = 0; dp < FA_D / 16; ++dp) {
            unsigned r[4];
            fa_ldmatrix_x4_trans(r, tile + (kk * 16 + (mat % 2) * 8 + mrow) * FA_S + dp * 16 +
                                        (mat / 2) * 8);
            fa_mma(acc[2 * dp], a, r[0], r[1]);
            fa_mma(acc[2 * dp + 1], a, r[2], r[3]);
        }
    }
}

// A fragments (4 d-steps) of the warp's 16 rows of a shared tile stored [row][d].
__device__ __forceinline__ void fa_load_frags(unsigned (&f)[FA_D / 16][4], const bf16_t* tile,
                                              int warp, int lane) {
#pragma unroll
    for (int kk = 0; kk < FA_D / 16; ++kk)
        fa_ldmatrix_x4(f[kk], tile + (warp * 16 + lane % 16) * FA_S + kk * 16 + (lane / 16) * 8);
}

// Writes a warp's 16 x 64 f32 accumulator rows (row_a = its row g, row_b = g + 8) times `mul`.
__device__ __forceinline__ void fa_store_rows(float* __restrict__ dst, const float (&acc)[FA_D / 8][4],
                                             int row_a, int row_b, int T, int t4, float mul) {
#pragma unroll
    for (int j = 0; j < FA_D / 8; ++j) {
        const int d = j * 8 + 2 * t4;  // even: an aligned float2
        if (row_a < T)
            *(float2*)(dst + (size_t)row_a * FA_D + d) = make_float2(mul * acc[j][0], mul * acc[j][1]);
        if (row_b < T)
            *(float2*)(dst + (size_t)row_b * FA_D + d) = make_float2(mul * acc[j][2], mul * acc[j][3]);
    }
}

extern "C" __global__ void __launch_bounds__(FA_THREADS)
attention_bwd_dq_bf16_d64(const bf16_t* __restrict__ q, const bf16_t* __restrict__ k,
                          const bf16_t* __restrict__ v, const bf16_t* __restrict__ dout,
                          const float* __restrict__ lse, const float* __restrict__ dvec,
                          float* __restrict__ dq, int T, float scale_log2, float scale) {
    __shared__ __align__(16) bf16_t Ks[2][FA_BC * FA_S];
    __shared__ __align__(16) bf16_t Vs[2][FA_BC * FA_S];

    const int lane = threadIdx.x % WARP;
    const int warp = threadIdx.x / WARP;
    const int g = lane / 4, t4 = lane % 4, mat = lane / 8, mrow = lane % 8;
    const int q0 = (gridDim.x - 1 - blockIdx.x) * FA_BR;
    const size_t base = (size_t)blockIdx.y * T * FA_D;
    q += base; k += base; v += base; dout += base; dq += base;
    lse += (size_t)blockIdx.y * T;
    dvec += (size_t)blockIdx.y * T;
    const int row_a = q0 + warp * 16 + g, row_b = row_a + 8;
    const int ntiles = q0 / FA_BC + 1;

    // The warp's Q and dO fragments, through buffer 1 (free until the loop's first prefetch).
    fa_load_tile(Ks[1], q, q0, T);
    fa_load_tile(Vs[1], dout, q0, T);
    asm volatile("cp.async.commit_group;\n" ::);
    asm volatile("cp.async.wait_group 0;\n" ::);
    __syncthreads();
    unsigned qf[FA_D / 16][4], df[FA_D / 16][4];
    fa_load_frags(qf, Ks[1], warp, lane);
    fa_load_frags(df, Vs[1], warp, lane);
    __syncthreads();  // all fragments read before buffer 1 is refilled

    const float lse_a = (row_a < T) ? lse[row_a] * FA_LOG2E : 0.0f;
    const float lse_b = (row_b < T) ? lse[row_b] * FA_LOG2E : 0.0f;
    const float d_a = (row_a < T) ? dvec[row_a] : 0.0f;
    const float d_b = (row_b < T) ? dvec[row_b] : 0.0f;
    float acc[FA_D / 8][4];
#pragma unroll
    for (int j = 0; j < FA_D / 8; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[j][e] = 0.0f;

    fa_load_tile(Ks[0], k, 0, T);
    fa_load_tile(Vs[0], v, 0, T);
    asm volatile("cp.async.commit_group;\n" ::);
    for (int kt = 0; kt < ntiles; ++kt) {
        const int st = kt & 1;
        if (kt + 1 < ntiles) {
            fa_load_tile(Ks[st ^ 1], k, (kt + 1) * FA_BC, T);
            fa_load_tile(Vs[st ^ 1], v, (kt + 1) * FA_BC, T);
        }
        asm volatile("cp.async.commit_group;\n" ::);
        asm volatile("cp.async.wait_group 1;\n" ::);
        __syncthreads();

        float s[FA_BC / 8][4], dp[FA_BC / 8][4];
        fa_rows_times_tile_t(s, qf, Ks[st], mat, mrow);   // S  = Q  K^T
        fa_rows_times_tile_t(dp, df, Vs[st], mat, mrow);  // dP = dO V^T
        const int k0 = kt * FA_BC;
#pragma unroll
        for (int j = 0; j < FA_BC / 8; ++j) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int key = k0 + j * 8 + 2 * t4 + (e % 2);
                const int row = (e < 2) ? row_a : row_b;
                const float p =
                    (key > row) ? 0.0f : exp2f(s[j][e] * scale_log2 - ((e < 2) ? lse_a : lse_b));
                s[j][e] = p * (dp[j][e] - ((e < 2) ? d_a : d_b));  // dS
            }
        }
        fa_acc_times_tile(acc, s, Ks[st], mat, mrow);  // dQ += dS K
        __syncthreads();
    }
    asm volatile("cp.async.wait_group 0;\n" ::);
    fa_store_rows(dq, acc, row_a, row_b, T, t4, scale);
}

extern "C" __global__ void __launch_bounds__(FA_THREADS)
attention_bwd_dkdv_bf16_d64(const bf16_t* __restrict__ q, const bf16_t* __restrict__ k,
                            const bf16_t* __restrict__ v, const bf16_t* __restrict__ dout,
                            const float* __restrict__ lse, const float* __restrict__ dvec,
                            float* __restrict__ dk, float* __restrict__ dv, int T,
                            float scale_log2, float scale) {
    __shared__ __align__(16) bf16_t Qs[2][FA_BC * FA_S];
    __shared__ __align__(16) bf16_t dOs[2][FA_BC * FA_S];
    __shared__ float lse_s[2][FA_BC];  // lse * log2(e) of the tile's queries
    __shared__ float d_s[2][FA_BC];    // D of the tile's queries

    const int lane = threadIdx.x % WARP;
    const int warp = threadIdx.x / WARP;
    const int g = lane / 4, t4 = lane % 4, mat = lane / 8, mrow = lane % 8;
    const int key0 = blockIdx.x * FA_BC;  // low keys see the most queries: they come first
    const size_t base = (size_t)blockIdx.y * T * FA_D;
    q += base; k += base; v += base; dout += base; dk += base; dv += base;
    lse += (size_t)blockIdx.y * T;
    dvec += (size_t)blockIdx.y * T;
    const int key_a = key0 + warp * 16 + g, key_b = key_a + 8;

    // The warp's K and V fragments, through buffer 1.
    fa_load_tile(Qs[1], k, key0, T);
    fa_load_tile(dOs[1], v, key0, T);
    asm volatile("cp.async.commit_group;\n" ::);
    asm volatile("cp.async.wait_group 0;\n" ::);
    __syncthreads();
    unsigned kf[FA_D / 16][4], vf[FA_D / 16][4];
    fa_load_frags(kf, Qs[1], warp, lane);
    fa_load_frags(vf, dOs[1], warp, lane);
    __syncthreads();

    // Issue the copies of query tile qt into buffer st (lse and D with plain loads).
    auto load_q = [&](int st, int qt) {
        const int i0 = qt * FA_BC;
        fa_load_tile(Qs[st], q, i0, T);
        fa_load_tile(dOs[st], dout, i0, T);
        if (threadIdx.x < FA_BC) {
            const int i = i0 + threadIdx.x;
            lse_s[st][threadIdx.x] = (i < T) ? lse[i] * FA_LOG2E : 0.0f;
            d_s[st][threadIdx.x] = (i < T) ? dvec[i] : 0.0f;
        }
    };

    float ak[FA_D / 8][4], av[FA_D / 8][4];
#pragma unroll
    for (int j = 0; j < FA_D / 8; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) ak[j][e] = av[j][e] = 0.0f;

    const int qt0 = key0 / FA_BC;  // the tile holding the first key's own query
    const int ntq = (T + FA_BC - 1) / FA_BC;
    load_q(0, qt0);
    asm volatile("cp.async.commit_group;\n" ::);
    for (int qt = qt0; qt < ntq; ++qt) {
        const int st = (qt - qt0) & 1;
        if (qt + 1 < ntq) load_q(st ^ 1, qt + 1);  // buffer st^1 was released by the last sync
        asm volatile("cp.async.commit_group;\n" ::);
        asm volatile("cp.async.wait_group 1;\n" ::);
        __syncthreads();  // tile qt's copies and its lse/D stores are visible to all

        float s[FA_BC / 8][4], dp[FA_BC / 8][4];
        fa_rows_times_tile_t(s, kf, Qs[st], mat, mrow);   // S^T  = K Q^T
        fa_rows_times_tile_t(dp, vf, dOs[st], mat, mrow); // dP^T = V dO^T
        const int i0 = qt * FA_BC;
#pragma unroll
        for (int j = 0; j < FA_BC / 8; ++j) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int col = j * 8 + 2 * t4 + (e % 2);  // query within the tile
                const int qi = i0 + col;
                const int key = (e < 2) ? key_a : key_b;
                const float p = (qi >= key && qi < T)
                                    ? exp2f(s[j][e] * scale_log2 - lse_s[st][col])
                                    : 0.0f;
                s[j][e] = p;                             // P^T
                dp[j][e] = p * (dp[j][e] - d_s[st][col]);  // dS^T
            }
        }
        fa_acc_times_tile(av, s, dOs[st], mat, mrow);  // dV += P^T  dO
        fa_acc_times_tile(ak, dp, Qs[st], mat, mrow);  // dK += dS^T Q
        __syncthreads();
    }
    asm volatile("cp.async.wait_group 0;\n" ::);
    fa_store_rows(dk, ak, key_a, key_b, T, t4, scale);
    fa_store_rows(dv, av, key_a, key_b, T, t4, 1.0f);
}
