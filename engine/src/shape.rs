//! Shape arithmetic: broadcasting (NumPy/PyTorch rules), strides, axis normalisation.

use crate::error::{index_err, shape_err};
use crate::Result;

/// Row-major strides of a contiguous tensor of `shape`.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// The broadcast shape of `a` and `b`: align from the right; each pair of dims must be equal
/// or one of them 1.
pub fn broadcast_shape(op: &'static str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i < n - a.len() {
            1
        } else {
            a[i - (n - a.len())]
        };
        let db = if i < n - b.len() {
            1
        } else {
            b[i - (n - b.len())]
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => {
                return shape_err(
                    op,
                    format!("shapes {a:?} and {b:?} cannot be broadcast together"),
                )
            }
        };
    }
    Ok(out)
}

/// Resolves a possibly negative `axis` (−1 is the last) against `rank`.
pub fn normalize_axis(op: &'static str, axis: isize, rank: usize) -> Result<usize> {
    let r = rank as isize;
    if axis < -r || axis >= r {
        return index_err(
            op,
            format!("axis {axis} is out of range for a tensor of rank {rank}"),
        );
    }
    Ok(if axis < 0 {
        (axis + r) as usize
    } else {
        axis as usize
    })
}

/// Splits `shape` around `axis` into (product of dims before, dim, product of dims after).
pub fn split_at_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    let outer = shape[..axis].iter().product();
    let inner = shape[axis + 1..].iter().product();
    (outer, shape[axis], inner)
}
