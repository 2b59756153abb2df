//! Softmax and log-softmax over the last axis of a `[rows, cols]` matrix.
//!
//!   softmax: y_j = exp(x_j − m) / Σ_k exp(x_k − m), with m = max_k x_k (for stability);
//!            dx = y∘(dy − Σ_k dy_k·y_k).
//!   log-softmax: y_j = x_j − m − log Σ_k exp(x_k − m);
//!            dx = dy − exp(y)·Σ_k dy_k.

use crate::cpu::vecmath::{for_row_tasks, scalar};
use crate::{simd_level, Float, SimdLevel};

/// Reference softmax forward.
pub fn softmax_fwd_ref<F: Float>(x: &[F], rows: usize, cols: usize, y: &mut [F]) {
    for r in 0..rows {
        let xr = &x[r * cols..(r + 1) * cols];
        let yr = &mut y[r * cols..(r + 1) * cols];
        let m = xr.iter().fold(F::neg_infinity(), |a, &b| a.max(b));
        let mut sum = F::zero();
        for (o, &v) in yr.iter_mut().zip(xr) {
            *o = (v - m).exp();
            sum += *o;
        }
        yr.iter_mut().for_each(|o| *o /= sum);
    }
}

/// Reference softmax backward from the forward's output `y`.
pub fn softmax_bwd_ref<F: Float>(y: &[F], dy: &[F], rows: usize, cols: usize, dx: &mut [F]) {
    for r in 0..rows {
        let s = r * cols..(r + 1) * cols;
        let dot: F = y[s.clone()]
            .iter()
            .zip(&dy[s.clone()])
            .map(|(&a, &b)| a * b)
            .sum();
        for c in s {
            dx[c] = y[c] * (dy[c] - dot);
        }
    }
}

/// Reference log-softmax forward.
pub fn log_softmax_fwd_ref<F: Float>(x: &[F], rows: usize, cols: usize, y: &mut [F]) {
    for r in 0..rows {
        let xr = &x[r * cols..(r + 1) * cols];
        let m = xr.iter().fold(F::neg_infinity(), |a, &b| a.max(b));
        let lse = m + xr.iter().map(|&v| (v - m).exp()).sum::<F>().ln();
        for (o, &v) in y[r * cols..(r + 1) * cols].iter_mut().zip(xr) {
            *o = v - lse;
        }
    }
}

