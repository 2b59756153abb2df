//! Cross-entropy fused with log-softmax, over rows of logits, with an ignore index.
//!
//! For row r with target t_r: loss_r = lse_r − x_{r,t_r}, where lse_r = log Σ_j exp(x_{r,j});
//! rows whose target equals `ignore_index` get loss 0 and zero gradient.
//! Backward with upstream dℓ_r: dx_{r,j} = dℓ_r·(softmax(x_r)_j − [j = t_r]).
//! The engine divides by the number of counted rows for a mean.

use crate::cpu::vecmath::{for_row_tasks, rows_per_task, scalar, use_threads};
use crate::{simd_level, Float, SimdLevel};
use rayon::prelude::*;

/// Reference forward. Writes per-row `losses` and `lse` (`[rows]`). The caller has checked
/// that every target is `ignore_index` or in `0..vocab`.
pub fn cross_entropy_fwd_ref<F: Float>(
    logits: &[F],
    targets: &[i64],
    rows: usize,
    vocab: usize,
    ignore_index: i64,
    losses: &mut [F],
    lse: &mut [F],
) {
    for r in 0..rows {
        let x = &logits[r * vocab..(r + 1) * vocab];
        let m = x.iter().fold(F::neg_infinity(), |a, &b| a.max(b));
        let l = m + x.iter().map(|&v| (v - m).exp()).sum::<F>().ln();
        lse[r] = l;
        losses[r] = if targets[r] == ignore_index {
            F::zero()
        } else {
            l - x[targets[r] as usize]
        };
    }
}

/// Reference backward. Overwrites `dlogits` (`[rows, vocab]`).
#[allow(clippy::too_many_arguments)]
pub fn cross_entropy_bwd_ref<F: Float>(
    logits: &[F],
    targets: &[i64],
    lse: &[F],
    dlosses: &[F],
    rows: usize,
    vocab: usize,
    ignore_index: i64,
    dlogits: &mut [F],
) {
    for r in 0..rows {
        let dx = &mut dlogits[r * vocab..(r + 1) * vocab];
        if targets[r] == ignore_index {
            dx.iter_mut().for_each(|v| *v = F::zero());
            continue;
        }
        let x = &logits[r * vocab..(r + 1) * vocab];
        for (o, &v) in dx.iter_mut().zip(x) {
            *o = dlosses[r] * (v - lse[r]).exp();
        }
        dx[targets[r] as usize] -= dlosses[r];
    }
}

// ---------------------------------------------------------------------------------------------
// Fast f32 versions. Rows are independent (rayon over tasks of whole rows). Forward: a SIMD
// max pass and a SIMD Σe^(x−m) pass per row; the loss is formed as (m − x_t) + log Σ, which
// avoids rounding m + log Σ before the subtraction. Backward: one SIMD pass
// dx = dℓ·e^(x − lse), then the target entry gets −dℓ.
// ---------------------------------------------------------------------------------------------

/// Fast f32 forward (same contract as [`cross_entropy_fwd_ref`]).
pub fn cross_entropy_fwd(
    logits: &[f32],
    targets: &[i64],
    rows: usize,
    vocab: usize,
    ignore_index: i64,
    losses: &mut [f32],
    lse: &mut [f32],
) {
    cross_entropy_fwd_with(
        simd_level(),
        logits,
        targets,
        rows,
        vocab,
        ignore_index,
        losses,
        lse,
    )
}

/// Fast f32 backward (same contract as [`cross_entropy_bwd_ref`]).
#[allow(clippy::too_many_arguments)]
pub fn cross_entropy_bwd(
    logits: &[f32],
    targets: &[i64],
    lse: &[f32],
    dlosses: &[f32],
    rows: usize,
    vocab: usize,
    ignore_index: i64,
    dlogits: &mut [f32],
) {
    let level = simd_level();
    cross_entropy_bwd_with(
        level,
        logits,
        targets,
        lse,
        dlosses,
        rows,
        vocab,
        ignore_index,
        dlogits,
    )
}

