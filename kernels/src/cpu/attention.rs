//! Causal scaled dot-product self-attention, forward and backward.
//!
//! Shapes: `q, k, v, out, dq, dk, dv` are `[bh, t, d]` contiguous (batch × heads folded into
//! `bh`), `lse` is `[bh, t]`: the log-sum-exp of each query's scaled scores, saved by the
//! forward so the backward can rebuild the softmax without storing the T×T matrix.
//!
//! Math, per head, with s = 1/√d:
//!   S = s·Q·Kᵀ, masked so that query i sees keys j ≤ i;  P = softmax_row(S);  O = P·V;
//!   lse_i = log Σ_{j≤i} exp(S_ij).
//! Backward, with dO given:
//!   dV = Pᵀ·dO;  dP = dO·Vᵀ;  D_i = Σ_j P_ij dP_ij = dO_i·O_i;
//!   dS = P ∘ (dP − D);  dQ = s·dS·K;  dK = s·dSᵀ·Q.
//!
//! The file reads top to bottom: the reference forward and backward (generic, the definition
//! of the math), the tiles and microkernels the fast versions are built from, the fast forward
//! (flash-style online softmax over 64×64 tiles, masked half skipped) and the fast backward
//! (FlashAttention-2 style, P recomputed from lse). The fast versions never allocate anything
//! T×T, run AVX-512 / AVX2+FMA / NEON / scalar (picked by [`crate::simd_level`], AVX-512 where
//! the CPU has it unless `FERROCHAT_NO_AVX512` is set) and are bitwise
//! deterministic for a given input whatever the thread count.

use crate::simd::{simd_level, SimdLevel};
use crate::Float;
use rayon::prelude::*;

#[allow(clippy::too_many_arguments)]
/// Reference forward: materialises one row of scores at a time. O(t²·d) per head.
pub fn causal_attention_fwd_ref<F: Float>(
    q: &[F],
    k: &[F],
    v: &[F],
    bh: usize,
    t: usize,
    d: usize,
    out: &mut [F],
    lse: &mut [F],
) {
    let scale = F::one() / F::from_f64(d as f64).sqrt();
    let mut scores = vec![F::zero(); t];
    for h in 0..bh {
        let base = h * t * d;
        for i in 0..t {
            let qi = &q[base + i * d..base + (i + 1) * d];
            let mut max = F::neg_infinity();
            for (j, s) in scores.iter_mut().enumerate().take(i + 1) {
                let kj = &k[base + j * d..base + (j + 1) * d];
                *s = scale * qi.iter().zip(kj).map(|(&a, &b)| a * b).sum::<F>();
                max = max.max(*s);
            }
            let mut denom = F::zero();
            for s in scores.iter_mut().take(i + 1) {
                *s = (*s - max).exp();
                denom += *s;
            }
            let oi = &mut out[base + i * d..base + (i + 1) * d];
            oi.iter_mut().for_each(|o| *o = F::zero());
            for (j, &p) in scores.iter().enumerate().take(i + 1) {
                let vj = &v[base + j * d..base + (j + 1) * d];
                for (o, &vv) in oi.iter_mut().zip(vj) {
                    *o += p / denom * vv;
                }
            }
            lse[h * t + i] = max + denom.ln();
        }
    }
}

