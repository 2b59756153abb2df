//! Element-wise ops: unary maps, scalar ops, and broadcasting binary ops.

use crate::ops::layout::broadcast_to;
use crate::shape::broadcast_shape;
use crate::{map_storage, zip_storage, Result, Storage, Tensor};
use kernels::Float;

/// `c` converted to the element type of `v`.
fn like<F: Float>(_v: &[F], c: f64) -> F {
    F::from_f64(c)
}

/// Applies a unary map to every element, recording `backward(x, y, dy) -> dx`.
fn unary(
    x: &Tensor,
    op: &'static str,
    y: Storage,
    backward: impl Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor> + Send + Sync + 'static,
) -> Tensor {
    let xc = x.clone();
    Tensor::from_op(y, x.shape().to_vec(), op, &[x], move |y, g| {
        Ok(vec![Some(backward(&xc, y, g)?)])
    })
}

/// A new tensor with `f` applied to each element (no autograd; for backward formulas).
fn map(x: &Tensor, f32fn: impl Fn(f32) -> f32, f64fn: impl Fn(f64) -> f64) -> Tensor {
    let s = match x.storage() {
        Storage::F32(v) => Storage::F32(v.iter().map(|&a| f32fn(a)).collect()),
        Storage::F64(v) => Storage::F64(v.iter().map(|&a| f64fn(a)).collect()),
    };
    Tensor::leaf(s, x.shape().to_vec())
}

/// −x.  Gradient: −dy.
pub fn neg(x: &Tensor) -> Result<Tensor> {
    let y = map_storage!(x.storage(), v => v.iter().map(|&a| -a).collect());
    Ok(unary(x, "neg", y, |_, _, g| neg(g)))
}

/// x + c.  Gradient: dy.
pub fn add_scalar(x: &Tensor, c: f64) -> Result<Tensor> {
    let y =
        map_storage!(x.storage(), v => { let c = like(v, c); v.iter().map(|&a| a + c).collect() });
    Ok(unary(x, "add_scalar", y, |_, _, g| Ok(g.clone())))
}

/// c·x.  Gradient: c·dy.
pub fn mul_scalar(x: &Tensor, c: f64) -> Result<Tensor> {
    let y =
        map_storage!(x.storage(), v => { let c = like(v, c); v.iter().map(|&a| a * c).collect() });
    Ok(unary(x, "mul_scalar", y, move |_, _, g| mul_scalar(g, c)))
}

/// eˣ.  Gradient: dy·y.
pub fn exp(x: &Tensor) -> Result<Tensor> {
    let y = map_storage!(x.storage(), v => v.iter().map(|&a| a.exp()).collect());
    Ok(unary(x, "exp", y, |_, y, g| mul(g, y)))
}

/// ln x.  Gradient: dy / x.
pub fn log(x: &Tensor) -> Result<Tensor> {
    let y = map_storage!(x.storage(), v => v.iter().map(|&a| a.ln()).collect());
    Ok(unary(x, "log", y, |x, _, g| div(g, x)))
}

/// √x.  Gradient: dy / (2y).
pub fn sqrt(x: &Tensor) -> Result<Tensor> {
    let y = map_storage!(x.storage(), v => v.iter().map(|&a| a.sqrt()).collect());
    Ok(unary(x, "sqrt", y, |_, y, g| div(g, &mul_scalar(y, 2.0)?)))
}

/// xᵖ for a scalar exponent p.  Gradient: dy·p·xᵖ⁻¹.
pub fn powf(x: &Tensor, p: f64) -> Result<Tensor> {
    let y = map_storage!(x.storage(), v => { let p = like(v, p); v.iter().map(|&a| a.powf(p)).collect() });
    Ok(unary(x, "powf", y, move |x, _, g| {
        mul(g, &mul_scalar(&powf(x, p - 1.0)?, p)?)
    }))
}

/// tanh x.  Gradient: dy·(1 − y²).
pub fn tanh(x: &Tensor) -> Result<Tensor> {
    let y = map_storage!(x.storage(), v => v.iter().map(|&a| a.tanh()).collect());
    Ok(unary(x, "tanh", y, |_, y, g| {
        mul(g, &map(y, |t| 1.0 - t * t, |t| 1.0 - t * t))
    }))
}

fn sigmoid_f<F: Float>(a: F) -> F {
    // Two branches so that exp never overflows.
    if a >= F::zero() {
        F::one() / (F::one() + (-a).exp())
    } else {
        let e = a.exp();
        e / (F::one() + e)
    }
}

