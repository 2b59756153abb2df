//! Every CUDA kernel against the CPU reference (`kernels::cpu::*::*_ref`, in f64) on random
//! inputs and awkward shapes (sizes that are not multiples of the tiles, one-element edges,
//! transposed operands, shared batch operands).
//!
//! Tolerances: a GPU value g passes against the f64 reference w when
//! |g − w| ≤ rtol·(|w| + mean|w|) — relative to the element, or to the output's mean magnitude
//! where a sum cancels to near zero. rtol is 1e-5 for f32 kernels; for the bf16 GEMM the inputs
//! are rounded to bf16 first and the reference multiplies the rounded values, so only the f32
//! accumulation differs (rtol 1e-3, well inside the 1e-2 for bf16).
//!
//! Without a GPU (no driver, or no device) every test prints `skipped (no GPU): <name>` and
//! returns; a GPU that is present but fails to set up (NVRTC missing, a kernel that does not
//! compile) fails the tests. Run with `--nocapture` to see the skip lines.
#![cfg(feature = "cuda")]

use kernels::cpu::{adamw, attention, crossentropy, gelu, layernorm, matmul, softmax};
use kernels::cuda::{self, Bf16Operand, CudaError, EmbeddingGroups, Gpu, Strides};
use std::sync::Arc;

/// The shared GPU (NVRTC compiles every source once), or `None` after the skip line.
fn gpu(test: &str) -> Option<&'static Arc<Gpu>> {
    cuda::shared_gpu_or_skip(test)
}

/// xorshift64*: reproducible random inputs without a dependency.
struct Rng(u64);
impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next() >> 40) as f32 / (1u64 << 24) as f32)
    }
    fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn to64(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

fn assert_close(what: &str, got: &[f32], want: &[f64], rtol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mean = want.iter().map(|w| w.abs()).sum::<f64>() / want.len().max(1) as f64;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        assert!(
            err <= rtol * (w.abs() + mean) || (g.is_nan() && w.is_nan()),
            "{what}[{i}]: gpu {g}, reference {w} (|err| {err:e}, mean |ref| {mean:e})"
        );
    }
}

const RTOL: f64 = 1e-5;

#[test]
fn no_gpu_is_an_error_not_a_panic() {
    if !cuda::cuda_available() {
        let e = Gpu::new(0).unwrap_err();
        assert!(matches!(e, CudaError::NoDriver), "{e}");
        assert!(e.to_string().contains("no CUDA driver"));
    } else if let Err(e) = Gpu::new(usize::MAX) {
        // A driver is here: asking for a GPU that does not exist is an error too.
        assert!(matches!(e, CudaError::NoDevice(_)), "{e}");
    }
}

#[test]
fn gemm_f32_matches_reference() {
    let Some(gpu) = gpu("gemm_f32_matches_reference") else {
        return;
    };
    let mut rng = Rng::new(1);
    // (batch, m, k, n, a transposed, b transposed, b shared across the batch, beta)
    let cases = [
        (1, 1, 1, 1, false, false, false, 0.0),
        (1, 64, 16, 64, false, false, false, 0.0),
        (1, 67, 45, 93, false, false, false, 0.5),
        (2, 130, 17, 65, true, false, false, 0.0),
        (3, 33, 70, 129, false, true, true, -1.0),
        (2, 5, 200, 3, true, true, false, 0.25),
    ];
    for (batch, m, k, n, at, bt, shared, beta) in cases {
        let a = rng.vec(batch * m * k, -1.0, 1.0);
        let b = rng.vec(batch * k * n, -1.0, 1.0);
        let c0 = rng.vec(batch * m * n, -1.0, 1.0);
        // A stored [m, k] (row-major) or [k, m] (its transpose): only the strides change.
        let sa = if at {
            Strides {
                batch: m * k,
                row: 1,
                col: m,
            }
        } else {
            Strides {
                batch: m * k,
                row: k,
                col: 1,
            }
        };
        let mut sb = if bt {
            Strides {
                batch: k * n,
                row: 1,
                col: k,
            }
        } else {
            Strides {
                batch: k * n,
                row: n,
                col: 1,
            }
        };
        if shared {
            sb.batch = 0;
        }
        let sc = Strides::row_major(m, n);
        let alpha = 0.75f32;
        let mut want = to64(&c0);
        matmul::gemm_batched_ref::<f64>(
            batch,
            m,
            k,
            n,
            alpha as f64,
            &to64(&a),
            sa.batch,
            sa.row,
            sa.col,
            &to64(&b),
            sb.batch,
            sb.row,
            sb.col,
            beta as f64,
            &mut want,
            sc.batch,
            sc.row,
            sc.col,
        );
        let (da, db) = (gpu.upload(&a).unwrap(), gpu.upload(&b).unwrap());
        let mut dc = gpu.upload(&c0).unwrap();
        gpu.gemm_f32(batch, m, k, n, alpha, &da, sa, &db, sb, beta, &mut dc, sc)
            .unwrap();
        let got = gpu.download(&dc).unwrap();
        assert_close(
            &format!("gemm_f32 {batch}x{m}x{k}x{n} at={at} bt={bt}"),
            &got,
            &want,
            RTOL,
        );
    }
}

/// Rounds to bf16 and back: the values a bf16 buffer holds.
fn bf16_round(x: &[f32]) -> (Vec<u16>, Vec<f32>) {
    let bits: Vec<u16> = x.iter().map(|&v| cuda::f32_to_bf16_bits(v)).collect();
    let vals = bits.iter().map(|&h| cuda::bf16_bits_to_f32(h)).collect();
    (bits, vals)
}

#[test]
fn gemm_bf16_matches_reference() {
    let Some(gpu) = gpu("gemm_bf16_matches_reference") else {
        return;
    };
    let mut rng = Rng::new(2);
    // (batch, m, k, n, extra leading-dimension padding, beta). Padding 0 with k or n not a
    // multiple of 8 takes the element-by-element load path; padded to a multiple of 8 it
    // takes cp.async with partly zero-filled chunks.
    let cases = [
        (1, 128, 32, 128, 0, 0.0),
        (1, 256, 64, 128, 0, 0.5),
        (1, 200, 72, 136, 0, 0.0),
        (1, 77, 50, 33, 0, 0.0),
        (1, 77, 50, 33, 8, 0.0),
        (1, 1, 1, 1, 0, 0.0),
        (2, 130, 40, 260, 8, -1.0),
        (3, 17, 16, 9, 0, 0.0),
    ];
    for (batch, m, k, n, pad, beta) in cases {
        for (at, bt) in [(false, false), (false, true), (true, false), (true, true)] {
            // Stored shapes and leading dimensions; vec-friendly padding when asked.
            let (ar, ac) = if at { (k, m) } else { (m, k) };
            let (br, bc) = if bt { (n, k) } else { (k, n) };
            let round8 = |x: usize| if pad > 0 { x.div_ceil(8) * 8 + pad } else { x };
            let (lda, ldb, ldc) = (round8(ac), round8(bc), n + pad);
            let oa = Bf16Operand {
                trans: at,
                ld: lda,
                batch_stride: ar * lda,
            };
            let ob = Bf16Operand {
                trans: bt,
                ld: ldb,
                batch_stride: br * ldb,
            };
            let (a_bits, a) = bf16_round(&rng.vec(batch * ar * lda, -1.0, 1.0));
            let (b_bits, b) = bf16_round(&rng.vec(batch * br * ldb, -1.0, 1.0));
            let c0 = rng.vec(batch * m * ldc, -1.0, 1.0);
            let alpha = 1.5f32;
            // The same matrices as general strides for the reference.
            let sa = if at {
                Strides {
                    batch: oa.batch_stride,
                    row: 1,
                    col: lda,
                }
            } else {
                Strides {
                    batch: oa.batch_stride,
                    row: lda,
                    col: 1,
                }
            };
            let sb = if bt {
                Strides {
                    batch: ob.batch_stride,
                    row: 1,
                    col: ldb,
                }
            } else {
                Strides {
                    batch: ob.batch_stride,
                    row: ldb,
                    col: 1,
                }
            };
            let mut want = to64(&c0);
            matmul::gemm_batched_ref::<f64>(
                batch,
                m,
                k,
                n,
                alpha as f64,
                &to64(&a),
                sa.batch,
                sa.row,
                sa.col,
                &to64(&b),
                sb.batch,
                sb.row,
                sb.col,
                beta as f64,
                &mut want,
                m * ldc,
                ldc,
                1,
            );
            let (da, db) = (gpu.upload(&a_bits).unwrap(), gpu.upload(&b_bits).unwrap());
            let mut dc = gpu.upload(&c0).unwrap();
            gpu.gemm_bf16(
                batch,
                m,
                k,
                n,
                alpha,
                &da,
                oa,
                &db,
                ob,
                beta,
                &mut dc,
                ldc,
                m * ldc,
            )
            .unwrap();
            let got = gpu.download(&dc).unwrap();
            let what = format!("gemm_bf16 {batch}x{m}x{k}x{n} at={at} bt={bt} pad={pad}");
            assert_close(&what, &got, &want, 1e-3);

            // The same with a bf16 C: the old C is the bf16 rounding of c0, the result is
            // rounded once more (1e-2, the bf16 tolerance).
            let (c0_bits, c0_vals) = bf16_round(&c0);
            let mut want16 = to64(&c0_vals);
            matmul::gemm_batched_ref::<f64>(
                batch,
                m,
                k,
                n,
                alpha as f64,
                &to64(&a),
                sa.batch,
                sa.row,
                sa.col,
                &to64(&b),
                sb.batch,
                sb.row,
                sb.col,
                beta as f64,
                &mut want16,
                m * ldc,
                ldc,
                1,
            );
            let mut dc16 = gpu.upload(&c0_bits).unwrap();
            gpu.gemm_bf16_to_bf16(
                batch,
                m,
                k,
                n,
                alpha,
                &da,
                oa,
                &db,
                ob,
                beta,
                &mut dc16,
                ldc,
                m * ldc,
            )
            .unwrap();
            let got16: Vec<f32> = gpu
                .download(&dc16)
                .unwrap()
                .iter()
                .map(|&h| cuda::bf16_bits_to_f32(h))
                .collect();
            assert_close(&format!("{what} bf16 C"), &got16, &want16, 1e-2);
        }
    }
}

