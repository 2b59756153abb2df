//! Layer normalisation over the last axis, forward and backward.
//!
//! `x` is `[rows, cols]`; each row is normalised independently:
//!   μ = mean(x),  σ² = mean((x−μ)²)  (two-pass: numerically stable, never E[x²]−μ²),
//!   r = 1/√(σ²+ε),  x̂ = (x−μ)·r,  y = γ∘x̂ + β.
//! Backward, per row, with g = dy∘γ:
//!   dx = r·(g − mean(g) − x̂·mean(g∘x̂)),  dγ = Σ_rows dy∘x̂,  dβ = Σ_rows dy.

use crate::Float;

/// Reference forward. Writes `y` (`[rows, cols]`), `mean` and `rstd` (`[rows]`, saved for the
/// backward).
#[allow(clippy::too_many_arguments)]
pub fn layernorm_fwd_ref<F: Float>(
    x: &[F],
    gamma: &[F],
    beta: &[F],
    rows: usize,
    cols: usize,
    eps: F,
    y: &mut [F],
    mean: &mut [F],
    rstd: &mut [F],
) {
    let n = F::from_f64(cols as f64);
    for r in 0..rows {
        let xr = &x[r * cols..(r + 1) * cols];
        let mu = xr.iter().copied().sum::<F>() / n;
        let var = xr.iter().map(|&v| (v - mu) * (v - mu)).sum::<F>() / n;
        let rs = F::one() / (var + eps).sqrt();
        for c in 0..cols {
            y[r * cols + c] = (xr[c] - mu) * rs * gamma[c] + beta[c];
        }
        mean[r] = mu;
        rstd[r] = rs;
    }
}

/// Reference backward. Overwrites `dx`; overwrites `dgamma` and `dbeta` (`[cols]`).
#[allow(clippy::too_many_arguments)]
pub fn layernorm_bwd_ref<F: Float>(
    dy: &[F],
    x: &[F],
    gamma: &[F],
    mean: &[F],
    rstd: &[F],
    rows: usize,
    cols: usize,
    dx: &mut [F],
    dgamma: &mut [F],
    dbeta: &mut [F],
) {
    let n = F::from_f64(cols as f64);
    dgamma.iter_mut().for_each(|v| *v = F::zero());
    dbeta.iter_mut().for_each(|v| *v = F::zero());
    for r in 0..rows {
        let (mu, rs) = (mean[r], rstd[r]);
        let mut mean_g = F::zero();
        let mut mean_gx = F::zero();
        for c in 0..cols {
            let xhat = (x[r * cols + c] - mu) * rs;
            let g = dy[r * cols + c] * gamma[c];
            mean_g += g;
            mean_gx += g * xhat;
            dgamma[c] += dy[r * cols + c] * xhat;
            dbeta[c] += dy[r * cols + c];
        }
        mean_g /= n;
        mean_gx /= n;
        for c in 0..cols {
            let xhat = (x[r * cols + c] - mu) * rs;
            let g = dy[r * cols + c] * gamma[c];
            dx[r * cols + c] = rs * (g - mean_g - xhat * mean_gx);
        }
    }
}

/// Fast f32 forward (same contract as [`layernorm_fwd_ref`]).
#[allow(clippy::too_many_arguments)]
pub fn layernorm_fwd(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    rows: usize,
    cols: usize,
    eps: f32,
    y: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
) {
    layernorm_fwd_ref(x, gamma, beta, rows, cols, eps, y, mean, rstd)
}

/// Fast f32 backward (same contract as [`layernorm_bwd_ref`]).
#[allow(clippy::too_many_arguments)]
pub fn layernorm_bwd(
    dy: &[f32],
    x: &[f32],
    gamma: &[f32],
    mean: &[f32],
    rstd: &[f32],
    rows: usize,
    cols: usize,
    dx: &mut [f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) {
    layernorm_bwd_ref(dy, x, gamma, mean, rstd, rows, cols, dx, dgamma, dbeta)
}
