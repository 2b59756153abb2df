//! Layer normalisation over the last dim, fused (math in `kernels::cpu::layernorm`).

use crate::error::shape_err;
use crate::{Result, Storage, Tensor};
use kernels::cpu::layernorm as k;

/// y = γ∘(x − μ)/√(σ² + ε) + β over the last dim of `x` (`[..., C]`), with γ, β of shape
/// `[C]`; μ and σ² are the mean and (biased) variance of each row, as PyTorch's `LayerNorm`.
///
/// Gradients, per row with x̂ = (x−μ)·r, r = 1/√(σ²+ε), g = dy∘γ:
///   dx = r·(g − mean(g) − x̂·mean(g∘x̂)),  dγ = Σ_rows dy∘x̂,  dβ = Σ_rows dy.
pub fn layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<Tensor> {
    let cols = *x.shape().last().unwrap_or(&0);
    if x.rank() == 0 || gamma.shape() != [cols] || beta.shape() != [cols] {
        return shape_err(
            "layer_norm",
            format!(
                "input {:?} needs weight and bias of shape [{cols}], got {:?} and {:?}",
                x.shape(),
                gamma.shape(),
                beta.shape()
            ),
        );
    }
    if gamma.dtype() != x.dtype() || beta.dtype() != x.dtype() {
        return Err(crate::Error::DType {
            op: "layer_norm",
            lhs: x.dtype(),
            rhs: gamma.dtype(),
        });
    }
    let rows = x.numel() / cols.max(1);
    // Forward, keeping the per-row mean and 1/std for the backward.
    let (y, mean, rstd) = match (x.storage(), gamma.storage(), beta.storage()) {
        (Storage::F32(xv), Storage::F32(gv), Storage::F32(bv)) => {
            let (mut y, mut mu, mut rs) = (
                crate::ops::zeros(xv.len()),
                vec![0.0; rows],
                vec![0.0; rows],
            );
            k::layernorm_fwd(xv, gv, bv, rows, cols, eps as f32, &mut y, &mut mu, &mut rs);
            (Storage::F32(y), Storage::F32(mu), Storage::F32(rs))
        }
        (Storage::F64(xv), Storage::F64(gv), Storage::F64(bv)) => {
            let (mut y, mut mu, mut rs) = (
                crate::ops::zeros(xv.len()),
                vec![0.0; rows],
                vec![0.0; rows],
            );
            k::layernorm_fwd_ref(xv, gv, bv, rows, cols, eps, &mut y, &mut mu, &mut rs);
            (Storage::F64(y), Storage::F64(mu), Storage::F64(rs))
        }
        _ => unreachable!("dtypes checked above"),
    };
    let (xc, gc) = (x.clone(), gamma.clone());
    Ok(Tensor::from_op(
        y,
        x.shape().to_vec(),
        "layer_norm",
        &[x, gamma, beta],
        move |_, dy| {
            let (dx, dg, db) = match (dy.storage(), xc.storage(), gc.storage(), &mean, &rstd) {
                (
                    Storage::F32(dy),
                    Storage::F32(xv),
                    Storage::F32(gv),
                    Storage::F32(mu),
                    Storage::F32(rs),
                ) => {
                    let (mut dx, mut dg, mut db) = (
                        crate::ops::zeros(xv.len()),
                        vec![0.0; cols],
                        vec![0.0; cols],
                    );
                    k::layernorm_bwd(dy, xv, gv, mu, rs, rows, cols, &mut dx, &mut dg, &mut db);
                    (Storage::F32(dx), Storage::F32(dg), Storage::F32(db))
                }
                (
                    Storage::F64(dy),
                    Storage::F64(xv),
                    Storage::F64(gv),
                    Storage::F64(mu),
                    Storage::F64(rs),
                ) => {
                    let (mut dx, mut dg, mut db) = (
                        crate::ops::zeros(xv.len()),
                        vec![0.0; cols],
                        vec![0.0; cols],
                    );
                    k::layernorm_bwd_ref(dy, xv, gv, mu, rs, rows, cols, &mut dx, &mut dg, &mut db);
                    (Storage::F64(dx), Storage::F64(dg), Storage::F64(db))
                }
                _ => unreachable!("gradient dtype matches its tensor"),
            };
            Ok(vec![
                Some(Tensor::leaf(dx, xc.shape().to_vec())),
                Some(Tensor::leaf(dg, vec![cols])),
                Some(Tensor::leaf(db, vec![cols])),
            ])
        },
    ))
}