#[test]
fn attention_matches_reference() {
    let Some(gpu) = gpu("attention_matches_reference") else {
        return;
    };
    let mut rng = Rng::new(3);
    for (bh, t, d) in [
        (1, 1, 64),
        (3, 37, 64),
        (2, 100, 32),
        (1, 65, 128),
        (2, 33, 80),
        (1, 16, 1),
    ] {
        let n = bh * t * d;
        let (q, k, v, dout) = (
            rng.vec(n, -1.0, 1.0),
            rng.vec(n, -1.0, 1.0),
            rng.vec(n, -1.0, 1.0),
            rng.vec(n, -1.0, 1.0),
        );
        let (q64, k64, v64) = (to64(&q), to64(&k), to64(&v));
        let mut out_ref = vec![0.0f64; n];
        let mut lse_ref = vec![0.0f64; bh * t];
        attention::causal_attention_fwd_ref(&q64, &k64, &v64, bh, t, d, &mut out_ref, &mut lse_ref);
        let (mut dq_ref, mut dk_ref, mut dv_ref) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
        attention::causal_attention_bwd_ref(
            &q64,
            &k64,
            &v64,
            &out_ref,
            &lse_ref,
            &to64(&dout),
            bh,
            t,
            d,
            &mut dq_ref,
            &mut dk_ref,
            &mut dv_ref,
        );

        let (dq_, dk_, dv_) = (
            gpu.upload(&q).unwrap(),
            gpu.upload(&k).unwrap(),
            gpu.upload(&v).unwrap(),
        );
        let mut out = gpu.zeros::<f32>(n).unwrap();
        let mut lse = gpu.zeros::<f32>(bh * t).unwrap();
        gpu.attention_fwd(&dq_, &dk_, &dv_, bh, t, d, &mut out, &mut lse)
            .unwrap();
        let shape = format!("bh={bh} t={t} d={d}");
        assert_close(
            &format!("attention out {shape}"),
            &gpu.download(&out).unwrap(),
            &out_ref,
            RTOL,
        );
        assert_close(
            &format!("attention lse {shape}"),
            &gpu.download(&lse).unwrap(),
            &lse_ref,
            RTOL,
        );

        let ddout = gpu.upload(&dout).unwrap();
        let (mut gq, mut gk, mut gv) = (
            gpu.zeros::<f32>(n).unwrap(),
            gpu.zeros::<f32>(n).unwrap(),
            gpu.zeros::<f32>(n).unwrap(),
        );
        gpu.attention_bwd(
            &dq_, &dk_, &dv_, &out, &lse, &ddout, bh, t, d, &mut gq, &mut gk, &mut gv,
        )
        .unwrap();
        assert_close(
            &format!("attention dq {shape}"),
            &gpu.download(&gq).unwrap(),
            &dq_ref,
            RTOL,
        );
        assert_close(
            &format!("attention dk {shape}"),
            &gpu.download(&gk).unwrap(),
            &dk_ref,
            RTOL,
        );
        assert_close(
            &format!("attention dv {shape}"),
            &gpu.download(&gv).unwrap(),
            &dv_ref,
            RTOL,
        );
    }
}

#[test]
fn attention_bf16_matches_reference() {
    let Some(gpu) = gpu("attention_bf16_matches_reference") else {
        return;
    };
    let mut rng = Rng::new(11);
    // T not a multiple of the 64-row tiles, a single query, and several 64-key tiles.
    for (bh, t) in [(1, 1), (2, 37), (3, 64), (2, 200)] {
        let d = 64;
        let n = bh * t * d;
        let (q_bits, q) = bf16_round(&rng.vec(n, -2.0, 2.0));
        let (k_bits, k) = bf16_round(&rng.vec(n, -2.0, 2.0));
        let (v_bits, v) = bf16_round(&rng.vec(n, -1.0, 1.0));
        let mut out_ref = vec![0.0f64; n];
        let mut lse_ref = vec![0.0f64; bh * t];
        attention::causal_attention_fwd_ref(
            &to64(&q),
            &to64(&k),
            &to64(&v),
            bh,
            t,
            d,
            &mut out_ref,
            &mut lse_ref,
        );
        let (dev_q, dev_k, dev_v) = (
            gpu.upload(&q_bits).unwrap(),
            gpu.upload(&k_bits).unwrap(),
            gpu.upload(&v_bits).unwrap(),
        );
        let mut out = gpu.zeros::<u16>(n).unwrap();
        let mut lse = gpu.zeros::<f32>(bh * t).unwrap();
        gpu.attention_fwd_bf16(&dev_q, &dev_k, &dev_v, bh, t, d, &mut out, &mut lse)
            .unwrap();
        let out: Vec<f32> = gpu
            .download(&out)
            .unwrap()
            .iter()
            .map(|&h| cuda::bf16_bits_to_f32(h))
            .collect();
        // P is rounded to bf16 before P·V and O is stored in bf16: 1e-2 (the bf16
        // tolerance). The scores and lse stay f32 on exact bf16 inputs: 1e-4.
        assert_close(
            &format!("attention bf16 out bh={bh} t={t}"),
            &out,
            &out_ref,
            1e-2,
        );
        assert_close(
            &format!("attention bf16 lse bh={bh} t={t}"),
            &gpu.download(&lse).unwrap(),
            &lse_ref,
            1e-4,
        );
        // Backward from the GPU's own bf16 O and lse (the reference gets the same O and lse,
        // so D = dO.O agrees and only the kernels' bf16 rounding of P and dS differs: 1e-2).
        let (dout_bits, dout_vals) = bf16_round(&rng.vec(n, -1.0, 1.0));
        let out_gpu = to64(&out);
        let lse_gpu = to64(&gpu.download(&lse).unwrap());
        let (mut dq_ref, mut dk_ref, mut dv_ref) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
        attention::causal_attention_bwd_ref(
            &to64(&q),
            &to64(&k),
            &to64(&v),
            &out_gpu,
            &lse_gpu,
            &to64(&dout_vals),
            bh,
            t,
            d,
            &mut dq_ref,
            &mut dk_ref,
            &mut dv_ref,
        );
        let out_dev = gpu
            .upload(
                &out.iter()
                    .map(|&x| cuda::f32_to_bf16_bits(x))
                    .collect::<Vec<u16>>(),
            )
            .unwrap();
        let ddout = gpu.upload(&dout_bits).unwrap();
        let (mut gq, mut gk, mut gv) = (
            gpu.zeros::<f32>(n).unwrap(),
            gpu.zeros::<f32>(n).unwrap(),
            gpu.zeros::<f32>(n).unwrap(),
        );
        gpu.attention_bwd_bf16(
            &dev_q, &dev_k, &dev_v, &out_dev, &lse, &ddout, bh, t, d, &mut gq, &mut gk, &mut gv,
        )
        .unwrap();
        assert_close(
            &format!("attention bf16 dq bh={bh} t={t}"),
            &gpu.download(&gq).unwrap(),
            &dq_ref,
            1e-2,
        );
        assert_close(
            &format!("attention bf16 dk bh={bh} t={t}"),
            &gpu.download(&gk).unwrap(),
            &dk_ref,
            1e-2,
        );
        assert_close(
            &format!("attention bf16 dv bh={bh} t={t}"),
            &gpu.download(&gv).unwrap(),
            &dv_ref,
            1e-2,
        );
    }
    assert!(gpu
        .attention_fwd_bf16(
            &gpu.zeros::<u16>(32).unwrap(),
            &gpu.zeros::<u16>(32).unwrap(),
            &gpu.zeros::<u16>(32).unwrap(),
            1,
            1,
            32,
            &mut gpu.zeros::<u16>(32).unwrap(),
            &mut gpu.zeros::<f32>(1).unwrap(),
        )
        .is_err());
}

