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
