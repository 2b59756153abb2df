// Embedding lookup (a row gather) and its backward (a scatter-add). The table and the output
// rows are f32 (suffix _f32) or bf16 (_bf16: e.g. the bf16 copy of the weights feeding bf16
// activations); the gradient dtable is always f32 (it meets the f32 master weights):
//
//   forward:  out[r, :] = table[idx[r], :]                      for r in 0..rows
//   backward: dtable[v, :] (+)= sum over r with idx[r] == v of dout[r, :]
//
// The backward is deterministic without float atomics: the host groups the rows by token
// (a stable counting sort of idx, done once per batch, see kernels::cuda::EmbeddingGroups):
// `order` lists the rows token by token, rows of one token in ascending order; group u covers
// order[starts[u] .. starts[u+1]) and belongs to token uniq[u]. One block owns one token, so
// each row of dtable is written by one block, and it adds the dout rows in ascending row
// order: the same additions, in the same order, as a sequential loop over r.
//
// Work split: block = 256 threads over the columns (thread t: columns t, t+256, ...; a warp
// touches 32 consecutive floats: coalesced).
//   embedding_fwd_*: grid = rows (block r copies row r); an id outside 0..vocab writes zeros.
//   embedding_bwd_*: grid = number of distinct tokens. With accumulate != 0 the sums are
//     added to dtable (e.g. GPT-2's tied token embedding, whose gradient also comes from the
//     unembedding matmul); otherwise they overwrite it. Rows of tokens that do not occur are
//     not touched (the host zeroes dtable first when it is not accumulating).

#define EMB_THREADS 256

template <typename T>
__device__ __forceinline__ void embedding_fwd(const int* __restrict__ idx,
                                              const T* __restrict__ table, T* __restrict__ out,
                                              int vocab, int dim) {
    const int r = blockIdx.x;
    const int id = idx[r];
    const bool ok = (id >= 0 && id < vocab);
    T* o = out + (size_t)r * dim;
    const T* src = table + (size_t)(ok ? id : 0) * dim;
    for (int c = threadIdx.x; c < dim; c += EMB_THREADS) o[c] = ok ? src[c] : from_f32<T>(0.0f);
}

template <typename T>
__device__ __forceinline__ void embedding_bwd(const T* __restrict__ dout,
                                              const int* __restrict__ order,
                                              const int* __restrict__ starts,
                                              const int* __restrict__ uniq,
                                              float* __restrict__ dtable, int dim,
                                              int accumulate) {
    const int u = blockIdx.x;
    const int begin = starts[u], end = starts[u + 1];
    float* dst = dtable + (size_t)uniq[u] * dim;
    for (int c = threadIdx.x; c < dim; c += EMB_THREADS) {
        float acc = accumulate ? dst[c] : 0.0f;
        for (int q = begin; q < end; ++q) acc += to_f32(dout[(size_t)order[q] * dim + c]);
        dst[c] = acc;
    }
}

#define EMBEDDING_ENTRIES(SUF, T)                                                              \
    extern "C" __global__ void __launch_bounds__(EMB_THREADS)                                  \
        embedding_fwd_##SUF(const int* idx, const T* table, T* out, int vocab, int dim) {      \
        embedding_fwd<T>(idx, table, out, vocab, dim);                                         \
    }                                                                                          \
    extern "C" __global__ void __launch_bounds__(EMB_THREADS) embedding_bwd_##SUF(             \
        const T* dout, const int* order, const int* starts, const int* uniq, float* dtable,    \
        int dim, int accumulate) {                                                             \
        embedding_bwd<T>(dout, order, starts, uniq, dtable, dim, accumulate);                  \
    }

EMBEDDING_ENTRIES(f32, float)
EMBEDDING_ENTRIES(bf16, bf16_t)