#[test]
fn layernorm_matches_reference() {
    let Some(gpu) = gpu("layernorm_matches_reference") else {
        return;
    };
    let mut rng = Rng::new(4);
    for (rows, cols) in [(1, 1), (37, 31), (5, 768), (9, 1000)] {
        let n = rows * cols;
        let (x, res, dy) = (
            rng.vec(n, -2.0, 3.0),
            rng.vec(n, -1.0, 1.0),
            rng.vec(n, -1.0, 1.0),
        );
        let (gamma, beta) = (rng.vec(cols, 0.5, 1.5), rng.vec(cols, -0.5, 0.5));
        let eps = 1e-5f32;
        let sum: Vec<f32> = x.iter().zip(&res).map(|(a, b)| a + b).collect();
        let (g64, b64) = (to64(&gamma), to64(&beta));
        let mut y_ref = vec![0.0; n];
        let (mut mean_ref, mut rstd_ref) = (vec![0.0; rows], vec![0.0; rows]);
        layernorm::layernorm_fwd_ref(
            &to64(&sum),
            &g64,
            &b64,
            rows,
            cols,
            eps as f64,
            &mut y_ref,
            &mut mean_ref,
            &mut rstd_ref,
        );
        let (mut dx_ref, mut dg_ref, mut db_ref) = (vec![0.0; n], vec![0.0; cols], vec![0.0; cols]);
        layernorm::layernorm_bwd_ref(
            &to64(&dy),
            &to64(&sum),
            &g64,
            &mean_ref,
            &rstd_ref,
            rows,
            cols,
            &mut dx_ref,
            &mut dg_ref,
            &mut db_ref,
        );
        let shape = format!("{rows}x{cols}");
        let (dg, db) = (gpu.upload(&gamma).unwrap(), gpu.upload(&beta).unwrap());
        let mut y = gpu.zeros::<f32>(n).unwrap();
        let (mut mean, mut rstd) = (
            gpu.zeros::<f32>(rows).unwrap(),
            gpu.zeros::<f32>(rows).unwrap(),
        );

        // Plain forward on x + res (added on the host).
        let dsum_host = gpu.upload(&sum).unwrap();
        gpu.layernorm_fwd(
            &dsum_host, &dg, &db, rows, cols, eps, &mut y, &mut mean, &mut rstd,
        )
        .unwrap();
        assert_close(
            &format!("layernorm y {shape}"),
            &gpu.download(&y).unwrap(),
            &y_ref,
            RTOL,
        );
        assert_close(
            &format!("layernorm mean {shape}"),
            &gpu.download(&mean).unwrap(),
            &mean_ref,
            RTOL,
        );
        assert_close(
            &format!("layernorm rstd {shape}"),
            &gpu.download(&rstd).unwrap(),
            &rstd_ref,
            RTOL,
        );

        // Residual-fused forward: the sum comes out exactly as the host's f32 sum.
        let (dx_, dres) = (gpu.upload(&x).unwrap(), gpu.upload(&res).unwrap());
        let mut dsum = gpu.zeros::<f32>(n).unwrap();
        let mut y2 = gpu.zeros::<f32>(n).unwrap();
        gpu.layernorm_residual_fwd(
            &dx_, &dres, &dg, &db, rows, cols, eps, &mut dsum, &mut y2, &mut mean, &mut rstd,
        )
        .unwrap();
        assert_eq!(
            gpu.download(&dsum).unwrap(),
            sum,
            "layernorm residual sum {shape}"
        );
        assert_close(
            &format!("layernorm residual y {shape}"),
            &gpu.download(&y2).unwrap(),
            &y_ref,
            RTOL,
        );

        let ddy = gpu.upload(&dy).unwrap();
        let mut dx = gpu.zeros::<f32>(n).unwrap();
        let (mut dgam, mut dbet) = (
            gpu.zeros::<f32>(cols).unwrap(),
            gpu.zeros::<f32>(cols).unwrap(),
        );
        gpu.layernorm_bwd(
            &ddy, &dsum, &dg, &mean, &rstd, rows, cols, &mut dx, &mut dgam, &mut dbet,
        )
        .unwrap();
        assert_close(
            &format!("layernorm dx {shape}"),
            &gpu.download(&dx).unwrap(),
            &dx_ref,
            1e-4,
        );
        assert_close(
            &format!("layernorm dgamma {shape}"),
            &gpu.download(&dgam).unwrap(),
            &dg_ref,
            RTOL,
        );
        assert_close(
            &format!("layernorm dbeta {shape}"),
            &gpu.download(&dbet).unwrap(),
            &db_ref,
            RTOL,
        );
    }
}

#[test]
fn softmax_and_log_softmax_match_reference() {
    let Some(gpu) = gpu("softmax_and_log_softmax_match_reference") else {
        return;
    };
    let mut rng = Rng::new(5);
    for (rows, cols) in [(1, 1), (5, 7), (3, 300), (4, 5000)] {
        let n = rows * cols;
        let (x, dy) = (rng.vec(n, -8.0, 8.0), rng.vec(n, -1.0, 1.0));
        let shape = format!("{rows}x{cols}");
        let (dx_in, ddy) = (gpu.upload(&x).unwrap(), gpu.upload(&dy).unwrap());
        let mut y = gpu.zeros::<f32>(n).unwrap();
        let mut dx = gpu.zeros::<f32>(n).unwrap();

        let mut y_ref = vec![0.0; n];
        softmax::softmax_fwd_ref(&to64(&x), rows, cols, &mut y_ref);
        gpu.softmax_fwd(&dx_in, rows, cols, &mut y).unwrap();
        let y_gpu = gpu.download(&y).unwrap();
        assert_close(&format!("softmax {shape}"), &y_gpu, &y_ref, RTOL);
        // Backward from the GPU's own y (as training does); the reference gets the same y.
        let mut dx_ref = vec![0.0; n];
        softmax::softmax_bwd_ref(&to64(&y_gpu), &to64(&dy), rows, cols, &mut dx_ref);
        gpu.softmax_bwd(&y, &ddy, rows, cols, &mut dx).unwrap();
        assert_close(
            &format!("softmax bwd {shape}"),
            &gpu.download(&dx).unwrap(),
            &dx_ref,
            RTOL,
        );

        softmax::log_softmax_fwd_ref(&to64(&x), rows, cols, &mut y_ref);
        gpu.log_softmax_fwd(&dx_in, rows, cols, &mut y).unwrap();
        let y_gpu = gpu.download(&y).unwrap();
        assert_close(&format!("log_softmax {shape}"), &y_gpu, &y_ref, RTOL);
        softmax::log_softmax_bwd_ref(&to64(&y_gpu), &to64(&dy), rows, cols, &mut dx_ref);
        gpu.log_softmax_bwd(&y, &ddy, rows, cols, &mut dx).unwrap();
        assert_close(
            &format!("log_softmax bwd {shape}"),
            &gpu.download(&dx).unwrap(),
            &dx_ref,
            RTOL,
        );
    }
}

