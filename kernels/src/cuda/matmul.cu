// Batched f32 GEMM with arbitrary strides, tiled through shared memory. Same contract as
// gemm_batched_ref in kernels/src/cpu/matmul.rs:
//
//   C[t][i,j] = alpha * sum_p A[t][i,p] * B[t][p,j] + beta * C[t][i,j]
//
// with A[t][i,p] = a[t*sa + i*rsa + p*csa] (likewise B and C). Transposes are only strides:
// A^T is passed as (rsa, csa) = (1, lda). A batch stride of 0 shares one matrix across the
// batch. When beta == 0 the old C is not read (it may hold NaN), as in BLAS.
//
// This is the plain CUDA-core version, the reference the faster ones will be checked against.
// The bf16 tensor-core GEMM (mma.sync / ldmatrix / cp.async, sm_80+) is further down this file.
//
// Work split:
//   * GRID: block (bx, by, bz) computes the TILE_M x TILE_N = 64 x 64 tile of C whose top-left
//     corner is (by*64, bx*64), for batch entry bz. grid = (ceil(n/64), ceil(m/64), batch).
//   * BLOCK: 256 threads, seen as a 16 x 16 grid (tx = threadIdx.x % 16, ty = threadIdx.x / 16).
//     Thread (tx, ty) owns the 4 x 4 outputs at rows ty + 16*i, columns tx + 16*j
//     (i, j = 0..3): 16 accumulators in registers.
//   * K LOOP: the block walks k in steps of TILE_K = 16. Each step all 256 threads copy the
//     64 x 16 slice of A and the 16 x 64 slice of B into shared memory (4 elements of each per
//     thread; elements past the matrix edge are stored as 0 so the inner loop has no bounds
//     checks), __syncthreads(), then every thread does 16 * 16 = 256 FMAs reading only shared
//     memory, and __syncthreads() again before the next slice overwrites the tiles.
//   * WARPS: a warp is two values of ty and all 16 of tx. In the inner loop its 16 tx lanes
//     read 16 consecutive floats of the B tile (distinct banks) and the A value of their row
//     (one address per half-warp: a broadcast), so shared-memory reads do not conflict. When C
//     has unit column stride, the 16 tx lanes also write 16 consecutive floats of C.
//
// Each element of A is read from global memory ceil(n/64) times and each of B ceil(m/64) times
// (instead of n and m times for the naive one-thread-per-output kernel).

#define TILE_M 64
#define TILE_N 64
#define TILE_K 16
#define THREADS 256
#define MICRO 4  // each thread computes MICRO x MICRO outputs
#define LANES_N (TILE_N / MICRO)  // 16 threads across a tile's columns
#define LANES_M (TILE_M / MICRO)  // 16 threads across a tile's rows

