//! Fused causal self-attention (math in `kernels::cpu::attention`).

use crate::error::shape_err;
use crate::{Result, Storage, Tensor};
use kernels::cpu::attention as k;
use rayon::prelude::*;

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
            let (mut o, mut l) = (crate::ops::zeros(qv.len()), vec![0.0; bh * t]);
            k::causal_attention_fwd(qv, kv, vv, bh, t, d, &mut o, &mut l);
            (Storage::F32(o), Storage::F32(l))
        }
        (Storage::F64(qv), Storage::F64(kv), Storage::F64(vv)) => {
            let (mut o, mut l) = (crate::ops::zeros(qv.len()), vec![0.0; bh * t]);
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
                    let (mut dq, mut dk, mut dv) = (
                        crate::ops::zeros(q.len()),
                        crate::ops::zeros(q.len()),
                        crate::ops::zeros(q.len()),
                    );
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
                    let (mut dq, mut dk, mut dv) = (
                        crate::ops::zeros(q.len()),
                        crate::ops::zeros(q.len()),
                        crate::ops::zeros(q.len()),
                    );
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

/// Multi-head causal self-attention straight from a fused QKV projection: `qkv` is
/// `[B, T, 3C]` (queries, keys and values side by side, as GPT-2's `c_attn` produces them),
/// split into `n_head` heads of d = C / n_head; the result is `[B, T, C]` with the heads
/// merged back, ready for the output projection. The same values as slicing q, k, v, moving
/// the heads forward (`[B, H, T, d]`), [`causal_attention`], and moving them back — in one op,
/// with one copy in and one out instead of a slice, a transpose and their gradients each.
///
/// Gradients: those of [`causal_attention`] for each head, moved back into the `[B, T, 3C]`
/// layout (dQ, dK, dV side by side).
pub fn causal_self_attention(qkv: &Tensor, n_head: usize) -> Result<Tensor> {
    let (b, t, c3) = match *qkv.shape() {
        [b, t, c3] => (b, t, c3),
        _ => (0, 0, 0),
    };
    if qkv.rank() != 3 || n_head == 0 || c3 % (3 * n_head) != 0 || c3 == 0 {
        return shape_err(
            "causal_self_attention",
            format!(
                "qkv must be [B, T, 3C] with C divisible by {n_head} heads, got {:?}",
                qkv.shape()
            ),
        );
    }
    let heads = Heads {
        b,
        t,
        h: n_head,
        d: c3 / 3 / n_head,
    };
    let (out, saved) = match qkv.storage() {
        Storage::F32(x) => {
            let [q, kk, v] = heads.split(x);
            let (mut o, mut l) = (crate::ops::zeros(q.len()), vec![0.0; heads.rows()]);
            k::causal_attention_fwd(&q, &kk, &v, b * n_head, t, heads.d, &mut o, &mut l);
            let y = heads.merge(&[&o]);
            (Storage::F32(y), Saved::F32 { q, k: kk, v, o, l })
        }
        Storage::F64(x) => {
            let [q, kk, v] = heads.split(x);
            let (mut o, mut l) = (crate::ops::zeros(q.len()), vec![0.0; heads.rows()]);
            k::causal_attention_fwd_ref(&q, &kk, &v, b * n_head, t, heads.d, &mut o, &mut l);
            let y = heads.merge(&[&o]);
            (Storage::F64(y), Saved::F64 { q, k: kk, v, o, l })
        }
    };
    let shape = qkv.shape().to_vec();
    Ok(Tensor::from_op(
        out,
        vec![b, t, c3 / 3],
        "causal_self_attention",
        &[qkv],
        move |_, g| {
            let (bh, d) = (heads.b * heads.h, heads.d);
            let dqkv = match (&saved, g.storage()) {
                (Saved::F32 { q, k: kk, v, o, l }, Storage::F32(g)) => {
                    let [dout] = heads.split(g);
                    let (mut dq, mut dk, mut dv) = (
                        crate::ops::zeros(q.len()),
                        crate::ops::zeros(q.len()),
                        crate::ops::zeros(q.len()),
                    );
                    k::causal_attention_bwd(
                        q, kk, v, o, l, &dout, bh, t, d, &mut dq, &mut dk, &mut dv,
                    );
                    Storage::F32(heads.merge(&[&dq, &dk, &dv]))
                }
                (Saved::F64 { q, k: kk, v, o, l }, Storage::F64(g)) => {
                    let [dout] = heads.split(g);
                    let (mut dq, mut dk, mut dv) = (
                        crate::ops::zeros(q.len()),
                        crate::ops::zeros(q.len()),
                        crate::ops::zeros(q.len()),
                    );
                    k::causal_attention_bwd_ref(
                        q, kk, v, o, l, &dout, bh, t, d, &mut dq, &mut dk, &mut dv,
                    );
                    Storage::F64(heads.merge(&[&dq, &dk, &dv]))
                }
                _ => unreachable!("gradient dtype matches its tensor"),
            };
            Ok(vec![Some(Tensor::leaf(dqkv, shape.clone()))])
        },
    ))
}

/// What the backward of [`causal_self_attention`] needs: the heads of q, k, v and of the
/// output (`[B, H, T, d]` each), and each query's log-sum-exp.
enum Saved {
    F32 {
        q: Vec<f32>,
        k: Vec<f32>,
        v: Vec<f32>,
        o: Vec<f32>,
        l: Vec<f32>,
    },
    F64 {
        q: Vec<f64>,
        k: Vec<f64>,
        v: Vec<f64>,
        o: Vec<f64>,
        l: Vec<f64>,
    },
}

/// The head layout of a `[B, T, N·C]` tensor of N parts side by side (C = h·d): element
/// (b, t, part, head, j) sits at `((b·T + t)·N + part)·C + head·d + j`, and at
/// `((b·h + head)·T + t)·d + j` of that part's `[B, h, T, d]` tensor.
#[derive(Clone, Copy)]
struct Heads {
    b: usize,
    t: usize,
    h: usize,
    d: usize,
}

impl Heads {
    /// Rows of one `[B, h, T]` grid (one per query).
    fn rows(&self) -> usize {
        self.b * self.h * self.t
    }

    /// Splits `x` (`[B, T, N·C]`) into N tensors `[B, h, T, d]`.
    fn split<F: Copy + Default + Send + Sync, const N: usize>(&self, x: &[F]) -> [Vec<F>; N] {
        let Heads { b, t, h, d } = *self;
        let c = h * d;
        std::array::from_fn(|part| {
            let mut out = crate::ops::zeros(b * t * c);
            out.par_chunks_mut(t * d).enumerate().for_each(|(bh, dst)| {
                let (bi, hi) = (bh / h, bh % h);
                for (ti, row) in dst.chunks_exact_mut(d).enumerate() {
                    let src = ((bi * t + ti) * N + part) * c + hi * d;
                    row.copy_from_slice(&x[src..src + d]);
                }
            });
            out
        })
    }

    /// The inverse of [`Heads::split`]: N tensors `[B, h, T, d]` side by side in one
    /// `[B, T, N·C]`.
    fn merge<F: Copy + Default + Send + Sync>(&self, parts: &[&Vec<F>]) -> Vec<F> {
        let Heads { b, t, h, d } = *self;
        let (c, n) = (h * d, parts.len());
        let mut out = crate::ops::zeros(b * t * n * c);
        out.par_chunks_mut(n * c).enumerate().for_each(|(bt, dst)| {
            let (bi, ti) = (bt / t, bt % t);
            for (part, src) in parts.iter().enumerate() {
                for hi in 0..h {
                    let s = ((bi * h + hi) * t + ti) * d;
                    dst[part * c + hi * d..][..d].copy_from_slice(&src[s..s + d]);
                }
            }
        });
        out
    }
}
