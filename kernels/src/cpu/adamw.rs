//! AdamW update (Loshchilov & Hutter, decoupled weight decay), exactly as `torch.optim.AdamW`
//! computes it (non-fused, non-amsgrad path), for one parameter tensor:
//!   p ← p·(1 − lr·λ)
//!   m ← β₁m + (1−β₁)g;   v ← β₂v + (1−β₂)g²
//!   p ← p − (lr / (1−β₁ᵗ)) · m / (√v / √(1−β₂ᵗ) + ε)      (ε outside the square root)

use crate::cpu::vecmath::{use_threads, ELEM_TASK};
use crate::{simd_level, Float, SimdLevel};
use rayon::prelude::*;

/// Hyper-parameters of one AdamW step. `step` counts from 1.
#[derive(Clone, Copy, Debug)]
pub struct AdamWStep {
    /// Learning rate.
    pub lr: f64,
    /// Decay of the first moment (mean of the gradients).
    pub beta1: f64,
    /// Decay of the second moment (mean of the squared gradients).
    pub beta2: f64,
    /// Added to the denominator, outside the square root (PyTorch's placement).
    pub eps: f64,
    /// Decoupled weight decay λ: the parameter shrinks by lr·λ each step.
    pub weight_decay: f64,
    /// The step number, from 1 (for the bias corrections 1−βᵗ).
    pub step: u64,
}

/// Reference update of `param`, `m`, `v` in place from `grad`.
pub fn adamw_ref<F: Float>(param: &mut [F], grad: &[F], m: &mut [F], v: &mut [F], h: AdamWStep) {
    let bc1 = 1.0 - h.beta1.powi(h.step as i32);
    let bc2 = 1.0 - h.beta2.powi(h.step as i32);
    let decay = F::from_f64(1.0 - h.lr * h.weight_decay);
    let (b1, b2) = (F::from_f64(h.beta1), F::from_f64(h.beta2));
    let step_size = F::from_f64(h.lr / bc1);
    let bc2_sqrt = F::from_f64(bc2.sqrt());
    let eps = F::from_f64(h.eps);
    for i in 0..param.len() {
        let g = grad[i];
        param[i] *= decay;
        m[i] = b1 * m[i] + (F::one() - b1) * g;
        v[i] = b2 * v[i] + (F::one() - b2) * g * g;
        let denom = v[i].sqrt() / bc2_sqrt + eps;
        param[i] -= step_size * m[i] / denom;
    }
}

// ---------------------------------------------------------------------------------------------
// Fast f32 version: the same operations in the same order as `adamw_ref::<f32>` (separate
// multiply and add, no FMA; IEEE sqrt and division), 8 lanes at a time, rayon over fixed-size
// chunks above a size threshold. So its result is bitwise the reference's in f32.
// ---------------------------------------------------------------------------------------------

/// Fast f32 update (same contract as [`adamw_ref`]; bitwise equal to `adamw_ref::<f32>`).
pub fn adamw(param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32], h: AdamWStep) {
    adamw_with(simd_level(), param, grad, m, v, h)
}

/// [`adamw`] at an explicit SIMD level: pass [`simd_level()`] or `SimdLevel::Scalar`
/// (`Neon` currently runs the scalar loop).
pub fn adamw_with(
    level: SimdLevel,
    param: &mut [f32],
    grad: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    h: AdamWStep,
) {
    let avx2 = level == SimdLevel::Avx2Fma && simd_level() == SimdLevel::Avx2Fma;
    let n = param.len().min(grad.len()).min(m.len()).min(v.len());
    let (param, grad, m, v) = (&mut param[..n], &grad[..n], &mut m[..n], &mut v[..n]);
    #[allow(clippy::type_complexity)]
    let task = |((p, g), (m, v)): ((&mut [f32], &[f32]), (&mut [f32], &mut [f32]))| {
        #[cfg(target_arch = "x86_64")]
        if avx2 {
            // SAFETY: `avx2` is only true when AVX2+FMA were detected.
            return unsafe { avx2::update(p, g, m, v, Consts::new(h)) };
        }
        let _ = avx2;
        adamw_ref(p, g, m, v, h)
    };
    if use_threads(n) {
        let pg = param
            .par_chunks_mut(ELEM_TASK)
            .zip(grad.par_chunks(ELEM_TASK));
        let mv = m.par_chunks_mut(ELEM_TASK).zip(v.par_chunks_mut(ELEM_TASK));
        pg.zip(mv).for_each(task);
    } else {
        let pg = param.chunks_mut(ELEM_TASK).zip(grad.chunks(ELEM_TASK));
        let mv = m.chunks_mut(ELEM_TASK).zip(v.chunks_mut(ELEM_TASK));
        pg.zip(mv).for_each(task);
    }
}

/// The per-step constants, rounded to f32 exactly as [`adamw_ref`] rounds them.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[derive(Clone, Copy)]
struct Consts {
    decay: f32,
    b1: f32,
    one_m_b1: f32,
    b2: f32,
    one_m_b2: f32,
    step_size: f32,
    bc2_sqrt: f32,
    eps: f32,
}

