//! Cross-entropy fused with log-softmax (math in `kernels::cpu::crossentropy`).

use crate::error::{index_err, shape_err};
use crate::{Result, Storage, Tensor};
use kernels::cpu::crossentropy as k;

/// The target value that marks a position to leave out of the loss (PyTorch's default).
pub const IGNORE_INDEX: i64 = -100;

/// Mean cross-entropy of `logits` (`[..., V]`) against `targets` (one per row of logits),
/// skipping rows whose target is `ignore_index`:
///   loss = (1/N) Σ_{r counted} (log Σ_j exp(x_rj) − x_{r,t_r}),  N = number of counted rows.
/// If no row is counted the loss is 0 with zero gradient (PyTorch would return NaN).
///
/// Gradient: dx_r = (dy/N)·(softmax(x_r) − onehot(t_r)) for counted rows, 0 for ignored ones.
pub fn cross_entropy(logits: &Tensor, targets: &[i64], ignore_index: i64) -> Result<Tensor> {
    let vocab = *logits.shape().last().unwrap_or(&0);
    let rows = logits.numel().checked_div(vocab).unwrap_or(0);
    if logits.rank() == 0 || vocab == 0 || targets.len() != rows {
        return shape_err(
            "cross_entropy",
            format!(
                "logits {:?} have {rows} rows but {} targets were given",
                logits.shape(),
                targets.len()
            ),
        );
    }
    if let Some((pos, &bad)) = targets
        .iter()
        .enumerate()
        .find(|(_, &t)| t != ignore_index && (t < 0 || t as usize >= vocab))
    {
        return index_err(
            "cross_entropy",
            format!("target {bad} at position {pos} is out of range for {vocab} classes"),
        );
    }
    let counted = targets.iter().filter(|&&t| t != ignore_index).count();
    let scale = if counted == 0 {
        0.0
    } else {
        1.0 / counted as f64
    };
    let (loss, lse) = match logits.storage() {
        Storage::F32(x) => {
            let (mut l, mut s) = (vec![0.0f32; rows], vec![0.0f32; rows]);
            k::cross_entropy_fwd(x, targets, rows, vocab, ignore_index, &mut l, &mut s);
            // Sum in f64 so the mean does not depend on summation order.
            (
                l.iter().map(|&v| v as f64).sum::<f64>() * scale,
                Storage::F32(s),
            )
        }
        Storage::F64(x) => {
            let (mut l, mut s) = (vec![0.0f64; rows], vec![0.0f64; rows]);
            k::cross_entropy_fwd_ref(x, targets, rows, vocab, ignore_index, &mut l, &mut s);
            (l.iter().sum::<f64>() * scale, Storage::F64(s))
        }
    };
    let out = match logits.dtype() {
        crate::DType::F32 => Storage::F32(vec![loss as f32]),
        crate::DType::F64 => Storage::F64(vec![loss]),
    };
    let (xc, targets) = (logits.clone(), targets.to_vec());
    Ok(Tensor::from_op(
        out,
        vec![],
        "cross_entropy",
        &[logits],
        move |_, g| {
            let dscale = g.item()? * scale;
            let dx = match (xc.storage(), &lse) {
                (Storage::F32(x), Storage::F32(s)) => {
                    let mut dx = crate::ops::zeros(x.len());
                    let dl = vec![dscale as f32; rows];
                    k::cross_entropy_bwd(x, &targets, s, &dl, rows, vocab, ignore_index, &mut dx);
                    Storage::F32(dx)
                }
                (Storage::F64(x), Storage::F64(s)) => {
                    let mut dx = crate::ops::zeros(x.len());
                    let dl = vec![dscale; rows];
                    k::cross_entropy_bwd_ref(
                        x,
                        &targets,
                        s,
                        &dl,
                        rows,
                        vocab,
                        ignore_index,
                        &mut dx,
                    );
                    Storage::F64(dx)
                }
                _ => unreachable!("lse has the logits' dtype"),
            };
            Ok(vec![Some(Tensor::leaf(dx, xc.shape().to_vec()))])
        },
    ))
}
