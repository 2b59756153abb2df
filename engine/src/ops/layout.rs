//! Ops that move values without arithmetic: reshape, broadcast, transpose/permute, slice,
//! concat. Every result is contiguous; reshape shares the buffer (no copy).

use std::sync::Arc;

use crate::error::{index_err, shape_err};
use crate::shape::{normalize_axis, strides};
use crate::{map_storage, Result, Storage, Tensor};

/// The same values with a new shape of the same size. Shares the buffer (no copy).
/// Gradient: dy reshaped back.
pub fn reshape(x: &Tensor, shape: &[usize]) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    if n != x.numel() {
        return shape_err(
            "reshape",
            format!(
                "cannot reshape {:?} ({} elements) to {shape:?} ({n} elements)",
                x.shape(),
                x.numel()
            ),
        );
    }
    if shape == x.shape() {
        return Ok(x.clone());
    }
    let track = crate::is_grad_enabled() && x.requires_grad_flag();
    let in_shape = x.shape().to_vec();
    Ok(Tensor::from_op_shared(
        Arc::clone(&x.0.storage),
        shape.to_vec(),
        "reshape",
        &[x],
        track,
        move |_, g| Ok(vec![Some(reshape(g, &in_shape)?)]),
    ))
}

/// For each element of a tensor of `out_shape`, the flat index of the element of `src_shape`
/// it is broadcast from (`src_shape` aligned right, size-1 dims repeated).
pub(crate) fn broadcast_index_map(src_shape: &[usize], out_shape: &[usize]) -> Vec<usize> {
    let pad = out_shape.len() - src_shape.len();
    let src_strides = strides(src_shape);
    // Stride of each output dim in the source: 0 where the source dim is broadcast.
    let st: Vec<usize> = (0..out_shape.len())
        .map(|i| {
            if i < pad || src_shape[i - pad] == 1 {
                0
            } else {
                src_strides[i - pad]
            }
        })
        .collect();
    let n: usize = out_shape.iter().product();
    let mut map = Vec::with_capacity(n);
    let mut idx = vec![0usize; out_shape.len()];
    let mut offset = 0usize;
    for _ in 0..n {
        map.push(offset);
        // Increment the multi-index like an odometer, keeping `offset` in step.
        for d in (0..out_shape.len()).rev() {
            idx[d] += 1;
            offset += st[d];
            if idx[d] < out_shape[d] {
                break;
            }
            offset -= st[d] * idx[d];
            idx[d] = 0;
        }
    }
    map
}

/// Strides of `src_shape` seen from a tensor of `out_shape` it is broadcast to: 0 along
/// broadcast (size-1 or missing leading) dims.
fn broadcast_strides(src_shape: &[usize], out_shape: &[usize]) -> Vec<usize> {
    let pad = out_shape.len() - src_shape.len();
    let src_strides = strides(src_shape);
    (0..out_shape.len())
        .map(|i| {
            if i < pad || src_shape[i - pad] == 1 {
                0
            } else {
                src_strides[i - pad]
            }
        })
        .collect()
}

/// Visits a tensor of `shape` row by row (a row = the last dim), in row-major order, calling
/// `row(offset, out_offset)` where `offset` is the row's start under `st` (strides of some
/// other buffer, one per dim) and `out_offset` its start in the contiguous tensor. The loop
/// over one row (stride `st[last]`) is the caller's, so copies and sums run over contiguous
/// memory where they can.
fn walk_rows(shape: &[usize], st: &[usize], mut row: impl FnMut(usize, usize)) {
    let rank = shape.len();
    if rank == 0 {
        row(0, 0);
        return;
    }
    let len = shape[rank - 1];
    let rows: usize = shape[..rank - 1].iter().product();
    let mut idx = vec![0usize; rank - 1];
    let mut offset = 0usize;
    for r in 0..rows {
        row(offset, r * len);
        for d in (0..rank - 1).rev() {
            idx[d] += 1;
            offset += st[d];
            if idx[d] < shape[d] {
                break;
            }
            offset -= st[d] * idx[d];
            idx[d] = 0;
        }
    }
}

fn check_broadcastable(op: &'static str, src: &[usize], out: &[usize]) -> Result<()> {
    let ok = src.len() <= out.len()
        && src
            .iter()
            .rev()
            .zip(out.iter().rev())
            .all(|(&s, &o)| s == o || s == 1);
    if !ok {
        return shape_err(op, format!("cannot broadcast {src:?} to {out:?}"));
    }
    Ok(())
}

