// AdamW (torch.optim.AdamW, non-fused, non-amsgrad) and global-norm gradient clipping
// (torch.nn.utils.clip_grad_norm_), on f32 master weights and optimizer state.
//
// adamw_f32, per element, exactly the operations of adamw_ref::<f32> in
// kernels/src/cpu/adamw.rs, in the same order, each rounded once (the __f*_rn intrinsics
// forbid the compiler to fuse a multiply and an add into an FMA, which would round
// differently; sqrt and division are IEEE):
//   p <- p * decay                          decay = 1 - lr * wd            (host, f64 -> f32)
//   m <- b1 * m + (1 - b1) * g
//   v <- b2 * v + (1 - b2) * g * g
//   p <- p - step_size * m / (sqrt(v) / bc2_sqrt + eps)
//                                           step_size = lr / (1 - b1^t), bc2_sqrt = sqrt(1 - b2^t)
// Launch: block = 256, grid = min(ceil(n/256), 4096), grid-stride loop. adamw_f32_bf16_copy
// also writes the new parameters rounded to bf16 (the weight copy the bf16 kernels read).
//
// Clipping, three kernels, deterministic (fixed reduction order, no atomics):
//   1. sumsq_partial_f32 over each gradient tensor: a fixed number G of blocks; block b adds the
//      squares of its grid-stride elements in f64 and writes partials[b]. The host gives each
//      tensor its own G slots of one partials buffer (in parameter order).
//   2. grad_norm_final_f32: one block adds all partials (f64) and writes norm = sqrt(sum) and
//      the factor f = max_norm / (norm + 1e-6) (used only when f < 1, as the engine does).
//   3. clip_scale_f32 over each gradient tensor: g <- g * f if f < 1. The factor is read from
//      device memory, so clipping needs no round trip to the host.

#define OPT_THREADS 256

template <bool COPY>
__device__ __forceinline__ void adamw(float* __restrict__ param, const float* __restrict__ grad,
                                     float* __restrict__ m, float* __restrict__ v,
                                     bf16_t* __restrict__ copy, long long n, float decay,
                                     float b1, float b2, float step_size, float bc2_sqrt,
                                     float eps) {
    const float one_m_b1 = __fsub_rn(1.0f, b1);
    const float one_m_b2 = __fsub_rn(1.0f, b2);
    GRID_STRIDE(i, n) {
        const float g = grad[i];
        float p = __fmul_rn(param[i], decay);
        const float mi = __fadd_rn(__fmul_rn(b1, m[i]), __fmul_rn(one_m_b1, g));
        const float vi = __fadd_rn(__fmul_rn(b2, v[i]), __fmul_rn(__fmul_rn(one_m_b2, g), g));
        const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), bc2_sqrt), eps);
        p = __fsub_rn(p, __fdiv_rn(__fmul_rn(step_size, mi), denom));
        m[i] = mi;
        v[i] = vi;
        param[i] = p;
        if (COPY) copy[i] = f32_to_bf16(p);  // the bf16 weight copy for the next forward
    }
}

extern "C" __global__ void __launch_bounds__(OPT_THREADS)
adamw_f32(float* param, const float* grad, float* m, float* v, long long n, float decay,
          float b1, float b2, float step_size, float bc2_sqrt, float eps) {
    adamw<false>(param, grad, m, v, nullptr, n, decay, b1, b2, step_size, bc2_sqrt, eps);
}

// The same step, also writing the updated parameters rounded to bf16 into `copy` (mixed
// precision: saves a separate f32_to_bf16 pass over the weights).
extern "C" __global__ void __launch_bounds__(OPT_THREADS)
adamw_f32_bf16_copy(float* param, const float* grad, float* m, float* v, bf16_t* copy,
                    long long n, float decay, float b1, float b2, float step_size,
                    float bc2_sqrt, float eps) {
    adamw<true>(param, grad, m, v, copy, n, decay, b1, b2, step_size, bc2_sqrt, eps);
}

extern "C" __global__ void __launch_bounds__(OPT_THREADS)
sumsq_partial_f32(const float* __restrict__ x, long long n, double* __restrict__ partials) {
    __shared__ double sh[WARP];
    double s = 0.0;
    GRID_STRIDE(i, n) {
        const double xi = (double)x[i];
        s += xi * xi;
    }
    s = block_sum_f64(s, sh);
    if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

// Launch: grid = 1, block = 256. out[0] = norm, out[1] = max_norm / (norm + 1e-6).
extern "C" __global__ void __launch_bounds__(OPT_THREADS)
grad_norm_final_f32(const double* __restrict__ partials, int count, double max_norm,
                    double* __restrict__ out) {
    __shared__ double sh[WARP];
    double s = 0.0;
    for (int i = threadIdx.x; i < count; i += OPT_THREADS) s += partials[i];
    s = block_sum_f64(s, sh);
    if (threadIdx.x == 0) {
        const double norm = sqrt(s);
        out[0] = norm;
        out[1] = max_norm / (norm + 1e-6);
    }
}

extern "C" __global__ void __launch_bounds__(OPT_THREADS)
clip_scale_f32(float* __restrict__ g, long long n, const double* __restrict__ norm_factor) {
    const double f = norm_factor[1];
    if (!(f < 1.0)) return;  // the whole grid agrees: nothing to scale
    const float ff = (float)f;
    GRID_STRIDE(i, n) g[i] *= ff;
}