#[test]
fn cross_entropy_matches_reference() {
    let Some(gpu) = gpu("cross_entropy_matches_reference") else {
        return;
    };
    let mut rng = Rng::new(6);
    let ignore = -100i64;
    for (rows, vocab) in [(1, 1), (9, 3), (7, 1000), (3, 50257)] {
        let x = rng.vec(rows * vocab, -6.0, 6.0);
        let targets: Vec<i64> = (0..rows)
            .map(|r| {
                if r % 3 == 1 {
                    ignore
                } else {
                    rng.below(vocab) as i64
                }
            })
            .collect();
        let dl = rng.vec(rows, 0.1, 2.0);
        let x64 = to64(&x);
        let (mut loss_ref, mut lse_ref) = (vec![0.0; rows], vec![0.0; rows]);
        crossentropy::cross_entropy_fwd_ref(
            &x64,
            &targets,
            rows,
            vocab,
            ignore,
            &mut loss_ref,
            &mut lse_ref,
        );
        let mut dx_ref = vec![0.0; rows * vocab];
        crossentropy::cross_entropy_bwd_ref(
            &x64,
            &targets,
            &lse_ref,
            &to64(&dl),
            rows,
            vocab,
            ignore,
            &mut dx_ref,
        );
        let shape = format!("{rows}x{vocab}");
        let (dx_in, dt) = (gpu.upload(&x).unwrap(), gpu.upload(&targets).unwrap());
        let (mut loss, mut lse) = (
            gpu.zeros::<f32>(rows).unwrap(),
            gpu.zeros::<f32>(rows).unwrap(),
        );
        gpu.cross_entropy_fwd(&dx_in, &dt, rows, vocab, ignore, &mut loss, &mut lse)
            .unwrap();
        assert_close(
            &format!("ce loss {shape}"),
            &gpu.download(&loss).unwrap(),
            &loss_ref,
            RTOL,
        );
        assert_close(
            &format!("ce lse {shape}"),
            &gpu.download(&lse).unwrap(),
            &lse_ref,
            RTOL,
        );
        let ddl = gpu.upload(&dl).unwrap();
        let mut dx = gpu.zeros::<f32>(rows * vocab).unwrap();
        gpu.cross_entropy_bwd(&dx_in, &dt, &lse, &ddl, rows, vocab, ignore, &mut dx)
            .unwrap();
        assert_close(
            &format!("ce dlogits {shape}"),
            &gpu.download(&dx).unwrap(),
            &dx_ref,
            RTOL,
        );
    }
}

/// The row-scaled cross-entropy (PPO's log-probs at a temperature, and its weighted backward)
/// against the f64 reference run on the scaled logits, with the entropy computed directly;
/// with every scale 1 it must give the plain kernels' bits.
#[test]
fn cross_entropy_scaled_matches_reference() {
    let Some(gpu) = gpu("cross_entropy_scaled_matches_reference") else {
        return;
    };
    let mut rng = Rng::new(61);
    let ignore = -100i64;
    for (rows, vocab) in [(1, 1), (9, 3), (7, 1000), (3, 50257)] {
        let x = rng.vec(rows * vocab, -6.0, 6.0);
        let targets: Vec<i64> = (0..rows)
            .map(|r| {
                if r % 3 == 1 {
                    ignore
                } else {
                    rng.below(vocab) as i64
                }
            })
            .collect();
        let dl = rng.vec(rows, -2.0, 2.0);
        // 1/temperature for T = 0.7 and T = 1.3, and plain rows.
        let scale: Vec<f32> = (0..rows)
            .map(|r| [1.0 / 0.7, 1.0, 1.0 / 1.3][r % 3])
            .collect();
        let y64: Vec<f64> = (0..rows * vocab)
            .map(|i| x[i] as f64 * scale[i / vocab] as f64)
            .collect();
        let (mut loss_ref, mut lse_ref) = (vec![0.0; rows], vec![0.0; rows]);
        crossentropy::cross_entropy_fwd_ref(
            &y64,
            &targets,
            rows,
            vocab,
            ignore,
            &mut loss_ref,
            &mut lse_ref,
        );
        let entropy_ref: Vec<f64> = (0..rows)
            .map(|r| {
                let row = &y64[r * vocab..(r + 1) * vocab];
                -row.iter()
                    .map(|&y| (y - lse_ref[r]).exp() * (y - lse_ref[r]))
                    .sum::<f64>()
            })
            .collect();
        // d/dx = s·d/dy: the reference backward on y with upstream dl·s.
        let dl_scaled: Vec<f64> = (0..rows).map(|r| dl[r] as f64 * scale[r] as f64).collect();
        let mut dx_ref = vec![0.0; rows * vocab];
        crossentropy::cross_entropy_bwd_ref(
            &y64,
            &targets,
            &lse_ref,
            &dl_scaled,
            rows,
            vocab,
            ignore,
            &mut dx_ref,
        );
        let shape = format!("{rows}x{vocab}");
        let (dx_in, dt) = (gpu.upload(&x).unwrap(), gpu.upload(&targets).unwrap());
        let ds = gpu.upload(&scale).unwrap();
        let z = || gpu.zeros::<f32>(rows).unwrap();
        let (mut loss, mut lse, mut ent) = (z(), z(), z());
        gpu.cross_entropy_scaled_fwd(
            &dx_in,
            &dt,
            Some(&ds),
            rows,
            vocab,
            ignore,
            &mut loss,
            &mut lse,
            Some(&mut ent),
        )
        .unwrap();
        let tag = |what: &str| format!("scaled ce {what} {shape}");
        let got_loss = gpu.download(&loss).unwrap();
        assert_close(&tag("loss"), &got_loss, &loss_ref, RTOL);
        assert_close(&tag("lse"), &gpu.download(&lse).unwrap(), &lse_ref, RTOL);
        // An entropy is a sum of p·log p that cancels towards 0 for a peaked row: compared
        // relative to log(vocab), its range.
        let got_ent = gpu.download(&ent).unwrap();
        for (r, (&g, &w)) in got_ent.iter().zip(&entropy_ref).enumerate() {
            let tol = RTOL * (w.abs() + (vocab as f64).ln() + 1.0);
            assert!(
                (g as f64 - w).abs() <= tol,
                "{}[{r}]: {g} vs {w}",
                tag("entropy")
            );
        }
        // Without the entropy: the same losses.
        let mut loss2 = z();
        gpu.cross_entropy_scaled_fwd(
            &dx_in,
            &dt,
            Some(&ds),
            rows,
            vocab,
            ignore,
            &mut loss2,
            &mut lse,
            None,
        )
        .unwrap();
        assert_eq!(
            gpu.download(&loss2).unwrap(),
            got_loss,
            "{}",
            tag("loss, no entropy")
        );
        let ddl = gpu.upload(&dl).unwrap();
        let mut dx = gpu.zeros::<f32>(rows * vocab).unwrap();
        gpu.cross_entropy_scaled_bwd(
            &dx_in,
            &dt,
            Some(&ds),
            &lse,
            &ddl,
            rows,
            vocab,
            ignore,
            &mut dx,
        )
        .unwrap();
        assert_close(&tag("dlogits"), &gpu.download(&dx).unwrap(), &dx_ref, RTOL);

        // Every scale 1: bit for bit no scale (the plain cross-entropy, a null row_scale).
        let ones = gpu.upload(&vec![1.0f32; rows]).unwrap();
        let (mut l1, mut lse1, mut l2, mut lse2) = (z(), z(), z(), z());
        gpu.cross_entropy_fwd(&dx_in, &dt, rows, vocab, ignore, &mut l1, &mut lse1)
            .unwrap();
        gpu.cross_entropy_scaled_fwd(
            &dx_in,
            &dt,
            Some(&ones),
            rows,
            vocab,
            ignore,
            &mut l2,
            &mut lse2,
            None,
        )
        .unwrap();
        assert_eq!(
            gpu.download(&l1).unwrap(),
            gpu.download(&l2).unwrap(),
            "{}",
            tag("s = 1 loss")
        );
        assert_eq!(
            gpu.download(&lse1).unwrap(),
            gpu.download(&lse2).unwrap(),
            "{}",
            tag("s = 1 lse")
        );
        let (mut d1, mut d2) = (
            gpu.zeros::<f32>(rows * vocab).unwrap(),
            gpu.zeros::<f32>(rows * vocab).unwrap(),
        );
        gpu.cross_entropy_bwd(&dx_in, &dt, &lse1, &ddl, rows, vocab, ignore, &mut d1)
            .unwrap();
        gpu.cross_entropy_scaled_bwd(
            &dx_in,
            &dt,
            Some(&ones),
            &lse1,
            &ddl,
            rows,
            vocab,
            ignore,
            &mut d2,
        )
        .unwrap();
        assert_eq!(
            gpu.download(&d1).unwrap(),
            gpu.download(&d2).unwrap(),
            "{}",
            tag("s = 1 dlogits")
        );
    }
    // A wrong row_scale length is an error, not a launch.
    let (x, t) = (
        gpu.upload(&[0.0f32; 6]).unwrap(),
        gpu.upload(&[0i64, 1]).unwrap(),
    );
    let bad = gpu.upload(&[1.0f32]).unwrap();
    let (mut l, mut lse) = (gpu.zeros::<f32>(2).unwrap(), gpu.zeros::<f32>(2).unwrap());
    assert!(matches!(
        gpu.cross_entropy_scaled_fwd(&x, &t, Some(&bad), 2, 3, ignore, &mut l, &mut lse, None),
        Err(CudaError::BadArgument(_))
    ));
}