/// `x` repeated along size-1 (or missing leading) dims to `shape`.
/// Gradient: dy summed over the repeated dims ([`sum_to_shape`]).
pub fn broadcast_to(x: &Tensor, shape: &[usize]) -> Result<Tensor> {
    if x.shape() == shape {
        return Ok(x.clone());
    }
    check_broadcastable("broadcast_to", x.shape(), shape)?;
    let st = broadcast_strides(x.shape(), shape);
    let inner = *shape.last().unwrap_or(&1);
    let inner_stride = *st.last().unwrap_or(&0);
    let n: usize = shape.iter().product();
    let y = map_storage!(x.storage(), v => {
        let mut out = Vec::with_capacity(n);
        walk_rows(shape, &st, |src, _| {
            if inner_stride == 1 {
                out.extend_from_slice(&v[src..src + inner]);
            } else {
                out.extend(std::iter::repeat_n(v[src], inner));
            }
        });
        out
    });
    let in_shape = x.shape().to_vec();
    Ok(Tensor::from_op(
        y,
        shape.to_vec(),
        "broadcast_to",
        &[x],
        move |_, g| Ok(vec![Some(sum_to_shape(g, &in_shape)?)]),
    ))
}

/// Sums `x` over the dims along which `shape` would be broadcast to `x.shape()`: the adjoint
/// of [`broadcast_to`]. Gradient: dy broadcast back.
pub fn sum_to_shape(x: &Tensor, shape: &[usize]) -> Result<Tensor> {
    if x.shape() == shape {
        return Ok(x.clone());
    }
    check_broadcastable("sum_to_shape", shape, x.shape())?;
    // Walk the big tensor row by row, adding each row into the small one (where the small
    // one's last dim is broadcast, the row collapses to one sum). Sequential: deterministic.
    let st = broadcast_strides(shape, x.shape());
    let big = x.shape();
    let inner = *big.last().unwrap_or(&1);
    let inner_stride = *st.last().unwrap_or(&0);
    let n: usize = shape.iter().product();
    let y = map_storage!(x.storage(), v => {
        let mut out = vec![kernels::Float::from_f64(0.0); n];
        walk_rows(big, &st, |dst, src| {
            let row = &v[src..src + inner];
            if inner_stride == 1 {
                for (o, &g) in out[dst..dst + inner].iter_mut().zip(row) {
                    *o += g;
                }
            } else {
                for &g in row {
                    out[dst] += g;
                }
            }
        });
        out
    });
    let out_shape = x.shape().to_vec();
    Ok(Tensor::from_op(
        y,
        shape.to_vec(),
        "sum_to_shape",
        &[x],
        move |_, g| Ok(vec![Some(broadcast_to(g, &out_shape)?)]),
    ))
}

/// Reorders the dims: output dim i is input dim `perm[i]`. Copies into a contiguous buffer.
/// Gradient: dy permuted by the inverse permutation.
pub fn permute(x: &Tensor, perm: &[usize]) -> Result<Tensor> {
    let rank = x.rank();
    let mut seen = vec![false; rank];
    if perm.len() != rank
        || perm
            .iter()
            .any(|&p| p >= rank || std::mem::replace(&mut seen[p], true))
    {
        return index_err(
            "permute",
            format!(
                "{perm:?} is not a permutation of the {rank} dims of {:?}",
                x.shape()
            ),
        );
    }
    if perm.iter().enumerate().all(|(i, &p)| i == p) {
        return Ok(x.clone());
    }
    let in_strides = strides(x.shape());
    let out_shape: Vec<usize> = perm.iter().map(|&p| x.shape()[p]).collect();
    // Source stride of each output dim; rows of the output are gathered with the last one
    // (a plain copy when the last dim stays last, as in the heads split [B,T,H,D]→[B,H,T,D]).
    let st: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
    let (inner, inner_stride) = (out_shape[rank - 1], st[rank - 1]);
    let y = map_storage!(x.storage(), v => {
        let mut out = Vec::with_capacity(x.numel());
        walk_rows(&out_shape, &st, |src, _| {
            if inner_stride == 1 {
                out.extend_from_slice(&v[src..src + inner]);
            } else {
                out.extend((0..inner).map(|i| v[src + i * inner_stride]));
            }
        });
        out
    });
    let mut inverse = vec![0; rank];
    for (i, &p) in perm.iter().enumerate() {
        inverse[p] = i;
    }
    Ok(Tensor::from_op(
        y,
        out_shape,
        "permute",
        &[x],
        move |_, g| Ok(vec![Some(permute(g, &inverse)?)]),
    ))
}

