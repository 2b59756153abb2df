//! AdamW update (Loshchilov & Hutter, decoupled weight decay), exactly as `torch.optim.AdamW`
//! computes it (non-fused, non-amsgrad path), for one parameter tensor:
//!   p ← p·(1 − lr·λ)
//!   m ← β₁m + (1−β₁)g;   v ← β₂v + (1−β₂)g²
//!   p ← p − (lr / (1−β₁ᵗ)) · m / (√v / √(1−β₂ᵗ) + ε)      (ε outside the square root)

use crate::Float;

/// Hyper-parameters of one AdamW step. `step` counts from 1.
#[derive(Clone, Copy, Debug)]
pub struct AdamWStep {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
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

/// Fast f32 update (same contract as [`adamw_ref`]).
pub fn adamw(param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32], h: AdamWStep) {
    adamw_ref(param, grad, m, v, h)
}
