//! Softmax and log-softmax over the last axis of a `[rows, cols]` matrix.
//!
//!   softmax: y_j = exp(x_j − m) / Σ_k exp(x_k − m), with m = max_k x_k (for stability);
//!            dx = y∘(dy − Σ_k dy_k·y_k).
//!   log-softmax: y_j = x_j − m − log Σ_k exp(x_k − m);
//!            dx = dy − exp(y)·Σ_k dy_k.

use crate::Float;

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

/// Fast f32 softmax forward.
pub fn softmax_fwd(x: &[f32], rows: usize, cols: usize, y: &mut [f32]) {
    softmax_fwd_ref(x, rows, cols, y)
}

/// Fast f32 softmax backward.
pub fn softmax_bwd(y: &[f32], dy: &[f32], rows: usize, cols: usize, dx: &mut [f32]) {
    softmax_bwd_ref(y, dy, rows, cols, dx)
}

/// Fast f32 log-softmax forward.
pub fn log_softmax_fwd(x: &[f32], rows: usize, cols: usize, y: &mut [f32]) {
    log_softmax_fwd_ref(x, rows, cols, y)
}

/// Fast f32 log-softmax backward.
pub fn log_softmax_bwd(y: &[f32], dy: &[f32], rows: usize, cols: usize, dx: &mut [f32]) {
    log_softmax_bwd_ref(y, dy, rows, cols, dx)
}