#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
impl Consts {
    fn new(h: AdamWStep) -> Self {
        let bc1 = 1.0 - h.beta1.powi(h.step as i32);
        let bc2 = 1.0 - h.beta2.powi(h.step as i32);
        let (b1, b2) = (h.beta1 as f32, h.beta2 as f32);
        Consts {
            decay: (1.0 - h.lr * h.weight_decay) as f32,
            b1,
            one_m_b1: 1.0 - b1,
            b2,
            one_m_b2: 1.0 - b2,
            step_size: (h.lr / bc1) as f32,
            bc2_sqrt: bc2.sqrt() as f32,
            eps: h.eps as f32,
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::Consts;
    use crate::cpu::vecmath::avx2::{load_partial, store_partial, W};
    use std::arch::x86_64::*;

    /// One vector of the update, operation for operation as the reference.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn step(p: __m256, g: __m256, m: __m256, v: __m256, c: Consts) -> [__m256; 3] {
        let p = _mm256_mul_ps(p, _mm256_set1_ps(c.decay));
        let m = _mm256_add_ps(
            _mm256_mul_ps(_mm256_set1_ps(c.b1), m),
            _mm256_mul_ps(_mm256_set1_ps(c.one_m_b1), g),
        );
        let v = _mm256_add_ps(
            _mm256_mul_ps(_mm256_set1_ps(c.b2), v),
            _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(c.one_m_b2), g), g),
        );
        let denom = _mm256_add_ps(
            _mm256_div_ps(_mm256_sqrt_ps(v), _mm256_set1_ps(c.bc2_sqrt)),
            _mm256_set1_ps(c.eps),
        );
        let upd = _mm256_div_ps(_mm256_mul_ps(_mm256_set1_ps(c.step_size), m), denom);
        [_mm256_sub_ps(p, upd), m, v]
    }

    /// Updates one chunk (all four slices of equal length).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn update(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], c: Consts) {
        let n = p.len();
        let (pp, pg, pm, pv) = (p.as_mut_ptr(), g.as_ptr(), m.as_mut_ptr(), v.as_mut_ptr());
        let mut i = 0;
        // SAFETY: all four slices hold n elements; full vectors stay below n and the tail
        // touches exactly n − i elements.
        while i + W <= n {
            let [np, nm, nv] = step(
                _mm256_loadu_ps(pp.add(i)),
                _mm256_loadu_ps(pg.add(i)),
                _mm256_loadu_ps(pm.add(i)),
                _mm256_loadu_ps(pv.add(i)),
                c,
            );
            _mm256_storeu_ps(pp.add(i), np);
            _mm256_storeu_ps(pm.add(i), nm);
            _mm256_storeu_ps(pv.add(i), nv);
            i += W;
        }
        if i < n {
            let k = n - i;
            let [np, nm, nv] = step(
                load_partial(pp.add(i), k, 0.0),
                load_partial(pg.add(i), k, 0.0),
                load_partial(pm.add(i), k, 0.0),
                load_partial(pv.add(i), k, 0.0),
                c,
            );
            store_partial(pp.add(i), k, np);
            store_partial(pm.add(i), k, nm);
            store_partial(pv.add(i), k, nv);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testutil::{assert_close, levels, to64, Rng};

    const H: AdamWStep = AdamWStep {
        lr: 3e-3,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.1,
        step: 0,
    };

    /// Five steps of the fast update vs `adamw_ref::<f32>` (bitwise) and `adamw_ref::<f64>`.
    fn check(level: SimdLevel, n: usize) {
        let mut rng = Rng::new(n as u64);
        let p0 = rng.vec(n, -1.0, 1.0);
        let (mut p, mut m, mut v) = (p0.clone(), vec![0.0f32; n], vec![0.0f32; n]);
        let (mut pr, mut mr, mut vr) = (p0.clone(), vec![0.0f32; n], vec![0.0f32; n]);
        let (mut p64, mut m64, mut v64) = (to64(&p0), vec![0.0f64; n], vec![0.0f64; n]);
        for step in 1..=5 {
            // Gradients over several magnitudes, some exactly zero.
            let g: Vec<f32> = (0..n)
                .map(|i| {
                    if i % 11 == 0 {
                        0.0
                    } else {
                        rng.uniform(-1.0, 1.0) * 10f32.powi(i as i32 % 5 - 3)
                    }
                })
                .collect();
            let h = AdamWStep { step, ..H };
            adamw_with(level, &mut p, &g, &mut m, &mut v, h);
            adamw_ref(&mut pr, &g, &mut mr, &mut vr, h);
            adamw_ref(&mut p64, &to64(&g), &mut m64, &mut v64, h);
        }
        let bits = |x: &[f32]| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(&p),
            bits(&pr),
            "{level} n={n}: param differs from adamw_ref::<f32>"
        );
        assert_eq!(bits(&m), bits(&mr), "{level} n={n}: m differs");
        assert_eq!(bits(&v), bits(&vr), "{level} n={n}: v differs");
        assert_close(&format!("param {level} n={n}"), &p, &p64, 1e-5, 1e-7);
        // m averages gradients of both signs and can cancel: absolute tolerance on the scale
        // of that element's gradients (10^(i mod 5 − 3)).
        for (i, (&a, &b)) in m.iter().zip(&m64).enumerate() {
            let scale = 10f64.powi(i as i32 % 5 - 3);
            assert!(
                (a as f64 - b).abs() <= 1e-5 * b.abs() + 1e-6 * scale,
                "m {level} n={n}[{i}]"
            );
        }
        assert_close(&format!("v {level} n={n}"), &v, &v64, 1e-5, 1e-15);
    }

    #[test]
    fn matches_reference() {
        for level in levels() {
            for n in [0, 1, 3, 7, 8, 9, 33, 65, 127, 1000, 100_003] {
                check(level, n);
            }
        }
    }
}
