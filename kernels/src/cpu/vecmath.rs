//! Shared helpers for the fast row-wise and element-wise f32 kernels: how work is split over
//! threads, and the vectorised math (exp, tanh, horizontal reductions) the AVX2 paths need.
//!
//! Vector math (AVX2+FMA, 8 lanes), measured against f64 `exp`/`tanh` by the tests below:
//! - [`avx2::exp`]: Cephes `expf` — range reduction x = n·ln2 + r with ln2 split in two
//!   (Cody–Waite), a degree-5 polynomial for e^r on |r| ≤ ½ln2, then a scale by 2ⁿ applied in
//!   two halves so that overflow gives +∞ and underflow degrades through subnormals to 0 exactly
//!   like libm. Max relative error measured on [−87, 88]: see `exp_accuracy` (≈1 ulp).
//! - [`avx2::tanh`]: Cephes `tanhf` — odd polynomial for |x| < 0.625 (keeps relative accuracy
//!   near 0, where 1 − 2/(e²ˣ+1) would cancel), else 1 − 2/(e^{2|x|}+1) with the sign put back.
//!   Max relative error measured on [−10, 10]: see `tanh_accuracy` (≈2 ulp).
//!
//! NaN inputs propagate. aarch64 (NEON) currently takes the scalar path: the kernels dispatch
//! `SimdLevel::Neon` to their scalar loops (correct, threaded, not vectorised by hand).

use rayon::prelude::*;

/// Elements per parallel task for row-wise kernels; a task is a whole number of rows. Depends
/// only on the row length, never on the thread count, so partial sums are deterministic.
const TASK_ELEMS: usize = 16 * 1024;

/// Below this many elements a kernel runs on the calling thread: rayon's fork/join costs more
/// than it saves.
pub(crate) const PAR_MIN_ELEMS: usize = 32 * 1024;

/// Rows per parallel task (at least 1) for rows of `cols` elements.
pub(crate) fn rows_per_task(cols: usize) -> usize {
    (TASK_ELEMS / cols.max(1)).max(1)
}

/// Whether a kernel over `elems` elements should use rayon.
pub(crate) fn use_threads(elems: usize) -> bool {
    elems >= PAR_MIN_ELEMS && rayon::current_num_threads() > 1
}

/// Scalar building blocks: 8 independent accumulators (the compiler may vectorise them with
/// SSE; the result is the same either way, a fixed summation order).
pub(crate) mod scalar {
    /// Sum of a slice.
    pub fn sum(x: &[f32]) -> f32 {
        let mut acc = [0.0f32; 8];
        let mut it = x.chunks_exact(8);
        for c in &mut it {
            for (a, &v) in acc.iter_mut().zip(c) {
                *a += v;
            }
        }
        let mut s = acc.iter().sum::<f32>();
        for &v in it.remainder() {
            s += v;
        }
        s
    }

    /// Σ (x − μ)² over a slice.
    pub fn sum_sq_dev(x: &[f32], mu: f32) -> f32 {
        let mut acc = [0.0f32; 8];
        let mut it = x.chunks_exact(8);
        for c in &mut it {
            for (a, &v) in acc.iter_mut().zip(c) {
                *a += (v - mu) * (v - mu);
            }
        }
        let mut s = acc.iter().sum::<f32>();
        for &v in it.remainder() {
            s += (v - mu) * (v - mu);
        }
        s
    }

    /// Σ e^(x − m) over a slice.
    pub fn sum_exp(x: &[f32], m: f32) -> f32 {
        let mut acc = [0.0f32; 8];
        let mut it = x.chunks_exact(8);
        for c in &mut it {
            for (a, &v) in acc.iter_mut().zip(c) {
                *a += (v - m).exp();
            }
        }
        let mut s = acc.iter().sum::<f32>();
        for &v in it.remainder() {
            s += (v - m).exp();
        }
        s
    }

