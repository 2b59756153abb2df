//! GELU, tanh approximation (as GPT-2 and `torch.nn.functional.gelu(x, approximate="tanh")`):
//!   y = ½x(1 + tanh(u)),  u = √(2/π)(x + 0.044715x³);
//!   dy/dx = ½(1 + tanh u) + ½x(1 − tanh²u)·√(2/π)(1 + 3·0.044715x²).

use crate::Float;

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

/// Fast f32 forward.
pub fn gelu_fwd(x: &[f32], y: &mut [f32]) {
    gelu_fwd_ref(x, y)
}

/// Fast f32 backward.
pub fn gelu_bwd(x: &[f32], dy: &[f32], dx: &mut [f32]) {
    gelu_bwd_ref(x, dy, dx)
}
