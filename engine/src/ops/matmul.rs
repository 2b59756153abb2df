//! Matrix multiplication, batched over leading dims, with transposed operands.

use crate::error::shape_err;
use crate::ops::layout::{broadcast_index_map, reshape, sum_to_shape};
use crate::shape::broadcast_shape;
use crate::{Result, Storage, Tensor};
use kernels::cpu::matmul::{gemm_ref, sgemm, sgemm_batched};

/// `a · b` with PyTorch's `matmul` batching: `a` is `[..., m, k]`, `b` is `[..., k, n]`, the
/// leading dims broadcast, the result is `[..., m, n]`. Both need rank ≥ 2.
///
/// Gradients: dA = dC·Bᵀ, dB = Aᵀ·dC (summed over broadcast batch dims).
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    matmul_ex(a, b, false, false)
}

/// `op(a) · op(b)` where `op(x)` is `xᵀ` (the last two dims swapped) when its flag is set —
/// without copying the transpose: the kernel reads the operand with swapped strides.
///
/// Gradients for C = op(A)·op(B):
///   dA = dC·op(B)ᵀ (or op(B)·dCᵀ if A is transposed);
///   dB = op(A)ᵀ·dC (or dCᵀ·op(A) if B is transposed).
pub fn matmul_ex(a: &Tensor, b: &Tensor, trans_a: bool, trans_b: bool) -> Result<Tensor> {
    if a.rank() < 2 || b.rank() < 2 {
        return shape_err(
            "matmul",
            format!(
                "both operands need rank >= 2, got {:?} and {:?}",
                a.shape(),
                b.shape()
            ),
        );
    }
    if a.dtype() != b.dtype() {
        return Err(crate::Error::DType {
            op: "matmul",
            lhs: a.dtype(),
            rhs: b.dtype(),
        });
    }
    // A batch of rows times one matrix (every linear layer) is one big GEMM: fold the batch
    // dims of `a` into its rows.
    if b.rank() == 2 && a.rank() > 2 && !trans_a {
        let k = a.shape()[a.rank() - 1];
        let rows = a.numel() / k.max(1);
        let c = matmul_ex(&reshape(a, &[rows, k])?, b, false, trans_b)?;
        let mut shape = a.shape()[..a.rank() - 1].to_vec();
        shape.push(c.shape()[1]);
        return reshape(&c, &shape);
    }
    let (ra, ca) = (a.shape()[a.rank() - 2], a.shape()[a.rank() - 1]);
    let (rb, cb) = (b.shape()[b.rank() - 2], b.shape()[b.rank() - 1]);
    let (m, ka) = if trans_a { (ca, ra) } else { (ra, ca) };
    let (kb, n) = if trans_b { (cb, rb) } else { (rb, cb) };
    if ka != kb {
        return shape_err(
            "matmul",
            format!(
                "{:?}{} x {:?}{}: inner dims {ka} and {kb} differ",
                a.shape(),
                if trans_a { "ᵀ" } else { "" },
                b.shape(),
                if trans_b { "ᵀ" } else { "" }
            ),
        );
    }
    let k = ka;
    let a_batch = &a.shape()[..a.rank() - 2];
    let b_batch = &b.shape()[..b.rank() - 2];
    let batch = broadcast_shape("matmul", a_batch, b_batch)?;
    let nb: usize = batch.iter().product();
    let a_idx = broadcast_index_map(a_batch, &batch);
    let b_idx = broadcast_index_map(b_batch, &batch);
    // Strides of op(A) (m×k) and op(B) (k×n) inside their row-major buffers.
    let (rsa, csa) = if trans_a { (1, m) } else { (k, 1) };
    let (rsb, csb) = if trans_b { (1, k) } else { (n, 1) };
    let out = match (a.storage(), b.storage()) {
        (Storage::F32(av), Storage::F32(bv)) => {
            let mut c = crate::ops::zeros::<f32>(nb * m * n);
            // A batch stride of one matrix, or 0 when every batch reads the same matrix;
            // None when the broadcast is partial and needs the per-batch index.
            let uniform = |idx: &[usize], size: usize| -> Option<usize> {
                if idx.iter().all(|&i| i == 0) {
                    Some(0)
                } else if idx.iter().enumerate().all(|(i, &j)| i == j) {
                    Some(size)
                } else {
                    None
                }
            };
            match (uniform(&a_idx, m * k), uniform(&b_idx, k * n)) {
                (Some(sa), Some(sb)) => sgemm_batched(
                    nb,
                    m,
                    k,
                    n,
                    1.0,
                    av,
                    sa,
                    rsa,
                    csa,
                    bv,
                    sb,
                    rsb,
                    csb,
                    0.0,
                    &mut c,
                    m * n,
                    n,
                    1,
                ),
                _ => {
                    for i in 0..nb {
                        sgemm(
                            m,
                            k,
                            n,
                            1.0,
                            &av[a_idx[i] * m * k..],
                            rsa,
                            csa,
                            &bv[b_idx[i] * k * n..],
                            rsb,
                            csb,
                            0.0,
                            &mut c[i * m * n..],
                            n,
                            1,
                        );
                    }
                }
            }
            Storage::F32(c)
        }
        (Storage::F64(av), Storage::F64(bv)) => {
            let mut c = crate::ops::zeros::<f64>(nb * m * n);
            for i in 0..nb {
                gemm_ref(
                    m,
                    k,
                    n,
                    1.0,
                    &av[a_idx[i] * m * k..],
                    rsa,
                    csa,
                    &bv[b_idx[i] * k * n..],
                    rsb,
                    csb,
                    0.0,
                    &mut c[i * m * n..],
                    n,
                    1,
                );
            }
            Storage::F64(c)
        }
        _ => unreachable!("dtypes checked above"),
    };
    let mut shape = batch;
    shape.extend([m, n]);
    let (ac, bc) = (a.clone(), b.clone());
    Ok(Tensor::from_op(
        out,
        shape,
        "matmul",
        &[a, b],
        move |_, g| {
            let (a, b) = (&ac, &bc);
            let da = if trans_a {
                matmul_ex(b, g, trans_b, true)?
            } else {
                matmul_ex(g, b, false, !trans_b)?
            };
            let db = if trans_b {
                matmul_ex(g, a, true, trans_a)?
            } else {
                matmul_ex(a, g, !trans_a, false)?
            };
            Ok(vec![
                Some(sum_to_shape(&da, a.shape())?),
                Some(sum_to_shape(&db, b.shape())?),
            ])
        },
    ))
}
