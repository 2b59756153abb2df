//! Layer normalisation over the last axis, forward and backward.
//!
//! `x` is `[rows, cols]`; each row is normalised independently:
//!   μ = mean(x),  σ² = mean((x−μ)²)  (two-pass: numerically stable, never E\[x²\]−μ²),
//!   r = 1/√(σ²+ε),  x̂ = (x−μ)·r,  y = γ∘x̂ + β.
//! Backward, per row, with g = dy∘γ:
//!   dx = r·(g − mean(g) − x̂·mean(g∘x̂)),  dγ = Σ_rows dy∘x̂,  dβ = Σ_rows dy.
//!
//! Fused with the residual add that comes before it in a GPT block (`add_layernorm_fwd`):
//! s = x + r is written out (the residual stream goes on) and normalised while each row is
//! still in L1, instead of being written by one op and read back by the next. The backward
//! needs no fusion: it is the layernorm's, whose dx joins s's other gradient in autograd.

use crate::cpu::vecmath::{rows_per_task, scalar, use_threads};
use crate::{simd_level, Float, SimdLevel};
use rayon::prelude::*;

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

/// Reference fused residual add + forward: `s = x + r`, then [`layernorm_fwd_ref`] of `s`.
#[allow(clippy::too_many_arguments)]
pub fn add_layernorm_fwd_ref<F: Float>(
    x: &[F],
    r: &[F],
    gamma: &[F],
    beta: &[F],
    rows: usize,
    cols: usize,
    eps: F,
    s: &mut [F],
    y: &mut [F],
    mean: &mut [F],
    rstd: &mut [F],
) {
    let n = rows * cols;
    for ((o, &a), &b) in s[..n].iter_mut().zip(&x[..n]).zip(&r[..n]) {
        *o = a + b;
    }
    layernorm_fwd_ref(s, gamma, beta, rows, cols, eps, y, mean, rstd);
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

// ---------------------------------------------------------------------------------------------
// Fast f32 version. Rows are independent, so rayon splits them into tasks of whole rows (a
// fixed number per task, from the row length only); within a row the passes run over SIMD
// vectors while the row sits in L1. The backward's dγ/dβ are sums over rows: each task writes
// its own partial sums, and the partials are added in task order afterwards, so the result is
// bitwise the same whatever the thread count or scheduling.
// ---------------------------------------------------------------------------------------------

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
    layernorm_fwd_with(simd_level(), x, gamma, beta, rows, cols, eps, y, mean, rstd)
}

/// [`layernorm_fwd`] at an explicit SIMD level (tests force `Scalar`; `Neon` currently runs
/// the scalar loops). `level` must not claim more than the CPU has: pass [`simd_level()`] or
/// `SimdLevel::Scalar`.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_fwd_with(
    level: SimdLevel,
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
    if rows == 0 || cols == 0 {
        return layernorm_fwd_ref(x, gamma, beta, rows, cols, eps, y, mean, rstd);
    }
    fwd_rows(level, x, None, gamma, beta, rows, cols, eps, y, mean, rstd);
}

/// Fast f32 fused residual add + forward (same contract as [`add_layernorm_fwd_ref`]): each
/// row of `s = x + r` is added and normalised in one visit. Bit for bit the same as the add
/// followed by [`layernorm_fwd`]: the same f32 adds, then the same row function.
#[allow(clippy::too_many_arguments)]
pub fn add_layernorm_fwd(
    x: &[f32],
    r: &[f32],
    gamma: &[f32],
    beta: &[f32],
    rows: usize,
    cols: usize,
    eps: f32,
    s: &mut [f32],
    y: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
) {
    add_layernorm_fwd_with(
        simd_level(),
        x,
        r,
        gamma,
        beta,
        rows,
        cols,
        eps,
        s,
        y,
        mean,
        rstd,
    )
}

/// [`add_layernorm_fwd`] at an explicit SIMD level (see [`layernorm_fwd_with`]).
#[allow(clippy::too_many_arguments)]
pub fn add_layernorm_fwd_with(
    level: SimdLevel,
    x: &[f32],
    r: &[f32],
    gamma: &[f32],
    beta: &[f32],
    rows: usize,
    cols: usize,
    eps: f32,
    s: &mut [f32],
    y: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
) {
    if rows == 0 || cols == 0 {
        return add_layernorm_fwd_ref(x, r, gamma, beta, rows, cols, eps, s, y, mean, rstd);
    }
    fwd_rows(
        level,
        x,
        Some((r, s)),
        gamma,
        beta,
        rows,
        cols,
        eps,
        y,
        mean,
        rstd,
    );
}