    /// Σ a∘b over two slices of equal length.
    pub fn dot(a: &[f32], b: &[f32]) -> f32 {
        let mut acc = [0.0f32; 8];
        let (mut ia, mut ib) = (a.chunks_exact(8), b.chunks_exact(8));
        for (ca, cb) in (&mut ia).zip(&mut ib) {
            for ((s, &x), &y) in acc.iter_mut().zip(ca).zip(cb) {
                *s += x * y;
            }
        }
        let mut s = acc.iter().sum::<f32>();
        for (&x, &y) in ia.remainder().iter().zip(ib.remainder()) {
            s += x * y;
        }
        s
    }

    /// Maximum of a slice (−∞ for an empty one; NaNs are skipped as by `f32::max`).
    pub fn max(x: &[f32]) -> f32 {
        x.iter().copied().fold(f32::NEG_INFINITY, f32::max)
    }
}

/// Runs `f(first_row, chunk)` over `out` (`[rows, cols]`, `cols > 0`) cut into tasks of
/// [`rows_per_task`] whole rows, on rayon when [`use_threads`] says so.
pub(crate) fn for_row_tasks(
    out: &mut [f32],
    rows: usize,
    cols: usize,
    f: impl Fn(usize, &mut [f32]) + Sync + Send,
) {
    let rpt = rows_per_task(cols);
    let out = &mut out[..rows * cols];
    if use_threads(rows * cols) {
        let it = out.par_chunks_mut(rpt * cols).enumerate();
        it.for_each(|(t, c)| f(t * rpt, c));
    } else {
        let it = out.chunks_mut(rpt * cols).enumerate();
        it.for_each(|(t, c)| f(t * rpt, c));
    }
}

/// Elements per parallel task for element-wise kernels.
pub(crate) const ELEM_TASK: usize = 16 * 1024;

/// Runs `f(offset, chunk)` over `out` cut into tasks of [`ELEM_TASK`] elements, on rayon
/// when [`use_threads`] says so.
pub(crate) fn for_elem_tasks(out: &mut [f32], f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    if use_threads(out.len()) {
        let it = out.par_chunks_mut(ELEM_TASK).enumerate();
        it.for_each(|(t, c)| f(t * ELEM_TASK, c));
    } else {
        let it = out.chunks_mut(ELEM_TASK).enumerate();
        it.for_each(|(t, c)| f(t * ELEM_TASK, c));
    }
}

