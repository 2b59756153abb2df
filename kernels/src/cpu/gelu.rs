//! GELU, tanh approximation (as GPT-2 and `torch.nn.functional.gelu(x, approximate="tanh")`):
//!   y = ½x(1 + tanh(u)),  u = √(2/π)(x + 0.044715x³);
//!   dy/dx = ½(1 + tanh u) + ½x(1 − tanh²u)·√(2/π)(1 + 3·0.044715x²).

use crate::cpu::vecmath::for_elem_tasks;
use crate::{simd_level, Float, SimdLevel};

const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
const COEF: f64 = 0.044715;

/// Reference forward.
pub fn gelu_fwd_ref<F: Float>(x: &[F], y: &mut [F]) {
    let (s, c, half) = (
        F::from_f64(SQRT_2_OVER_PI),
        F::from_f64(COEF),
        F::from_f64(0.5),
    );
    for (o, &v) in y.iter_mut().zip(x) {
        *o = half * v * (F::one() + (s * (v + c * v * v * v)).tanh());
    }
}

/// Reference backward: `dx = dy · gelu'(x)`.
pub fn gelu_bwd_ref<F: Float>(x: &[F], dy: &[F], dx: &mut [F]) {
    let (s, c, half) = (
        F::from_f64(SQRT_2_OVER_PI),
        F::from_f64(COEF),
        F::from_f64(0.5),
    );
    let three = F::from_f64(3.0);
    for ((o, &v), &g) in dx.iter_mut().zip(x).zip(dy) {
        let th = (s * (v + c * v * v * v)).tanh();
        let du = s * (F::one() + three * c * v * v);
        *o = g * (half * (F::one() + th) + half * v * (F::one() - th * th) * du);
    }
}

// ---------------------------------------------------------------------------------------------
// Fast f32 versions: element-wise SIMD, rayon over fixed-size chunks above a size threshold.
// They use the identity ½(1 + tanh u) = σ(2u) = 1/(1 + e^(−2u)):
//   y = x / (1 + e),  e = e^(−2u);
//   dy/dx = σ + 2x·σ(1−σ)·u′ = σ·(1 + 2x·(e·σ)·u′),  u′ = √(2/π)(1 + 3·0.044715x²),
// which is the same function as the reference but keeps relative accuracy for x ≪ 0 (where
// 1 + tanh u cancels). e^(−2u) is clamped at e^88 so that e·σ stays finite (≈ 1).
// ---------------------------------------------------------------------------------------------

/// Largest exponent fed to exp: keeps e, 1 + e and e·σ finite.
const EXP_CLAMP: f32 = 88.0;

/// Fast f32 forward (same contract as [`gelu_fwd_ref`]).
pub fn gelu_fwd(x: &[f32], y: &mut [f32]) {
    gelu_fwd_with(simd_level(), x, y)
}

/// Fast f32 backward (same contract as [`gelu_bwd_ref`]).
pub fn gelu_bwd(x: &[f32], dy: &[f32], dx: &mut [f32]) {
    gelu_bwd_with(simd_level(), x, dy, dx)
}

/// [`gelu_fwd`] at an explicit SIMD level: pass [`simd_level()`] or `SimdLevel::Scalar`
/// (`Neon` currently runs the scalar loop).
pub fn gelu_fwd_with(level: SimdLevel, x: &[f32], y: &mut [f32]) {
    let avx2 = level == SimdLevel::Avx2Fma && simd_level() == SimdLevel::Avx2Fma;
    let avx512 = avx2 && crate::simd::avx512_usable();
    let n = x.len().min(y.len());
    for_elem_tasks(&mut y[..n], |off, yc| {
        let xc = &x[off..off + yc.len()];
        #[cfg(target_arch = "x86_64")]
        if avx512 {
            // SAFETY: `avx512` is only true when AVX-512F was detected.
            return unsafe { avx512::fwd(xc, yc) };
        }
        let _ = avx512;
        #[cfg(target_arch = "x86_64")]
        if avx2 {
            // SAFETY: `avx2` is only true when AVX2+FMA were detected.
            return unsafe { avx2::fwd(xc, yc) };
        }
        let _ = avx2;
        for (o, &v) in yc.iter_mut().zip(xc) {
            let u = SQRT_2_OVER_PI as f32 * v * (1.0 + COEF as f32 * v * v);
            *o = v / (1.0 + (-2.0 * u).min(EXP_CLAMP).exp());
        }
    });
}