/// [`cross_entropy_fwd`] at an explicit SIMD level: pass [`simd_level()`] or
/// `SimdLevel::Scalar` (`Neon` currently runs the scalar loops).
#[allow(clippy::too_many_arguments)]
pub fn cross_entropy_fwd_with(
    level: SimdLevel,
    logits: &[f32],
    targets: &[i64],
    rows: usize,
    vocab: usize,
    ignore_index: i64,
    losses: &mut [f32],
    lse: &mut [f32],
) {
    if rows == 0 || vocab == 0 {
        return cross_entropy_fwd_ref(logits, targets, rows, vocab, ignore_index, losses, lse);
    }
    let avx2 = level == SimdLevel::Avx2Fma && simd_level() == SimdLevel::Avx2Fma;
    let rpt = rows_per_task(vocab);
    let task = |(t, (lc, sc)): (usize, (&mut [f32], &mut [f32]))| {
        for (i, (loss, l)) in lc.iter_mut().zip(sc.iter_mut()).enumerate() {
            let r = t * rpt + i;
            let x = &logits[r * vocab..(r + 1) * vocab];
            let (m, log_sum) = max_and_log_sum_exp(avx2, x);
            *l = m + log_sum;
            *loss = if targets[r] == ignore_index {
                0.0
            } else {
                (m - x[targets[r] as usize]) + log_sum
            };
        }
    };
    let (losses, lse) = (&mut losses[..rows], &mut lse[..rows]);
    if use_threads(rows * vocab) {
        let it = losses.par_chunks_mut(rpt).zip(lse.par_chunks_mut(rpt));
        it.enumerate().for_each(task);
    } else {
        let it = losses.chunks_mut(rpt).zip(lse.chunks_mut(rpt));
        it.enumerate().for_each(task);
    }
}

/// [`cross_entropy_bwd`] at an explicit SIMD level (see [`cross_entropy_fwd_with`]).
#[allow(clippy::too_many_arguments)]
pub fn cross_entropy_bwd_with(
    level: SimdLevel,
    logits: &[f32],
    targets: &[i64],
    lse: &[f32],
    dlosses: &[f32],
    rows: usize,
    vocab: usize,
    ignore_index: i64,
    dlogits: &mut [f32],
) {
    if rows == 0 || vocab == 0 {
        return;
    }
    let avx2 = level == SimdLevel::Avx2Fma && simd_level() == SimdLevel::Avx2Fma;
    for_row_tasks(dlogits, rows, vocab, |r0, chunk| {
        for (i, dx) in chunk.chunks_exact_mut(vocab).enumerate() {
            let r = r0 + i;
            if targets[r] == ignore_index {
                dx.fill(0.0);
                continue;
            }
            let x = &logits[r * vocab..(r + 1) * vocab];
            scaled_exp(avx2, x, lse[r], dlosses[r], dx);
            dx[targets[r] as usize] -= dlosses[r];
        }
    });
}

/// (max x, log Σ e^(x − max x)) of one row.
fn max_and_log_sum_exp(avx2: bool, x: &[f32]) -> (f32, f32) {
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        use crate::cpu::vecmath::avx2::{max, sum_exp};
        // SAFETY: `avx2` is only true when AVX2+FMA were detected.
        return unsafe {
            let m = max(x);
            (m, sum_exp(x, m).ln())
        };
    }
    let _ = avx2;
    let m = scalar::max(x);
    (m, scalar::sum_exp(x, m).ln())
}