/// AVX2+FMA building blocks. Every function requires the CPU to support AVX2 and FMA (the
/// callers check `SimdLevel::Avx2Fma`, which is only reported when both are detected).
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use std::arch::x86_64::*;

    /// Lanes per vector.
    pub const W: usize = 8;

    /// Loads `n < 8` values from `p` into the low lanes, filling the rest with `fill`.
    ///
    /// # Safety
    /// `p` must be valid for reading `n` f32s; AVX2 must be available.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn load_partial(p: *const f32, n: usize, fill: f32) -> __m256 {
        let mut buf = [fill; W];
        // SAFETY: the caller guarantees `p` is readable for `n` elements, and n < W = buf.len().
        unsafe { std::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), n) };
        // SAFETY: `buf` holds W f32s.
        unsafe { _mm256_loadu_ps(buf.as_ptr()) }
    }

    /// Stores the low `n < 8` lanes of `v` to `p`.
    ///
    /// # Safety
    /// `p` must be valid for writing `n` f32s; AVX2 must be available.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn store_partial(p: *mut f32, n: usize, v: __m256) {
        let mut buf = [0.0f32; W];
        // SAFETY: `buf` holds W f32s.
        unsafe { _mm256_storeu_ps(buf.as_mut_ptr(), v) };
        // SAFETY: the caller guarantees `p` is writable for `n` elements, and n < W.
        unsafe { std::ptr::copy_nonoverlapping(buf.as_ptr(), p, n) };
    }

    /// Sum of the 8 lanes (fixed pairing order, so deterministic).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// Maximum of the 8 lanes.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn hmax(v: __m256) -> f32 {
        let s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_max_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// Sum of a slice (4 independent accumulators to hide FMA/add latency).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn sum(x: &[f32]) -> f32 {
        let n = x.len();
        let p = x.as_ptr();
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        // SAFETY (all loads below): i + 8·k + 8 ≤ n for every full-vector load; the tail
        // reads exactly n − i elements.
        while i + 4 * W <= n {
            for (k, a) in acc.iter_mut().enumerate() {
                *a = _mm256_add_ps(*a, unsafe { _mm256_loadu_ps(p.add(i + k * W)) });
            }
            i += 4 * W;
        }
        while i + W <= n {
            acc[0] = _mm256_add_ps(acc[0], unsafe { _mm256_loadu_ps(p.add(i)) });
            i += W;
        }
        if i < n {
            acc[1] = _mm256_add_ps(acc[1], unsafe { load_partial(p.add(i), n - i, 0.0) });
        }
        hsum(_mm256_add_ps(
            _mm256_add_ps(acc[0], acc[1]),
            _mm256_add_ps(acc[2], acc[3]),
        ))
    }

    /// Maximum of a slice (−∞ for an empty one). NaN handling follows `maxps`: a NaN input may
    /// be dropped here, but it still propagates through the kernel's later passes.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn max(x: &[f32]) -> f32 {
        let n = x.len();
        let p = x.as_ptr();
        let mut acc = [_mm256_set1_ps(f32::NEG_INFINITY); 4];
        let mut i = 0;
        // SAFETY (all loads below): bounds as in `sum`.
        while i + 4 * W <= n {
            for (k, a) in acc.iter_mut().enumerate() {
                *a = _mm256_max_ps(*a, unsafe { _mm256_loadu_ps(p.add(i + k * W)) });
            }
            i += 4 * W;
        }
        while i + W <= n {
            acc[0] = _mm256_max_ps(acc[0], unsafe { _mm256_loadu_ps(p.add(i)) });
            i += W;
        }
        if i < n {
            let v = unsafe { load_partial(p.add(i), n - i, f32::NEG_INFINITY) };
            acc[1] = _mm256_max_ps(acc[1], v);
        }
        hmax(_mm256_max_ps(
            _mm256_max_ps(acc[0], acc[1]),
            _mm256_max_ps(acc[2], acc[3]),
        ))
    }

    /// Σ (x − μ)² over a slice (4 accumulators; the tail is padded with μ, contributing 0).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn sum_sq_dev(x: &[f32], mu: f32) -> f32 {
        let n = x.len();
        let p = x.as_ptr();
        let m = _mm256_set1_ps(mu);
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        // SAFETY (all loads below): bounds as in `sum`.
        while i + 4 * W <= n {
            for (k, a) in acc.iter_mut().enumerate() {
                let d = _mm256_sub_ps(unsafe { _mm256_loadu_ps(p.add(i + k * W)) }, m);
                *a = _mm256_fmadd_ps(d, d, *a);
            }
            i += 4 * W;
        }
        while i + W <= n {
            let d = _mm256_sub_ps(unsafe { _mm256_loadu_ps(p.add(i)) }, m);
            acc[0] = _mm256_fmadd_ps(d, d, acc[0]);
            i += W;
        }
        if i < n {
            let d = _mm256_sub_ps(unsafe { load_partial(p.add(i), n - i, mu) }, m);
            acc[1] = _mm256_fmadd_ps(d, d, acc[1]);
        }
        hsum(_mm256_add_ps(
            _mm256_add_ps(acc[0], acc[1]),
            _mm256_add_ps(acc[2], acc[3]),
        ))
    }

    /// Σ e^(x − m) over a slice (2 accumulators; tail lanes padded with −∞ give e^−∞ = 0).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn sum_exp(x: &[f32], m: f32) -> f32 {
        let n = x.len();
        let p = x.as_ptr();
        let mv = _mm256_set1_ps(m);
        let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        // SAFETY (all loads below): bounds as in `sum`.
        while i + 2 * W <= n {
            a0 = _mm256_add_ps(a0, exp(_mm256_sub_ps(_mm256_loadu_ps(p.add(i)), mv)));
            a1 = _mm256_add_ps(a1, exp(_mm256_sub_ps(_mm256_loadu_ps(p.add(i + W)), mv)));
            i += 2 * W;
        }
        while i + W <= n {
            a0 = _mm256_add_ps(a0, exp(_mm256_sub_ps(_mm256_loadu_ps(p.add(i)), mv)));
            i += W;
        }
        if i < n {
            let v = load_partial(p.add(i), n - i, f32::NEG_INFINITY);
            a1 = _mm256_add_ps(a1, exp(_mm256_sub_ps(v, mv)));
        }
        hsum(_mm256_add_ps(a0, a1))
    }

    /// Σ a∘b over two slices of equal length (4 FMA accumulators).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        // SAFETY (all loads below): both slices hold at least n elements; bounds as in `sum`.
        while i + 4 * W <= n {
            for (k, s) in acc.iter_mut().enumerate() {
                let (x, y) = (
                    _mm256_loadu_ps(pa.add(i + k * W)),
                    _mm256_loadu_ps(pb.add(i + k * W)),
                );
                *s = _mm256_fmadd_ps(x, y, *s);
            }
            i += 4 * W;
        }
        while i + W <= n {
            acc[0] = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i)),
                _mm256_loadu_ps(pb.add(i)),
                acc[0],
            );
            i += W;
        }
        if i < n {
            let (x, y) = (
                load_partial(pa.add(i), n - i, 0.0),
                load_partial(pb.add(i), n - i, 0.0),
            );
            acc[1] = _mm256_fmadd_ps(x, y, acc[1]);
        }
        hsum(_mm256_add_ps(
            _mm256_add_ps(acc[0], acc[1]),
            _mm256_add_ps(acc[2], acc[3]),
        ))
    }

    /// e^x per lane (Cephes `expf` with FMA). ≈1 ulp on the normal range; +∞ above ~88.72,
    /// subnormals then 0 below ~−87.3, NaN → NaN.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn exp(x: __m256) -> __m256 {
        // Clamp (min/max ordered so a NaN in x survives: they return their second operand).
        let x = _mm256_max_ps(
            _mm256_set1_ps(-104.0),
            _mm256_min_ps(_mm256_set1_ps(89.0), x),
        );
        // n = round(x / ln2); r = x − n·ln2 with ln2 = C1 + C2 (C1 exact in 9 bits).
        let n = _mm256_round_ps(
            _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
        );
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
        // e^r ≈ 1 + r + r²·P(r).
        let mut p = _mm256_set1_ps(1.987_569_1e-4);
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.398_2e-3));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.333_452e-3));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.166_579_6e-2));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.166_666_65));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5));
        let r2 = _mm256_mul_ps(r, r);
        let e = _mm256_add_ps(_mm256_fmadd_ps(p, r2, r), _mm256_set1_ps(1.0));
        // Scale by 2ⁿ = 2^(n/2)·2^(n − n/2): each half is a normal float for n ∈ [−150, 129],
        // so the first product is exact and the second rounds once (overflow → ∞, and
        // underflow → subnormal/0, as libm).
        let ni = _mm256_cvtps_epi32(n);
        let n1 = _mm256_srai_epi32(ni, 1);
        let n2 = _mm256_sub_epi32(ni, n1);
        let bias = _mm256_set1_epi32(127);
        let s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
        let s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
        _mm256_mul_ps(_mm256_mul_ps(e, s1), s2)
    }

    /// tanh per lane (Cephes `tanhf`): odd polynomial near 0, 1 − 2/(e^{2|x|}+1) elsewhere.
    /// (GELU uses the equivalent x·σ(2u) form, which keeps relative accuracy for x ≪ 0, so
    /// this is tested but not yet called by a kernel.)
    #[allow(dead_code)]
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn tanh(x: __m256) -> __m256 {
        let sign = _mm256_and_ps(x, _mm256_set1_ps(-0.0));
        let ax = _mm256_andnot_ps(_mm256_set1_ps(-0.0), x);
        // Large: 1 − 2/(e^{2|x|} + 1); e overflows to ∞ for |x| > 44 and the result is 1.
        let e = exp(_mm256_add_ps(ax, ax));
        let big = _mm256_sub_ps(
            _mm256_set1_ps(1.0),
            _mm256_div_ps(_mm256_set1_ps(2.0), _mm256_add_ps(e, _mm256_set1_ps(1.0))),
        );
        // Small: |x| + |x|³·Q(x²).
        let z = _mm256_mul_ps(x, x);
        let mut q = _mm256_set1_ps(-5.704_988_7e-3);
        q = _mm256_fmadd_ps(q, z, _mm256_set1_ps(2.063_909e-2));
        q = _mm256_fmadd_ps(q, z, _mm256_set1_ps(-5.373_971_6e-2));
        q = _mm256_fmadd_ps(q, z, _mm256_set1_ps(0.133_314_42));
        q = _mm256_fmadd_ps(q, z, _mm256_set1_ps(-0.333_332_8));
        let small = _mm256_fmadd_ps(_mm256_mul_ps(q, z), ax, ax);
        // Lanes with |x| < 0.625 (false for NaN, whose `big` is NaN anyway) take `small`;
        // then the sign of x goes back on (so tanh(−0) = −0).
        let is_small = _mm256_cmp_ps(ax, _mm256_set1_ps(0.625), _CMP_LT_OQ);
        _mm256_or_ps(_mm256_blendv_ps(big, small, is_small), sign)
    }

    /// e^x over a slice (for tests of the vector math).
    #[cfg(test)]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn map(x: &[f32], y: &mut [f32], f: impl Fn(__m256) -> __m256) {
        for (xc, yc) in x.chunks(W).zip(y.chunks_mut(W)) {
            // SAFETY: each chunk holds 1..=W elements, read/written within bounds.
            unsafe {
                let v = load_partial_any(xc.as_ptr(), xc.len());
                store_partial_any(yc.as_mut_ptr(), yc.len(), f(v));
            }
        }
    }

    /// `load_partial` that also accepts a full vector (n ≤ 8).
    #[cfg(test)]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn load_partial_any(p: *const f32, n: usize) -> __m256 {
        // SAFETY: forwarded caller contract.
        unsafe {
            if n == W {
                _mm256_loadu_ps(p)
            } else {
                load_partial(p, n, 0.0)
            }
        }
    }

    /// `store_partial` that also accepts a full vector (n ≤ 8).
    #[cfg(test)]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn store_partial_any(p: *mut f32, n: usize, v: __m256) {
        // SAFETY: forwarded caller contract.
        unsafe {
            if n == W {
                _mm256_storeu_ps(p, v)
            } else {
                store_partial(p, n, v)
            }
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::avx2;
    use crate::{simd_level, SimdLevel};

    /// Evaluates `vf` (vector) on `xs` and returns the max relative error against `f` (f64),
    /// counting only lanes whose true value is a normal f32.
    fn max_rel_err(
        xs: &[f32],
        vf: fn(std::arch::x86_64::__m256) -> std::arch::x86_64::__m256,
        f: fn(f64) -> f64,
    ) -> f64 {
        let mut y = vec![0.0f32; xs.len()];
        // SAFETY: only called when AVX2+FMA was detected.
        unsafe { avx2::map(xs, &mut y, vf) };
        let mut worst = 0.0f64;
        for (&x, &got) in xs.iter().zip(&y) {
            let want = f(x as f64);
            if want.abs() < f32::MIN_POSITIVE as f64 || want.abs() > f32::MAX as f64 {
                continue;
            }
            worst = worst.max(((got as f64) - want).abs() / want.abs());
        }
        worst
    }

    fn grid(lo: f32, hi: f32, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| lo + (hi - lo) * i as f32 / (n - 1) as f32)
            .collect()
    }

    fn vexp(v: std::arch::x86_64::__m256) -> std::arch::x86_64::__m256 {
        // SAFETY: tests call this only under a detected AVX2+FMA level.
        unsafe { avx2::exp(v) }
    }

    fn vtanh(v: std::arch::x86_64::__m256) -> std::arch::x86_64::__m256 {
        // SAFETY: as above.
        unsafe { avx2::tanh(v) }
    }

    #[test]
    fn exp_accuracy() {
        if simd_level() != SimdLevel::Avx2Fma {
            return;
        }
        let err = max_rel_err(&grid(-87.0, 88.0, 400_001), vexp, f64::exp);
        // 1 ulp of f32 is 2⁻²³ ≈ 1.19e-7 relative (at most).
        eprintln!("vector exp: max rel err {err:e} on [-87, 88]");
        assert!(err < 1.5e-7, "exp max rel err {err:e}");
        let err_small = max_rel_err(&grid(-1.0, 1.0, 100_001), vexp, f64::exp);
        eprintln!("vector exp: max rel err {err_small:e} on [-1, 1]");
        assert!(err_small < 1.5e-7, "exp max rel err near 0: {err_small:e}");
    }

    #[test]
    fn exp_edges() {
        if simd_level() != SimdLevel::Avx2Fma {
            return;
        }
        let xs = [
            f32::NEG_INFINITY,
            -200.0,
            -104.0,
            -95.0,
            -88.0,
            0.0,
            88.7,
            89.0,
            1000.0,
            f32::INFINITY,
            f32::NAN,
        ];
        let mut y = vec![0.0; xs.len()];
        // SAFETY: AVX2+FMA detected above.
        unsafe { avx2::map(&xs, &mut y, vexp) };
        assert_eq!(y[0], 0.0);
        assert_eq!(y[1], 0.0);
        assert_eq!(y[2], 0.0);
        // Subnormal region: close to libm in absolute terms.
        assert!((y[3] - (-95.0f32).exp()).abs() <= 2.0 * f32::from_bits(1));
        assert!(((y[4] as f64) / (-88.0f64).exp() - 1.0).abs() < 1e-6);
        assert_eq!(y[5], 1.0);
        assert!(y[6].is_finite() && ((y[6] as f64) / (88.7f32 as f64).exp() - 1.0).abs() < 1e-6);
        assert_eq!(y[7], f32::INFINITY);
        assert_eq!(y[8], f32::INFINITY);
        assert_eq!(y[9], f32::INFINITY);
        assert!(y[10].is_nan());
    }

    #[test]
    fn tanh_accuracy() {
        if simd_level() != SimdLevel::Avx2Fma {
            return;
        }
        let err = max_rel_err(&grid(-10.0, 10.0, 400_001), vtanh, f64::tanh);
        eprintln!("vector tanh: max rel err {err:e} on [-10, 10]");
        assert!(err < 2.5e-7, "tanh max rel err {err:e}");
        let err_small = max_rel_err(&grid(-0.7, 0.7, 100_001), vtanh, f64::tanh);
        eprintln!("vector tanh: max rel err {err_small:e} on [-0.7, 0.7]");
        assert!(err_small < 2.5e-7, "tanh max rel err near 0: {err_small:e}");
        let xs = [
            -1e30f32,
            -50.0,
            1e-30,
            0.0,
            -0.0,
            50.0,
            f32::INFINITY,
            f32::NAN,
        ];
        let mut y = vec![0.0; xs.len()];
        // SAFETY: AVX2+FMA detected above.
        unsafe { avx2::map(&xs, &mut y, vtanh) };
        assert_eq!(&y[..7], &[-1.0, -1.0, 1e-30, 0.0, -0.0, 1.0, 1.0]);
        assert!(y[4].is_sign_negative());
        assert!(y[7].is_nan());
    }

    #[test]
    fn reductions_match_scalar() {
        if simd_level() != SimdLevel::Avx2Fma {
            return;
        }
        for n in [0usize, 1, 3, 7, 8, 9, 31, 32, 33, 65, 1000] {
            let x: Vec<f32> = (0..n)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.25)
                .collect();
            // SAFETY: AVX2+FMA detected above.
            let (s, m) = unsafe { (avx2::sum(&x), avx2::max(&x)) };
            let want_s: f64 = x.iter().map(|&v| v as f64).sum();
            let want_m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert!(
                (s as f64 - want_s).abs() <= 1e-6 * (1.0 + want_s.abs()),
                "n={n}"
            );
            assert_eq!(m, want_m, "n={n}");
        }
    }
}