/// σ(x) = 1 / (1 + e⁻ˣ).  Gradient: dy·y(1 − y).
pub fn sigmoid(x: &Tensor) -> Result<Tensor> {
    let y = map_storage!(x.storage(), v => v.iter().map(|&a| sigmoid_f(a)).collect());
    Ok(unary(x, "sigmoid", y, |_, y, g| {
        mul(g, &map(y, |s| s * (1.0 - s), |s| s * (1.0 - s)))
    }))
}

/// log σ(x) = −softplus(−x), computed stably as min(x, 0) − log(1 + e^−|x|).
/// Gradient: dy·(1 − σ(x)) = dy·σ(−x). Used by the reward-model and DPO losses.
pub fn logsigmoid(x: &Tensor) -> Result<Tensor> {
    let y = map_storage!(x.storage(), v => v.iter().map(|&a| a.min(Float::from_f64(0.0)) - (-a.abs()).exp().ln_1p()).collect());
    Ok(unary(x, "logsigmoid", y, |x, _, g| {
        mul(g, &map(x, |a| sigmoid_f(-a), |a| sigmoid_f(-a)))
    }))
}

/// max(x, 0).  Gradient: dy where x > 0, else 0.
pub fn relu(x: &Tensor) -> Result<Tensor> {
    let y =
        map_storage!(x.storage(), v => v.iter().map(|&a| a.max(Float::from_f64(0.0))).collect());
    Ok(unary(x, "relu", y, |x, _, g| {
        mul(
            g,
            &map(x, |a| (a > 0.0) as i32 as f32, |a| (a > 0.0) as i32 as f64),
        )
    }))
}

/// min(max(x, lo), hi).  Gradient: dy where lo < x < hi (inside the range), else 0.
pub fn clamp(x: &Tensor, lo: f64, hi: f64) -> Result<Tensor> {
    if lo > hi {
        return crate::error::invalid("clamp", format!("lower bound {lo} > upper bound {hi}"));
    }
    let y = map_storage!(x.storage(), v => {
        let (l, h) = (Float::from_f64(lo), Float::from_f64(hi));
        v.iter().map(|&a| a.max(l).min(h)).collect()
    });
    Ok(unary(x, "clamp", y, move |x, _, g| {
        let inside = |a: f64| (a >= lo && a <= hi) as i32 as f64;
        mul(g, &map(x, |a| inside(a as f64) as f32, inside))
    }))
}

/// Broadcasts `a` and `b` to their common shape (copies only where a shape changes).
fn broadcast_pair(op: &'static str, a: &Tensor, b: &Tensor) -> Result<(Tensor, Tensor)> {
    if a.dtype() != b.dtype() {
        return Err(crate::Error::DType {
            op,
            lhs: a.dtype(),
            rhs: b.dtype(),
        });
    }
    let shape = broadcast_shape(op, a.shape(), b.shape())?;
    Ok((broadcast_to(a, &shape)?, broadcast_to(b, &shape)?))
}

/// A broadcasting binary op: `f` on each pair, `backward(a, b, y, dy) -> (da, db)` at the
/// broadcast shape (the broadcast itself reduces them back to the input shapes).
fn binary(
    op: &'static str,
    a: &Tensor,
    b: &Tensor,
    f32fn: impl Fn(f32, f32) -> f32,
    f64fn: impl Fn(f64, f64) -> f64,
    backward: impl Fn(&Tensor, &Tensor, &Tensor, &Tensor) -> Result<(Tensor, Tensor)>
        + Send
        + Sync
        + 'static,
) -> Result<Tensor> {
    let (a, b) = broadcast_pair(op, a, b)?;
    let y = match (a.storage(), b.storage()) {
        (Storage::F32(x), Storage::F32(y)) => {
            Storage::F32(x.iter().zip(y).map(|(&p, &q)| f32fn(p, q)).collect())
        }
        (Storage::F64(x), Storage::F64(y)) => {
            Storage::F64(x.iter().zip(y).map(|(&p, &q)| f64fn(p, q)).collect())
        }
        _ => unreachable!("broadcast_pair checked the dtypes"),
    };
    let (ac, bc) = (a.clone(), b.clone());
    Ok(Tensor::from_op(
        y,
        a.shape().to_vec(),
        op,
        &[&a, &b],
        move |y, g| {
            let (ga, gb) = backward(&ac, &bc, y, g)?;
            Ok(vec![Some(ga), Some(gb)])
        },
    ))
}