#[test]
fn gelu_matches_reference() {
    let Some(gpu) = gpu("gelu_matches_reference") else {
        return;
    };
    let mut rng = Rng::new(7);
    let mut x = rng.vec(10_007, -6.0, 6.0);
    x.extend_from_slice(&[0.0, -0.0, 1e-20, -1e-20, 30.0, -30.0, 100.0, -100.0]);
    let dy = rng.vec(x.len(), -1.0, 1.0);
    let (x64, dy64) = (to64(&x), to64(&dy));
    let (mut y_ref, mut dx_ref) = (vec![0.0; x.len()], vec![0.0; x.len()]);
    gelu::gelu_fwd_ref(&x64, &mut y_ref);
    gelu::gelu_bwd_ref(&x64, &dy64, &mut dx_ref);
    let (dx_in, ddy) = (gpu.upload(&x).unwrap(), gpu.upload(&dy).unwrap());
    let mut y = gpu.zeros::<f32>(x.len()).unwrap();
    let mut dx = gpu.zeros::<f32>(x.len()).unwrap();
    gpu.gelu_fwd(&dx_in, &mut y).unwrap();
    gpu.gelu_bwd(&dx_in, &ddy, &mut dx).unwrap();
    // Element-wise, no cancellation: compare relative to each element (plus a tiny floor for
    // values that underflow, e.g. gelu(-30) ≈ -1e-195 in f64 and 0 or a denormal in f32).
    for (what, got, want) in [
        ("gelu", gpu.download(&y).unwrap(), y_ref),
        ("gelu bwd", gpu.download(&dx).unwrap(), dx_ref),
    ] {
        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g as f64 - w).abs() <= 1e-5 * w.abs() + 1e-30,
                "{what}[{i}] x={}: {g} vs {w}",
                x[i]
            );
        }
    }
}

#[test]
fn embedding_matches_reference() {
    let Some(gpu) = gpu("embedding_matches_reference") else {
        return;
    };
    let mut rng = Rng::new(8);
    let (vocab, dim, rows) = (50, 70, 123);
    let table = rng.vec(vocab * dim, -1.0, 1.0);
    // Repeated tokens (only 10 distinct) so the backward really sums.
    let idx: Vec<i32> = (0..rows).map(|_| (rng.below(10) * 3) as i32).collect();
    let dout = rng.vec(rows * dim, -1.0, 1.0);
    let didx = gpu.upload(&idx).unwrap();
    let dtab = gpu.upload(&table).unwrap();
    let mut out = gpu.zeros::<f32>(rows * dim).unwrap();
    gpu.embedding_fwd(&didx, &dtab, vocab, dim, &mut out)
        .unwrap();
    let want: Vec<f32> = idx
        .iter()
        .flat_map(|&t| table[t as usize * dim..(t as usize + 1) * dim].to_vec())
        .collect();
    assert_eq!(
        gpu.download(&out).unwrap(),
        want,
        "embedding forward is a copy"
    );

    // Backward: the f32 sums in ascending row order, exactly (the kernel adds in that order).
    let start = rng.vec(vocab * dim, -1.0, 1.0);
    let groups = EmbeddingGroups::new(gpu, &idx, vocab).unwrap();
    let ddout = gpu.upload(&dout).unwrap();
    for accumulate in [false, true] {
        let mut want = if accumulate {
            start.clone()
        } else {
            vec![0.0f32; vocab * dim]
        };
        for (r, &t) in idx.iter().enumerate() {
            for c in 0..dim {
                want[t as usize * dim + c] += dout[r * dim + c];
            }
        }
        // A token's first row is added to 0.0 (not accumulating) or to the old value: both
        // match `want`, built the same way.
        let mut dtable = gpu.upload(&start).unwrap();
        gpu.embedding_bwd(&ddout, &groups, vocab, dim, accumulate, &mut dtable)
            .unwrap();
        assert_eq!(
            gpu.download(&dtable).unwrap(),
            want,
            "embedding backward accumulate={accumulate}"
        );
    }
    assert!(EmbeddingGroups::new(gpu, &[0, 50], vocab).is_err());
}