/// The fast forward of both entry points: normalises each row of `x` or, with `residual =
/// Some((r, s))`, writes the row of `s = x + r` and normalises it while it is in L1. Rows are
/// split into tasks of whole rows (a fixed number per task, from the row length only).
#[allow(clippy::too_many_arguments)]
fn fwd_rows(
    level: SimdLevel,
    x: &[f32],
    residual: Option<(&[f32], &mut [f32])>,
    gamma: &[f32],
    beta: &[f32],
    rows: usize,
    cols: usize,
    eps: f32,
    y: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
) {
    let level = checked(level);
    let n = rows * cols;
    let (x, y, gamma, beta) = (&x[..n], &mut y[..n], &gamma[..cols], &beta[..cols]);
    let (mean, rstd) = (&mut mean[..rows], &mut rstd[..rows]);
    let rpt = rows_per_task(cols);
    let stream = streams(y);
    // Per task: its rows of the residual and of the sum, when there is one.
    let sums: Vec<Option<(&[f32], &mut [f32])>> = match residual {
        Some((r, s)) => r[..n]
            .chunks(rpt * cols)
            .zip(s[..n].chunks_mut(rpt * cols))
            .map(Some)
            .collect(),
        None => (0..rows.div_ceil(rpt)).map(|_| None).collect(),
    };
    #[allow(clippy::type_complexity)]
    let task = |(t, (((yc, mc), rc), sum)): (
        usize,
        (
            ((&mut [f32], &mut [f32]), &mut [f32]),
            Option<(&[f32], &mut [f32])>,
        ),
    )| {
        let mut sum = sum;
        for (i, yr) in yc.chunks_exact_mut(cols).enumerate() {
            let row = (t * rpt + i) * cols..(t * rpt + i + 1) * cols;
            let xr = &x[row];
            let input: &[f32] = match &mut sum {
                Some((res, sum_rows)) => {
                    let (rr, sr) = (&res[i * cols..], &mut sum_rows[i * cols..(i + 1) * cols]);
                    for ((o, &a), &b) in sr.iter_mut().zip(xr).zip(rr) {
                        *o = a + b;
                    }
                    sr
                }
                None => xr,
            };
            let (mu, rs) = fwd_row(level, input, gamma, beta, eps, yr, stream);
            mc[i] = mu;
            rc[i] = rs;
        }
        store_fence(stream);
    };
    if use_threads(n) {
        let it = y.par_chunks_mut(rpt * cols).zip(mean.par_chunks_mut(rpt));
        let it = it.zip(rstd.par_chunks_mut(rpt)).zip(sums.into_par_iter());
        it.enumerate().for_each(task);
    } else {
        let it = y.chunks_mut(rpt * cols).zip(mean.chunks_mut(rpt));
        let it = it.zip(rstd.chunks_mut(rpt)).zip(sums);
        it.enumerate().for_each(task);
    }
}

/// Fast f32 backward (same contract as [`layernorm_bwd_ref`]). Deterministic: the same inputs
/// give the same bits for any thread count.
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
    layernorm_bwd_with(
        simd_level(),
        dy,
        x,
        gamma,
        mean,
        rstd,
        rows,
        cols,
        dx,
        dgamma,
        dbeta,
    )
}