/// a + b (broadcasting).  Gradients: dy, dy (summed over broadcast dims).
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if let (Storage::F32(x), Storage::F32(y)) = (a.storage(), b.storage()) {
        if a.shape() == b.shape() {
            // Same shapes (the residual stream, gradient accumulation): the threaded kernel.
            let mut out = crate::ops::zeros(x.len());
            kernels::cpu::linear::add(x, y, &mut out);
            return Ok(Tensor::from_op(
                Storage::F32(out),
                a.shape().to_vec(),
                "add",
                &[a, b],
                |_, g| Ok(vec![Some(g.clone()), Some(g.clone())]),
            ));
        }
    }
    binary(
        "add",
        a,
        b,
        |p, q| p + q,
        |p, q| p + q,
        |_, _, _, g| Ok((g.clone(), g.clone())),
    )
}

/// a − b (broadcasting).  Gradients: dy, −dy.
pub fn sub(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(
        "sub",
        a,
        b,
        |p, q| p - q,
        |p, q| p - q,
        |_, _, _, g| Ok((g.clone(), neg(g)?)),
    )
}

/// a ∘ b (broadcasting).  Gradients: dy∘b, dy∘a.
pub fn mul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(
        "mul",
        a,
        b,
        |p, q| p * q,
        |p, q| p * q,
        |a, b, _, g| Ok((mul(g, b)?, mul(g, a)?)),
    )
}

/// a / b (broadcasting).  Gradients: dy/b, −dy·a/b² = −dy·y/b.
pub fn div(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(
        "div",
        a,
        b,
        |p, q| p / q,
        |p, q| p / q,
        |_, b, y, g| {
            let ga = div(g, b)?;
            let gb = neg(&div(&mul(g, y)?, b)?)?;
            Ok((ga, gb))
        },
    )
}

/// Element-wise max(a, b) (broadcasting).  Gradient to whichever is larger (to `a` on ties).
pub fn maximum(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary("maximum", a, b, f32::max, f64::max, |a, b, _, g| {
        let a_wins = zip_mask(a, b, |p, q| p >= q)?;
        Ok((mul(g, &a_wins)?, mul(g, &add_scalar(&neg(&a_wins)?, 1.0)?)?))
    })
}

/// Element-wise min(a, b) (broadcasting).  Gradient to whichever is smaller (to `a` on ties).
pub fn minimum(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary("minimum", a, b, f32::min, f64::min, |a, b, _, g| {
        let a_wins = zip_mask(a, b, |p, q| p <= q)?;
        Ok((mul(g, &a_wins)?, mul(g, &add_scalar(&neg(&a_wins)?, 1.0)?)?))
    })
}

/// 1.0 where `pred(a, b)`, else 0.0 (same-shape inputs; no autograd).
fn zip_mask(a: &Tensor, b: &Tensor, pred: impl Fn(f64, f64) -> bool) -> Result<Tensor> {
    let s = zip_storage!("mask", a.storage(), b.storage(), (x, y) => x.iter().zip(y).map(|(&p, &q)| if pred(p.to_f64(), q.to_f64()) { Float::from_f64(1.0) } else { Float::from_f64(0.0) }).collect())?;
    Ok(Tensor::leaf(s, a.shape().to_vec()))
}

/// `cond ? a : b` element-wise, where `cond` is true for non-zero values; all three
/// broadcast together. `cond` gets no gradient. Gradients: dy where cond, else 0 (to `a`);
/// the rest to `b`. Selects, never multiplies, so an infinite value in the branch not taken
/// does not leak into the result.
pub fn where_(cond: &Tensor, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (a, b) = broadcast_pair("where", a, b)?;
    let shape = broadcast_shape("where", cond.shape(), a.shape())?;
    let (a, b) = (broadcast_to(&a, &shape)?, broadcast_to(&b, &shape)?);
    let mask: Vec<bool> = broadcast_to(&cond.detach(), &shape)?
        .to_vec_f64()
        .iter()
        .map(|&c| c != 0.0)
        .collect();
    let y = select(&mask, a.storage(), b.storage());
    Ok(Tensor::from_op(
        y,
        shape,
        "where",
        &[&a, &b],
        move |_, g| {
            let zeros = Storage::zeros(g.dtype(), g.numel());
            let ga = select(&mask, g.storage(), &zeros);
            let gb = select(&mask, &zeros, g.storage());
            Ok(vec![
                Some(Tensor::leaf(ga, g.shape().to_vec())),
                Some(Tensor::leaf(gb, g.shape().to_vec())),
            ])
        },
    ))
}

/// `mask[i] ? a[i] : b[i]` on same-length, same-dtype storages.
fn select(mask: &[bool], a: &Storage, b: &Storage) -> Storage {
    zip_storage!("where", a, b, (x, y) => mask.iter().zip(x.iter().zip(y)).map(|(&m, (&p, &q))| if m { p } else { q }).collect())
        .expect("broadcast_pair checked the dtypes")
}