#[test]
fn elementwise_sum_and_bf16_match_reference() {
    let Some(gpu) = gpu("elementwise_sum_and_bf16_match_reference") else {
        return;
    };
    let mut rng = Rng::new(9);
    for n in [1usize, 1000, 100_003] {
        let (a, b) = (rng.vec(n, -3.0, 3.0), rng.vec(n, -3.0, 3.0));
        let (da, db) = (gpu.upload(&a).unwrap(), gpu.upload(&b).unwrap());
        let mut out = gpu.zeros::<f32>(n).unwrap();
        gpu.add(&da, &db, &mut out).unwrap();
        let add: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
        assert_eq!(gpu.download(&out).unwrap(), add, "add n={n}");
        gpu.mul(&da, &db, &mut out).unwrap();
        let mul: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x * y).collect();
        assert_eq!(gpu.download(&out).unwrap(), mul, "mul n={n}");
        gpu.scale(&da, -0.3, &mut out).unwrap();
        let sc: Vec<f32> = a.iter().map(|x| -0.3 * x).collect();
        assert_eq!(gpu.download(&out).unwrap(), sc, "scale n={n}");

        // Bias add and its gradient (column sums), on a [rows, cols] view of a.
        let cols = if n < 7 {
            1
        } else if n < 10_000 {
            7
        } else {
            77
        };
        let rows = n / cols;
        let bias = rng.vec(cols, -1.0, 1.0);
        let dbias = gpu.upload(&bias).unwrap();
        let xb = gpu.upload(&a[..rows * cols]).unwrap();
        let mut ob = gpu.zeros::<f32>(rows * cols).unwrap();
        gpu.add_bias(&xb, &dbias, rows, cols, &mut ob).unwrap();
        let want: Vec<f32> = (0..rows * cols).map(|i| a[i] + bias[i % cols]).collect();
        assert_eq!(gpu.download(&ob).unwrap(), want, "add_bias {rows}x{cols}");
        let mut colsum = gpu.zeros::<f32>(cols).unwrap();
        gpu.sum_rows(&xb, rows, cols, &mut colsum).unwrap();
        let want: Vec<f64> = (0..cols)
            .map(|c| (0..rows).map(|r| a[r * cols + c] as f64).sum())
            .collect();
        let mag: f64 = a.iter().map(|&x| (x as f64).abs()).sum::<f64>() / cols as f64;
        for (c, (&g, &w)) in gpu.download(&colsum).unwrap().iter().zip(&want).enumerate() {
            assert!(
                (g as f64 - w).abs() <= 1e-5 * mag,
                "sum_rows {rows}x{cols}[{c}]: {g} vs {w}"
            );
        }

        let s = gpu.sum(&da).unwrap();
        let want: f64 = a.iter().map(|&x| x as f64).sum();
        let mag: f64 = a.iter().map(|&x| (x as f64).abs()).sum();
        assert!(
            (s as f64 - want).abs() <= 1e-5 * mag,
            "sum n={n}: {s} vs {want}"
        );
        assert_eq!(
            s.to_bits(),
            gpu.sum(&da).unwrap().to_bits(),
            "sum is reproducible"
        );

        let mut bits = gpu.zeros::<u16>(n).unwrap();
        gpu.to_bf16(&da, &mut bits).unwrap();
        let host_bits: Vec<u16> = a.iter().map(|&x| cuda::f32_to_bf16_bits(x)).collect();
        assert_eq!(gpu.download(&bits).unwrap(), host_bits, "f32 -> bf16 n={n}");
        gpu.from_bf16(&bits, &mut out).unwrap();
        let back: Vec<f32> = host_bits
            .iter()
            .map(|&h| cuda::bf16_bits_to_f32(h))
            .collect();
        assert_eq!(gpu.download(&out).unwrap(), back, "bf16 -> f32 n={n}");
    }
}

#[test]
fn adamw_and_clipping_match_reference() {
    let Some(gpu) = gpu("adamw_and_clipping_match_reference") else {
        return;
    };
    let mut rng = Rng::new(10);
    let n = 10_001;
    let mut p = rng.vec(n, -1.0, 1.0);
    let (mut m, mut v) = (vec![0.0f32; n], vec![0.0f32; n]);
    let (mut dp, mut dm, mut dv) = (
        gpu.upload(&p).unwrap(),
        gpu.upload(&m).unwrap(),
        gpu.upload(&v).unwrap(),
    );
    for step in 1..=3 {
        let g = rng.vec(n, -0.1, 0.1);
        let h = adamw::AdamWStep {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
            step,
        };
        // The kernel does the reference's f32 operations in the same order, each rounded once:
        // bitwise equal to adamw_ref::<f32>.
        adamw::adamw_ref::<f32>(&mut p, &g, &mut m, &mut v, h);
        let dg = gpu.upload(&g).unwrap();
        gpu.adamw(&mut dp, &dg, &mut dm, &mut dv, h).unwrap();
        assert_eq!(gpu.download(&dp).unwrap(), p, "adamw param, step {step}");
        assert_eq!(gpu.download(&dm).unwrap(), m, "adamw m, step {step}");
        assert_eq!(gpu.download(&dv).unwrap(), v, "adamw v, step {step}");
    }

    // The variant that also writes the bf16 weight copy: same update, copy = rounded params.
    let g = rng.vec(n, -0.1, 0.1);
    let h = adamw::AdamWStep {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.1,
        step: 4,
    };
    adamw::adamw_ref::<f32>(&mut p, &g, &mut m, &mut v, h);
    let mut copy = gpu.zeros::<u16>(n).unwrap();
    gpu.adamw_with_bf16_copy(
        &mut dp,
        &gpu.upload(&g).unwrap(),
        &mut dm,
        &mut dv,
        &mut copy,
        h,
    )
    .unwrap();
    assert_eq!(gpu.download(&dp).unwrap(), p, "adamw (with copy) param");
    let want: Vec<u16> = p.iter().map(|&x| cuda::f32_to_bf16_bits(x)).collect();
    assert_eq!(gpu.download(&copy).unwrap(), want, "adamw bf16 copy");

    // Clipping over three tensors of awkward sizes.
    let sizes = [1usize, 1000, 70_001];
    let grads: Vec<Vec<f32>> = sizes.iter().map(|&s| rng.vec(s, -1.0, 1.0)).collect();
    let norm_ref = grads
        .iter()
        .flatten()
        .map(|&x| (x as f64) * (x as f64))
        .sum::<f64>()
        .sqrt();
    for max_norm in [1e9, 1.0] {
        let mut dgs: Vec<_> = grads.iter().map(|g| gpu.upload(g).unwrap()).collect();
        let mut refs: Vec<&mut _> = dgs.iter_mut().collect();
        let norm = gpu.clip_grad_norm(&mut refs, max_norm).unwrap();
        assert!(
            (norm - norm_ref).abs() <= 1e-9 * norm_ref,
            "norm {norm} vs {norm_ref}"
        );
        let factor = max_norm / (norm + 1e-6);
        for (g, dg) in grads.iter().zip(&dgs) {
            let want: Vec<f32> = if factor < 1.0 {
                g.iter().map(|&x| x * factor as f32).collect()
            } else {
                g.clone()
            };
            assert_eq!(gpu.download(dg).unwrap(), want, "clip max_norm={max_norm}");
        }
    }
}

#[test]
fn results_are_reproducible_and_bad_arguments_are_errors() {
    let Some(gpu) = gpu("results_are_reproducible_and_bad_arguments_are_errors") else {
        return;
    };
    let mut rng = Rng::new(12);
    // The backward passes and reductions have no atomics: two runs give the same bits.
    let (bh, t, d) = (2, 150, 64);
    let n = bh * t * d;
    let up = |x: &[f32]| gpu.upload(x).unwrap();
    let (q, k, v, dout) = (
        up(&rng.vec(n, -1.0, 1.0)),
        up(&rng.vec(n, -1.0, 1.0)),
        up(&rng.vec(n, -1.0, 1.0)),
        up(&rng.vec(n, -1.0, 1.0)),
    );
    let mut out = gpu.zeros::<f32>(n).unwrap();
    let mut lse = gpu.zeros::<f32>(bh * t).unwrap();
    gpu.attention_fwd(&q, &k, &v, bh, t, d, &mut out, &mut lse)
        .unwrap();
    let run = || {
        let (mut a, mut b, mut c) = (
            gpu.zeros::<f32>(n).unwrap(),
            gpu.zeros::<f32>(n).unwrap(),
            gpu.zeros::<f32>(n).unwrap(),
        );
        gpu.attention_bwd(
            &q, &k, &v, &out, &lse, &dout, bh, t, d, &mut a, &mut b, &mut c,
        )
        .unwrap();
        [a, b, c].map(|x| gpu.download(&x).unwrap())
    };
    assert!(
        run() == run(),
        "attention backward differs between two runs"
    );
    let (rows, cols) = (300, 77);
    let x = up(&rng.vec(rows * cols, -1.0, 1.0));
    let colsum = || {
        let mut o = gpu.zeros::<f32>(cols).unwrap();
        gpu.sum_rows(&x, rows, cols, &mut o).unwrap();
        gpu.download(&o).unwrap()
    };
    assert_eq!(colsum(), colsum(), "sum_rows differs between two runs");

    // Wrong sizes are errors, not out-of-bounds launches.
    let mut small = gpu.zeros::<f32>(10).unwrap();
    let is_bad = |r: Result<(), CudaError>| matches!(r, Err(CudaError::BadArgument(_)));
    assert!(is_bad(gpu.add(&x, &x, &mut small)));
    assert!(is_bad(gpu.softmax_fwd(&x, rows, cols + 1, &mut small)));
    assert!(is_bad(gpu.gemm_f32(
        1,
        20,
        20,
        20,
        1.0,
        &x,
        Strides::row_major(20, 20),
        &x,
        Strides::row_major(20, 20),
        0.0,
        &mut small,
        Strides::row_major(20, 20),
    )));
    let big = gpu.zeros::<f32>(129 * 2).unwrap();
    let mut o = gpu.zeros::<f32>(129 * 2).unwrap();
    let mut l = gpu.zeros::<f32>(2).unwrap();
    assert!(is_bad(
        gpu.attention_fwd(&big, &big, &big, 1, 2, 129, &mut o, &mut l)
    ));
}

