//! Softmax and log-softmax over an axis (math in `kernels::cpu::softmax`).

use crate::ops::layout::transpose;
use crate::shape::normalize_axis;
use crate::{Result, Storage, Tensor};
use kernels::cpu::softmax as k;

type RowFn32 = fn(&[f32], usize, usize, &mut [f32]);
type RowFn64 = fn(&[f64], usize, usize, &mut [f64]);
type BwdFn32 = fn(&[f32], &[f32], usize, usize, &mut [f32]);
type BwdFn64 = fn(&[f64], &[f64], usize, usize, &mut [f64]);

/// Runs a row-wise kernel pair over the last axis, moving `axis` there and back if needed.
#[allow(clippy::too_many_arguments)]
fn rowwise(
    op: &'static str,
    x: &Tensor,
    axis: isize,
    fwd32: RowFn32,
    fwd64: RowFn64,
    bwd32: BwdFn32,
    bwd64: BwdFn64,
) -> Result<Tensor> {
    let ax = normalize_axis(op, axis, x.rank())?;
    let last = x.rank() - 1;
    if ax != last {
        let moved = transpose(x, ax as isize, last as isize)?;
        let y = rowwise(op, &moved, -1, fwd32, fwd64, bwd32, bwd64)?;
        return transpose(&y, ax as isize, last as isize);
    }
    let cols = x.shape()[last];
    let rows = x.numel() / cols.max(1);
    let y = match x.storage() {
        Storage::F32(v) => {
            let mut y = crate::ops::zeros(v.len());
            fwd32(v, rows, cols, &mut y);
            Storage::F32(y)
        }
        Storage::F64(v) => {
            let mut y = crate::ops::zeros(v.len());
            fwd64(v, rows, cols, &mut y);
            Storage::F64(y)
        }
    };
    Ok(Tensor::from_op(
        y,
        x.shape().to_vec(),
        op,
        &[x],
        move |y, g| {
            let dx = match (y.storage(), g.storage()) {
                (Storage::F32(y), Storage::F32(g)) => {
                    let mut dx = crate::ops::zeros(y.len());
                    bwd32(y, g, rows, cols, &mut dx);
                    Storage::F32(dx)
                }
                (Storage::F64(y), Storage::F64(g)) => {
                    let mut dx = crate::ops::zeros(y.len());
                    bwd64(y, g, rows, cols, &mut dx);
                    Storage::F64(dx)
                }
                _ => unreachable!("gradient dtype matches its tensor"),
            };
            Ok(vec![Some(Tensor::leaf(dx, y.shape().to_vec()))])
        },
    ))
}

/// softmax along `axis`: y_j = exp(x_j − max) / Σ_k exp(x_k − max).
/// Gradient: dx = y∘(dy − Σ_k dy_k·y_k).
pub fn softmax(x: &Tensor, axis: isize) -> Result<Tensor> {
    rowwise(
        "softmax",
        x,
        axis,
        k::softmax_fwd,
        k::softmax_fwd_ref,
        k::softmax_bwd,
        k::softmax_bwd_ref,
    )
}

/// log-softmax along `axis`: y_j = x_j − log Σ_k exp(x_k).
/// Gradient: dx = dy − softmax(x)·Σ_k dy_k.
pub fn log_softmax(x: &Tensor, axis: isize) -> Result<Tensor> {
    rowwise(
        "log_softmax",
        x,
        axis,
        k::log_softmax_fwd,
        k::log_softmax_fwd_ref,
        k::log_softmax_bwd,
        k::log_softmax_bwd_ref,
    )
}