/// dx = s·e^(x − c) over one row.
fn scaled_exp(avx2: bool, x: &[f32], c: f32, s: f32, dx: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        // SAFETY: `avx2` is only true when AVX2+FMA were detected.
        return unsafe { avx2::scaled_exp(x, c, s, dx) };
    }
    let _ = avx2;
    for (o, &v) in dx.iter_mut().zip(x) {
        *o = s * (v - c).exp();
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use crate::cpu::vecmath::avx2::{exp, load_partial, store_partial, W};
    use std::arch::x86_64::*;

    /// dx = s·e^(x − c).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn scaled_exp(x: &[f32], c: f32, s: f32, dx: &mut [f32]) {
        let n = dx.len().min(x.len());
        let (cv, sv) = (_mm256_set1_ps(c), _mm256_set1_ps(s));
        let (px, pdx) = (x.as_ptr(), dx.as_mut_ptr());
        let mut i = 0;
        // SAFETY: both slices hold at least n elements; full vectors stay below n and the
        // tail touches exactly n − i elements.
        while i + W <= n {
            let e = exp(_mm256_sub_ps(_mm256_loadu_ps(px.add(i)), cv));
            _mm256_storeu_ps(pdx.add(i), _mm256_mul_ps(sv, e));
            i += W;
        }
        if i < n {
            let e = exp(_mm256_sub_ps(load_partial(px.add(i), n - i, 0.0), cv));
            store_partial(pdx.add(i), n - i, _mm256_mul_ps(sv, e));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testutil::{assert_close, levels, to64, Rng};
    use proptest::prelude::*;

    const IGNORE: i64 = -100;

    /// Checks fast forward and backward at `level` against the f64 reference.
    fn check(level: SimdLevel, logits: &[f32], targets: &[i64], rows: usize, vocab: usize) {
        let ctx = format!("{level} {rows}x{vocab}");
        let dl = Rng::new(rows as u64).vec(rows, 0.1, 2.0);
        let (mut loss, mut lse) = (vec![9.0; rows], vec![9.0; rows]);
        cross_entropy_fwd_with(
            level, logits, targets, rows, vocab, IGNORE, &mut loss, &mut lse,
        );
        let x64 = to64(logits);
        let (mut loss64, mut lse64) = (vec![0.0; rows], vec![0.0; rows]);
        cross_entropy_fwd_ref(&x64, targets, rows, vocab, IGNORE, &mut loss64, &mut lse64);
        assert_close(&format!("loss {ctx}"), &loss, &loss64, 1e-5, 1e-6);
        assert_close(&format!("lse {ctx}"), &lse, &lse64, 1e-5, 1e-6);

        let mut dx = vec![9.0; rows * vocab];
        cross_entropy_bwd_with(
            level, logits, targets, &lse, &dl, rows, vocab, IGNORE, &mut dx,
        );
        let mut dx64 = vec![0.0; rows * vocab];
        let (lse_in, dl64) = (to64(&lse), to64(&dl));
        cross_entropy_bwd_ref(
            &x64, targets, &lse_in, &dl64, rows, vocab, IGNORE, &mut dx64,
        );
        for (r, &t) in targets.iter().enumerate() {
            if t == IGNORE {
                assert!(dx[r * vocab..(r + 1) * vocab].iter().all(|&v| v == 0.0));
                assert_eq!(loss[r], 0.0);
            } else {
                // dℓ·(p_t − 1) cancels when p_t ≈ 1: absolute tolerance on the dℓ scale here,
                // then take the entry out of the relative check below.
                let i = r * vocab + t as usize;
                let err = (dx[i] as f64 - dx64[i]).abs();
                assert!(
                    err <= 2e-7 * dl[r] as f64 + 1e-5 * dx64[i].abs(),
                    "target {ctx} r{r}"
                );
                (dx[i], dx64[i]) = (0.0, 0.0);
            }
        }
        assert_close(&format!("dlogits {ctx}"), &dx, &dx64, 1e-5, 1e-9);
    }

    fn targets(rng: &mut Rng, rows: usize, vocab: usize) -> Vec<i64> {
        // About one row in four ignored.
        (0..rows)
            .map(|_| {
                if rng.below(4) == 0 {
                    IGNORE
                } else {
                    rng.below(vocab) as i64
                }
            })
            .collect()
    }

    #[test]
    fn matches_reference_on_awkward_shapes() {
        for level in levels() {
            for rows in [1, 3, 64] {
                for vocab in [1, 3, 7, 8, 9, 33, 65, 127, 1000, 50257] {
                    let mut rng = Rng::new((rows * 100_000 + vocab) as u64);
                    let x = rng.vec(rows * vocab, -8.0, 8.0);
                    let t = targets(&mut rng, rows, vocab);
                    check(level, &x, &t, rows, vocab);
                }
            }
        }
    }

    #[test]
    fn extreme_inputs() {
        for level in levels() {
            for vocab in [1, 9, 1000, 50257] {
                let mut rng = Rng::new(vocab as u64);
                let mut x = rng.vec(vocab, -80.0, 80.0);
                x.resize(2 * vocab, 80.0);
                x.resize(3 * vocab, -80.0);
                // A confident row: the target far above the rest.
                x.extend((0..vocab).map(|c| if c == vocab / 2 { 80.0 } else { -80.0 }));
                let t: Vec<i64> = vec![0, (vocab - 1) as i64, IGNORE, (vocab / 2) as i64];
                check(level, &x, &t, 4, vocab);
                let (mut loss, mut lse) = (vec![0.0; 4], vec![0.0; 4]);
                cross_entropy_fwd_with(level, &x, &t, 4, vocab, IGNORE, &mut loss, &mut lse);
                let ln_v = (vocab as f64).ln();
                assert!(
                    ((loss[1] as f64) - ln_v).abs() <= 1e-6 * (1.0 + ln_v),
                    "all-equal row"
                );
                assert!(loss.iter().all(|v| v.is_finite() && *v >= 0.0));
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn matches_reference_random_sizes(rows in 1usize..12, vocab in 1usize..3000, seed in 0u64..1000) {
            let mut rng = Rng::new(seed);
            let x = rng.vec(rows * vocab, -10.0, 10.0);
            let t = targets(&mut rng, rows, vocab);
            for level in levels() {
                check(level, &x, &t, rows, vocab);
            }
        }
    }
}