/// Reference backward (see the module doc for the math). Overwrites `dq`, `dk`, `dv`.
#[allow(clippy::too_many_arguments)]
pub fn causal_attention_bwd_ref<F: Float>(
    q: &[F],
    k: &[F],
    v: &[F],
    out: &[F],
    lse: &[F],
    dout: &[F],
    bh: usize,
    t: usize,
    d: usize,
    dq: &mut [F],
    dk: &mut [F],
    dv: &mut [F],
) {
    let scale = F::one() / F::from_f64(d as f64).sqrt();
    dq.iter_mut().for_each(|x| *x = F::zero());
    dk.iter_mut().for_each(|x| *x = F::zero());
    dv.iter_mut().for_each(|x| *x = F::zero());
    let dot = |a: &[F], b: &[F]| a.iter().zip(b).map(|(&x, &y)| x * y).sum::<F>();
    for h in 0..bh {
        let base = h * t * d;
        let row = |x: &[F], i: usize| -> Vec<F> { x[base + i * d..base + (i + 1) * d].to_vec() };
        for i in 0..t {
            let qi = row(q, i);
            let doi = row(dout, i);
            let di = dot(&doi, &row(out, i));
            for j in 0..=i {
                let kj = row(k, j);
                let p = (scale * dot(&qi, &kj) - lse[h * t + i]).exp();
                let dp = dot(&doi, &row(v, j));
                let ds = p * (dp - di);
                for c in 0..d {
                    dv[base + j * d + c] += p * doi[c];
                    dq[base + i * d + c] += scale * ds * kj[c];
                    dk[base + j * d + c] += scale * ds * qi[c];
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tiles and microkernels.
//
// The fast kernels are written once, generic over a tiny SIMD abstraction (`Simd`), and
// instantiated three times: AVX2+FMA (8 lanes), NEON (4 lanes) and scalar (1 "lane"). Every
// generic function below is `#[inline(always)]` so that it is compiled inside the
// `#[target_feature]` entry point that instantiates it, with those instructions enabled.
//
// All the matrix work of attention is small dense GEMMs on tiles that live in L1/L2:
// one register-blocked microkernel (`gemm`, 6×2W accumulators) does all of them, with A
// addressed through (row, column) strides so that transposed operands (Pᵀ, dSᵀ) need no copy.
// ---------------------------------------------------------------------------------------------

/// Query rows per tile (forward and backward).
const BR: usize = 64;
/// Keys per tile. Equal to `BR`, so a query block `qb` sees exactly key blocks `0..=qb`, and
/// every row of a tile has at least one unmasked key in each of those blocks.
const BC: usize = BR;
/// Granule of the query rows a forward tile computes (the last tile may be short): `gemm`
/// works on an even number of rows.
const MR: usize = 2;
/// Padding granule for tile columns (multiple of 2W for every `Simd`: 2, 8, 16, 32).
const PAD: usize = 32;

fn round_up(x: usize, m: usize) -> usize {
    x.div_ceil(m) * m
}

/// A SIMD vector type of `W` f32 lanes. All methods are `unsafe`: the CPU must support the
/// instruction set, and pointers must be valid for `W` f32 reads/writes (unaligned is fine).
trait Simd {
    const W: usize;
    type V: Copy;
    unsafe fn zero() -> Self::V;
    unsafe fn splat(x: f32) -> Self::V;
    unsafe fn load(p: *const f32) -> Self::V;
    unsafe fn store(p: *mut f32, v: Self::V);
    /// a·b + c.
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V;
    /// 2^x per lane, to within a few ulp; exactly 0 for x < −126 (including −∞).
    unsafe fn exp2(x: Self::V) -> Self::V;
    unsafe fn hmax(v: Self::V) -> f32;
    unsafe fn hsum(v: Self::V) -> f32;
}

/// Scalar fallback: one lane, plain f32 arithmetic (no `mul_add`, which is a libm call on
/// CPUs without FMA).
struct Scalar;

impl Simd for Scalar {
    const W: usize = 1;
    type V = f32;
    #[inline(always)]
    unsafe fn zero() -> f32 {
        0.0
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> f32 {
        x
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> f32 {
        // SAFETY: caller guarantees `p` is valid for one read.
        unsafe { *p }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: f32) {
        // SAFETY: caller guarantees `p` is valid for one write.
        unsafe { *p = v }
    }
    #[inline(always)]
    unsafe fn fma(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
    #[inline(always)]
    unsafe fn add(a: f32, b: f32) -> f32 {
        a + b
    }
    #[inline(always)]
    unsafe fn sub(a: f32, b: f32) -> f32 {
        a - b
    }
    #[inline(always)]
    unsafe fn mul(a: f32, b: f32) -> f32 {
        a * b
    }
    #[inline(always)]
    unsafe fn max(a: f32, b: f32) -> f32 {
        a.max(b)
    }
    #[inline(always)]
    unsafe fn exp2(x: f32) -> f32 {
        x.exp2()
    }
    #[inline(always)]
    unsafe fn hmax(v: f32) -> f32 {
        v
    }
    #[inline(always)]
    unsafe fn hsum(v: f32) -> f32 {
        v
    }
}

// The softmax works in base 2: the fast kernels scale queries by s·log2(e), so scores are in
// log2 units and probabilities are 2^(S − m), which is cheaper than e^x (no ln 2 reduction).
// Cephes-style single-precision 2^x for the SIMD paths: 2^x = 2^n · 2^r, n = round(x),
// r = x − n ∈ [−½, ½] (exact), 2^r ≈ 1 + r·P(r) with a degree-5 minimax P (Cephes exp2f).
const EXP2_LO: f32 = -126.0; // below this the result is flushed to 0 (no subnormals).
const EXP2_HI: f32 = 127.0; // keeps n ≤ 127 so 2^n is a normal float.
const LOG2E: f32 = std::f32::consts::LOG2_E;
const EXP2_P: [f32; 6] = [
    1.535_336_2e-4,
    1.339_887_4e-3,
    9.618_437e-3,
    5.550_332_5e-2,
    0.240_226_48,
    std::f32::consts::LN_2, // Cephes' 6.931472028550421e-1 rounds to the same f32
];

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use std::arch::x86_64::*;

    /// AVX2 + FMA: 8 lanes.
    pub(super) struct Avx2;

    impl Simd for Avx2 {
        const W: usize = 8;
        type V = __m256;
        // SAFETY (all methods): the caller guarantees AVX2+FMA are available and that pointers
        // are valid for 8 f32 reads/writes; the intrinsics have no other preconditions.
        #[inline(always)]
        unsafe fn zero() -> __m256 {
            unsafe { _mm256_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> __m256 {
            unsafe { _mm256_set1_ps(x) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m256 {
            unsafe { _mm256_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m256) {
            unsafe { _mm256_storeu_ps(p, v) }
        }
        #[inline(always)]
        unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
            unsafe { _mm256_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        unsafe fn add(a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_add_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn sub(a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_sub_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn mul(a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_mul_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn max(a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_max_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn exp2(x: __m256) -> __m256 {
            unsafe {
                let under = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(EXP2_LO));
                let x = _mm256_min_ps(
                    _mm256_max_ps(x, _mm256_set1_ps(EXP2_LO)),
                    _mm256_set1_ps(EXP2_HI),
                );
                let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x);
                let r = _mm256_sub_ps(x, n);
                let mut y = _mm256_set1_ps(EXP2_P[0]);
                for &c in &EXP2_P[1..] {
                    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(c));
                }
                let y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.0));
                let pow2 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
                    _mm256_cvtps_epi32(n),
                    _mm256_set1_epi32(127),
                )));
                _mm256_andnot_ps(under, _mm256_mul_ps(y, pow2))
            }
        }
        #[inline(always)]
        unsafe fn hmax(v: __m256) -> f32 {
            unsafe {
                let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
                let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
                let m = _mm_max_ss(m, _mm_shuffle_ps::<1>(m, m));
                _mm_cvtss_f32(m)
            }
        }
        #[inline(always)]
        unsafe fn hsum(v: __m256) -> f32 {
            unsafe {
                let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
                let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
                let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
                _mm_cvtss_f32(s)
            }
        }
    }
}

/// AVX-512F: 16 lanes (same algorithm as [`x86::Avx2`], twice the width).
#[cfg(target_arch = "x86_64")]
mod x86_512 {
    use super::*;
    use std::arch::x86_64::*;

    /// AVX-512F: 16 lanes.
    pub(super) struct Avx512;

    impl Simd for Avx512 {
        const W: usize = 16;
        type V = __m512;
        // SAFETY (all methods): the caller guarantees AVX-512F is available and that pointers
        // are valid for 16 f32 reads/writes; the intrinsics have no other preconditions.
        #[inline(always)]
        unsafe fn zero() -> __m512 {
            unsafe { _mm512_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> __m512 {
            unsafe { _mm512_set1_ps(x) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m512 {
            unsafe { _mm512_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m512) {
            unsafe { _mm512_storeu_ps(p, v) }
        }
        #[inline(always)]
        unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
            unsafe { _mm512_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        unsafe fn add(a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_add_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn sub(a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_sub_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn mul(a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_mul_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn max(a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_max_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn exp2(x: __m512) -> __m512 {
            unsafe {
                let under = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_set1_ps(EXP2_LO));
                let x = _mm512_min_ps(
                    _mm512_max_ps(x, _mm512_set1_ps(EXP2_LO)),
                    _mm512_set1_ps(EXP2_HI),
                );
                let n =
                    _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x);
                let r = _mm512_sub_ps(x, n);
                let mut y = _mm512_set1_ps(EXP2_P[0]);
                for &c in &EXP2_P[1..] {
                    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(c));
                }
                let y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.0));
                let pow2 = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(
                    _mm512_cvtps_epi32(n),
                    _mm512_set1_epi32(127),
                )));
                // Lanes below EXP2_LO flush to 0.
                _mm512_maskz_mov_ps(!under, _mm512_mul_ps(y, pow2))
            }
        }
        #[inline(always)]
        unsafe fn hmax(v: __m512) -> f32 {
            unsafe { _mm512_reduce_max_ps(v) }
        }
        #[inline(always)]
        unsafe fn hsum(v: __m512) -> f32 {
            unsafe { _mm512_reduce_add_ps(v) }
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod arm {
    use super::*;
    use std::arch::aarch64::*;

    /// NEON: 4 lanes.
    pub(super) struct Neon;

    impl Simd for Neon {
        const W: usize = 4;
        type V = float32x4_t;
        // SAFETY (all methods): the caller guarantees NEON is available and that pointers are
        // valid for 4 f32 reads/writes; the intrinsics have no other preconditions.
        #[inline(always)]
        unsafe fn zero() -> float32x4_t {
            unsafe { vdupq_n_f32(0.0) }
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> float32x4_t {
            unsafe { vdupq_n_f32(x) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> float32x4_t {
            unsafe { vld1q_f32(p) }
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: float32x4_t) {
            unsafe { vst1q_f32(p, v) }
        }
        #[inline(always)]
        unsafe fn fma(a: float32x4_t, b: float32x4_t, c: float32x4_t) -> float32x4_t {
            // vfmaq_f32(acc, x, y) = acc + x·y.
            unsafe { vfmaq_f32(c, a, b) }
        }
        #[inline(always)]
        unsafe fn add(a: float32x4_t, b: float32x4_t) -> float32x4_t {
            unsafe { vaddq_f32(a, b) }
        }
        #[inline(always)]
        unsafe fn sub(a: float32x4_t, b: float32x4_t) -> float32x4_t {
            unsafe { vsubq_f32(a, b) }
        }
        #[inline(always)]
        unsafe fn mul(a: float32x4_t, b: float32x4_t) -> float32x4_t {
            unsafe { vmulq_f32(a, b) }
        }
        #[inline(always)]
        unsafe fn max(a: float32x4_t, b: float32x4_t) -> float32x4_t {
            unsafe { vmaxq_f32(a, b) }
        }
        #[inline(always)]
        unsafe fn exp2(x: float32x4_t) -> float32x4_t {
            unsafe {
                let under = vcltq_f32(x, vdupq_n_f32(EXP2_LO));
                let x = vminq_f32(vmaxq_f32(x, vdupq_n_f32(EXP2_LO)), vdupq_n_f32(EXP2_HI));
                let n = vrndnq_f32(x);
                let r = vsubq_f32(x, n);
                // vfmaq_f32(acc, x, y) = acc + x·y.
                let mut y = vdupq_n_f32(EXP2_P[0]);
                for &c in &EXP2_P[1..] {
                    y = vfmaq_f32(vdupq_n_f32(c), y, r);
                }
                let y = vfmaq_f32(vdupq_n_f32(1.0), y, r);
                let pow2 = vreinterpretq_f32_s32(vshlq_n_s32::<23>(vaddq_s32(
                    vcvtq_s32_f32(n),
                    vdupq_n_s32(127),
                )));
                vbslq_f32(under, vdupq_n_f32(0.0), vmulq_f32(y, pow2))
            }
        }
        #[inline(always)]
        unsafe fn hmax(v: float32x4_t) -> f32 {
            unsafe { vmaxvq_f32(v) }
        }
        #[inline(always)]
        unsafe fn hsum(v: float32x4_t) -> f32 {
            unsafe { vaddvq_f32(v) }
        }
    }
}

/// Which part of a GEMM a causal (diagonal) tile lets us skip. Rows of A and columns of B
/// are tile-local query/key indices with the same origin, and the skipped products are those
/// whose probability (or dS) is exactly 0 because the key is after the query.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Skip {
    /// Dense: compute everything.
    None,
    /// C = Q·(K-like)ᵀ (rows = queries, columns = keys): row block [i, i+R) only needs columns
    /// < i+R (rounded up to 2W; the softmax overwrites the rest with −∞).
    ColsAfterRows,
    /// C = P·V-like (rows = queries, depth = keys): row block [i, i+R) only needs depth < i+R.
    DepthAfterRows,
    /// C = Pᵀ·dO-like (rows = keys, depth = queries): row block [i, i+R) only needs depth ≥ i.
    DepthBeforeRows,
}

/// C[m×n] = (or +=, if `accumulate`) A[m×k]·B[k×n]. A's element (i, p) is at
/// `a[i·rs_a + p·cs_a]` (so Aᵀ is read by swapping the strides); B and C are row-major with
/// leading dimensions `ldb`, `ldc`. Register blocks of 6 rows × 2W columns (12 accumulators,
/// enough independent FMAs to hide their latency), then 4 or 2 rows for the remainder.
///
/// Panics unless `m` is even, `n % 2W == 0` and every access is in bounds.
///
/// # Safety
/// The CPU must support `S`'s instruction set.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn gemm<S: Simd>(
    a: &[f32],
    rs_a: usize,
    cs_a: usize,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    (m, n, k): (usize, usize, usize),
    accumulate: bool,
    skip: Skip,
) {
    let w = S::W;
    if m == 0 || n == 0 {
        return;
    }
    assert!(m.is_multiple_of(2) && n.is_multiple_of(2 * w));
    assert!((m - 1) * ldc + n <= c.len());
    if k > 0 {
        assert!((m - 1) * rs_a + (k - 1) * cs_a < a.len());
        assert!((k - 1) * ldb + n <= b.len());
    }
    let mut i = 0;
    while i < m {
        let rows = if m - i >= 6 { 6 } else { m - i }; // 6, 4 or 2
        let (mut n_i, mut k_lo, mut k_hi) = (n, 0, k);
        match skip {
            Skip::None => {}
            Skip::ColsAfterRows => n_i = n.min(round_up(i + rows, 2 * w)),
            Skip::DepthAfterRows => k_hi = k.min(i + rows),
            Skip::DepthBeforeRows => k_lo = k.min(i),
        }
        // SAFETY: i + rows ≤ m, n_i ≤ n, k_lo ≤ k_hi ≤ k, so the asserts above bound every
        // access; the CPU supports `S` by this function's contract.
        unsafe {
            let args = (a, rs_a, cs_a, b, ldb, &mut *c, ldc);
            match rows {
                6 => micro::<S, 6>(args, i, n_i, k_lo, k_hi, accumulate),
                4 => micro::<S, 4>(args, i, n_i, k_lo, k_hi, accumulate),
                _ => micro::<S, 2>(args, i, n_i, k_lo, k_hi, accumulate),
            }
        }
        i += rows;
    }
}

type GemmArgs<'a, 'b> = (
    &'a [f32],
    usize,
    usize,
    &'a [f32],
    usize,
    &'b mut [f32],
    usize,
);

/// Rows `i..i+R`, columns `0..n` of [`gemm`], depth `k_lo..k_hi`, in R×2W register blocks.
///
/// # Safety
/// The CPU must support `S`; all accesses must be in bounds (checked by [`gemm`]).
#[inline(always)]
unsafe fn micro<S: Simd, const R: usize>(
    (a, rs_a, cs_a, b, ldb, c, ldc): GemmArgs,
    i: usize,
    n: usize,
    k_lo: usize,
    k_hi: usize,
    accumulate: bool,
) {
    let w = S::W;
    let (ap, bp, cp) = (a.as_ptr(), b.as_ptr(), c.as_mut_ptr());
    for j in (0..n).step_by(2 * w) {
        // SAFETY: in bounds by the caller's contract; the CPU supports `S`.
        unsafe {
            let mut acc = [[S::zero(); 2]; R];
            if accumulate {
                for (r, row) in acc.iter_mut().enumerate() {
                    row[0] = S::load(cp.add((i + r) * ldc + j));
                    row[1] = S::load(cp.add((i + r) * ldc + j + w));
                }
            }
            for p in k_lo..k_hi {
                let b0 = S::load(bp.add(p * ldb + j));
                let b1 = S::load(bp.add(p * ldb + j + w));
                for (r, row) in acc.iter_mut().enumerate() {
                    let av = S::splat(*ap.add((i + r) * rs_a + p * cs_a));
                    row[0] = S::fma(av, b0, row[0]);
                    row[1] = S::fma(av, b1, row[1]);
                }
            }
            for (r, row) in acc.iter().enumerate() {
                S::store(cp.add((i + r) * ldc + j), row[0]);
                S::store(cp.add((i + r) * ldc + j + w), row[1]);
            }
        }
    }
}

/// max of `x` (length a multiple of W, non-empty).
///
/// # Safety
/// The CPU must support `S`'s instruction set.
#[inline(always)]
unsafe fn row_max<S: Simd>(x: &[f32]) -> f32 {
    assert!(!x.is_empty() && x.len().is_multiple_of(S::W));
    // SAFETY: every load reads x[c..c + W] with c + W ≤ x.len().
    unsafe {
        let mut m = S::splat(f32::NEG_INFINITY);
        for c in (0..x.len()).step_by(S::W) {
            m = S::max(m, S::load(x.as_ptr().add(c)));
        }
        S::hmax(m)
    }
}

/// x ← 2^(x − m) in place. Length a multiple of W.
///
/// # Safety
/// The CPU must support `S`'s instruction set.
#[inline(always)]
unsafe fn exp2_sub<S: Simd>(x: &mut [f32], m: f32) {
    assert!(x.len().is_multiple_of(S::W));
    // SAFETY: every access is x[c..c + W] with c + W ≤ x.len().
    unsafe {
        let mv = S::splat(m);
        for c in (0..x.len()).step_by(S::W) {
            let p = x.as_mut_ptr().add(c);
            S::store(p, S::exp2(S::sub(S::load(p), mv)));
        }
    }
}

/// Σ x. Length a multiple of W. A separate pass from [`exp2_sub`]: fused, the polynomial's
/// constants crowd the running sum out of registers and it round-trips through the stack.
///
/// # Safety
/// The CPU must support `S`'s instruction set.
#[inline(always)]
unsafe fn row_sum<S: Simd>(x: &[f32]) -> f32 {
    assert!(x.len().is_multiple_of(S::W));
    // SAFETY: every load reads x[c..c + W] with c + W ≤ x.len().
    unsafe {
        let mut s = S::zero();
        for c in (0..x.len()).step_by(S::W) {
            s = S::add(s, S::load(x.as_ptr().add(c)));
        }
        S::hsum(s)
    }
}

/// x ← a·x. Length a multiple of W.
///
/// # Safety
/// The CPU must support `S`'s instruction set.
#[inline(always)]
unsafe fn scale_row<S: Simd>(x: &mut [f32], a: f32) {
    assert!(x.len().is_multiple_of(S::W));
    // SAFETY: every access is x[c..c + W] with c + W ≤ x.len().
    unsafe {
        let av = S::splat(a);
        for c in (0..x.len()).step_by(S::W) {
            let p = x.as_mut_ptr().add(c);
            S::store(p, S::mul(S::load(p), av));
        }
    }
}

/// dp ← p ∘ (dp − dd) (the softmax backward dS = P∘(dP − D) on one row). Length multiple of W.
///
/// # Safety
/// The CPU must support `S`'s instruction set.
#[inline(always)]
unsafe fn ds_row<S: Simd>(p: &[f32], dp: &mut [f32], dd: f32) {
    assert!(dp.len().is_multiple_of(S::W) && p.len() >= dp.len());
    // SAFETY: every access is at c..c + W with c + W ≤ dp.len() ≤ p.len().
    unsafe {
        let dv = S::splat(dd);
        for c in (0..dp.len()).step_by(S::W) {
            let o = dp.as_mut_ptr().add(c);
            S::store(
                o,
                S::mul(S::load(p.as_ptr().add(c)), S::sub(S::load(o), dv)),
            );
        }
    }
}

/// Packs rows `j0..j0+nk` of a `[t, d]` matrix transposed into `dst[d][BC]`, zero-filling
/// columns `nk..BC` (so padded keys score 0 and are then masked).
fn pack_transposed(src: &[f32], d: usize, j0: usize, nk: usize, dst: &mut [f32]) {
    let dst = &mut dst[..d * BC];
    // Read source rows contiguously; the strided writes land in a 16 KB tile that stays in L1.
    for (jj, row) in src[j0 * d..(j0 + nk) * d].chunks_exact(d).enumerate() {
        for (x, out) in row.iter().zip(dst[jj..].iter_mut().step_by(BC)) {
            *out = *x;
        }
    }
    if nk < BC {
        for drow in dst.chunks_exact_mut(BC) {
            drow[nk..].fill(0.0);
        }
    }
}

/// Packs rows `j0..j0+n` of a `[t, d]` matrix into `dst[rows][dp]` times `alpha`,
/// zero-filling the padding columns `d..dp` and the rows `n..`.
fn pack_rows(src: &[f32], d: usize, dp: usize, j0: usize, n: usize, alpha: f32, dst: &mut [f32]) {
    for (jj, drow) in dst.chunks_exact_mut(dp).enumerate() {
        if jj < n {
            let s = &src[(j0 + jj) * d..(j0 + jj + 1) * d];
            for (x, &y) in drow[..d].iter_mut().zip(s) {
                *x = alpha * y;
            }
            drow[d..].fill(0.0);
        } else {
            drow.fill(0.0);
        }
    }
}

/// Returns `level` if this CPU can run it, else the scalar fallback (so asking for a level
/// explicitly is always safe).
fn usable(level: SimdLevel) -> SimdLevel {
    match level {
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2Fma
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") =>
        {
            SimdLevel::Avx2Fma
        }
        #[cfg(target_arch = "aarch64")]
        SimdLevel::Neon if std::arch::is_aarch64_feature_detected!("neon") => SimdLevel::Neon,
        _ => SimdLevel::Scalar,
    }
}

/// The instantiation the fast kernels run: [`usable`]'s level, with AVX2 upgraded to AVX-512
/// where the CPU has it (unless `FERROCHAT_NO_AVX512` is set, as for the matmul).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    Scalar,
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    Avx2,
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    Avx512,
    #[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
    Neon,
}

fn path(level: SimdLevel) -> Path {
    match usable(level) {
        SimdLevel::Avx2Fma if crate::simd::avx512_usable() => Path::Avx512,
        SimdLevel::Avx2Fma => Path::Avx2,
        SimdLevel::Neon => Path::Neon,
        SimdLevel::Scalar => Path::Scalar,
    }
}

thread_local! {
    /// Per-thread scratch for the per-head packed operands, reused across calls: fresh
    /// multi-hundred-KB allocations each call cost page faults (measurable system time).
    static SCRATCH: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Runs `f` on a zeroed scratch buffer of `len` f32 taken from this thread's cache. Re-entrant
/// (rayon may run another head on this thread while `f` waits): a nested call finds the cache
/// empty and allocates its own buffer.
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut buf = SCRATCH.take();
    buf.clear();
    buf.resize(len, 0.0);
    let r = f(&mut buf);
    SCRATCH.set(buf);
    r
}

// ---------------------------------------------------------------------------------------------
// Fast forward: flash-style. One task = (head, block of BR query rows). Key blocks are visited
// up to the diagonal only; each BR×BC score tile is turned into probabilities with an online
// softmax (running max m, running sum l, accumulator rescaled by 2^(m_old − m_new); scores are
// in log2 units, see EXP2_P). Tasks are independent, so the result does not depend on the
// thread count.
// ---------------------------------------------------------------------------------------------

/// Fast f32 forward (same contract as [`causal_attention_fwd_ref`]), using [`simd_level`].
///
/// Panics if a slice is shorter than its shape (`q, k, v, out`: bh·t·d; `lse`: bh·t).
#[allow(clippy::too_many_arguments)]
pub fn causal_attention_fwd(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    bh: usize,
    t: usize,
    d: usize,
    out: &mut [f32],
    lse: &mut [f32],
) {
    causal_attention_fwd_with(simd_level(), q, k, v, bh, t, d, out, lse)
}

/// [`causal_attention_fwd`] with an explicit instruction set (falls back to scalar if this CPU
/// lacks `level`). For tests and benchmarks.
#[allow(clippy::too_many_arguments)]
pub fn causal_attention_fwd_with(
    level: SimdLevel,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    bh: usize,
    t: usize,
    d: usize,
    out: &mut [f32],
    lse: &mut [f32],
) {
    fwd_impl(path(level), q, k, v, bh, t, d, out, lse)
}

/// The forward on an explicit [`Path`].
#[allow(clippy::too_many_arguments)]
fn fwd_impl(
    level: Path,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    bh: usize,
    t: usize,
    d: usize,
    out: &mut [f32],
    lse: &mut [f32],
) {
    let n = bh * t * d;
    assert!(q.len() >= n && k.len() >= n && v.len() >= n && out.len() >= n);
    assert!(lse.len() >= bh * t);
    if n == 0 {
        return;
    }
    let (dp, tp) = (round_up(d, PAD), round_up(t, BR));
    out[..n]
        .par_chunks_mut(t * d)
        .zip(lse[..bh * t].par_chunks_mut(t))
        .enumerate()
        .for_each(|(h, (out_h, lse_h))| {
            let r = h * t * d..(h + 1) * t * d;
            // Pack K (transposed, per key block) and V (padded) once per head; every query
            // block of the head reads them.
            with_scratch(tp * (d + dp), |buf| {
                let (kt, vp) = buf.split_at_mut(tp * d);
                for (kb, ktb) in kt.chunks_exact_mut(d * BC).enumerate() {
                    pack_transposed(&k[r.clone()], d, kb * BC, BC.min(t - kb * BC), ktb);
                }
                pack_rows(&v[r.clone()], d, dp, 0, t, 1.0, vp);
                let head = FwdHead {
                    q: &q[r],
                    kt,
                    vp,
                    t,
                    d,
                };
                out_h
                    .par_chunks_mut(BR * d)
                    .zip(lse_h.par_chunks_mut(BR))
                    .enumerate()
                    .for_each(|(qb, (o, l))| fwd_block_dispatch(level, &head, qb, o, l));
            })
        });
}

/// One head's forward operands: `q` is `[t, d]`; `kt` is K packed per key block, transposed
/// (`[t/BC][d][BC]`, zero-padded); `vp` is V padded to `[t/BC·BC][dp]`.
struct FwdHead<'a> {
    q: &'a [f32],
    kt: &'a [f32],
    vp: &'a [f32],
    t: usize,
    d: usize,
}

fn fwd_block_dispatch(level: Path, h: &FwdHead, qb: usize, out: &mut [f32], lse: &mut [f32]) {
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `path` returns Avx512 only after detecting AVX-512F.
        Path::Avx512 => unsafe { fwd_block_avx512(h, qb, out, lse) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `usable` returned Avx2Fma only after detecting AVX2 and FMA.
        Path::Avx2 => unsafe { fwd_block_avx2(h, qb, out, lse) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: `usable` returned Neon only after detecting NEON.
        Path::Neon => unsafe { fwd_block_neon(h, qb, out, lse) },
        // SAFETY: the scalar path needs no CPU feature.
        _ => unsafe { fwd_block::<Scalar>(h, qb, out, lse) },
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fwd_block_avx512(h: &FwdHead, qb: usize, out: &mut [f32], lse: &mut [f32]) {
    // SAFETY: this function is only called with AVX-512F available.
    unsafe { fwd_block::<x86_512::Avx512>(h, qb, out, lse) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fwd_block_avx2(h: &FwdHead, qb: usize, out: &mut [f32], lse: &mut [f32]) {
    // SAFETY: this function is only called with AVX2+FMA available.
    unsafe { fwd_block::<x86::Avx2>(h, qb, out, lse) }
}

#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
unsafe fn fwd_block_neon(h: &FwdHead, qb: usize, out: &mut [f32], lse: &mut [f32]) {
    // SAFETY: this function is only called with NEON available.
    unsafe { fwd_block::<arm::Neon>(h, qb, out, lse) }
}

/// One forward task: query rows `qb·BR ..` of one head, writing `out` (`[rows, d]`) and
/// `lse` (`[rows]`).
///
/// # Safety
/// The CPU must support `S`'s instruction set.
#[inline(always)]
unsafe fn fwd_block<S: Simd>(h: &FwdHead, qb: usize, out: &mut [f32], lse: &mut [f32]) {
    let (t, d) = (h.t, h.d);
    let dp = round_up(d, PAD);
    let i0 = qb * BR;
    let rows = lse.len(); // ≤ BR; the last block may be short.
    let mr = round_up(rows, MR); // rows computed (the padding rows are zero queries).
    let scale = 1.0 / (d as f32).sqrt();

    let mut qs = vec![0.0f32; BR * d]; // scaled queries [BR][d]
    let mut s = vec![0.0f32; BR * BC]; // scores, then probabilities [BR][BC]
    let mut o = vec![0.0f32; BR * dp]; // output accumulator [BR][dp]
    let mut m = [f32::NEG_INFINITY; BR];
    let mut l = [0.0f32; BR];
    pack_rows(h.q, d, d, i0, rows, scale * LOG2E, &mut qs); // scores in log2 units

    for kb in 0..=qb {
        let j0 = kb * BC;
        let nk = BC.min(t - j0);
        // Keys this tile needs: j < min(j0 + nk, i0 + rows) (later ones are masked for all rows).
        let nvis = (j0 + nk).min(i0 + rows) - j0;
        let n = round_up(nvis, 2 * S::W).min(BC);
        let kt = &h.kt[kb * d * BC..(kb + 1) * d * BC];
        let vp = &h.vp[j0 * dp..(j0 + BC) * dp];
        // SAFETY (whole block): the CPU supports `S` by this function's contract.
        unsafe {
            let diag = if kb == qb {
                Skip::ColsAfterRows
            } else {
                Skip::None
            };
            gemm::<S>(&qs, d, 1, kt, BC, &mut s, BC, (mr, n, d), false, diag);
        }
        for r in 0..mr {
            let srow = &mut s[r * BC..r * BC + n];
            // Causal mask, only in the diagonal block: key j0 + c is visible iff j0 + c ≤ i0 + r.
            let vis = (i0 + r + 1 - j0).min(n);
            if vis < n {
                srow[vis..].fill(f32::NEG_INFINITY);
            }
            // SAFETY: as above; lengths are multiples of W (n is a multiple of 2W).
            unsafe {
                let m_new = m[r].max(row_max::<S>(srow));
                exp2_sub::<S>(srow, m_new);
                let sum = row_sum::<S>(srow);
                if m_new > m[r] {
                    // The running max moved: rescale l and the accumulator by 2^(m_old − m_new)
                    // (0 on the first block, where m = −∞ and the accumulator is overwritten).
                    let alpha = (m[r] - m_new).exp2();
                    l[r] = l[r] * alpha + sum;
                    m[r] = m_new;
                    if kb > 0 {
                        scale_row::<S>(&mut o[r * dp..(r + 1) * dp], alpha);
                    }
                } else {
                    l[r] += sum;
                }
            }
        }
        // SAFETY: as above.
        unsafe {
            let diag = if kb == qb {
                Skip::DepthAfterRows
            } else {
                Skip::None
            };
            gemm::<S>(&s, BC, 1, vp, dp, &mut o, dp, (mr, dp, n), kb > 0, diag);
        }
    }
    for r in 0..rows {
        let inv = 1.0 / l[r];
        for (x, &y) in out[r * d..(r + 1) * d]
            .iter_mut()
            .zip(&o[r * dp..r * dp + d])
        {
            *x = y * inv;
        }
        lse[r] = (m[r] + l[r].log2()) * std::f32::consts::LN_2; // back to natural log
    }
}

// ---------------------------------------------------------------------------------------------
// Fast backward: FlashAttention-2 style. P tiles are recomputed from q, k and lse; nothing T×T
// is stored. One task = one head (so dq, dk, dv of a head are written by one thread in a fixed
// order: bitwise deterministic), when there are at least as many heads as threads; otherwise
// the split decomposition further down (same bits, more tasks). Inside a head: outer loop over key
// blocks (dK_j, dV_j accumulate in BC×dp tiles), inner loop over the query blocks at
// or below the diagonal (dQ accumulates in a per-head [t, dp] buffer).
// The scale is folded into Q as in the forward (S in log2 units, P = 2^(S − log2e·lse)):
// dK = ln2·dSᵀ·(s·log2e·Q), dQ = s·(dS·K).
// ---------------------------------------------------------------------------------------------

/// Fast f32 backward (same contract as [`causal_attention_bwd_ref`]), using [`simd_level`].
///
/// Parallel over heads when there are at least as many heads as rayon threads, otherwise over
/// key blocks and query blocks (more tasks, ~40% more flops); both give the same bits, and
/// neither allocates anything T×T (extra memory is O(t·d) per head).
///
/// Panics if a slice is shorter than its shape (`q, k, v, out, dout, dq, dk, dv`: bh·t·d;
/// `lse`: bh·t).
#[allow(clippy::too_many_arguments)]
pub fn causal_attention_bwd(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &[f32],
    lse: &[f32],
    dout: &[f32],
    bh: usize,
    t: usize,
    d: usize,
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
) {
    causal_attention_bwd_with(simd_level(), q, k, v, out, lse, dout, bh, t, d, dq, dk, dv)
}

/// [`causal_attention_bwd`] with an explicit instruction set (falls back to scalar if this CPU
/// lacks `level`). For tests and benchmarks.
#[allow(clippy::too_many_arguments)]
pub fn causal_attention_bwd_with(
    level: SimdLevel,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &[f32],
    lse: &[f32],
    dout: &[f32],
    bh: usize,
    t: usize,
    d: usize,
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
) {
    let n = bh * t * d;
    for x in [q, k, v, out, dout] {
        assert!(x.len() >= n);
    }
    assert!(dq.len() >= n && dk.len() >= n && dv.len() >= n && lse.len() >= bh * t);
    if n == 0 {
        return;
    }
    let level = path(level);
    // One task per head when there are enough heads to keep every thread busy; otherwise
    // split heads into key-block and query-block tasks (more parallelism, ~40% more flops).
    // Both give the same bits.
    let split = bh < rayon::current_num_threads();
    bwd_impl(level, split, q, k, v, out, lse, dout, bh, t, d, dq, dk, dv)
}

/// The backward with the parallel decomposition chosen explicitly (`split`: per key block and
/// per query block instead of per head). Callers have checked the slice lengths.
#[allow(clippy::too_many_arguments)]
fn bwd_impl(
    level: Path,
    split: bool,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &[f32],
    lse: &[f32],
    dout: &[f32],
    bh: usize,
    t: usize,
    d: usize,
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
) {
    let n = bh * t * d;
    let td = t * d;
    let head = |h: usize| {
        let r = h * td..(h + 1) * td;
        BwdHead {
            q: &q[r.clone()],
            k: &k[r.clone()],
            v: &v[r.clone()],
            out: &out[r.clone()],
            dout: &dout[r],
            lse: &lse[h * t..(h + 1) * t],
            t,
            d,
        }
    };
    if split {
        return bwd_split(level, bh, &head, &mut dq[..n], &mut dk[..n], &mut dv[..n]);
    }
    dq[..n]
        .par_chunks_mut(td)
        .zip(dk[..n].par_chunks_mut(td))
        .zip(dv[..n].par_chunks_mut(td))
        .enumerate()
        .for_each(|(h, ((dqh, dkh), dvh))| bwd_head_dispatch(level, &head(h), dqh, dkh, dvh));
}

/// One head's inputs to the backward, each `[t, d]` (`lse`: `[t]`).
struct BwdHead<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    out: &'a [f32],
    dout: &'a [f32],
    lse: &'a [f32],
    t: usize,
    d: usize,
}

fn bwd_head_dispatch(level: Path, h: &BwdHead, dq: &mut [f32], dk: &mut [f32], dv: &mut [f32]) {
    let tp = round_up(h.t, BR);
    with_scratch(3 * tp * round_up(h.d, PAD) + 2 * tp, |sc| match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `path` returns Avx512 only after detecting AVX-512F.
        Path::Avx512 => unsafe { bwd_head_avx512(h, sc, dq, dk, dv) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `usable` returned Avx2Fma only after detecting AVX2 and FMA.
        Path::Avx2 => unsafe { bwd_head_avx2(h, sc, dq, dk, dv) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: `usable` returned Neon only after detecting NEON.
        Path::Neon => unsafe { bwd_head_neon(h, sc, dq, dk, dv) },
        // SAFETY: the scalar path needs no CPU feature.
        _ => unsafe { bwd_head::<Scalar>(h, sc, dq, dk, dv) },
    })
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn bwd_head_avx512(
    h: &BwdHead,
    sc: &mut [f32],
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
) {
    // SAFETY: this function is only called with AVX-512F available.
    unsafe { bwd_head::<x86_512::Avx512>(h, sc, dq, dk, dv) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn bwd_head_avx2(
    h: &BwdHead,
    sc: &mut [f32],
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
) {
    // SAFETY: this function is only called with AVX2+FMA available.
    unsafe { bwd_head::<x86::Avx2>(h, sc, dq, dk, dv) }
}

#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
unsafe fn bwd_head_neon(
    h: &BwdHead,
    sc: &mut [f32],
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
) {
    // SAFETY: this function is only called with NEON available.
    unsafe { bwd_head::<arm::Neon>(h, sc, dq, dk, dv) }
}

/// Backward of one head. Writes (overwrites) `dq, dk, dv`, each `[t, d]`.
///
/// # Safety
/// The CPU must support `S`'s instruction set.
#[inline(always)]
unsafe fn bwd_head<S: Simd>(
    h: &BwdHead,
    scratch: &mut [f32],
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
) {
    let (t, d) = (h.t, h.d);
    let dp = round_up(d, PAD);
    let nb = t.div_ceil(BR);
    let tp = nb * BR;
    let scale = 1.0 / (d as f32).sqrt();

    // Per-head packed operands, padded to [tp][dp] with zeros.
    // `scratch` is zeroed, of length 3·tp·dp + 2·tp.
    let (qs, rest) = scratch.split_at_mut(tp * dp); // s·log2(e)·Q
    let (dop, rest) = rest.split_at_mut(tp * dp); // dO
    let (dq_acc, rest) = rest.split_at_mut(tp * dp); // Σ dS·K (times s at the end)
    let (dd, lse) = rest.split_at_mut(tp);
    pack_query_side(h, qs, dop, dd, lse);

    let mut kt = vec![0.0f32; d * BC]; // K_j transposed [d][BC]
    let mut kp = vec![0.0f32; BC * dp]; // K_j [BC][dp]
    let mut vt = vec![0.0f32; d * BC]; // V_j transposed [d][BC]
    let mut dk_acc = vec![0.0f32; BC * dp];
    let mut dv_acc = vec![0.0f32; BC * dp];
    let mut p = vec![0.0f32; BR * BC]; // P tile [BR][BC]
    let mut ds = vec![0.0f32; BR * BC]; // dP, then dS [BR][BC]

    for kb in 0..nb {
        let j0 = kb * BC;
        let nk = BC.min(t - j0);
        pack_transposed(h.k, d, j0, nk, &mut kt);
        pack_transposed(h.v, d, j0, nk, &mut vt);
        pack_rows(h.k, d, dp, j0, nk, 1.0, &mut kp);
        for qb in kb..nb {
            let i0 = qb * BR;
            let (qs_i, do_i) = (&qs[i0 * dp..(i0 + BR) * dp], &dop[i0 * dp..(i0 + BR) * dp]);
            let first = qb == kb;
            // On the diagonal tile, skip the products that the mask makes exactly zero.
            let sk = |x: Skip| if first { x } else { Skip::None };
            // SAFETY (whole block): the CPU supports `S` by this function's contract; all tile
            // lengths are multiples of 2W.
            unsafe {
                let rows = i0..i0 + BR;
                p_ds_tile::<S>(
                    qs_i,
                    do_i,
                    &kt,
                    &vt,
                    &lse[rows.clone()],
                    &dd[rows],
                    d,
                    first,
                    &mut p,
                    &mut ds,
                );
                // dV_j += Pᵀ·dO_i.
                gemm::<S>(
                    &p,
                    1,
                    BC,
                    do_i,
                    dp,
                    &mut dv_acc,
                    dp,
                    (BC, dp, BR),
                    !first,
                    sk(Skip::DepthBeforeRows),
                );
                // dQ_i += dS·K_j (scaled by s at the end); dK_j += dSᵀ·(s·Q_i).
                gemm::<S>(
                    &ds,
                    BC,
                    1,
                    &kp,
                    dp,
                    &mut dq_acc[i0 * dp..(i0 + BR) * dp],
                    dp,
                    (BR, dp, BC),
                    true,
                    sk(Skip::DepthAfterRows),
                );
                gemm::<S>(
                    &ds,
                    1,
                    BC,
                    qs_i,
                    dp,
                    &mut dk_acc,
                    dp,
                    (BC, dp, BR),
                    !first,
                    sk(Skip::DepthBeforeRows),
                );
            }
        }
        for jj in 0..nk {
            let j = j0 + jj;
            // dk_acc = dSᵀ·(s·log2(e)·Q): times ln 2 gives dSᵀ·(s·Q).
            for (x, &y) in dk[j * d..(j + 1) * d].iter_mut().zip(&dk_acc[jj * dp..]) {
                *x = y * std::f32::consts::LN_2;
            }
            dv[j * d..(j + 1) * d].copy_from_slice(&dv_acc[jj * dp..jj * dp + d]);
        }
    }
    for i in 0..t {
        for (x, &y) in dq[i * d..(i + 1) * d]
            .iter_mut()
            .zip(&dq_acc[i * dp..i * dp + d])
        {
            *x = scale * y;
        }
    }
}

/// Packs the query-side operands of one head into zeroed `[tp][dp]` / `[tp]` buffers:
/// `qs` = s·log2(e)·Q (scores in log2 units), `dop` = dO, `dd` = D_i = dO_i·O_i and
/// `lse` = log2(e)·lse. Padded rows stay 0, which keeps them inert (dO = 0 ⇒ no contribution).
fn pack_query_side(h: &BwdHead, qs: &mut [f32], dop: &mut [f32], dd: &mut [f32], lse: &mut [f32]) {
    let (t, d) = (h.t, h.d);
    let dp = round_up(d, PAD);
    pack_rows(h.q, d, dp, 0, t, LOG2E / (d as f32).sqrt(), qs);
    pack_rows(h.dout, d, dp, 0, t, 1.0, dop);
    for i in 0..t {
        let (o, g) = (&h.out[i * d..(i + 1) * d], &h.dout[i * d..(i + 1) * d]);
        dd[i] = o.iter().zip(g).map(|(&x, &y)| x * y).sum();
        lse[i] = h.lse[i] * LOG2E;
    }
}

/// The P and dS tiles for query block `qs_i, do_i` (`[BR][dp]`) and key block `kt, vt`
/// (`[d][BC]`): S = (s·log2e·Q_i)·K_jᵀ, P = 2^(S − log2e·lse_i) masked above the diagonal when
/// `first` (the diagonal tile), dP = dO_i·V_jᵀ, dS = P∘(dP − D). Shared by both backward
/// decompositions so that they produce the same bits.
///
/// # Safety
/// The CPU must support `S`'s instruction set.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn p_ds_tile<S: Simd>(
    qs_i: &[f32],
    do_i: &[f32],
    kt: &[f32],
    vt: &[f32],
    lse_i: &[f32],
    dd_i: &[f32],
    d: usize,
    first: bool,
    p: &mut [f32],
    ds: &mut [f32],
) {
    let dp = round_up(d, PAD);
    let skip = if first {
        Skip::ColsAfterRows
    } else {
        Skip::None
    };
    // SAFETY (whole block): the CPU supports `S` by this function's contract; tile lengths are
    // multiples of 2W.
    unsafe {
        gemm::<S>(qs_i, dp, 1, kt, BC, p, BC, (BR, BC, d), false, skip);
        for r in 0..BR {
            let row = &mut p[r * BC..(r + 1) * BC];
            if first {
                row[r + 1..].fill(f32::NEG_INFINITY);
            }
            exp2_sub::<S>(row, lse_i[r]);
        }
        gemm::<S>(do_i, dp, 1, vt, BC, ds, BC, (BR, BC, d), false, skip);
        for r in 0..BR {
            ds_row::<S>(
                &p[r * BC..(r + 1) * BC],
                &mut ds[r * BC..(r + 1) * BC],
                dd_i[r],
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Backward, split decomposition (used when there are fewer heads than threads). Pass 1: one
// task per (head, key block) computes dK_j, dV_j over the query blocks i ≥ j. Pass 2: one task
// per (head, query block) computes dQ_i over the key blocks j ≤ i. P and dS are computed twice
// (7 tile GEMMs instead of 5), but every output is still written by one task in a fixed order,
// with the same operations as the per-head path: identical bits.
// ---------------------------------------------------------------------------------------------

/// One head's backward operands, all packed (zero-padded): the query side as in
/// [`pack_query_side`], K and V transposed per key block (`[nb][d][BC]`) and K padded
/// (`[tp][dp]`).
struct BwdPacked {
    t: usize,
    d: usize,
    qs: Vec<f32>,
    dop: Vec<f32>,
    dd: Vec<f32>,
    lse: Vec<f32>,
    kt: Vec<f32>,
    vt: Vec<f32>,
    kp: Vec<f32>,
}

impl BwdPacked {
    fn new(h: &BwdHead) -> Self {
        let (t, d) = (h.t, h.d);
        let (dp, tp) = (round_up(d, PAD), round_up(t, BR));
        let mut pk = BwdPacked {
            t,
            d,
            qs: vec![0.0; tp * dp],
            dop: vec![0.0; tp * dp],
            dd: vec![0.0; tp],
            lse: vec![0.0; tp],
            kt: vec![0.0; tp * d],
            vt: vec![0.0; tp * d],
            kp: vec![0.0; tp * dp],
        };
        pack_query_side(h, &mut pk.qs, &mut pk.dop, &mut pk.dd, &mut pk.lse);
        for (kb, (ktb, vtb)) in pk
            .kt
            .chunks_exact_mut(d * BC)
            .zip(pk.vt.chunks_exact_mut(d * BC))
            .enumerate()
        {
            let nk = BC.min(t - kb * BC);
            pack_transposed(h.k, d, kb * BC, nk, ktb);
            pack_transposed(h.v, d, kb * BC, nk, vtb);
        }
        pack_rows(h.k, d, dp, 0, t, 1.0, &mut pk.kp);
        pk
    }
}

/// A task of the split backward: the rows of `dk`, `dv` (key block `kb`) or `dq` (query block
/// `qb`) of one head, each `[rows ≤ BR][d]`.
enum BwdTask<'a> {
    KeyBlock {
        kb: usize,
        dk: &'a mut [f32],
        dv: &'a mut [f32],
    },
    QueryBlock {
        qb: usize,
        dq: &'a mut [f32],
    },
}

fn bwd_split<'a>(
    level: Path,
    bh: usize,
    head: &(dyn Fn(usize) -> BwdHead<'a> + Sync),
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
) {
    let packed: Vec<BwdPacked> = (0..bh)
        .into_par_iter()
        .map(|h| BwdPacked::new(&head(h)))
        .collect();
    let td = dq.len() / bh;
    let d = packed[0].d;
    dk.par_chunks_mut(td)
        .zip(dv.par_chunks_mut(td))
        .zip(&packed)
        .for_each(|((dkh, dvh), pk)| {
            dkh.par_chunks_mut(BC * d)
                .zip(dvh.par_chunks_mut(BC * d))
                .enumerate()
                .for_each(|(kb, (dk, dv))| {
                    bwd_task_dispatch(level, pk, BwdTask::KeyBlock { kb, dk, dv })
                })
        });
    dq.par_chunks_mut(td).zip(&packed).for_each(|(dqh, pk)| {
        dqh.par_chunks_mut(BR * d)
            .enumerate()
            .for_each(|(qb, dq)| bwd_task_dispatch(level, pk, BwdTask::QueryBlock { qb, dq }))
    });
}

fn bwd_task_dispatch(level: Path, pk: &BwdPacked, task: BwdTask) {
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `path` returns Avx512 only after detecting AVX-512F.
        Path::Avx512 => unsafe { bwd_task_avx512(pk, task) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `usable` returned Avx2Fma only after detecting AVX2 and FMA.
        Path::Avx2 => unsafe { bwd_task_avx2(pk, task) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: `usable` returned Neon only after detecting NEON.
        Path::Neon => unsafe { bwd_task_neon(pk, task) },
        // SAFETY: the scalar path needs no CPU feature.
        _ => unsafe { bwd_task::<Scalar>(pk, task) },
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn bwd_task_avx512(pk: &BwdPacked, task: BwdTask) {
    // SAFETY: this function is only called with AVX-512F available.
    unsafe { bwd_task::<x86_512::Avx512>(pk, task) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn bwd_task_avx2(pk: &BwdPacked, task: BwdTask) {
    // SAFETY: this function is only called with AVX2+FMA available.
    unsafe { bwd_task::<x86::Avx2>(pk, task) }
}

#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
unsafe fn bwd_task_neon(pk: &BwdPacked, task: BwdTask) {
    // SAFETY: this function is only called with NEON available.
    unsafe { bwd_task::<arm::Neon>(pk, task) }
}

/// Runs one split-backward task (see [`BwdTask`]).
///
/// # Safety
/// The CPU must support `S`'s instruction set.
#[inline(always)]
unsafe fn bwd_task<S: Simd>(pk: &BwdPacked, task: BwdTask) {
    let (t, d) = (pk.t, pk.d);
    let dp = round_up(d, PAD);
    let nb = t.div_ceil(BR);
    let mut p = vec![0.0f32; BR * BC];
    let mut ds = vec![0.0f32; BR * BC];
    let q_side = |qb: usize| {
        let r = qb * BR * dp..(qb + 1) * BR * dp;
        let rows = qb * BR..(qb + 1) * BR;
        (
            &pk.qs[r.clone()],
            &pk.dop[r],
            &pk.lse[rows.clone()],
            &pk.dd[rows],
        )
    };
    let kv_side = |kb: usize| {
        let r = kb * d * BC..(kb + 1) * d * BC;
        (&pk.kt[r.clone()], &pk.vt[r])
    };
    match task {
        BwdTask::KeyBlock { kb, dk, dv } => {
            let mut dk_acc = vec![0.0f32; BC * dp];
            let mut dv_acc = vec![0.0f32; BC * dp];
            let (kt, vt) = kv_side(kb);
            for qb in kb..nb {
                let (qs_i, do_i, lse_i, dd_i) = q_side(qb);
                let first = qb == kb;
                let skip = if first {
                    Skip::DepthBeforeRows
                } else {
                    Skip::None
                };
                // SAFETY: the CPU supports `S` by this function's contract.
                unsafe {
                    p_ds_tile::<S>(qs_i, do_i, kt, vt, lse_i, dd_i, d, first, &mut p, &mut ds);
                    gemm::<S>(
                        &p,
                        1,
                        BC,
                        do_i,
                        dp,
                        &mut dv_acc,
                        dp,
                        (BC, dp, BR),
                        !first,
                        skip,
                    );
                    gemm::<S>(
                        &ds,
                        1,
                        BC,
                        qs_i,
                        dp,
                        &mut dk_acc,
                        dp,
                        (BC, dp, BR),
                        !first,
                        skip,
                    );
                }
            }
            for (jj, (dkr, dvr)) in dk
                .chunks_exact_mut(d)
                .zip(dv.chunks_exact_mut(d))
                .enumerate()
            {
                for (x, &y) in dkr.iter_mut().zip(&dk_acc[jj * dp..]) {
                    *x = y * std::f32::consts::LN_2;
                }
                dvr.copy_from_slice(&dv_acc[jj * dp..jj * dp + d]);
            }
        }
        BwdTask::QueryBlock { qb, dq } => {
            let mut dq_acc = vec![0.0f32; BR * dp];
            let (qs_i, do_i, lse_i, dd_i) = q_side(qb);
            let scale = 1.0 / (d as f32).sqrt();
            for kb in 0..=qb {
                let (kt, vt) = kv_side(kb);
                let kp = &pk.kp[kb * BC * dp..(kb + 1) * BC * dp];
                let first = qb == kb;
                let skip = if first {
                    Skip::DepthAfterRows
                } else {
                    Skip::None
                };
                // SAFETY: the CPU supports `S` by this function's contract.
                unsafe {
                    p_ds_tile::<S>(qs_i, do_i, kt, vt, lse_i, dd_i, d, first, &mut p, &mut ds);
                    gemm::<S>(
                        &ds,
                        BC,
                        1,
                        kp,
                        dp,
                        &mut dq_acc,
                        dp,
                        (BR, dp, BC),
                        true,
                        skip,
                    );
                }
            }
            for (i, dqr) in dq.chunks_exact_mut(d).enumerate() {
                for (x, &y) in dqr.iter_mut().zip(&dq_acc[i * dp..]) {
                    *x = scale * y;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Deterministic values in [−amp, amp] (xorshift), so failures reproduce.
    fn values(n: usize, seed: u64, amp: f32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                amp * ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0)
            })
            .collect()
    }

    fn to64(x: &[f32]) -> Vec<f64> {
        x.iter().map(|&v| v as f64).collect()
    }

    /// Max |fast − ref| / (cond·(atol·max(max|ref|, 0.1) + rtol·|ref|)) over the tensor:
    /// ≤ 1 passes. `cond` = max(1, max |score|): f32 scores carry an absolute error ∝ |score|,
    /// which exp turns into that relative error on P, so bigger scores earn proportionally
    /// more slack. The 0.1 floor covers tensors that are exactly 0 (dq at t = 1).
    fn worst(fast: &[f32], reference: &[f64], cond: f64, rtol: f64, atol: f64) -> f64 {
        let big = reference.iter().fold(0.1f64, |a, &b| a.max(b.abs()));
        fast.iter()
            .zip(reference)
            .map(|(&f, &r)| (f as f64 - r).abs() / (cond * (atol * big + rtol * r.abs())))
            .fold(0.0, f64::max)
    }

    /// max(1, max over visible (i, j) of |s·q_i·k_j|), in f64.
    fn score_cond(q: &[f64], k: &[f64], bh: usize, t: usize, d: usize) -> f64 {
        let s = 1.0 / (d as f64).sqrt();
        let mut m = 1.0f64;
        for h in 0..bh {
            for i in 0..t {
                for j in 0..=i {
                    let (a, b) = ((h * t + i) * d, (h * t + j) * d);
                    let dot: f64 = (0..d).map(|c| q[a + c] * k[b + c]).sum();
                    m = m.max((s * dot).abs());
                }
            }
        }
        m
    }

    // Forward: f32 rounding of a length-d dot and a t-term weighted sum; the exp polynomial is
    // good to a few ulp. A real bug (mask off by one, missed rescale) is off by >1e-3.
    const FWD_RTOL: f64 = 1e-5;
    const FWD_ATOL: f64 = 2e-6;
    // Backward: dS = P∘(dP − D) cancels, so compare against the tensor's scale.
    const BWD_RTOL: f64 = 1e-5;
    const BWD_ATOL: f64 = 2e-5;

    /// Runs fast fwd+bwd (f32, at `level`) and the reference (f64, same inputs); returns the
    /// worst normalised error of out, lse, dq, dk, dv (each must be ≤ 1).
    fn errors(level: Path, bh: usize, t: usize, d: usize, amp: f32, seed: u64) -> [f64; 5] {
        let n = bh * t * d;
        let (q, k, v, g) = (
            values(n, seed, amp),
            values(n, seed + 1, amp),
            values(n, seed + 2, amp),
            values(n, seed + 3, 1.0),
        );
        let (mut out, mut lse) = (vec![0.0f32; n], vec![0.0f32; bh * t]);
        fwd_impl(level, &q, &k, &v, bh, t, d, &mut out, &mut lse);
        let (mut dq, mut dk, mut dv) = (vec![0.0f32; n], vec![0.0f32; n], vec![0.0f32; n]);
        let split = bh < rayon::current_num_threads();
        bwd_impl(
            level, split, &q, &k, &v, &out, &lse, &g, bh, t, d, &mut dq, &mut dk, &mut dv,
        );

        let (q6, k6, v6, g6) = (to64(&q), to64(&k), to64(&v), to64(&g));
        let (mut out6, mut lse6) = (vec![0.0f64; n], vec![0.0f64; bh * t]);
        causal_attention_fwd_ref(&q6, &k6, &v6, bh, t, d, &mut out6, &mut lse6);
        let (mut dq6, mut dk6, mut dv6) = (vec![0.0f64; n], vec![0.0f64; n], vec![0.0f64; n]);
        causal_attention_bwd_ref(
            &q6, &k6, &v6, &out6, &lse6, &g6, bh, t, d, &mut dq6, &mut dk6, &mut dv6,
        );
        let c = score_cond(&q6, &k6, bh, t, d);
        [
            worst(&out, &out6, c, FWD_RTOL, FWD_ATOL),
            worst(&lse, &lse6, c, FWD_RTOL, FWD_ATOL),
            worst(&dq, &dq6, c, BWD_RTOL, BWD_ATOL),
            worst(&dk, &dk6, c, BWD_RTOL, BWD_ATOL),
            worst(&dv, &dv6, c, BWD_RTOL, BWD_ATOL),
        ]
    }

    fn assert_close(level: Path, bh: usize, t: usize, d: usize, amp: f32, seed: u64) {
        let e = errors(level, bh, t, d, amp, seed);
        let names = ["out", "lse", "dq", "dk", "dv"];
        for (name, e) in names.iter().zip(e) {
            assert!(
                e <= 1.0,
                "{level:?} bh={bh} t={t} d={d} amp={amp}: {name} error {e:.3} × tolerance"
            );
        }
    }

    /// Every path this CPU can run: scalar, and each SIMD instantiation it supports (on an
    /// AVX-512 machine both AVX2 and AVX-512, whatever `FERROCHAT_NO_AVX512` says).
    fn levels() -> Vec<Path> {
        let mut l = vec![Path::Scalar];
        match usable(simd_level()) {
            SimdLevel::Avx2Fma => {
                l.push(Path::Avx2);
                #[cfg(target_arch = "x86_64")]
                if is_x86_feature_detected!("avx512f") {
                    l.push(Path::Avx512);
                }
            }
            SimdLevel::Neon => l.push(Path::Neon),
            SimdLevel::Scalar => {}
        }
        l
    }

    #[test]
    fn awkward_shapes_match_reference() {
        let mut worst_seen = [0.0f64; 5];
        for level in levels() {
            for &t in &[1, 3, 7, 33, 65, 127, 300] {
                for &d in &[1, 3, 16, 64, 65] {
                    for &bh in &[1, 3] {
                        let e = errors(level, bh, t, d, 2.0, (t * 1000 + d * 10 + bh) as u64);
                        for (w, e) in worst_seen.iter_mut().zip(e) {
                            *w = w.max(e);
                        }
                        assert_close(level, bh, t, d, 2.0, (t * 1000 + d * 10 + bh) as u64);
                    }
                }
            }
        }
        eprintln!("worst normalised errors out/lse/dq/dk/dv: {worst_seen:?}");
    }

    #[test]
    fn peaked_softmax_matches_reference() {
        // Large scores: the running max changes often and most probabilities underflow.
        for level in levels() {
            assert_close(level, 2, 150, 16, 8.0, 7);
        }
    }

    #[test]
    fn simd_exp2_is_accurate() {
        let xs: Vec<f32> = (0..2000).map(|i| -140.0 + i as f32 * 0.0937).collect();
        for level in levels() {
            let mut got = xs.clone();
            got.extend([f32::NEG_INFINITY; 16]);
            // Make the length a multiple of every W.
            got.truncate(got.len() / 16 * 16);
            let n = got.len();
            match level {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `levels` only lists AVX2 when it was detected.
                Path::Avx2 => unsafe { exp2_sub::<x86::Avx2>(&mut got, 0.0) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `levels` only lists AVX-512 when it was detected.
                Path::Avx512 => unsafe { exp2_sub::<x86_512::Avx512>(&mut got, 0.0) },
                #[cfg(target_arch = "aarch64")]
                // SAFETY: `levels` only lists NEON when it was detected.
                Path::Neon => unsafe { exp2_sub::<arm::Neon>(&mut got, 0.0) },
                // SAFETY: scalar needs no CPU feature.
                _ => unsafe { exp2_sub::<Scalar>(&mut got, 0.0) },
            };
            for (i, &g) in got.iter().enumerate() {
                let x = if i < xs.len() {
                    xs[i]
                } else {
                    f32::NEG_INFINITY
                };
                let want = (x as f64).exp2();
                if x < EXP2_LO {
                    assert!(g == 0.0 || level == Path::Scalar, "2^{x} = {g}");
                } else {
                    assert!(
                        ((g as f64 - want) / want).abs() < 4e-7,
                        "{level:?}: 2^{x} = {g}, want {want}"
                    );
                }
            }
            assert_eq!(got[n - 1], 0.0);
        }
    }

    #[test]
    fn deterministic_across_runs() {
        let (bh, t, d) = (3, 200, 24);
        let n = bh * t * d;
        let (q, k, v, g) = (
            values(n, 1, 2.0),
            values(n, 2, 2.0),
            values(n, 3, 2.0),
            values(n, 4, 1.0),
        );
        let run = || {
            let (mut out, mut lse) = (vec![0.0f32; n], vec![0.0f32; bh * t]);
            causal_attention_fwd(&q, &k, &v, bh, t, d, &mut out, &mut lse);
            let (mut dq, mut dk, mut dv) = (vec![0.0f32; n], vec![0.0f32; n], vec![0.0f32; n]);
            causal_attention_bwd(
                &q, &k, &v, &out, &lse, &g, bh, t, d, &mut dq, &mut dk, &mut dv,
            );
            let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            (bits(&out), bits(&lse), bits(&dq), bits(&dk), bits(&dv))
        };
        let first = run();
        for _ in 0..3 {
            assert!(
                run() == first,
                "fast attention is not bitwise deterministic"
            );
        }
        // Also across thread counts: tasks never share an accumulator.
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        assert!(
            one.install(run) == first,
            "result depends on the thread count"
        );
    }

    #[test]
    fn backward_decompositions_give_identical_bits() {
        // Per-head tasks and split (key-block / query-block) tasks must agree bit for bit, so
        // the result never depends on which one the thread count picks.
        for level in levels() {
            for &(bh, t, d) in &[(1, 1, 3), (2, 65, 16), (3, 130, 65), (1, 256, 64)] {
                let n = bh * t * d;
                let (q, k, v, g) = (
                    values(n, 41, 2.0),
                    values(n, 42, 2.0),
                    values(n, 43, 2.0),
                    values(n, 44, 1.0),
                );
                let (mut out, mut lse) = (vec![0.0f32; n], vec![0.0f32; bh * t]);
                fwd_impl(level, &q, &k, &v, bh, t, d, &mut out, &mut lse);
                let run = |split| {
                    let mut grads = [vec![0.0f32; n], vec![0.0f32; n], vec![0.0f32; n]];
                    let [dq, dk, dv] = &mut grads;
                    bwd_impl(
                        level, split, &q, &k, &v, &out, &lse, &g, bh, t, d, dq, dk, dv,
                    );
                    grads.map(|x| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>())
                };
                assert!(run(true) == run(false), "{level:?} bh={bh} t={t} d={d}");
            }
        }
    }

    #[test]
    fn unsupported_level_falls_back_to_scalar() {
        // Asking for an instruction set this CPU lacks must not run it: it gives the scalar
        // result, bit for bit.
        let other = if cfg!(target_arch = "aarch64") {
            SimdLevel::Avx2Fma
        } else {
            SimdLevel::Neon
        };
        let (bh, t, d) = (2, 70, 5);
        let n = bh * t * d;
        let (q, k, v) = (values(n, 31, 2.0), values(n, 32, 2.0), values(n, 33, 2.0));
        let run = |level| {
            let (mut out, mut lse) = (vec![0.0f32; n], vec![0.0f32; bh * t]);
            causal_attention_fwd_with(level, &q, &k, &v, bh, t, d, &mut out, &mut lse);
            let (mut dq, mut dk, mut dv) = (vec![0.0f32; n], vec![0.0f32; n], vec![0.0f32; n]);
            causal_attention_bwd_with(
                level, &q, &k, &v, &out, &lse, &q, bh, t, d, &mut dq, &mut dk, &mut dv,
            );
            [out, lse, dq, dk, dv].map(|x| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>())
        };
        assert_eq!(usable(other), SimdLevel::Scalar);
        assert!(run(other) == run(SimdLevel::Scalar));
    }

    #[test]
    fn reference_matches_naive_materialised_softmax() {
        // Explicit softmax(s·QKᵀ + mask)·V with a T×T matrix and a −∞ mask, in f64.
        let (t, d) = (5, 3);
        let q: Vec<f64> = values(t * d, 11, 1.5).iter().map(|&x| x as f64).collect();
        let k: Vec<f64> = values(t * d, 12, 1.5).iter().map(|&x| x as f64).collect();
        let v: Vec<f64> = values(t * d, 13, 1.5).iter().map(|&x| x as f64).collect();
        let s = 1.0 / (d as f64).sqrt();
        let mut out = vec![0.0; t * d];
        let mut lse = vec![0.0; t];
        causal_attention_fwd_ref(&q, &k, &v, 1, t, d, &mut out, &mut lse);
        for i in 0..t {
            let scores: Vec<f64> = (0..t)
                .map(|j| {
                    let dot: f64 = (0..d).map(|c| q[i * d + c] * k[j * d + c]).sum();
                    if j <= i {
                        s * dot
                    } else {
                        f64::NEG_INFINITY
                    }
                })
                .collect();
            let z: f64 = scores.iter().map(|x| x.exp()).sum();
            assert!((lse[i] - z.ln()).abs() < 1e-12);
            for c in 0..d {
                let o: f64 = (0..t).map(|j| scores[j].exp() / z * v[j * d + c]).sum();
                assert!((out[i * d + c] - o).abs() < 1e-12, "out[{i},{c}]");
            }
        }
        // Row 0 sees only key 0: its output is v_0 exactly and lse is its single score.
        assert_eq!(&out[..d], &v[..d]);
        let s00: f64 = s * (0..d).map(|c| q[c] * k[c]).sum::<f64>();
        assert!((lse[0] - s00).abs() < 1e-15);
    }

    #[test]
    fn reference_backward_matches_finite_differences() {
        // L = Σ dO∘O; check dq, dk, dv of the reference by central differences in f64.
        let (t, d) = (4, 3);
        let n = t * d;
        let mk = |seed| {
            values(n, seed, 1.0)
                .iter()
                .map(|&x| x as f64)
                .collect::<Vec<f64>>()
        };
        let (q, k, v, g) = (mk(21), mk(22), mk(23), mk(24));
        let loss = |q: &[f64], k: &[f64], v: &[f64]| {
            let (mut o, mut l) = (vec![0.0; n], vec![0.0; t]);
            causal_attention_fwd_ref(q, k, v, 1, t, d, &mut o, &mut l);
            o.iter().zip(&g).map(|(a, b)| a * b).sum::<f64>()
        };
        let (mut o, mut l) = (vec![0.0; n], vec![0.0; t]);
        causal_attention_fwd_ref(&q, &k, &v, 1, t, d, &mut o, &mut l);
        let (mut dq, mut dk, mut dv) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
        causal_attention_bwd_ref(&q, &k, &v, &o, &l, &g, 1, t, d, &mut dq, &mut dk, &mut dv);
        let h = 1e-6;
        for which in 0..3 {
            for e in 0..n {
                let (mut a, mut b) = (
                    [q.clone(), k.clone(), v.clone()],
                    [q.clone(), k.clone(), v.clone()],
                );
                a[which][e] += h;
                b[which][e] -= h;
                let fd = (loss(&a[0], &a[1], &a[2]) - loss(&b[0], &b[1], &b[2])) / (2.0 * h);
                let an = [&dq, &dk, &dv][which][e];
                assert!((fd - an).abs() < 1e-7, "grad {which}[{e}]: fd {fd} vs {an}");
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn random_shapes_match_reference(
            bh in 1usize..4,
            t in 1usize..140,
            d in 1usize..70,
            amp in 0.1f32..6.0,
            seed in 0u64..1_000_000,
            scalar in any::<bool>(),
        ) {
            let level = if scalar { Path::Scalar } else { path(simd_level()) };
            let e = errors(level, bh, t, d, amp, seed);
            for e in e {
                prop_assert!(e <= 1.0, "{level:?} bh={bh} t={t} d={d} amp={amp}: {e:?}");
            }
        }
    }
}
