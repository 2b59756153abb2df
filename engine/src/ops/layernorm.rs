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
    let cols = check("layer_norm", x, gamma, beta)?;
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
    Ok(normalised(x, gamma, beta, y, mean, rstd))
}

/// The residual add and the layer norm after it, in one pass: returns `(s, layer_norm(s))`
/// with `s = x + r` (`x`, `r` of the same shape `[..., C]`). Each row of `s` is normalised
/// while it is still in L1, instead of being written by an add and read back by the layer
/// norm (a GPT-2 block: `s = x + attn(…)`, then `ln₂(s)`; `s` goes on as the residual
/// stream). The same values as [`crate::ops::add`] then [`layer_norm`], bit for bit; two
/// autograd nodes as they would make (the add's gradient dy to both inputs, the layer norm's
/// as above), so `s`'s gradient is the sum of what its two users send back.
pub fn add_layer_norm(
    x: &Tensor,
    r: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> Result<(Tensor, Tensor)> {
    let cols = check("add_layer_norm", x, gamma, beta)?;
    if r.shape() != x.shape() {
        return shape_err(
            "add_layer_norm",
            format!("residual {:?} and input {:?} differ", r.shape(), x.shape()),
        );
    }
    if r.dtype() != x.dtype() {
        return Err(crate::Error::DType {
            op: "add_layer_norm",
            lhs: x.dtype(),
            rhs: r.dtype(),
        });
    }
    let rows = x.numel() / cols.max(1);
    let n = x.numel();
    let (sum, y, mean, rstd) = match (x.storage(), r.storage(), gamma.storage(), beta.storage()) {
        (Storage::F32(xv), Storage::F32(rv), Storage::F32(gv), Storage::F32(bv)) => {
            let (mut s, mut y) = (crate::ops::zeros(n), crate::ops::zeros(n));
            let (mut mu, mut rs) = (vec![0.0; rows], vec![0.0; rows]);
            let e = eps as f32;
            k::add_layernorm_fwd(
                xv, rv, gv, bv, rows, cols, e, &mut s, &mut y, &mut mu, &mut rs,
            );
            let f = Storage::F32;
            (f(s), f(y), f(mu), f(rs))
        }
        (Storage::F64(xv), Storage::F64(rv), Storage::F64(gv), Storage::F64(bv)) => {
            let (mut s, mut y) = (crate::ops::zeros(n), crate::ops::zeros(n));
            let (mut mu, mut rs) = (vec![0.0; rows], vec![0.0; rows]);
            k::add_layernorm_fwd_ref(
                xv, rv, gv, bv, rows, cols, eps, &mut s, &mut y, &mut mu, &mut rs,
            );
            let f = Storage::F64;
            (f(s), f(y), f(mu), f(rs))
        }
        _ => unreachable!("dtypes checked above"),
    };
    let sum = Tensor::from_op(sum, x.shape().to_vec(), "add", &[x, r], |_, g| {
        Ok(vec![Some(g.clone()), Some(g.clone())])
    });
    let normed = normalised(&sum, gamma, beta, y, mean, rstd);
    Ok((sum, normed))
}

/// Checks the shapes and dtypes of a layer norm's input and parameters; returns C.
fn check(op: &'static str, x: &Tensor, gamma: &Tensor, beta: &Tensor) -> Result<usize> {
    let cols = *x.shape().last().unwrap_or(&0);
    if x.rank() == 0 || gamma.shape() != [cols] || beta.shape() != [cols] {
        return shape_err(
            op,
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
            op,
            lhs: x.dtype(),
            rhs: gamma.dtype(),
        });
    }
    Ok(cols)
}

/// The autograd node of a layer norm's output `y` of `x`, given the forward's per-row mean and
/// 1/std (shared by [`layer_norm`] and [`add_layer_norm`]).
fn normalised(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    y: Storage,
    mean: Storage,
    rstd: Storage,
) -> Tensor {
    let (xc, gc) = (x.clone(), gamma.clone());
    let (rows, cols) = (mean.len(), *x.shape().last().unwrap_or(&0));
    Tensor::from_op(
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
    )
}
