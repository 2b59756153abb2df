//! Reductions over one axis (sum, mean, max) and over everything.

use crate::ops::layout::{broadcast_to, reshape};
use crate::shape::{normalize_axis, split_at_axis};
use crate::{map_storage, ops, Result, Tensor};
use kernels::Float;

/// The output shape of a reduction over `axis`.
fn reduced_shape(shape: &[usize], axis: usize, keepdim: bool) -> Vec<usize> {
    let mut s = shape.to_vec();
    if keepdim {
        s[axis] = 1;
    } else {
        s.remove(axis);
    }
    s
}

/// Σ over `axis` (kept as size 1 if `keepdim`).  Gradient: dy broadcast back along `axis`.
pub fn sum(x: &Tensor, axis: isize, keepdim: bool) -> Result<Tensor> {
    let ax = normalize_axis("sum", axis, x.rank())?;
    let (outer, n, inner) = split_at_axis(x.shape(), ax);
    let y = map_storage!(x.storage(), v => {
        let mut out = vec![Float::from_f64(0.0); outer * inner];
        for o in 0..outer {
            for k in 0..n {
                let row = &v[(o * n + k) * inner..(o * n + k + 1) * inner];
                for (acc, &val) in out[o * inner..(o + 1) * inner].iter_mut().zip(row) {
                    *acc += val;
                }
            }
        }
        out
    });
    let in_shape = x.shape().to_vec();
    let kept = reduced_shape(x.shape(), ax, true);
    Ok(Tensor::from_op(
        y,
        reduced_shape(x.shape(), ax, keepdim),
        "sum",
        &[x],
        move |_, g| Ok(vec![Some(broadcast_to(&reshape(g, &kept)?, &in_shape)?)]),
    ))
}

/// Mean over `axis`.  Gradient: dy/n broadcast back along `axis`.
pub fn mean(x: &Tensor, axis: isize, keepdim: bool) -> Result<Tensor> {
    let ax = normalize_axis("mean", axis, x.rank())?;
    let n = x.shape()[ax];
    ops::mul_scalar(&sum(x, axis, keepdim)?, 1.0 / n as f64)
}

/// Σ of all elements, as a 0-dim tensor.  Gradient: dy everywhere.
pub fn sum_all(x: &Tensor) -> Result<Tensor> {
    sum(&reshape(x, &[x.numel()])?, 0, false)
}

/// Mean of all elements, as a 0-dim tensor.  Gradient: dy/numel everywhere.
pub fn mean_all(x: &Tensor) -> Result<Tensor> {
    if x.numel() == 0 {
        return crate::error::shape_err("mean_all", "mean of an empty tensor");
    }
    ops::mul_scalar(&sum_all(x)?, 1.0 / x.numel() as f64)
}

/// Max over `axis`.  Gradient: dy to the position of the (first) maximum, 0 elsewhere.
pub fn max(x: &Tensor, axis: isize, keepdim: bool) -> Result<Tensor> {
    let ax = normalize_axis("max", axis, x.rank())?;
    let (outer, n, inner) = split_at_axis(x.shape(), ax);
    if n == 0 {
        return crate::error::shape_err(
            "max",
            format!("max over an empty axis {ax} of {:?}", x.shape()),
        );
    }
    let vals = x.to_vec_f64();
    // For each output element, the index k of its maximum along the axis.
    let mut argmax = vec![0usize; outer * inner];
    for o in 0..outer {
        for i in 0..inner {
            let mut best = 0;
            for k in 1..n {
                if vals[(o * n + k) * inner + i] > vals[(o * n + best) * inner + i] {
                    best = k;
                }
            }
            argmax[o * inner + i] = best;
        }
    }
    let y = map_storage!(x.storage(), v => (0..outer * inner)
        .map(|j| v[((j / inner) * n + argmax[j]) * inner + j % inner])
        .collect());
    let in_shape = x.shape().to_vec();
    Ok(Tensor::from_op(
        y,
        reduced_shape(x.shape(), ax, keepdim),
        "max",
        &[x],
        move |_, g| {
            let dx = map_storage!(g.storage(), gv => {
                let mut out = vec![Float::from_f64(0.0); outer * n * inner];
                for (j, &val) in gv.iter().enumerate() {
                    out[((j / inner) * n + argmax[j]) * inner + j % inner] = val;
                }
                out
            });
            Ok(vec![Some(Tensor::leaf(dx, in_shape.clone()))])
        },
    ))
}