/// Uploads the bf16 rounding of `x`; returns the device buffer and the rounded values.
fn up16(gpu: &Gpu, x: &[f32]) -> (cudarc::driver::CudaSlice<u16>, Vec<f32>) {
    let (bits, vals) = bf16_round(x);
    (gpu.upload(&bits).unwrap(), vals)
}

fn down16(gpu: &Gpu, x: &cudarc::driver::CudaSlice<u16>) -> Vec<f32> {
    gpu.download(x)
        .unwrap()
        .iter()
        .map(|&h| cuda::bf16_bits_to_f32(h))
        .collect()
}

/// The bf16-storage versions of the memory-bound kernels (mixed-precision activations) against
/// the f64 reference on the bf16-rounded inputs; their outputs are rounded to bf16, so 1e-2.
#[test]
fn bf16_activation_kernels_match_reference() {
    let Some(gpu) = gpu("bf16_activation_kernels_match_reference") else {
        return;
    };
    let mut rng = Rng::new(13);
    const TOL: f64 = 1e-2;
    let (rows, cols) = (37, 300);
    let n = rows * cols;

    // layernorm: residual-fused forward, then the backward on the stored (bf16) sum.
    let (dx_, _) = up16(gpu, &rng.vec(n, -2.0, 3.0));
    let (dres, _) = up16(gpu, &rng.vec(n, -1.0, 1.0));
    let (ddy, dy) = up16(gpu, &rng.vec(n, -1.0, 1.0));
    let (gamma, beta) = (rng.vec(cols, 0.5, 1.5), rng.vec(cols, -0.5, 0.5));
    let (dg, db) = (gpu.upload(&gamma).unwrap(), gpu.upload(&beta).unwrap());
    let mut dsum = gpu.zeros::<u16>(n).unwrap();
    let mut y = gpu.zeros::<u16>(n).unwrap();
    let (mut mean, mut rstd) = (
        gpu.zeros::<f32>(rows).unwrap(),
        gpu.zeros::<f32>(rows).unwrap(),
    );
    gpu.layernorm_residual_fwd(
        &dx_, &dres, &dg, &db, rows, cols, 1e-5, &mut dsum, &mut y, &mut mean, &mut rstd,
    )
    .unwrap();
    let sum = down16(gpu, &dsum);
    let (g64, b64) = (to64(&gamma), to64(&beta));
    let mut y_ref = vec![0.0; n];
    let (mut m_ref, mut r_ref) = (vec![0.0; rows], vec![0.0; rows]);
    layernorm::layernorm_fwd_ref(
        &to64(&sum),
        &g64,
        &b64,
        rows,
        cols,
        1e-5,
        &mut y_ref,
        &mut m_ref,
        &mut r_ref,
    );
    assert_close("layernorm bf16 y", &down16(gpu, &y), &y_ref, TOL);
    let mut y2 = gpu.zeros::<u16>(n).unwrap();
    gpu.layernorm_fwd(
        &dsum, &dg, &db, rows, cols, 1e-5, &mut y2, &mut mean, &mut rstd,
    )
    .unwrap();
    assert_close("layernorm bf16 y (plain)", &down16(gpu, &y2), &y_ref, TOL);
    let (mut dx_ref, mut dg_ref, mut db_ref) = (vec![0.0; n], vec![0.0; cols], vec![0.0; cols]);
    layernorm::layernorm_bwd_ref(
        &to64(&dy),
        &to64(&sum),
        &g64,
        &m_ref,
        &r_ref,
        rows,
        cols,
        &mut dx_ref,
        &mut dg_ref,
        &mut db_ref,
    );
    let mut dx = gpu.zeros::<u16>(n).unwrap();
    let (mut dgam, mut dbet) = (
        gpu.zeros::<f32>(cols).unwrap(),
        gpu.zeros::<f32>(cols).unwrap(),
    );
    gpu.layernorm_bwd(
        &ddy, &dsum, &dg, &mean, &rstd, rows, cols, &mut dx, &mut dgam, &mut dbet,
    )
    .unwrap();
    assert_close("layernorm bf16 dx", &down16(gpu, &dx), &dx_ref, TOL);
    assert_close(
        "layernorm bf16 dgamma",
        &gpu.download(&dgam).unwrap(),
        &dg_ref,
        1e-4,
    );
    assert_close(
        "layernorm bf16 dbeta",
        &gpu.download(&dbet).unwrap(),
        &db_ref,
        1e-4,
    );

    // softmax and log-softmax, backward from the GPU's own bf16 y.
    let (dxs, xs) = up16(gpu, &rng.vec(n, -8.0, 8.0));
    let mut ys = gpu.zeros::<u16>(n).unwrap();
    let mut ref_ = vec![0.0; n];
    softmax::softmax_fwd_ref(&to64(&xs), rows, cols, &mut ref_);
    gpu.softmax_fwd(&dxs, rows, cols, &mut ys).unwrap();
    let y16 = down16(gpu, &ys);
    assert_close("softmax bf16", &y16, &ref_, TOL);
    softmax::softmax_bwd_ref(&to64(&y16), &to64(&dy), rows, cols, &mut ref_);
    gpu.softmax_bwd(&ys, &ddy, rows, cols, &mut dx).unwrap();
    assert_close("softmax bf16 bwd", &down16(gpu, &dx), &ref_, TOL);
    softmax::log_softmax_fwd_ref(&to64(&xs), rows, cols, &mut ref_);
    gpu.log_softmax_fwd(&dxs, rows, cols, &mut ys).unwrap();
    let y16 = down16(gpu, &ys);
    assert_close("log_softmax bf16", &y16, &ref_, TOL);
    softmax::log_softmax_bwd_ref(&to64(&y16), &to64(&dy), rows, cols, &mut ref_);
    gpu.log_softmax_bwd(&ys, &ddy, rows, cols, &mut dx).unwrap();
    assert_close("log_softmax bf16 bwd", &down16(gpu, &dx), &ref_, TOL);

    // cross-entropy on bf16 logits (losses and lse in f32).
    let targets: Vec<i64> = (0..rows)
        .map(|r| {
            if r % 4 == 3 {
                -100
            } else {
                rng.below(cols) as i64
            }
        })
        .collect();
    let dt = gpu.upload(&targets).unwrap();
    let dl = rng.vec(rows, 0.1, 2.0);
    let (mut loss_ref, mut lse_ref) = (vec![0.0; rows], vec![0.0; rows]);
    crossentropy::cross_entropy_fwd_ref(
        &to64(&xs),
        &targets,
        rows,
        cols,
        -100,
        &mut loss_ref,
        &mut lse_ref,
    );
    let (mut loss, mut lse) = (
        gpu.zeros::<f32>(rows).unwrap(),
        gpu.zeros::<f32>(rows).unwrap(),
    );
    gpu.cross_entropy_fwd(&dxs, &dt, rows, cols, -100, &mut loss, &mut lse)
        .unwrap();
    assert_close(
        "ce bf16 loss",
        &gpu.download(&loss).unwrap(),
        &loss_ref,
        1e-4,
    );
    assert_close("ce bf16 lse", &gpu.download(&lse).unwrap(), &lse_ref, 1e-4);
    crossentropy::cross_entropy_bwd_ref(
        &to64(&xs),
        &targets,
        &lse_ref,
        &to64(&dl),
        rows,
        cols,
        -100,
        &mut ref_,
    );
    let ddl = gpu.upload(&dl).unwrap();
    gpu.cross_entropy_bwd(&dxs, &dt, &lse, &ddl, rows, cols, -100, &mut dx)
        .unwrap();
    assert_close("ce bf16 dlogits", &down16(gpu, &dx), &ref_, TOL);

    // GELU.
    let (dxg, xg) = up16(gpu, &rng.vec(n, -6.0, 6.0));
    gelu::gelu_fwd_ref(&to64(&xg), &mut ref_);
    gpu.gelu_fwd(&dxg, &mut ys).unwrap();
    assert_close("gelu bf16", &down16(gpu, &ys), &ref_, TOL);
    gelu::gelu_bwd_ref(&to64(&xg), &to64(&dy), &mut ref_);
    gpu.gelu_bwd(&dxg, &ddy, &mut dx).unwrap();
    assert_close("gelu bf16 bwd", &down16(gpu, &dx), &ref_, TOL);

    // Element-wise ops, bias, column sums, sum.
    let want: Vec<f64> = xg
        .iter()
        .zip(&dy)
        .map(|(&a, &b)| a as f64 + b as f64)
        .collect();
    gpu.add(&dxg, &ddy, &mut ys).unwrap();
    assert_close("add bf16", &down16(gpu, &ys), &want, TOL);
    let want: Vec<f64> = xg
        .iter()
        .zip(&dy)
        .map(|(&a, &b)| a as f64 * b as f64)
        .collect();
    gpu.mul(&dxg, &ddy, &mut ys).unwrap();
    assert_close("mul bf16", &down16(gpu, &ys), &want, TOL);
    let want: Vec<f64> = xg.iter().map(|&a| 0.5 * a as f64).collect();
    gpu.scale(&dxg, 0.5, &mut ys).unwrap();
    assert_close("scale bf16", &down16(gpu, &ys), &want, TOL);
    let bias = rng.vec(cols, -1.0, 1.0);
    let dbias = gpu.upload(&bias).unwrap();
    let want: Vec<f64> = (0..n)
        .map(|i| xg[i] as f64 + bias[i % cols] as f64)
        .collect();
    gpu.add_bias(&dxg, &dbias, rows, cols, &mut ys).unwrap();
    assert_close("add_bias bf16", &down16(gpu, &ys), &want, TOL);
    let want: Vec<f64> = (0..cols)
        .map(|c| (0..rows).map(|r| xg[r * cols + c] as f64).sum())
        .collect();
    let mut colsum = gpu.zeros::<f32>(cols).unwrap();
    gpu.sum_rows(&dxg, rows, cols, &mut colsum).unwrap();
    assert_close(
        "sum_rows bf16",
        &gpu.download(&colsum).unwrap(),
        &want,
        1e-4,
    );
    let want: f64 = xg.iter().map(|&x| x as f64).sum();
    let mag: f64 = xg.iter().map(|&x| (x as f64).abs()).sum();
    let s = gpu.sum(&dxg).unwrap() as f64;
    assert!((s - want).abs() <= 1e-5 * mag, "sum bf16: {s} vs {want}");

    // Embedding with a bf16 table (the bf16 weight copy) and bf16 output gradients.
    let (vocab, dim) = (40, 72);
    let (dtab, tab) = up16(gpu, &rng.vec(vocab * dim, -1.0, 1.0));
    let ids: Vec<i32> = (0..rows).map(|_| rng.below(vocab) as i32).collect();
    let mut out = gpu.zeros::<u16>(rows * dim).unwrap();
    gpu.embedding_fwd(&gpu.upload(&ids).unwrap(), &dtab, vocab, dim, &mut out)
        .unwrap();
    let want: Vec<f32> = ids
        .iter()
        .flat_map(|&t| tab[t as usize * dim..(t as usize + 1) * dim].to_vec())
        .collect();
    assert_eq!(down16(gpu, &out), want, "embedding bf16 forward is a copy");
    let (ddout, dout) = up16(gpu, &rng.vec(rows * dim, -1.0, 1.0));
    let mut want = vec![0.0f32; vocab * dim];
    for (r, &t) in ids.iter().enumerate() {
        for c in 0..dim {
            want[t as usize * dim + c] += dout[r * dim + c];
        }
    }
    let groups = EmbeddingGroups::new(gpu, &ids, vocab).unwrap();
    let mut dtable = gpu.zeros::<f32>(vocab * dim).unwrap();
    gpu.embedding_bwd(&ddout, &groups, vocab, dim, false, &mut dtable)
        .unwrap();
    assert_eq!(
        gpu.download(&dtable).unwrap(),
        want,
        "embedding bf16 backward"
    );
}

