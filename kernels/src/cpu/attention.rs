//! Causal scaled dot-product self-attention, forward and backward.
//!
//! Shapes: `q, k, v, out, dq, dk, dv` are `[bh, t, d]` contiguous (batch × heads folded into
//! `bh`), `lse` is `[bh, t]`: the log-sum-exp of each query's scaled scores, saved by the
//! forward so the backward can rebuild the softmax without storing the T×T matrix.
//!
//! Math, per head, with s = 1/√d:
//!   S = s·Q·Kᵀ, masked so that query i sees keys j ≤ i;  P = softmax_row(S);  O = P·V;
//!   lse_i = log Σ_{j≤i} exp(S_ij).
//! Backward, with dO given:
//!   dV = Pᵀ·dO;  dP = dO·Vᵀ;  D_i = Σ_j P_ij dP_ij = dO_i·O_i;
//!   dS = P ∘ (dP − D);  dQ = s·dS·K;  dK = s·dSᵀ·Q.

use crate::Float;

#[allow(clippy::too_many_arguments)]
/// Reference forward: materialises one row of scores at a time. O(t²·d) per head.
pub fn causal_attention_fwd_ref<F: Float>(
    q: &[F],
    k: &[F],
    v: &[F],
    bh: usize,
    t: usize,
    d: usize,
    out: &mut [F],
    lse: &mut [F],
) {
    let scale = F::one() / F::from_f64(d as f64).sqrt();
    let mut scores = vec![F::zero(); t];
    for h in 0..bh {
        let base = h * t * d;
        for i in 0..t {
            let qi = &q[base + i * d..base + (i + 1) * d];
            let mut max = F::neg_infinity();
            for (j, s) in scores.iter_mut().enumerate().take(i + 1) {
                let kj = &k[base + j * d..base + (j + 1) * d];
                *s = scale * qi.iter().zip(kj).map(|(&a, &b)| a * b).sum::<F>();
                max = max.max(*s);
            }
            let mut denom = F::zero();
            for s in scores.iter_mut().take(i + 1) {
                *s = (*s - max).exp();
                denom += *s;
            }
            let oi = &mut out[base + i * d..base + (i + 1) * d];
            oi.iter_mut().for_each(|o| *o = F::zero());
            for (j, &p) in scores.iter().enumerate().take(i + 1) {
                let vj = &v[base + j * d..base + (j + 1) * d];
                for (o, &vv) in oi.iter_mut().zip(vj) {
                    *o += p / denom * vv;
                }
            }
            lse[h * t + i] = max + denom.ln();
        }
    }
}

/// Reference backward (see the module doc for the math). Overwrites `dq`, `dk`, `dv`.
#[allow(clippy::too_many_arguments)]
pub fn causal_attention_bwd_ref<F: Float>(
    q: &[F],
    k: &[F],
    v: &[F],
    out: &[F],
    lse: &[F],
    dout: &[F],
    bh: usize,
    t: usize,
    d: usize,
    dq: &mut [F],
    dk: &mut [F],
    dv: &mut [F],
) {
    let scale = F::one() / F::from_f64(d as f64).sqrt();
    dq.iter_mut().for_each(|x| *x = F::zero());
    dk.iter_mut().for_each(|x| *x = F::zero());
    dv.iter_mut().for_each(|x| *x = F::zero());
    let dot = |a: &[F], b: &[F]| a.iter().zip(b).map(|(&x, &y)| x * y).sum::<F>();
    for h in 0..bh {
        let base = h * t * d;
        let row = |x: &[F], i: usize| -> Vec<F> { x[base + i * d..base + (i + 1) * d].to_vec() };
        for i in 0..t {
            let qi = row(q, i);
            let doi = row(dout, i);
            let di = dot(&doi, &row(out, i));
            for j in 0..=i {
                let kj = row(k, j);
                let p = (scale * dot(&qi, &kj) - lse[h * t + i]).exp();
                let dp = dot(&doi, &row(v, j));
                let ds = p * (dp - di);
                for c in 0..d {
                    dv[base + j * d + c] += p * doi[c];
                    dq[base + i * d + c] += scale * ds * kj[c];
                    dk[base + j * d + c] += scale * ds * qi[c];
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
/// Fast f32 forward (same contract as [`causal_attention_fwd_ref`]).
pub fn causal_attention_fwd(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    bh: usize,
    t: usize,
    d: usize,
    out: &mut [f32],
    lse: &mut [f32],
) {
    // Transitional: the flash-style tiled kernel replaces this.
    causal_attention_fwd_ref(q, k, v, bh, t, d, out, lse)
}

/// Fast f32 backward (same contract as [`causal_attention_bwd_ref`]).
#[allow(clippy::too_many_arguments)]
pub fn causal_attention_bwd(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &[f32],
    lse: &[f32],
    dout: &[f32],
    bh: usize,
    t: usize,
    d: usize,
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
) {
    causal_attention_bwd_ref(q, k, v, out, lse, dout, bh, t, d, dq, dk, dv)
}
