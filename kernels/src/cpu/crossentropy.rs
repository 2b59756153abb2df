//! Cross-entropy fused with log-softmax, over rows of logits, with an ignore index.
//!
//! For row r with target t_r: loss_r = lse_r − x_{r,t_r}, where lse_r = log Σ_j exp(x_{r,j});
//! rows whose target equals `ignore_index` get loss 0 and zero gradient.
//! Backward with upstream dℓ_r: dx_{r,j} = dℓ_r·(softmax(x_r)_j − [j = t_r]).
//! The engine divides by the number of counted rows for a mean.

use crate::Float;

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

/// Fast f32 forward.
pub fn cross_entropy_fwd(
    logits: &[f32],
    targets: &[i64],
    rows: usize,
    vocab: usize,
    ignore_index: i64,
    losses: &mut [f32],
    lse: &mut [f32],
) {
    cross_entropy_fwd_ref(logits, targets, rows, vocab, ignore_index, losses, lse)
}

/// Fast f32 backward.
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
    cross_entropy_bwd_ref(
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
