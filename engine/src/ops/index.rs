//! Indexing ops: index_select (rows by index), embedding, gather.
//! Indices are plain `usize` slices; an index out of range is an error naming it.

use crate::error::{index_err, shape_err};
use crate::ops::layout::reshape;
use crate::shape::{normalize_axis, split_at_axis, strides};
use crate::{map_storage, Result, Tensor};
use kernels::Float;

/// Selects slices `indices[i]` along `axis`: the output has `indices.len()` at `axis`.
/// Gradient: dy scatter-added back to the selected slices (an index used twice gets both).
pub fn index_select(x: &Tensor, axis: isize, indices: &[usize]) -> Result<Tensor> {
    let ax = normalize_axis("index_select", axis, x.rank())?;
    let (outer, n, inner) = split_at_axis(x.shape(), ax);
    if let Some((pos, &bad)) = indices.iter().enumerate().find(|(_, &i)| i >= n) {
        return index_err(
            "index_select",
            format!("index {bad} at position {pos} is out of range for axis {ax} of size {n} (shape {:?})", x.shape()),
        );
    }
    let m = indices.len();
    let y = map_storage!(x.storage(), v => {
        let mut out = Vec::with_capacity(outer * m * inner);
        for o in 0..outer {
            for &i in indices {
                out.extend_from_slice(&v[(o * n + i) * inner..(o * n + i + 1) * inner]);
            }
        }
        out
    });
    let mut shape = x.shape().to_vec();
    shape[ax] = m;
    let in_shape = x.shape().to_vec();
    let indices = indices.to_vec();
    Ok(Tensor::from_op(
        y,
        shape,
        "index_select",
        &[x],
        move |_, g| {
            let dx = map_storage!(g.storage(), gv => {
                let mut out = vec![Float::from_f64(0.0); outer * n * inner];
                for o in 0..outer {
                    for (j, &i) in indices.iter().enumerate() {
                        let src = &gv[(o * m + j) * inner..(o * m + j + 1) * inner];
                        for (d, &s) in out[(o * n + i) * inner..(o * n + i + 1) * inner].iter_mut().zip(src) {
                            *d += s;
                        }
                    }
                }
                out
            });
            Ok(vec![Some(Tensor::leaf(dx, in_shape.clone()))])
        },
    ))
}

/// Embedding lookup: `weight` is `[vocab, dim]`, `ids` has shape `ids_shape`; the output is
/// `[...ids_shape, dim]` with row `weight[id]` at each position.
/// Gradient: dy rows scatter-added into a zero `[vocab, dim]`.
pub fn embedding(weight: &Tensor, ids: &[usize], ids_shape: &[usize]) -> Result<Tensor> {
    if weight.rank() != 2 {
        return shape_err(
            "embedding",
            format!("weight must be [vocab, dim], got {:?}", weight.shape()),
        );
    }
    if ids.len() != ids_shape.iter().product::<usize>() {
        return shape_err(
            "embedding",
            format!("{} ids do not fill shape {ids_shape:?}", ids.len()),
        );
    }
    let vocab = weight.shape()[0];
    if let Some((pos, &bad)) = ids.iter().enumerate().find(|(_, &i)| i >= vocab) {
        return index_err(
            "embedding",
            format!("token id {bad} at position {pos} is out of range for a vocabulary of {vocab}"),
        );
    }
    let rows = index_select(weight, 0, ids)?;
    let mut shape = ids_shape.to_vec();
    shape.push(weight.shape()[1]);
    reshape(&rows, &shape)
}

/// PyTorch's `gather`: `out[..., j, ...] = x[..., index[..., j, ...], ...]` along `axis`.
/// `index` has shape `index_shape`, the same rank as `x`, no larger than `x` in the other dims.
/// Gradient: dy scatter-added to the gathered positions.
pub fn gather(x: &Tensor, axis: isize, index: &[usize], index_shape: &[usize]) -> Result<Tensor> {
    let ax = normalize_axis("gather", axis, x.rank())?;
    let fits = index_shape.len() == x.rank()
        && index_shape
            .iter()
            .zip(x.shape())
            .enumerate()
            .all(|(d, (&i, &s))| d == ax || i <= s);
    if !fits || index.len() != index_shape.iter().product::<usize>() {
        return shape_err(
            "gather",
            format!("index of shape {index_shape:?} ({} values) does not fit input {:?} along axis {ax}", index.len(), x.shape()),
        );
    }
    let n = x.shape()[ax];
    if let Some((pos, &bad)) = index.iter().enumerate().find(|(_, &i)| i >= n) {
        return index_err(
            "gather",
            format!("index {bad} at position {pos} is out of range for axis {ax} of size {n}"),
        );
    }
    // Flat source offset of every output element.
    let xs = strides(x.shape());
    let is = strides(index_shape);
    let src: Vec<usize> = (0..index.len())
        .map(|flat| {
            (0..index_shape.len())
                .map(|d| {
                    let coord = if d == ax {
                        index[flat]
                    } else {
                        flat / is[d] % index_shape[d]
                    };
                    coord * xs[d]
                })
                .sum()
        })
        .collect();
    let y = map_storage!(x.storage(), v => src.iter().map(|&s| v[s]).collect());
    let in_shape = x.shape().to_vec();
    let total = x.numel();
    Ok(Tensor::from_op(
        y,
        index_shape.to_vec(),
        "gather",
        &[x],
        move |_, g| {
            let dx = map_storage!(g.storage(), gv => {
                let mut out = vec![Float::from_f64(0.0); total];
                for (&s, &val) in src.iter().zip(gv.iter()) {
                    out[s] += val;
                }
                out
            });
            Ok(vec![Some(Tensor::leaf(dx, in_shape.clone()))])
        },
    ))
}
