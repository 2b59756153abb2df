//! A linear layer with its bias, fused (math in `kernels::cpu::linear`).

use crate::error::shape_err;
use crate::ops::layout::reshape;
use crate::ops::matmul::matmul_ex;
use crate::{Result, Storage, Tensor};
use kernels::cpu::{linear as k, matmul};
use rayon::prelude::*;

/// y = x·W + b for `x` `[..., K]`, `w` `[K, N]`, `b` `[N]`: every row of x times W, plus b.
/// The same values as `add(matmul(x, w), b)`, without materialising the broadcast bias: each
/// row of y starts as b and the GEMM accumulates x·W into it.
///
/// Gradients, with x and dy seen as `[rows, K]` and `[rows, N]`:
///   dx = dy·Wᵀ,  dW = xᵀ·dy,  db = Σ_rows dy.
pub fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    let kdim = *x.shape().last().unwrap_or(&0);
    if x.rank() < 1 || w.rank() != 2 || w.shape()[0] != kdim || b.shape() != [w.shape()[1]] {
        return shape_err(
            "linear",
            format!(
                "input {:?} needs a weight [{kdim}, N] and a bias [N], got {:?} and {:?}",
                x.shape(),
                w.shape(),
                b.shape()
            ),
        );
    }
    if w.dtype() != x.dtype() || b.dtype() != x.dtype() {
        return Err(crate::Error::DType {
            op: "linear",
            lhs: x.dtype(),
            rhs: w.dtype(),
        });
    }
    let n = w.shape()[1];
    let rows = x.numel() / kdim.max(1);
    let y = match (x.storage(), w.storage(), b.storage()) {
        (Storage::F32(xv), Storage::F32(wv), Storage::F32(bv)) => {
            let mut y = bias_rows(bv, rows);
            matmul::sgemm(rows, kdim, n, 1.0, xv, kdim, 1, wv, n, 1, 1.0, &mut y, n, 1);
            Storage::F32(y)
        }
        (Storage::F64(xv), Storage::F64(wv), Storage::F64(bv)) => {
            let mut y = bias_rows(bv, rows);
            matmul::gemm_ref(rows, kdim, n, 1.0, xv, kdim, 1, wv, n, 1, 1.0, &mut y, n, 1);
            Storage::F64(y)
        }
        _ => unreachable!("dtypes checked above"),
    };
    let mut shape = x.shape().to_vec();
    *shape.last_mut().expect("rank >= 1") = n;
    let (xc, wc, bshape) = (x.clone(), w.clone(), b.shape().to_vec());
    Ok(Tensor::from_op(
        y,
        shape,
        "linear",
        &[x, w, b],
        move |_, g| {
            let x2 = reshape(&xc, &[rows, kdim])?;
            let g2 = reshape(g, &[rows, n])?;
            let dx = reshape(&matmul_ex(&g2, &wc, false, true)?, xc.shape())?;
            let dw = matmul_ex(&x2, &g2, true, false)?;
            let db = match g.storage() {
                Storage::F32(gv) => {
                    let mut db = vec![0.0; n];
                    k::bias_grad(gv, rows, n, &mut db);
                    Storage::F32(db)
                }
                Storage::F64(gv) => {
                    let mut db = vec![0.0; n];
                    k::bias_grad_ref(gv, rows, n, &mut db);
                    Storage::F64(db)
                }
            };
            Ok(vec![
                Some(dx),
                Some(dw),
                Some(Tensor::leaf(db, bshape.clone())),
            ])
        },
    ))
}

/// `rows` copies of `b`, one after another, written by all threads when there are many (the
/// first touch of a fresh output buffer, which the GEMM then finds in cache).
fn bias_rows<F: Copy + Send + Sync>(b: &[F], rows: usize) -> Vec<F> {
    /// Rows per parallel task.
    const ROWS: usize = 64;
    let n = b.len();
    if n == 0 || rows * n < (1 << 15) {
        return b.repeat(rows);
    }
    let mut y = Vec::with_capacity(rows * n);
    y.spare_capacity_mut()[..rows * n]
        .par_chunks_mut(ROWS * n)
        .for_each(|chunk| {
            for row in chunk.chunks_exact_mut(n) {
                for (o, &v) in row.iter_mut().zip(b) {
                    o.write(v);
                }
            }
        });
    // SAFETY: the loop above wrote every one of the first rows·n elements (the chunks cover
    // them all, each row of a chunk gets the n values of b), and the capacity is rows·n.
    unsafe { y.set_len(rows * n) };
    y
}