extern "C" __global__ void __launch_bounds__(THREADS)
gemm_f32_tiled(int m, int k, int n, float alpha,
               const float* __restrict__ a, long long rsa, long long csa, long long sa,
               const float* __restrict__ b, long long rsb, long long csb, long long sb,
               float beta,
               float* __restrict__ c, long long rsc, long long csc, long long sc) {
    // As[p][i] holds A[row0 + i, k0 + p]: stored k-major so the inner loop reads one row
    // (TILE_M floats) per k step. Bs[p][j] holds B[k0 + p, col0 + j]. The +1 padding: when a
    // copy walks k fastest, 16 consecutive threads store down a column of the tile; with rows of
    // 64 floats they would all hit the same bank (a 16-way conflict), with 65 they spread over
    // 16 banks (at most 2-way).
    __shared__ float As[TILE_K][TILE_M + 1];
    __shared__ float Bs[TILE_K][TILE_N + 1];

    const int t = threadIdx.x;
    const int tx = t % LANES_N;
    const int ty = t / LANES_N;
    const int row0 = blockIdx.y * TILE_M;
    const int col0 = blockIdx.x * TILE_N;
    a += (long long)blockIdx.z * sa;
    b += (long long)blockIdx.z * sb;
    c += (long long)blockIdx.z * sc;

    // Which way to walk the tiles while loading: along the unit-stride axis if there is one,
    // so that consecutive threads read consecutive addresses (coalesced). The test is the same
    // for every thread, so the branch never diverges.
    const bool a_k_contig = (csa == 1);  // A row-major: walk k fastest
    const bool b_n_contig = (csb == 1);  // B row-major: walk n fastest

    float acc[MICRO][MICRO];
#pragma unroll
    for (int i = 0; i < MICRO; ++i)
#pragma unroll
        for (int j = 0; j < MICRO; ++j) acc[i][j] = 0.0f;

    for (int k0 = 0; k0 < k; k0 += TILE_K) {
        // Copy the A slice (TILE_M x TILE_K = 1024 floats, 4 per thread) into shared memory.
#pragma unroll
        for (int l = 0; l < (TILE_M * TILE_K) / THREADS; ++l) {
            const int e = t + l * THREADS;
            const int ii = a_k_contig ? e / TILE_K : e % TILE_M;
            const int pp = a_k_contig ? e % TILE_K : e / TILE_M;
            const int gi = row0 + ii, gp = k0 + pp;
            As[pp][ii] = (gi < m && gp < k) ? a[gi * rsa + gp * csa] : 0.0f;
        }
        // Copy the B slice (TILE_K x TILE_N = 1024 floats, 4 per thread).
#pragma unroll
        for (int l = 0; l < (TILE_K * TILE_N) / THREADS; ++l) {
            const int e = t + l * THREADS;
            const int jj = b_n_contig ? e % TILE_N : e / TILE_K;
            const int pp = b_n_contig ? e / TILE_N : e % TILE_K;
            const int gp = k0 + pp, gj = col0 + jj;
            Bs[pp][jj] = (gp < k && gj < n) ? b[gp * rsb + gj * csb] : 0.0f;
        }
        __syncthreads();  // the tiles are complete before anyone reads them

        // 16 rank-1 updates of this thread's 4 x 4 outputs, from registers: per k step, 4 A
        // values and 4 B values feed 16 FMAs.
#pragma unroll
        for (int p = 0; p < TILE_K; ++p) {
            float av[MICRO], bv[MICRO];
#pragma unroll
            for (int i = 0; i < MICRO; ++i) av[i] = As[p][ty + i * LANES_M];
#pragma unroll
            for (int j = 0; j < MICRO; ++j) bv[j] = Bs[p][tx + j * LANES_N];
#pragma unroll
            for (int i = 0; i < MICRO; ++i)
#pragma unroll
                for (int j = 0; j < MICRO; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
        }
        __syncthreads();  // everyone is done reading before the next slice overwrites
    }

    // Write the 4 x 4 outputs (edge tiles skip what lies outside C).
#pragma unroll
    for (int i = 0; i < MICRO; ++i) {
        const int gi = row0 + ty + i * LANES_M;
        if (gi >= m) continue;
#pragma unroll
        for (int j = 0; j < MICRO; ++j) {
            const int gj = col0 + tx + j * LANES_N;
            if (gj >= n) continue;
            float* dst = c + gi * rsc + gj * csc;
            *dst = (beta == 0.0f) ? alpha * acc[i][j] : alpha * acc[i][j] + beta * *dst;
        }
    }
}

// =============================================================================================
// bf16 GEMM on the tensor cores (sm_80+): mma.sync m16n8k16, ldmatrix, cp.async double buffer.
// =============================================================================================
//
//   C[t][i,j] = alpha * sum_p A[t][i,p] * B[t][p,j] + beta * C[t][i,j]
//
// A and B are bf16 (stored as raw 16-bit patterns: the top half of an f32), the products are
// accumulated in f32 by the tensor cores, C is row-major (leading dimension ldc) and either f32
// or, with c_bf16 != 0, bf16 (the mixed-precision activations; alpha, beta and the old C are
// applied in f32, then the result is rounded to nearest even). The
// operands are dense matrices with one unit-stride axis each; which axis is the entry point's
// choice (the letters say how A and B are STORED, as in BLAS):
//   gemm_bf16_tc_nn: A row-major [m, k] (A[i,p] = a[i*lda + p]),  B row-major [k, n]
//   gemm_bf16_tc_nt: A row-major [m, k],  B stored as [n, k] (B[p,j] = b[j*ldb + p]): C = A·Wᵀ
//   gemm_bf16_tc_tn: A stored as [k, m] (A[i,p] = a[p*lda + i]),  B row-major [k, n]
//   gemm_bf16_tc_tt: both stored transposed.
// Batch t of each matrix starts at t * (sa, sb, sc) elements (0 shares one matrix).
//
// Work split:
//   * GRID: block (bx, by, bz) computes the 128 x 128 tile of C with top-left corner
//     (by*128, bx*128) of batch entry bz. grid = (ceil(n/128), ceil(m/128), batch).
//   * BLOCK: 256 threads = 8 warps in a 2 (along m) x 4 (along n) grid; warp (wm, wn) owns the
//     64 x 32 sub-tile at rows wm*64, columns wn*32 of the block tile: 4 x 4 tensor-core tiles
//     of 16 x 8, i.e. 4*4*4 = 64 f32 accumulators per thread.
//   * K LOOP: k is walked in slices of 32. The block copies the 128 x 32 slice of A and the
//     32 x 128 slice of B into shared memory with cp.async (16-byte asynchronous copies that
//     do not go through registers). TC_STAGES = 3 buffers ("stages"): while the warps multiply
//     slice s out of one buffer, the copies of slices s+1 and s+2 fly into the other two. That
//     is 3 x 20 KiB = 60 KiB of dynamic shared memory, above the default 48 KiB per block: the
//     host raises the kernel's limit (CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES) once.
//   * WARP: per 16-wide k step of a slice, a warp loads its A fragments (4 x ldmatrix.x4) and
//     B fragments (2 x ldmatrix.x4) from shared memory and issues 16 mma.sync.
//   * THREAD: in a 16 x 8 f32 accumulator tile, lane l holds rows l/4 and l/4 + 8, columns
//     2*(l%4) and 2*(l%4) + 1 (PTX ISA, "Matrix Fragments for mma.m16n8k16").
//
// Edge tiles: rows/columns past m, n and k are filled with zeros in shared memory (cp.async's
// src-size operand copies fewer than 16 bytes and zero-fills the rest), so the multiply needs no
// checks; the epilogue writes only elements inside C. cp.async needs 16-byte-aligned global
// addresses, i.e. leading dimensions and batch strides that are multiples of 8 elements and
// 16-byte-aligned base pointers; the host passes vec_ok = 0 otherwise and the tiles are then
// copied element by element through registers (same results, slower).

typedef unsigned short bf16_t;  // raw bf16 bits

// scripts/cuda-fragment-emulator.py re-runs this kernel's index arithmetic on emulated
// ldmatrix / mma / cp.async (run by scripts/cuda-check-no-gpu.sh): change both together.

#define TC_BM 128
#define TC_BN 128
#define TC_BK 32
#define TC_THREADS 256
#define TC_WM 64           // warp tile rows
#define TC_WN 32           // warp tile columns
#define TC_PAD 8           // bf16 of padding per shared row (16 bytes): see below
#define TC_STAGE 5120      // bf16 per stage per operand: max(128 x (32+8), 32 x (128+8))
#define TC_STAGES 3        // pipeline depth; dynamic shared memory = TC_STAGES * 2 * TC_STAGE * 2 B

// Shared-memory rows are padded by 16 bytes: a row of 32 bf16 (64 B) becomes 80 B, a row of
// 128 bf16 (256 B) becomes 272 B. ldmatrix reads 8 rows of 16 bytes at once; with these
// strides the 8 rows start in 8 different groups of 4 banks, so the read has no bank conflict.
// Both strides stay multiples of 16 bytes, as cp.async and ldmatrix require.

// bf16 bits <-> f32 (round to nearest even, by the hardware's cvt).
__device__ __forceinline__ float bf16_bits_f32(bf16_t h) { return __uint_as_float(((unsigned)h) << 16); }
__device__ __forceinline__ bf16_t f32_bf16_bits(float x) {
    unsigned short r;
    asm("cvt.rn.bf16.f32 %0, %1;\n" : "=h"(r) : "f"(x));
    return r;
}

// 32-bit shared-memory address of a generic pointer (what ldmatrix/cp.async take).
__device__ __forceinline__ unsigned smem_addr(const void* p) {
    return (unsigned)__cvta_generic_to_shared(p);
}

// Asynchronous copy of 16 bytes global -> shared; only the first src_bytes (0..16) are read,
// the rest of the 16 bytes are written as zeros.
__device__ __forceinline__ void cp_async_16(void* dst, const void* src, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)),
                 "l"(src), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// Waits until at most N of this thread's committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// Four 8x8 bf16 matrices from shared memory: lanes 8i..8i+7 give the row addresses of matrix i;