/// Swaps two dims (negative axes count from the end). Gradient: the same swap of dy.
pub fn transpose(x: &Tensor, a: isize, b: isize) -> Result<Tensor> {
    let a = normalize_axis("transpose", a, x.rank())?;
    let b = normalize_axis("transpose", b, x.rank())?;
    let mut perm: Vec<usize> = (0..x.rank()).collect();
    perm.swap(a, b);
    permute(x, &perm)
}

/// Elements `start..end` along `axis` (PyTorch's `narrow`).
/// Gradient: dy placed back into zeros of the input's shape.
pub fn slice(x: &Tensor, axis: isize, start: usize, end: usize) -> Result<Tensor> {
    let axis = normalize_axis("slice", axis, x.rank())?;
    let dim = x.shape()[axis];
    if start > end || end > dim {
        return index_err(
            "slice",
            format!(
                "range {start}..{end} is out of bounds for axis {axis} of size {dim} (shape {:?})",
                x.shape()
            ),
        );
    }
    let (outer, _, inner) = crate::shape::split_at_axis(x.shape(), axis);
    let len = end - start;
    let y = map_storage!(x.storage(), v => {
        let mut out = Vec::with_capacity(outer * len * inner);
        for o in 0..outer {
            out.extend_from_slice(&v[(o * dim + start) * inner..(o * dim + end) * inner]);
        }
        out
    });
    let mut shape = x.shape().to_vec();
    shape[axis] = len;
    let in_shape = x.shape().to_vec();
    Ok(Tensor::from_op(y, shape, "slice", &[x], move |_, g| {
        let dx = map_storage!(g.storage(), v => {
            let mut out = vec![kernels::Float::from_f64(0.0); outer * dim * inner];
            for o in 0..outer {
                out[(o * dim + start) * inner..(o * dim + end) * inner]
                    .copy_from_slice(&v[o * len * inner..(o + 1) * len * inner]);
            }
            out
        });
        Ok(vec![Some(Tensor::leaf(dx, in_shape.clone()))])
    }))
}

/// Joins tensors along `axis`; all other dims must agree. Gradient: dy sliced back per input.
pub fn concat(xs: &[Tensor], axis: isize) -> Result<Tensor> {
    let Some(first) = xs.first() else {
        return shape_err("concat", "no tensors to concatenate");
    };
    let axis = normalize_axis("concat", axis, first.rank())?;
    for x in xs {
        let same_rest = x.rank() == first.rank()
            && (0..x.rank()).all(|d| d == axis || x.shape()[d] == first.shape()[d]);
        if !same_rest {
            return shape_err(
                "concat",
                format!(
                    "shapes {:?} and {:?} differ outside axis {axis}",
                    first.shape(),
                    x.shape()
                ),
            );
        }
        if x.dtype() != first.dtype() {
            return Err(crate::Error::DType {
                op: "concat",
                lhs: first.dtype(),
                rhs: x.dtype(),
            });
        }
    }
    let (outer, _, inner) = crate::shape::split_at_axis(first.shape(), axis);
    let sizes: Vec<usize> = xs.iter().map(|x| x.shape()[axis]).collect();
    let total: usize = sizes.iter().sum();
    let mut out = Storage::zeros(first.dtype(), outer * total * inner);
    for o in 0..outer {
        let mut at = 0;
        for (x, &len) in xs.iter().zip(&sizes) {
            let dst = (o * total + at) * inner..(o * total + at + len) * inner;
            let src = o * len * inner..(o + 1) * len * inner;
            match (&mut out, x.storage()) {
                (Storage::F32(d), Storage::F32(s)) => d[dst].copy_from_slice(&s[src]),
                (Storage::F64(d), Storage::F64(s)) => d[dst].copy_from_slice(&s[src]),
                _ => unreachable!("dtypes checked above"),
            }
            at += len;
        }
    }
    let mut shape = first.shape().to_vec();
    shape[axis] = total;
    let inputs: Vec<&Tensor> = xs.iter().collect();
    Ok(Tensor::from_op(
        out,
        shape,
        "concat",
        &inputs,
        move |_, g| {
            let mut at = 0;
            let mut grads = Vec::with_capacity(sizes.len());
            for &len in &sizes {
                grads.push(Some(slice(g, axis as isize, at, at + len)?));
                at += len;
            }
            Ok(grads)
        },
    ))
}