#[test]
fn head_layouts_and_in_place_adds_match_reference() {
    let Some(gpu) = gpu("head_layouts_and_in_place_adds_match_reference") else {
        return;
    };
    use kernels::cuda::HeadsLayout;
    let mut rng = Rng::new(77);
    // (B, H, T, D): a fused q, k, v projection [B, T, 3·H·D] split into heads and back.
    for (b, h, t, d) in [(1, 1, 1, 1), (2, 3, 37, 16), (3, 2, 5, 64)] {
        let c = h * d;
        let rows = rng.vec(b * t * 3 * c, -1.0, 1.0);
        let drows = gpu.upload(&rows).unwrap();
        let mut back = gpu.zeros::<f32>(rows.len()).unwrap();
        for part in 0..3 {
            let layout = HeadsLayout {
                batch: b,
                heads: h,
                seq: t,
                head_dim: d,
                row_len: 3 * c,
                offset: part * c,
            };
            let mut heads = gpu.zeros::<f32>(b * h * t * d).unwrap();
            gpu.rows_to_heads(&drows, layout, &mut heads).unwrap();
            let got = gpu.download(&heads).unwrap();
            // The CPU engine's split: heads[b, h, t, d] = rows[(b·T + t)·3C + part·C + h·D + d].
            for bi in 0..b {
                for hi in 0..h {
                    for ti in 0..t {
                        for di in 0..d {
                            let want = rows[(bi * t + ti) * 3 * c + part * c + hi * d + di];
                            assert_eq!(got[((bi * h + hi) * t + ti) * d + di], want);
                        }
                    }
                }
            }
            gpu.heads_to_rows(&heads, layout, &mut back).unwrap();
            // f32 heads into bf16 rows: the rounding of each value.
            let mut back16 = gpu.zeros::<u16>(rows.len()).unwrap();
            gpu.heads_to_rows(&heads, layout, &mut back16).unwrap();
            let got16 = gpu.download(&back16).unwrap();
            for (i, &x) in got16.iter().enumerate() {
                let col = i % (3 * c);
                if col >= part * c && col < (part + 1) * c {
                    assert_eq!(x, cuda::f32_to_bf16_bits(rows[i]), "bf16 rows[{i}]");
                }
            }
        }
        assert_eq!(
            gpu.download(&back).unwrap(),
            rows,
            "split then merge is the identity"
        );
        let bad = HeadsLayout {
            batch: b,
            heads: h,
            seq: t,
            head_dim: d,
            row_len: 3 * c,
            offset: 2 * c + 1,
        };
        let mut heads = gpu.zeros::<f32>(b * h * t * d).unwrap();
        assert!(matches!(
            gpu.rows_to_heads(&drows, bad, &mut heads),
            Err(CudaError::BadArgument(_))
        ));
    }
    // acc += x and x += bias in place.
    let (rows, cols) = (7, 45);
    let a = rng.vec(rows * cols, -1.0, 1.0);
    let x = rng.vec(rows * cols, -1.0, 1.0);
    let bias = rng.vec(cols, -1.0, 1.0);
    let mut da = gpu.upload(&a).unwrap();
    gpu.add_assign(&mut da, &gpu.upload(&x).unwrap()).unwrap();
    gpu.add_bias_assign(&mut da, &gpu.upload(&bias).unwrap(), rows, cols)
        .unwrap();
    let got = gpu.download(&da).unwrap();
    for i in 0..rows * cols {
        assert_eq!(got[i], (a[i] + x[i]) + bias[i % cols], "element {i}");
    }
}