/// [`gelu_bwd`] at an explicit SIMD level (see [`gelu_fwd_with`]).
pub fn gelu_bwd_with(level: SimdLevel, x: &[f32], dy: &[f32], dx: &mut [f32]) {
    let avx2 = level == SimdLevel::Avx2Fma && simd_level() == SimdLevel::Avx2Fma;
    let avx512 = avx2 && crate::simd::avx512_usable();
    let n = x.len().min(dy.len()).min(dx.len());
    for_elem_tasks(&mut dx[..n], |off, dxc| {
        let (xc, dyc) = (&x[off..off + dxc.len()], &dy[off..off + dxc.len()]);
        #[cfg(target_arch = "x86_64")]
        if avx512 {
            // SAFETY: `avx512` is only true when AVX-512F was detected.
            return unsafe { avx512::bwd(xc, dyc, dxc) };
        }
        let _ = avx512;
        #[cfg(target_arch = "x86_64")]
        if avx2 {
            // SAFETY: `avx2` is only true when AVX2+FMA were detected.
            return unsafe { avx2::bwd(xc, dyc, dxc) };
        }
        let _ = avx2;
        let (s, c) = (SQRT_2_OVER_PI as f32, COEF as f32);
        for ((o, &v), &g) in dxc.iter_mut().zip(xc).zip(dyc) {
            let u = s * v * (1.0 + c * v * v);
            let e = (-2.0 * u).min(EXP_CLAMP).exp();
            let sig = 1.0 / (1.0 + e);
            let du = s * (1.0 + 3.0 * c * v * v);
            *o = g * (sig * (1.0 + 2.0 * v * (e * sig) * du));
        }
    });
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{COEF, EXP_CLAMP, SQRT_2_OVER_PI};
    use crate::cpu::vecmath::avx2::{exp, load_partial, store_partial, W};
    use std::arch::x86_64::*;

    /// (e^(−2u), x) for a vector of x.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn exp_m2u(x: __m256) -> __m256 {
        let x2 = _mm256_mul_ps(x, x);
        let inner = _mm256_fmadd_ps(_mm256_set1_ps(COEF as f32), x2, _mm256_set1_ps(1.0));
        let m2u = _mm256_mul_ps(
            _mm256_set1_ps(-2.0 * SQRT_2_OVER_PI as f32),
            _mm256_mul_ps(x, inner),
        );
        exp(_mm256_min_ps(m2u, _mm256_set1_ps(EXP_CLAMP)))
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn fwd_vec(x: __m256) -> __m256 {
        _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0), exp_m2u(x)))
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn bwd_vec(x: __m256, g: __m256) -> __m256 {
        let one = _mm256_set1_ps(1.0);
        let e = exp_m2u(x);
        let sig = _mm256_div_ps(one, _mm256_add_ps(one, e));
        let s = SQRT_2_OVER_PI as f32;
        let du = _mm256_fmadd_ps(
            _mm256_set1_ps(3.0 * COEF as f32 * s),
            _mm256_mul_ps(x, x),
            _mm256_set1_ps(s),
        );
        let two_x = _mm256_add_ps(x, x);
        let t = _mm256_mul_ps(_mm256_mul_ps(two_x, _mm256_mul_ps(e, sig)), du);
        _mm256_mul_ps(g, _mm256_mul_ps(sig, _mm256_add_ps(one, t)))
    }

    // SAFETY (both): the slices hold at least `y.len()` / `dx.len()` elements (the caller
    // slices them to the same chunk); full vectors stay below n, the tail touches the rest.

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn fwd(x: &[f32], y: &mut [f32]) {
        let n = y.len();
        let (px, py) = (x.as_ptr(), y.as_mut_ptr());
        let mut i = 0;
        while i + W <= n {
            _mm256_storeu_ps(py.add(i), fwd_vec(_mm256_loadu_ps(px.add(i))));
            i += W;
        }
        if i < n {
            store_partial(
                py.add(i),
                n - i,
                fwd_vec(load_partial(px.add(i), n - i, 0.0)),
            );
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn bwd(x: &[f32], dy: &[f32], dx: &mut [f32]) {
        let n = dx.len();
        let (px, pdy, pdx) = (x.as_ptr(), dy.as_ptr(), dx.as_mut_ptr());
        let mut i = 0;
        while i + W <= n {
            let v = bwd_vec(_mm256_loadu_ps(px.add(i)), _mm256_loadu_ps(pdy.add(i)));
            _mm256_storeu_ps(pdx.add(i), v);
            i += W;
        }
        if i < n {
            let k = n - i;
            let v = bwd_vec(
                load_partial(px.add(i), k, 0.0),
                load_partial(pdy.add(i), k, 0.0),
            );
            store_partial(pdx.add(i), k, v);
        }
    }
}

/// The AVX2 code at 16 lanes (AVX-512F), for CPUs that have it (see
/// `crate::simd::avx512_usable`); the same formulas, lane for lane.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{COEF, EXP_CLAMP, SQRT_2_OVER_PI};
    use std::arch::x86_64::*;

    /// Lanes per vector.
    const W: usize = 16;

    /// e^x per lane: `vecmath::avx2::exp` at 16 lanes (Cephes polynomial, 2ⁿ scaling in two
    /// halves so that it over/underflows as libm does).
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn exp(x: __m512) -> __m512 {
        let x = _mm512_max_ps(
            _mm512_set1_ps(-104.0),
            _mm512_min_ps(_mm512_set1_ps(89.0), x),
        );
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
        );
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_359_4), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.121_944_4e-4), r);
        let mut p = _mm512_set1_ps(1.987_569_1e-4);
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.398_2e-3));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.333_452e-3));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.166_579_6e-2));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.166_666_65));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5));
        let r2 = _mm512_mul_ps(r, r);
        let e = _mm512_add_ps(_mm512_fmadd_ps(p, r2, r), _mm512_set1_ps(1.0));
        let ni = _mm512_cvtps_epi32(n);
        let n1 = _mm512_srai_epi32::<1>(ni);
        let n2 = _mm512_sub_epi32(ni, n1);
        let bias = _mm512_set1_epi32(127);
        let s1 = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(n1, bias)));
        let s2 = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(n2, bias)));
        _mm512_mul_ps(_mm512_mul_ps(e, s1), s2)
    }

    /// e^(−2u) for a vector of x.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn exp_m2u(x: __m512) -> __m512 {
        let x2 = _mm512_mul_ps(x, x);
        let inner = _mm512_fmadd_ps(_mm512_set1_ps(COEF as f32), x2, _mm512_set1_ps(1.0));
        let m2u = _mm512_mul_ps(
            _mm512_set1_ps(-2.0 * SQRT_2_OVER_PI as f32),
            _mm512_mul_ps(x, inner),
        );
        exp(_mm512_min_ps(m2u, _mm512_set1_ps(EXP_CLAMP)))
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn fwd_vec(x: __m512) -> __m512 {
        _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0), exp_m2u(x)))
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn bwd_vec(x: __m512, g: __m512) -> __m512 {
        let one = _mm512_set1_ps(1.0);
        let e = exp_m2u(x);
        let sig = _mm512_div_ps(one, _mm512_add_ps(one, e));
        let s = SQRT_2_OVER_PI as f32;
        let du = _mm512_fmadd_ps(
            _mm512_set1_ps(3.0 * COEF as f32 * s),
            _mm512_mul_ps(x, x),
            _mm512_set1_ps(s),
        );
        let two_x = _mm512_add_ps(x, x);
        let t = _mm512_mul_ps(_mm512_mul_ps(two_x, _mm512_mul_ps(e, sig)), du);
        _mm512_mul_ps(g, _mm512_mul_ps(sig, _mm512_add_ps(one, t)))
    }

    /// Lanes 0..k of a mask (k < 16).
    fn tail_mask(k: usize) -> __mmask16 {
        ((1u32 << k) - 1) as __mmask16
    }

    // SAFETY (both): the slices hold at least `y.len()` / `dx.len()` elements (the caller
    // slices them to the same chunk); full vectors stay below n, the masked tail touches
    // exactly the n − i elements left.

    #[target_feature(enable = "avx512f")]
    pub unsafe fn fwd(x: &[f32], y: &mut [f32]) {
        let n = y.len();
        let (px, py) = (x.as_ptr(), y.as_mut_ptr());
        let mut i = 0;
        while i + W <= n {
            _mm512_storeu_ps(py.add(i), fwd_vec(_mm512_loadu_ps(px.add(i))));
            i += W;
        }
        if i < n {
            let m = tail_mask(n - i);
            let v = fwd_vec(_mm512_maskz_loadu_ps(m, px.add(i)));
            _mm512_mask_storeu_ps(py.add(i), m, v);
        }
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn bwd(x: &[f32], dy: &[f32], dx: &mut [f32]) {
        let n = dx.len();
        let (px, pdy, pdx) = (x.as_ptr(), dy.as_ptr(), dx.as_mut_ptr());
        let mut i = 0;
        while i + W <= n {
            let v = bwd_vec(_mm512_loadu_ps(px.add(i)), _mm512_loadu_ps(pdy.add(i)));
            _mm512_storeu_ps(pdx.add(i), v);
            i += W;
        }
        if i < n {
            let m = tail_mask(n - i);
            let v = bwd_vec(
                _mm512_maskz_loadu_ps(m, px.add(i)),
                _mm512_maskz_loadu_ps(m, pdy.add(i)),
            );
            _mm512_mask_storeu_ps(pdx.add(i), m, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testutil::{assert_close, levels, to64, Rng};
    use proptest::prelude::*;

    fn check(level: SimdLevel, x: &[f32], seed: u64) {
        let n = x.len();
        let dy = Rng::new(seed).vec(n, -1.0, 1.0);
        let mut y = vec![9.0; n];
        gelu_fwd_with(level, x, &mut y);
        let mut y64 = vec![0.0; n];
        gelu_fwd_ref(&to64(x), &mut y64);
        // atol only matters for x ≪ 0, where y is tiny (and the f64 reference itself loses
        // relative accuracy to the cancellation in 1 + tanh u).
        assert_close(&format!("gelu {level} n={n}"), &y, &y64, 1e-5, 1e-12);
        let mut dx = vec![9.0; n];
        gelu_bwd_with(level, x, &dy, &mut dx);
        let mut dx64 = vec![0.0; n];
        gelu_bwd_ref(&to64(x), &to64(&dy), &mut dx64);
        // gelu′ crosses 0 near x ≈ −0.75 (a difference of O(1) terms): absolute 1e-7 there.
        assert_close(&format!("gelu bwd {level} n={n}"), &dx, &dx64, 1e-5, 1e-7);
    }

    #[test]
    fn matches_reference() {
        for level in levels() {
            for n in [0, 1, 3, 7, 8, 9, 33, 65, 127, 1000, 100_003] {
                let x = Rng::new(n as u64).vec(n, -8.0, 8.0);
                check(level, &x, n as u64);
            }
            // A dense grid, the far tails, and signed zeros.
            let mut x: Vec<f32> = (-20_000..=20_000).map(|i| i as f32 * 5e-4).collect();
            x.extend([-1e4, -100.0, -30.0, -0.0, 0.0, 30.0, 100.0, 1e4]);
            check(level, &x, 1);
        }
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn avx2_and_avx512_modules_match_reference() {
        // `levels()` reaches one x86 module (AVX-512 where the CPU has it): run both directly.
        let mut x: Vec<f32> = (-20_000..=20_000).map(|i| i as f32 * 5e-4).collect();
        x.extend([-1e4, -100.0, -30.0, -0.0, 0.0, 30.0, 100.0, 1e4, 0.3]); // 40010: ragged tail
        let dy = Rng::new(3).vec(x.len(), -1.0, 1.0);
        let (mut y64, mut dx64) = (vec![0.0; x.len()], vec![0.0; x.len()]);
        gelu_fwd_ref(&to64(&x), &mut y64);
        gelu_bwd_ref(&to64(&x), &to64(&dy), &mut dx64);
        type Fwd = fn(&[f32], &mut [f32]);
        type Bwd = fn(&[f32], &[f32], &mut [f32]);
        let mut runs: Vec<(&str, Fwd, Bwd)> = vec![];
        if simd_level() == SimdLevel::Avx2Fma {
            // SAFETY (the wrappers): called only when the CPU has the instruction set.
            runs.push((
                "avx2",
                |x, y| unsafe { avx2::fwd(x, y) },
                |x, g, d| unsafe { avx2::bwd(x, g, d) },
            ));
            if is_x86_feature_detected!("avx512f") {
                runs.push((
                    "avx512",
                    |x, y| unsafe { avx512::fwd(x, y) },
                    |x, g, d| unsafe { avx512::bwd(x, g, d) },
                ));
            }
        }
        for (name, fwd, bwd) in runs {
            let (mut y, mut dx) = (vec![9.0; x.len()], vec![9.0; x.len()]);
            fwd(&x, &mut y);
            bwd(&x, &dy, &mut dx);
            assert_close(&format!("gelu {name}"), &y, &y64, 1e-5, 1e-12);
            assert_close(&format!("gelu bwd {name}"), &dx, &dx64, 1e-5, 1e-7);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn matches_reference_random_sizes(n in 0usize..5000, seed in 0u64..1000, scale in 0.1f32..12.0) {
            let x = Rng::new(seed).vec(n, -scale, scale);
            for level in levels() {
                check(level, &x, seed);
            }
        }
    }
}