// register i of lane l receives row l/4, elements 2(l%4), 2(l%4)+1 of matrix i (with .trans:
// of the transposed matrix).
__device__ __forceinline__ void ldmatrix_x4(unsigned (&r)[4], const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(unsigned (&r)[4], const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}

// d += a * b on one 16x8x16 tile: a = 16x16 bf16 (4 regs), b = 16x8 bf16 (2 regs), d = 16x8 f32.
__device__ __forceinline__ void mma_bf16_16816(float (&d)[4], const unsigned (&a)[4],
                                               unsigned b0, unsigned b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Copies one R x C tile (C = the unit-stride axis in global memory) into shared memory with row
// stride C + TC_PAD. g points at the tile's first element, ld is the global row stride; only
// rows < rvalid and columns < cvalid exist (the rest become 0). The tile is R*C/8 chunks of
// 8 bf16 (16 bytes); thread tid copies chunks tid, tid + 256, ...
template <int R, int C>
__device__ __forceinline__ void tc_load_tile(bf16_t* s, const bf16_t* g, long long ld, int rvalid,
                                             int cvalid, int vec_ok, int tid) {
    constexpr int CHUNKS_PER_ROW = C / 8;
    constexpr int CHUNKS = R * C / 8;
    static_assert(CHUNKS % TC_THREADS == 0, "whole chunks per thread");
#pragma unroll
    for (int l = 0; l < CHUNKS / TC_THREADS; ++l) {
        const int q = tid + l * TC_THREADS;
        const int r = q / CHUNKS_PER_ROW;
        const int c = (q % CHUNKS_PER_ROW) * 8;
        bf16_t* dst = s + r * (C + TC_PAD) + c;
        // How many of the chunk's 8 elements lie inside the matrix (0..8).
        const int valid = (r < rvalid) ? max(0, min(8, cvalid - c)) : 0;
        const bf16_t* src = g + (long long)r * ld + c;
        if (vec_ok) {
            // valid == 0: nothing is read (src-size 0); g is passed as a safe in-bounds address.
            cp_async_16(dst, valid > 0 ? src : g, valid * 2);
        } else {
#pragma unroll
            for (int e = 0; e < 8; ++e) dst[e] = (e < valid) ? src[e] : (bf16_t)0;
        }
    }
}

// A_T: A stored [k, m] (else [m, k]); B_T: B stored [n, k] (else [k, n]).
template <bool A_T, bool B_T>
__device__ __forceinline__ void gemm_bf16_tc(int m, int k, int n, float alpha,
                                             const bf16_t* __restrict__ a, long long lda,
                                             long long sa, const bf16_t* __restrict__ b,
                                             long long ldb, long long sb, float beta,
                                             void* __restrict__ c, long long ldc, long long sc,
                                             int c_bf16, int vec_ok) {
    // Dynamic shared memory: TC_STAGES buffers of A, then TC_STAGES buffers of B.
    extern __shared__ __align__(16) unsigned char tc_smem[];
    bf16_t* const As = (bf16_t*)tc_smem;
    bf16_t* const Bs = As + TC_STAGES * TC_STAGE;
    // Shared strides (bf16) of the two possible orientations of each tile.
    constexpr int S_K = TC_BK + TC_PAD;   // rows indexed by i (or j), k contiguous: 40
    constexpr int S_MN = TC_BM + TC_PAD;  // rows indexed by k, i (or j) contiguous: 136

    const int tid = threadIdx.x;
    const int lane = tid % 32;
    const int warp = tid / 32;
    const int wm = warp / 4;  // 0..1
    const int wn = warp % 4;  // 0..3
    const int row0 = blockIdx.y * TC_BM;
    const int col0 = blockIdx.x * TC_BN;
    a += (long long)blockIdx.z * sa;
    b += (long long)blockIdx.z * sb;
    const long long c_off = (long long)blockIdx.z * sc;  // C's batch offset (elements)

    // Issue the copies of k-slice `kt` into stage `st` (no wait here).
    auto load_stage = [&](int st, int kt) {
        const int k0 = kt * TC_BK;
        if (A_T) {  // tile = rows p (32), columns i (128)
            tc_load_tile<TC_BK, TC_BM>(As + st * TC_STAGE, a + (long long)k0 * lda + row0, lda, k - k0,
                                       m - row0, vec_ok, tid);
        } else {  // tile = rows i (128), columns p (32)
            tc_load_tile<TC_BM, TC_BK>(As + st * TC_STAGE, a + (long long)row0 * lda + k0, lda, m - row0,
                                       k - k0, vec_ok, tid);
        }
        if (B_T) {  // tile = rows j (128), columns p (32)
            tc_load_tile<TC_BN, TC_BK>(Bs + st * TC_STAGE, b + (long long)col0 * ldb + k0, ldb, n - col0,
                                       k - k0, vec_ok, tid);
        } else {  // tile = rows p (32), columns j (128)
            tc_load_tile<TC_BK, TC_BN>(Bs + st * TC_STAGE, b + (long long)k0 * ldb + col0, ldb, k - k0,
                                       n - col0, vec_ok, tid);
        }
    };

    float acc[4][4][4];  // [m16 tile][n8 tile][fragment element]
#pragma unroll
    for (int mi = 0; mi < 4; ++mi)
#pragma unroll
        for (int ni = 0; ni < 4; ++ni)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[mi][ni][e] = 0.0f;

    const int ktiles = (k + TC_BK - 1) / TC_BK;
    // For ldmatrix: lane l addresses row l%8 of matrix l/8 (see ldmatrix_x4).
    const int mat = lane / 8;
    const int mrow = lane % 8;

    // Prologue: start the copies of slices 0 .. TC_STAGES-2, one commit group per slice, so
    // that group g always holds slice g (empty groups past the last slice keep the count).
#pragma unroll
    for (int s = 0; s < TC_STAGES - 1; ++s) {
        if (s < ktiles) load_stage(s, s);
        cp_async_commit();
    }
    for (int kt = 0; kt < ktiles; ++kt) {
        // Groups committed so far: TC_STAGES-1 + kt. Waiting until at most TC_STAGES-2 are in
        // flight means groups 0..kt are done: slice kt has landed (this thread's copies) ...
        cp_async_wait<TC_STAGES - 2>();
        // ... and everyone's. This barrier also means every warp has finished computing slice
        // kt-1, so its buffer can be refilled now.
        __syncthreads();
        const int pf = kt + TC_STAGES - 1;  // the slice to prefetch, into slice kt-1's buffer
        if (pf < ktiles) load_stage(pf % TC_STAGES, pf);
        cp_async_commit();  // always (maybe empty), so that group g holds slice g

        const int st = kt % TC_STAGES;
        const bf16_t* as = As + st * TC_STAGE;
        const bf16_t* bs = Bs + st * TC_STAGE;
#pragma unroll
        for (int kk = 0; kk < TC_BK; kk += 16) {
            // A fragments of the warp's 4 m16 tiles. Matrix order wanted by mma: (rows 0-7,
            // k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15), (rows 8-15, k 8-15).
            unsigned af[4][4];
#pragma unroll
            for (int mi = 0; mi < 4; ++mi) {
                const int i = wm * TC_WM + mi * 16;  // first row of the m16 tile in the block
                if (A_T) {
                    // Shared rows are k: matrix `mat` starts at k + (mat/2)*8, i + (mat%2)*8;
                    // .trans turns the stored [k][i] 8x8 into the [i][k] fragment.
                    ldmatrix_x4_trans(af[mi], as + (kk + (mat / 2) * 8 + mrow) * S_MN + i +
                                                  (mat % 2) * 8);
                } else {
                    // Shared rows are i: lane l gives row i + l%16 at k offset (l/16)*8.
                    ldmatrix_x4(af[mi], as + (i + lane % 16) * S_K + kk + (lane / 16) * 8);
                }
            }
            // B fragments of the warp's 4 n8 tiles, two tiles per ldmatrix.x4. Matrix order:
            // (n 0-7, k 0-7) = b0 of tile 2np, (n 0-7, k 8-15) = b1 of tile 2np, then the same
            // for n 8-15 and tile 2np+1.
            unsigned bfr[4][2];
#pragma unroll
            for (int np = 0; np < 2; ++np) {
                const int j = wn * TC_WN + np * 16;  // first column of the pair in the block
                unsigned r[4];
                if (B_T) {
                    // Shared rows are j (k contiguous): no transpose needed for the "col" operand.
                    ldmatrix_x4(r, bs + (j + (mat / 2) * 8 + mrow) * S_K + kk + (mat % 2) * 8);
                } else {
                    // Shared rows are k (j contiguous): .trans.
                    ldmatrix_x4_trans(r, bs + (kk + (mat % 2) * 8 + mrow) * S_MN + j +
                                             (mat / 2) * 8);
                }
                bfr[2 * np][0] = r[0];
                bfr[2 * np][1] = r[1];
                bfr[2 * np + 1][0] = r[2];
                bfr[2 * np + 1][1] = r[3];
            }
#pragma unroll
            for (int mi = 0; mi < 4; ++mi)
#pragma unroll
                for (int ni = 0; ni < 4; ++ni)
                    mma_bf16_16816(acc[mi][ni], af[mi], bfr[ni][0], bfr[ni][1]);
        }
        // No barrier here: buffer st is refilled only after the __syncthreads at the top of
        // iteration kt+1, which every warp reaches after finishing this slice.
    }
    cp_async_wait<0>();  // nothing may be left in flight when the block exits (only empty
                         // groups remain at this point, but say so explicitly)

    // Epilogue: lane l holds, per 16x8 tile, (row g, cols 2t, 2t+1) and (row g+8, same cols).
    const int g = lane / 4;
    const int t4 = lane % 4;
#pragma unroll
    for (int mi = 0; mi < 4; ++mi) {
#pragma unroll
        for (int ni = 0; ni < 4; ++ni) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int gi = row0 + wm * TC_WM + mi * 16 + g + (e / 2) * 8;
                const int gj = col0 + wn * TC_WN + ni * 8 + 2 * t4 + (e % 2);
                if (gi < m && gj < n) {
                    const long long idx = c_off + (long long)gi * ldc + gj;
                    const float v = alpha * acc[mi][ni][e];
                    if (c_bf16) {
                        bf16_t* dst = (bf16_t*)c + idx;
                        const float old = (beta == 0.0f) ? 0.0f : beta * bf16_bits_f32(*dst);
                        *dst = f32_bf16_bits(v + old);
                    } else {
                        float* dst = (float*)c + idx;
                        *dst = (beta == 0.0f) ? v : v + beta * *dst;
                    }
                }
            }
        }
    }
}

#define GEMM_BF16_ENTRY(NAME, AT, BT)                                                          \
    extern "C" __global__ void __launch_bounds__(TC_THREADS)                                   \
    NAME(int m, int k, int n, float alpha, const bf16_t* __restrict__ a, long long lda,        \
         long long sa, const bf16_t* __restrict__ b, long long ldb, long long sb, float beta, \
         void* __restrict__ c, long long ldc, long long sc, int c_bf16, int vec_ok) {          \
        gemm_bf16_tc<AT, BT>(m, k, n, alpha, a, lda, sa, b, ldb, sb, beta, c, ldc, sc, c_bf16, \
                             vec_ok);                                                          \
    }

GEMM_BF16_ENTRY(gemm_bf16_tc_nn, false, false)
GEMM_BF16_ENTRY(gemm_bf16_tc_nt, false, true)
GEMM_BF16_ENTRY(gemm_bf16_tc_tn, true, false)
GEMM_BF16_ENTRY(gemm_bf16_tc_tt, true, true)