/// Reference log-softmax backward from the forward's output `y`.
pub fn log_softmax_bwd_ref<F: Float>(y: &[F], dy: &[F], rows: usize, cols: usize, dx: &mut [F]) {
    for r in 0..rows {
        let s = r * cols..(r + 1) * cols;
        let sum: F = dy[s.clone()].iter().copied().sum();
        for c in s {
            dx[c] = dy[c] - y[c].exp() * sum;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Fast f32 versions. Rows are independent: rayon over tasks of whole rows, and per row a few
// SIMD passes (max, exp and sum, scale) while the row is hot in cache. exp is the vector
// Cephes exp of `vecmath` (≈1 ulp); the log of the row sum is taken once per row with libm.
// log-softmax is written as (x − m) − log Σ e^(x−m), which keeps the difference x − m exact
// instead of rounding m + log Σ first.
// ---------------------------------------------------------------------------------------------

/// Which of the four row operations a call performs.
#[derive(Clone, Copy)]
enum Op {
    SoftmaxFwd,
    SoftmaxBwd,
    LogSoftmaxFwd,
    LogSoftmaxBwd,
}

/// Fast f32 softmax forward (same contract as [`softmax_fwd_ref`]).
pub fn softmax_fwd(x: &[f32], rows: usize, cols: usize, y: &mut [f32]) {
    softmax_fwd_with(simd_level(), x, rows, cols, y)
}

/// Fast f32 softmax backward (same contract as [`softmax_bwd_ref`]).
pub fn softmax_bwd(y: &[f32], dy: &[f32], rows: usize, cols: usize, dx: &mut [f32]) {
    softmax_bwd_with(simd_level(), y, dy, rows, cols, dx)
}

/// Fast f32 log-softmax forward (same contract as [`log_softmax_fwd_ref`]).
pub fn log_softmax_fwd(x: &[f32], rows: usize, cols: usize, y: &mut [f32]) {
    log_softmax_fwd_with(simd_level(), x, rows, cols, y)
}

/// Fast f32 log-softmax backward (same contract as [`log_softmax_bwd_ref`]).
pub fn log_softmax_bwd(y: &[f32], dy: &[f32], rows: usize, cols: usize, dx: &mut [f32]) {
    log_softmax_bwd_with(simd_level(), y, dy, rows, cols, dx)
}

/// [`softmax_fwd`] at an explicit SIMD level: pass [`simd_level()`] or `SimdLevel::Scalar`
/// (`Neon` currently runs the scalar loops).
pub fn softmax_fwd_with(level: SimdLevel, x: &[f32], rows: usize, cols: usize, y: &mut [f32]) {
    run(level, Op::SoftmaxFwd, x, &[], rows, cols, y)
}

/// [`softmax_bwd`] at an explicit SIMD level (see [`softmax_fwd_with`]).
pub fn softmax_bwd_with(
    level: SimdLevel,
    y: &[f32],
    dy: &[f32],
    rows: usize,
    cols: usize,
    dx: &mut [f32],
) {
    run(level, Op::SoftmaxBwd, y, dy, rows, cols, dx)
}

/// [`log_softmax_fwd`] at an explicit SIMD level (see [`softmax_fwd_with`]).
pub fn log_softmax_fwd_with(level: SimdLevel, x: &[f32], rows: usize, cols: usize, y: &mut [f32]) {
    run(level, Op::LogSoftmaxFwd, x, &[], rows, cols, y)
}

/// [`log_softmax_bwd`] at an explicit SIMD level (see [`softmax_fwd_with`]).
pub fn log_softmax_bwd_with(
    level: SimdLevel,
    y: &[f32],
    dy: &[f32],
    rows: usize,
    cols: usize,
    dx: &mut [f32],
) {
    run(level, Op::LogSoftmaxBwd, y, dy, rows, cols, dx)
}

/// Splits the rows over tasks and applies `op` to each row: `a` is x (forward) or y
/// (backward), `b` is dy (backward only).
fn run(level: SimdLevel, op: Op, a: &[f32], b: &[f32], rows: usize, cols: usize, out: &mut [f32]) {
    if rows == 0 || cols == 0 {
        return;
    }
    let avx2 = level == SimdLevel::Avx2Fma && simd_level() == SimdLevel::Avx2Fma;
    for_row_tasks(out, rows, cols, |r0, chunk| {
        for (i, o) in chunk.chunks_exact_mut(cols).enumerate() {
            let s = (r0 + i) * cols..(r0 + i + 1) * cols;
            let b = if b.is_empty() { &[][..] } else { &b[s.clone()] };
            row(avx2, op, &a[s], b, o);
        }
    });
}

/// One row of `op`; `avx2` is true only when the CPU has AVX2 and FMA.
fn row(avx2: bool, op: Op, a: &[f32], b: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        // SAFETY: `avx2` is only true when AVX2+FMA were detected.
        unsafe {
            match op {
                Op::SoftmaxFwd => avx2::softmax_fwd_row(a, out),
                Op::SoftmaxBwd => avx2::softmax_bwd_row(a, b, out),
                Op::LogSoftmaxFwd => avx2::log_softmax_fwd_row(a, out),
                Op::LogSoftmaxBwd => avx2::log_softmax_bwd_row(a, b, out),
            }
        }
        return;
    }
    let _ = avx2;
    match op {
        Op::SoftmaxFwd => {
            let m = scalar::max(a);
            let mut sum = 0.0;
            for (o, &v) in out.iter_mut().zip(a) {
                *o = (v - m).exp();
                sum += *o;
            }
            let inv = 1.0 / sum;
            out.iter_mut().for_each(|o| *o *= inv);
        }
        Op::SoftmaxBwd => {
            let dot = scalar::dot(a, b);
            for ((o, &y), &g) in out.iter_mut().zip(a).zip(b) {
                *o = y * (g - dot);
            }
        }
        Op::LogSoftmaxFwd => {
            let m = scalar::max(a);
            let ls = scalar::sum_exp(a, m).ln();
            for (o, &v) in out.iter_mut().zip(a) {
                *o = (v - m) - ls;
            }
        }
        Op::LogSoftmaxBwd => {
            let sum = scalar::sum(b);
            for ((o, &y), &g) in out.iter_mut().zip(a).zip(b) {
                *o = g - y.exp() * sum;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use crate::cpu::vecmath::avx2::{
        dot, exp, hsum, load_partial, max, store_partial, sum, sum_exp, W,
    };
    use std::arch::x86_64::*;

    // SAFETY (every function here): the slices of a row all hold `out.len()` elements; full
    // vectors are accessed below that length and the tail touches exactly the rest.

    /// y = e^(x−m) / Σ e^(x−m).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn softmax_fwd_row(x: &[f32], y: &mut [f32]) {
        let n = y.len();
        let mv = _mm256_set1_ps(max(x));
        let (px, py) = (x.as_ptr(), y.as_mut_ptr());
        let mut acc = _mm256_setzero_ps();
        let mut i = 0;
        while i + W <= n {
            let e = exp(_mm256_sub_ps(_mm256_loadu_ps(px.add(i)), mv));
            _mm256_storeu_ps(py.add(i), e);
            acc = _mm256_add_ps(acc, e);
            i += W;
        }
        if i < n {
            let e = exp(_mm256_sub_ps(
                load_partial(px.add(i), n - i, f32::NEG_INFINITY),
                mv,
            ));
            store_partial(py.add(i), n - i, e);
            acc = _mm256_add_ps(acc, e);
        }
        let inv = _mm256_set1_ps(1.0 / hsum(acc));
        let mut i = 0;
        while i + W <= n {
            _mm256_storeu_ps(py.add(i), _mm256_mul_ps(_mm256_loadu_ps(py.add(i)), inv));
            i += W;
        }
        if i < n {
            store_partial(
                py.add(i),
                n - i,
                _mm256_mul_ps(load_partial(py.add(i), n - i, 0.0), inv),
            );
        }
    }

    /// dx = y∘(dy − y·dy).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn softmax_bwd_row(y: &[f32], dy: &[f32], dx: &mut [f32]) {
        let n = dx.len();
        let d = _mm256_set1_ps(dot(y, dy));
        let (py, pdy, pdx) = (y.as_ptr(), dy.as_ptr(), dx.as_mut_ptr());
        let mut i = 0;
        while i + W <= n {
            let g = _mm256_sub_ps(_mm256_loadu_ps(pdy.add(i)), d);
            _mm256_storeu_ps(pdx.add(i), _mm256_mul_ps(_mm256_loadu_ps(py.add(i)), g));
            i += W;
        }
        if i < n {
            let g = _mm256_sub_ps(load_partial(pdy.add(i), n - i, 0.0), d);
            store_partial(
                pdx.add(i),
                n - i,
                _mm256_mul_ps(load_partial(py.add(i), n - i, 0.0), g),
            );
        }
    }

    /// y = (x − m) − log Σ e^(x−m).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn log_softmax_fwd_row(x: &[f32], y: &mut [f32]) {
        let n = y.len();
        let m = max(x);
        let ls = _mm256_set1_ps(sum_exp(x, m).ln());
        let mv = _mm256_set1_ps(m);
        let (px, py) = (x.as_ptr(), y.as_mut_ptr());
        let mut i = 0;
        while i + W <= n {
            let v = _mm256_sub_ps(_mm256_sub_ps(_mm256_loadu_ps(px.add(i)), mv), ls);
            _mm256_storeu_ps(py.add(i), v);
            i += W;
        }
        if i < n {
            let v = _mm256_sub_ps(_mm256_sub_ps(load_partial(px.add(i), n - i, 0.0), mv), ls);
            store_partial(py.add(i), n - i, v);
        }
    }

    /// dx = dy − e^y·Σdy.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn log_softmax_bwd_row(y: &[f32], dy: &[f32], dx: &mut [f32]) {
        let n = dx.len();
        let s = _mm256_set1_ps(sum(dy));
        let (py, pdy, pdx) = (y.as_ptr(), dy.as_ptr(), dx.as_mut_ptr());
        let mut i = 0;
        while i + W <= n {
            let e = exp(_mm256_loadu_ps(py.add(i)));
            _mm256_storeu_ps(
                pdx.add(i),
                _mm256_fnmadd_ps(e, s, _mm256_loadu_ps(pdy.add(i))),
            );
            i += W;
        }
        if i < n {
            let e = exp(load_partial(py.add(i), n - i, 0.0));
            let v = _mm256_fnmadd_ps(e, s, load_partial(pdy.add(i), n - i, 0.0));
            store_partial(pdx.add(i), n - i, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testutil::{assert_close, levels, to64, Rng};
    use proptest::prelude::*;

    /// Checks all four fast ops at `level` against the f64 reference on the same inputs.
    fn check(level: SimdLevel, x: &[f32], rows: usize, cols: usize, seed: u64) {
        let n = rows * cols;
        let dy = Rng::new(seed ^ 0xABCD).vec(n, -1.0, 1.0);
        let ctx = format!("{level} {rows}x{cols}");
        let (x64, dy64) = (to64(x), to64(&dy));

        let mut y = vec![0.0; n];
        softmax_fwd_with(level, x, rows, cols, &mut y);
        let mut y64 = vec![0.0; n];
        softmax_fwd_ref(&x64, rows, cols, &mut y64);
        assert_close(&format!("softmax {ctx}"), &y, &y64, 1e-5, 1e-9);

        // Backward from the fast forward's y (the same y for both).
        let mut dx = vec![0.0; n];
        softmax_bwd_with(level, &y, &dy, rows, cols, &mut dx);
        let mut dx64 = vec![0.0; n];
        softmax_bwd_ref(&to64(&y), &dy64, rows, cols, &mut dx64);
        assert_close(&format!("softmax bwd {ctx}"), &dx, &dx64, 1e-5, 1e-7);

        let mut ly = vec![0.0; n];
        log_softmax_fwd_with(level, x, rows, cols, &mut ly);
        let mut ly64 = vec![0.0; n];
        log_softmax_fwd_ref(&x64, rows, cols, &mut ly64);
        assert_close(&format!("log_softmax {ctx}"), &ly, &ly64, 1e-5, 1e-6);

        let mut ldx = vec![0.0; n];
        log_softmax_bwd_with(level, &ly, &dy, rows, cols, &mut ldx);
        let mut ldx64 = vec![0.0; n];
        log_softmax_bwd_ref(&to64(&ly), &dy64, rows, cols, &mut ldx64);
        // Σdy over a long row is O(√cols); its rounding scales the absolute error.
        let atol = 1e-6 * (cols as f64).sqrt();
        assert_close(&format!("log_softmax bwd {ctx}"), &ldx, &ldx64, 1e-5, atol);
    }

    #[test]
    fn matches_reference_on_awkward_shapes() {
        for level in levels() {
            for rows in [1, 3, 64] {
                for cols in [1, 3, 7, 8, 9, 33, 65, 127, 1000] {
                    let seed = (rows * 1000 + cols) as u64;
                    let x = Rng::new(seed).vec(rows * cols, -5.0, 5.0);
                    check(level, &x, rows, cols, seed);
                }
            }
        }
    }

    #[test]
    fn extreme_inputs() {
        for level in levels() {
            for cols in [1, 7, 9, 65, 1000] {
                let rows = 4;
                let mut rng = Rng::new(cols as u64);
                // Large magnitudes, all equal (both signs), and masked (−∞) entries.
                let mut x = rng.vec(cols, -80.0, 80.0);
                x.resize(2 * cols, 80.0);
                x.resize(3 * cols, -80.0);
                x.extend((0..cols).map(|c| {
                    if c % 3 == 1 {
                        f32::NEG_INFINITY
                    } else {
                        c as f32
                    }
                }));
                check(level, &x, rows, cols, 3);
                let mut y = vec![0.0; rows * cols];
                softmax_fwd_with(level, &x, rows, cols, &mut y);
                assert!(y.iter().all(|v| v.is_finite()));
                for c in (1..cols).step_by(3) {
                    assert_eq!(y[3 * cols + c], 0.0, "masked entry");
                }
            }
        }
    }

    #[test]
    fn matches_reference_threaded() {
        for level in levels() {
            let (rows, cols) = (64, 8192);
            let x = Rng::new(9).vec(rows * cols, -20.0, 20.0);
            check(level, &x, rows, cols, 9);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn matches_reference_random_sizes(rows in 1usize..20, cols in 1usize..600, seed in 0u64..1000, scale in 0.1f32..50.0) {
            let x = Rng::new(seed).vec(rows * cols, -scale, scale);
            for level in levels() {
                check(level, &x, rows, cols, seed);
            }
        }
    }
}
