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
// Still to come (not here): bf16 inputs on the tensor cores (mma.sync / ldmatrix, sm_80+),
// cp.async double buffering, vectorised float4 loads for the unit-stride cases.
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