/// [`layernorm_bwd`] at an explicit SIMD level (see [`layernorm_fwd_with`]).
#[allow(clippy::too_many_arguments)]
pub fn layernorm_bwd_with(
    level: SimdLevel,
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
    let level = checked(level);
    if rows == 0 || cols == 0 {
        return layernorm_bwd_ref(dy, x, gamma, mean, rstd, rows, cols, dx, dgamma, dbeta);
    }
    let n = rows * cols;
    let (dy, x, dx, gamma) = (&dy[..n], &x[..n], &mut dx[..n], &gamma[..cols]);
    let (dgamma, dbeta) = (&mut dgamma[..cols], &mut dbeta[..cols]);
    let rpt = rows_per_task(cols);
    let stream = streams(dx);
    // Per task: [dγ partial | dβ partial].
    let mut partial = vec![0.0f32; rows.div_ceil(rpt) * 2 * cols];
    let task = |(t, (dxc, pc)): (usize, (&mut [f32], &mut [f32]))| {
        let (pg, pb) = pc.split_at_mut(cols);
        for (i, dxr) in dxc.chunks_exact_mut(cols).enumerate() {
            let r = t * rpt + i;
            let s = r * cols..(r + 1) * cols;
            let (dyr, xr) = (&dy[s.clone()], &x[s]);
            bwd_row(level, dyr, xr, gamma, mean[r], rstd[r], dxr, pg, pb, stream);
        }
        store_fence(stream);
    };
    if use_threads(n) {
        let it = dx
            .par_chunks_mut(rpt * cols)
            .zip(partial.par_chunks_mut(2 * cols));
        it.enumerate().for_each(task);
    } else {
        let it = dx.chunks_mut(rpt * cols).zip(partial.chunks_mut(2 * cols));
        it.enumerate().for_each(task);
    }
    // Fixed-order reduction of the partials.
    let mut parts = partial.chunks_exact(2 * cols);
    let first = parts.next().unwrap_or(&[]);
    dgamma.copy_from_slice(&first[..cols]);
    dbeta.copy_from_slice(&first[cols..]);
    for p in parts {
        let (pg, pb) = p.split_at(cols);
        dgamma.iter_mut().zip(pg).for_each(|(a, &b)| *a += b);
        dbeta.iter_mut().zip(pb).for_each(|(a, &b)| *a += b);
    }
}

/// Outputs at least this large (bytes) are written with non-temporal (streaming) stores: they
/// cannot stay in the caches anyway (the L3 of the machines measured is 32 MiB, shared by
/// the inputs), and a streaming store skips the read that a normal store of a line not in
/// cache costs first (write-allocate): 1 of the 3 (forward) or 4 (backward) row-sized
/// transfers. Smaller outputs (every layernorm of a GPT training step here) keep normal
/// stores, so the next op finds them in cache.
const STREAM_MIN_BYTES: usize = 16 << 20;

/// Whether the row functions write `out` with streaming stores: large enough, and aligned so
/// that every row starts on a 32-byte boundary (the aligned stores need it).
fn streams(out: &[f32]) -> bool {
    std::mem::size_of_val(out) >= STREAM_MIN_BYTES && (out.as_ptr() as usize).is_multiple_of(32)
}

/// Orders a task's streaming stores before whatever follows (they are weakly ordered).
fn store_fence(stream: bool) {
    #[cfg(target_arch = "x86_64")]
    if stream {
        // SAFETY: SFENCE is part of SSE, which every x86-64 CPU has.
        unsafe { std::arch::x86_64::_mm_sfence() };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = stream;
}

/// The level the row functions use: AVX2 where asked for and present, else scalar (NEON has
/// no hand-written path yet).
fn checked(level: SimdLevel) -> SimdLevel {
    match level {
        SimdLevel::Avx2Fma if simd_level() == SimdLevel::Avx2Fma => SimdLevel::Avx2Fma,
        _ => SimdLevel::Scalar,
    }
}

/// Normalises one row into `y`; returns (μ, 1/σ). `stream`: see [`streams`] (AVX2 path only;
/// rows whose length is not a multiple of 8 floats fall back to normal stores).
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))] // `stream`: an AVX2 hint
fn fwd_row(
    level: SimdLevel,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    y: &mut [f32],
    stream: bool,
) -> (f32, f32) {
    match level {
        // SAFETY: `checked` only yields Avx2Fma when the CPU has AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2Fma => unsafe { avx2::fwd_row(x, gamma, beta, eps, y, stream) },
        _ => {
            let n = x.len() as f32;
            let mu = scalar::sum(x) / n;
            let rs = 1.0 / (scalar::sum_sq_dev(x, mu) / n + eps).sqrt();
            for (((o, &v), &g), &b) in y.iter_mut().zip(x).zip(gamma).zip(beta) {
                *o = (v - mu) * rs * g + b;
            }
            (mu, rs)
        }
    }
}

