//! Matrix multiplication: C = alpha·A·B + beta·C on strided f32/f64 matrices.
//!
//! Layout convention (the same as the `matrixmultiply` crate, so the two can be swapped in
//! benchmarks): element (i, j) of a matrix X lives at `x[i * rsx + j * csx]`. A transposed
//! operand is the same buffer with its strides swapped, so one routine serves A·B, Aᵀ·B,
//! A·Bᵀ and Aᵀ·Bᵀ without copies.

use crate::Float;

/// Reference GEMM: the triple loop, accumulating in the element type. The definition of the
/// math; the fast kernel is checked against it.
///
/// `c[i,j] = alpha * Σ_p a[i,p]·b[p,j] + beta * c[i,j]`, with A m×k, B k×n, C m×n.
/// When `beta == 0` the old contents of C are ignored (may be NaN), as in BLAS.
#[allow(clippy::too_many_arguments)]
pub fn gemm_ref<F: Float>(
    m: usize,
    k: usize,
    n: usize,
    alpha: F,
    a: &[F],
    rsa: usize,
    csa: usize,
    b: &[F],
    rsb: usize,
    csb: usize,
    beta: F,
    c: &mut [F],
    rsc: usize,
    csc: usize,
) {
    for i in 0..m {
        for j in 0..n {
            let mut acc = F::zero();
            for p in 0..k {
                acc += a[i * rsa + p * csa] * b[p * rsb + j * csb];
            }
            let dst = &mut c[i * rsc + j * csc];
            *dst = if beta == F::zero() {
                alpha * acc
            } else {
                alpha * acc + beta * *dst
            };
        }
    }
}

/// Fast single-precision GEMM (same contract as [`gemm_ref`]).
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: &[f32],
    rsa: usize,
    csa: usize,
    b: &[f32],
    rsb: usize,
    csb: usize,
    beta: f32,
    c: &mut [f32],
    rsc: usize,
    csc: usize,
) {
    // Transitional: the packed SIMD microkernel replaces this.
    gemm_ref(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc)
}
