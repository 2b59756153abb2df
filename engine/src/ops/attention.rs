//! Fused causal self-attention (math in `kernels::cpu::attention`).

use crate::error::shape_err;
use crate::{Result, Storage, Tensor};
use kernels::cpu::attention as k;

/// softmax(Q·Kᵀ/√d + causal mask)·V for `q`, `k`, `v` of shape `[..., T, d]` (typically
/// `[B, H, T, d]`): query i attends to keys j ≤ i. The T×T score matrix is never stored: the
/// forward keeps only each query's log-sum-exp, and the backward rebuilds the probabilities
/// from it (FlashAttention's recomputation).
///
/// Gradients with P the attention probabilities, D_i = dO_i·O_i, s = 1/√d:
///   dV = Pᵀ·dO,  dS = P∘(dO·Vᵀ − D),  dQ = s·dS·K,  dK = s·dSᵀ·Q.
pub fn causal_attention(q: &Tensor, k_: &Tensor, v: &Tensor) -> Result<Tensor> {
    if q.rank() < 2 || k_.shape() != q.shape() || v.shape() != q.shape() {
        return shape_err(
            "causal_attention",
            format!(
                "q, k, v must share one shape [..., T, d], got {:?}, {:?}, {:?}",
                q.shape(),
                k_.shape(),
                v.shape()
            ),
        );
    }
    if k_.dtype() != q.dtype() || v.dtype() != q.dtype() {
        return Err(crate::Error::DType {
            op: "causal_attention",
            lhs: q.dtype(),
            rhs: k_.dtype(),
        });
    }
    let (t, d) = (q.shape()[q.rank() - 2], q.shape()[q.rank() - 1]);
    let bh = q.numel() / (t * d).max(1);
    let (out, lse) = match (q.storage(), k_.storage(), v.storage()) {
        (Storage::F32(qv), Storage::F32(kv), Storage::F32(vv)) => {
            let (mut o, mut l) = (vec![0.0; qv.len()], vec![0.0; bh * t]);
            k::causal_attention_fwd(qv, kv, vv, bh, t, d, &mut o, &mut l);
            (Storage::F32(o), Storage::F32(l))
        }
        (Storage::F64(qv), Storage::F64(kv), Storage::F64(vv)) => {
            let (mut o, mut l) = (vec![0.0; qv.len()], vec![0.0; bh * t]);
            k::causal_attention_fwd_ref(qv, kv, vv, bh, t, d, &mut o, &mut l);
            (Storage::F64(o), Storage::F64(l))
        }
        _ => unreachable!("dtypes checked above"),
    };
    let (qc, kc, vc) = (q.clone(), k_.clone(), v.clone());
    Ok(Tensor::from_op(
        out,
        q.shape().to_vec(),
        "causal_attention",
        &[q, k_, v],
        move |o, g| {
            let shape = qc.shape().to_vec();
            let grads = match (
                qc.storage(),
                kc.storage(),
                vc.storage(),
                o.storage(),
                &lse,
                g.storage(),
            ) {
                (
                    Storage::F32(q),
                    Storage::F32(k),
                    Storage::F32(v),
                    Storage::F32(o),
                    Storage::F32(l),
                    Storage::F32(g),
                ) => {
                    let (mut dq, mut dk, mut dv) =
                        (vec![0.0; q.len()], vec![0.0; q.len()], vec![0.0; q.len()]);
                    k::causal_attention_bwd(q, k, v, o, l, g, bh, t, d, &mut dq, &mut dk, &mut dv);
                    [Storage::F32(dq), Storage::F32(dk), Storage::F32(dv)]
                }
                (
                    Storage::F64(q),
                    Storage::F64(k),
                    Storage::F64(v),
                    Storage::F64(o),
                    Storage::F64(l),
                    Storage::F64(g),
                ) => {
                    let (mut dq, mut dk, mut dv) =
                        (vec![0.0; q.len()], vec![0.0; q.len()], vec![0.0; q.len()]);
                    k::causal_attention_bwd_ref(
                        q, k, v, o, l, g, bh, t, d, &mut dq, &mut dk, &mut dv,
                    );
                    [Storage::F64(dq), Storage::F64(dk), Storage::F64(dv)]
                }
                _ => unreachable!("gradient dtype matches its tensor"),
            };
            Ok(grads
                .into_iter()
                .map(|s| Some(Tensor::leaf(s, shape.clone())))
                .collect())
        },
    ))
}