/// Backward of one row: writes `dx`, adds dy∘x̂ into `dg` and dy into `db`.
#[allow(clippy::too_many_arguments)]
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))] // `stream`: an AVX2 hint
fn bwd_row(
    level: SimdLevel,
    dy: &[f32],
    x: &[f32],
    gamma: &[f32],
    mu: f32,
    rs: f32,
    dx: &mut [f32],
    dg: &mut [f32],
    db: &mut [f32],
    stream: bool,
) {
    match level {
        // SAFETY: `checked` only yields Avx2Fma when the CPU has AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2Fma => unsafe { avx2::bwd_row(dy, x, gamma, mu, rs, dx, dg, db, stream) },
        _ => {
            let n = x.len() as f32;
            let (mut sg, mut sgx) = (0.0f32, 0.0f32);
            for c in 0..x.len() {
                let xhat = (x[c] - mu) * rs;
                let g = dy[c] * gamma[c];
                sg += g;
                sgx += g * xhat;
                dg[c] += dy[c] * xhat;
                db[c] += dy[c];
            }
            let (mg, mgx) = (sg / n, sgx / n);
            for c in 0..x.len() {
                let xhat = (x[c] - mu) * rs;
                dx[c] = rs * (dy[c] * gamma[c] - mg - xhat * mgx);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use crate::cpu::vecmath::avx2::{hsum, load_partial, store_partial, sum, sum_sq_dev, W};
    use std::arch::x86_64::*;

    /// AVX2 forward of one row: two-pass mean/variance, then y = x̂·γ + β with FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn fwd_row(
        x: &[f32],
        gamma: &[f32],
        beta: &[f32],
        eps: f32,
        y: &mut [f32],
        stream: bool,
    ) -> (f32, f32) {
        let n = x.len();
        // Aligned streaming stores need every vector at a 32-byte boundary.
        let stream = stream && n.is_multiple_of(W) && (y.as_ptr() as usize).is_multiple_of(32);
        let mu = sum(x) / n as f32;
        let rs = 1.0 / (sum_sq_dev(x, mu) / n as f32 + eps).sqrt();
        let (muv, rsv) = (_mm256_set1_ps(mu), _mm256_set1_ps(rs));
        let (px, pg, pb, py) = (x.as_ptr(), gamma.as_ptr(), beta.as_ptr(), y.as_mut_ptr());
        let mut i = 0;
        // SAFETY: all slices hold n elements (callers slice them to the row); full-vector
        // accesses stay below n, the tail touches exactly n − i elements.
        while i + W <= n {
            let xhat = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(px.add(i)), muv), rsv);
            let o = _mm256_fmadd_ps(xhat, _mm256_loadu_ps(pg.add(i)), _mm256_loadu_ps(pb.add(i)));
            if stream {
                _mm256_stream_ps(py.add(i), o);
            } else {
                _mm256_storeu_ps(py.add(i), o);
            }
            i += W;
        }
        if i < n {
            let k = n - i;
            let xhat = _mm256_mul_ps(_mm256_sub_ps(load_partial(px.add(i), k, mu), muv), rsv);
            let (g, b) = (
                load_partial(pg.add(i), k, 0.0),
                load_partial(pb.add(i), k, 0.0),
            );
            store_partial(py.add(i), k, _mm256_fmadd_ps(xhat, g, b));
        }
        (mu, rs)
    }

    /// AVX2 backward of one row (see the module doc for the formulas).
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn bwd_row(
        dy: &[f32],
        x: &[f32],
        gamma: &[f32],
        mu: f32,
        rs: f32,
        dx: &mut [f32],
        dg: &mut [f32],
        db: &mut [f32],
        stream: bool,
    ) {
        let n = x.len();
        // Aligned streaming stores need every vector at a 32-byte boundary.
        let stream = stream && n.is_multiple_of(W) && (dx.as_ptr() as usize).is_multiple_of(32);
        let (muv, rsv) = (_mm256_set1_ps(mu), _mm256_set1_ps(rs));
        let (pdy, px, pgam) = (dy.as_ptr(), x.as_ptr(), gamma.as_ptr());
        let (pdx, pdg, pdb) = (dx.as_mut_ptr(), dg.as_mut_ptr(), db.as_mut_ptr());
        let (mut sg, mut sgx) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        // SAFETY (both passes): every slice holds n elements; full vectors stay below n and
        // the tail touches exactly n − i elements. Tail lanes load dy = 0, so they add 0.
        while i + W <= n {
            let d = _mm256_loadu_ps(pdy.add(i));
            let xhat = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(px.add(i)), muv), rsv);
            let g = _mm256_mul_ps(d, _mm256_loadu_ps(pgam.add(i)));
            sg = _mm256_add_ps(sg, g);
            sgx = _mm256_fmadd_ps(g, xhat, sgx);
            _mm256_storeu_ps(
                pdg.add(i),
                _mm256_fmadd_ps(d, xhat, _mm256_loadu_ps(pdg.add(i))),
            );
            _mm256_storeu_ps(pdb.add(i), _mm256_add_ps(d, _mm256_loadu_ps(pdb.add(i))));
            i += W;
        }
        if i < n {
            let k = n - i;
            let d = load_partial(pdy.add(i), k, 0.0);
            let xhat = _mm256_mul_ps(_mm256_sub_ps(load_partial(px.add(i), k, mu), muv), rsv);
            let g = _mm256_mul_ps(d, load_partial(pgam.add(i), k, 0.0));
            sg = _mm256_add_ps(sg, g);
            sgx = _mm256_fmadd_ps(g, xhat, sgx);
            let dgv = _mm256_fmadd_ps(d, xhat, load_partial(pdg.add(i), k, 0.0));
            store_partial(pdg.add(i), k, dgv);
            store_partial(
                pdb.add(i),
                k,
                _mm256_add_ps(d, load_partial(pdb.add(i), k, 0.0)),
            );
        }
        let mg = _mm256_set1_ps(hsum(sg) / n as f32);
        let mgx = _mm256_set1_ps(hsum(sgx) / n as f32);
        let mut i = 0;
        while i + W <= n {
            let xhat = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(px.add(i)), muv), rsv);
            let g = _mm256_mul_ps(_mm256_loadu_ps(pdy.add(i)), _mm256_loadu_ps(pgam.add(i)));
            let t = _mm256_fnmadd_ps(xhat, mgx, _mm256_sub_ps(g, mg));
            if stream {
                _mm256_stream_ps(pdx.add(i), _mm256_mul_ps(rsv, t));
            } else {
                _mm256_storeu_ps(pdx.add(i), _mm256_mul_ps(rsv, t));
            }
            i += W;
        }
        if i < n {
            let k = n - i;
            let xhat = _mm256_mul_ps(_mm256_sub_ps(load_partial(px.add(i), k, mu), muv), rsv);
            let g = _mm256_mul_ps(
                load_partial(pdy.add(i), k, 0.0),
                load_partial(pgam.add(i), k, 0.0),
            );
            let t = _mm256_fnmadd_ps(xhat, mgx, _mm256_sub_ps(g, mg));
            store_partial(pdx.add(i), k, _mm256_mul_ps(rsv, t));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testutil::{assert_close, levels, to64, Rng};
    use proptest::prelude::*;

    /// Runs fast fwd+bwd at `level` and the f64 reference on the same inputs; checks all outputs.
    fn check(level: SimdLevel, rows: usize, cols: usize, seed: u64) {
        let mut rng = Rng::new(seed);
        let n = rows * cols;
        // Per-row offsets exercise the mean subtraction.
        let mut x = rng.vec(n, -2.0, 2.0);
        for (r, row) in x.chunks_mut(cols).enumerate() {
            row.iter_mut().for_each(|v| *v += (r % 5) as f32 - 2.0);
        }
        let (gamma, beta) = (rng.vec(cols, 0.5, 1.5), rng.vec(cols, -0.5, 0.5));
        let dy = rng.vec(n, -1.0, 1.0);
        let eps = 1e-5;

        let (mut y, mut mean, mut rstd) = (vec![0.0; n], vec![0.0; rows], vec![0.0; rows]);
        layernorm_fwd_with(
            level, &x, &gamma, &beta, rows, cols, eps, &mut y, &mut mean, &mut rstd,
        );
        let (mut dx, mut dg, mut db) = (vec![0.0; n], vec![7.0; cols], vec![7.0; cols]);
        layernorm_bwd_with(
            level, &dy, &x, &gamma, &mean, &rstd, rows, cols, &mut dx, &mut dg, &mut db,
        );

        let (x64, g64, b64, dy64) = (to64(&x), to64(&gamma), to64(&beta), to64(&dy));
        let (mut y64, mut m64, mut r64) = (vec![0.0; n], vec![0.0; rows], vec![0.0; rows]);
        layernorm_fwd_ref(
            &x64, &g64, &b64, rows, cols, eps as f64, &mut y64, &mut m64, &mut r64,
        );
        let (mut dx64, mut dg64, mut db64) = (vec![0.0; n], vec![0.0; cols], vec![0.0; cols]);
        layernorm_bwd_ref(
            &dy64, &x64, &g64, &m64, &r64, rows, cols, &mut dx64, &mut dg64, &mut db64,
        );

        let ctx = format!("{level} {rows}x{cols}");
        // f32 rounding of x − μ is amplified by rstd, which is large when a row has a small
        // variance (a few close values; cols = 1: rstd = 1/√ε): y = x̂·γ + β is compared with
        // an absolute tolerance that scales with rstd, and dx = rstd·(γ·dy − mean(γ·dy) −
        // x̂·mean(γ·dy·x̂)), which multiplies x̂'s error by rstd once more, with one that
        // scales with rstd² (a 2-column row with rstd ≈ 135 once missed the rstd-only bound).
        let rstd_scale = r64.iter().fold(1.0f64, |a, &b| a.max(b));
        assert_close(&format!("y {ctx}"), &y, &y64, 1e-5, 2e-6 * rstd_scale);
        assert_close(&format!("mean {ctx}"), &mean, &m64, 1e-5, 1e-6);
        assert_close(&format!("rstd {ctx}"), &rstd, &r64, 1e-5, 0.0);
        let dx_tol = 2e-6 * rstd_scale * rstd_scale;
        assert_close(&format!("dx {ctx}"), &dx, &dx64, 1e-5, dx_tol);
        let sum_scale = rows as f64;
        assert_close(&format!("dgamma {ctx}"), &dg, &dg64, 1e-5, 2e-6 * sum_scale);
        assert_close(&format!("dbeta {ctx}"), &db, &db64, 1e-5, 2e-6 * sum_scale);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// The fused residual add + forward equals the add followed by the forward, bit for
        /// bit, at every SIMD level and on both sides of the threading threshold.
        #[test]
        fn fused_residual_add_equals_add_then_layernorm(
            rows in 1usize..700, cols in 1usize..200, seed in 0u64..1000,
        ) {
            let mut rng = Rng::new(seed);
            let n = rows * cols;
            let (x, r) = (rng.vec(n, -2.0, 2.0), rng.vec(n, -2.0, 2.0));
            let (gamma, beta) = (rng.vec(cols, 0.5, 1.5), rng.vec(cols, -0.5, 0.5));
            for level in levels() {
                let s_sep: Vec<f32> = x.iter().zip(&r).map(|(a, b)| a + b).collect();
                let (mut y_sep, mut m_sep, mut r_sep) = (vec![0.0; n], vec![0.0; rows], vec![0.0; rows]);
                layernorm_fwd_with(level, &s_sep, &gamma, &beta, rows, cols, 1e-5, &mut y_sep, &mut m_sep, &mut r_sep);
                let (mut s, mut y) = (vec![0.0; n], vec![0.0; n]);
                let (mut m, mut rs) = (vec![0.0; rows], vec![0.0; rows]);
                add_layernorm_fwd_with(level, &x, &r, &gamma, &beta, rows, cols, 1e-5, &mut s, &mut y, &mut m, &mut rs);
                prop_assert_eq!(&s, &s_sep, "sum at {}", level);
                prop_assert_eq!(&y, &y_sep, "y at {}", level);
                prop_assert_eq!(&m, &m_sep, "mean at {}", level);
                prop_assert_eq!(&rs, &r_sep, "rstd at {}", level);
            }
        }
    }

    #[test]
    fn streaming_stores_give_the_same_rows_as_normal_stores() {
        // An output of 16 MiB, 32-byte aligned, is written with streaming stores; its rows must
        // be bit for bit those of the same rows run alone (small: normal stores).
        let (rows, cols) = (STREAM_MIN_BYTES / 4 / 512, 512);
        let n = rows * cols;
        let mut rng = Rng::new(11);
        let (x, dy) = (rng.vec(n, -2.0, 2.0), rng.vec(n, -1.0, 1.0));
        let (gamma, beta) = (rng.vec(cols, 0.5, 1.5), rng.vec(cols, -0.5, 0.5));
        let aligned = |buf: &mut Vec<f32>| {
            let off = buf.as_ptr().align_offset(32);
            off..off + n
        };
        let (mut ybuf, mut dxbuf) = (vec![0.0; n + 8], vec![0.0; n + 8]);
        let (ry, rdx) = (aligned(&mut ybuf), aligned(&mut dxbuf));
        let (y, dx) = (&mut ybuf[ry], &mut dxbuf[rdx]);
        assert!(streams(y) && streams(dx));
        let (mut mean, mut rstd) = (vec![0.0; rows], vec![0.0; rows]);
        let (mut dg, mut db) = (vec![0.0; cols], vec![0.0; cols]);
        layernorm_fwd(&x, &gamma, &beta, rows, cols, 1e-5, y, &mut mean, &mut rstd);
        layernorm_bwd(
            &dy, &x, &gamma, &mean, &rstd, rows, cols, dx, &mut dg, &mut db,
        );
        for r in [0, 1, rows / 2, rows - 1] {
            let s = r * cols..(r + 1) * cols;
            let (mut y1, mut m1, mut r1) = (vec![0.0; cols], [0.0], [0.0]);
            layernorm_fwd(
                &x[s.clone()],
                &gamma,
                &beta,
                1,
                cols,
                1e-5,
                &mut y1,
                &mut m1,
                &mut r1,
            );
            let (mut dx1, mut dg1, mut db1) = (vec![0.0; cols], vec![0.0; cols], vec![0.0; cols]);
            layernorm_bwd(
                &dy[s.clone()],
                &x[s.clone()],
                &gamma,
                &m1,
                &r1,
                1,
                cols,
                &mut dx1,
                &mut dg1,
                &mut db1,
            );
            assert_eq!(&y[s.clone()], &y1[..], "y row {r}");
            assert_eq!(&dx[s], &dx1[..], "dx row {r}");
        }
    }

    #[test]
    fn matches_reference_on_awkward_shapes() {
        for level in levels() {
            for rows in [1, 3, 64] {
                for cols in [1, 3, 7, 8, 9, 33, 65, 127, 1000] {
                    check(level, rows, cols, (rows * 1000 + cols) as u64);
                }
            }
        }
    }

    #[test]
    fn matches_reference_threaded() {
        // Big enough to take the rayon path with several tasks.
        for level in levels() {
            check(level, 300, 768, 11);
        }
    }

    #[test]
    fn backward_is_bitwise_deterministic() {
        let (rows, cols) = (200, 768);
        let mut rng = Rng::new(5);
        let (x, dy) = (
            rng.vec(rows * cols, -3.0, 3.0),
            rng.vec(rows * cols, -1.0, 1.0),
        );
        let gamma = rng.vec(cols, 0.5, 1.5);
        let (mean, rstd) = (rng.vec(rows, -0.1, 0.1), rng.vec(rows, 0.5, 1.5));
        let run = || {
            let (mut dx, mut dg, mut db) =
                (vec![0.0; rows * cols], vec![0.0; cols], vec![0.0; cols]);
            layernorm_bwd(
                &dy, &x, &gamma, &mean, &rstd, rows, cols, &mut dx, &mut dg, &mut db,
            );
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            (bits(&dx), bits(&dg), bits(&db))
        };
        let a = run();
        assert_eq!(a, run(), "two runs differ");
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        assert_eq!(
            a,
            one.install(run),
            "1 thread differs from the default pool"
        );
        let three = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        assert_eq!(
            a,
            three.install(run),
            "3 threads differ from the default pool"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn matches_reference_random_sizes(rows in 1usize..40, cols in 1usize..300, seed in 0u64..1000) {
            for level in levels() {
                check(level, rows, cols, seed);
            }
        }
    }
}
