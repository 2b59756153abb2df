//! Kernel benchmark of the CUDA backend: time per call, GFLOP/s or GB/s, and % of the card's
//! peak, for each kernel family at GPT-2-sized shapes; the bf16 GEMM beside cuBLAS (with the
//! `cublas` feature) and attention beside PyTorch's scaled_dot_product_attention (times passed
//! in by scripts/gpu-check.sh through TORCH_SDPA_MS_F32 / TORCH_SDPA_MS_BF16).
//!
//! `cargo run --release -p kernels --features cuda[,cublas] --example cuda_bench -- [results.md]`
//!
//! Prints a markdown table last and writes it, with the GPU's name and the raw numbers, to the
//! file given (default target/cuda-bench.md). Needs a GPU (sm_80+) and NVRTC on the library
//! path. Peaks are looked up from the GPU's name (A100, H100, H200) or given as
//! FERRO_PEAK="bf16_tflops,f32_tflops,gbps".

use cudarc::driver::CudaSlice;
use kernels::cpu::adamw::AdamWStep;
use kernels::cuda::{Bf16Operand, CudaError, EmbeddingGroups, Gpu, Strides};
use std::fmt::Write as _;
use std::time::Instant;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Dense peak throughput of a card: bf16 tensor-core TFLOP/s, f32 (CUDA-core) TFLOP/s,
/// memory GB/s. Datasheet numbers (dense, no sparsity; SXM boards unless the name says PCIe).
#[derive(Clone, Copy)]
struct Peak {
    bf16_tflops: f64,
    f32_tflops: f64,
    gbps: f64,
}

fn peak_for(name: &str) -> Option<Peak> {
    if let Ok(s) = std::env::var("FERRO_PEAK") {
        let v: Vec<f64> = s.split(',').filter_map(|x| x.trim().parse().ok()).collect();
        if v.len() == 3 {
            return Some(Peak {
                bf16_tflops: v[0],
                f32_tflops: v[1],
                gbps: v[2],
            });
        }
    }
    let pcie = name.contains("PCIe");
    if name.contains("H200") {
        Some(Peak {
            bf16_tflops: 989.0,
            f32_tflops: 67.0,
            gbps: 4800.0,
        })
    } else if name.contains("H100") {
        Some(if pcie {
            Peak {
                bf16_tflops: 756.0,
                f32_tflops: 51.0,
                gbps: 2000.0,
            }
        } else {
            Peak {
                bf16_tflops: 989.0,
                f32_tflops: 67.0,
                gbps: 3350.0,
            }
        })
    } else if name.contains("A100") {
        let gbps = if name.contains("80GB") {
            2039.0
        } else {
            1555.0
        };
        Some(Peak {
            bf16_tflops: 312.0,
            f32_tflops: 19.5,
            gbps,
        })
    } else {
        None
    }
}

/// What one timed call does: floating-point operations on the tensor cores (bf16) or the CUDA
/// cores (f32), or bytes moved to/from memory (the minimum the op must move).
#[derive(Clone, Copy)]
enum Work {
    Bf16Flops(f64),
    F32Flops(f64),
    Bytes(f64),
    None,
}

struct Row {
    kernel: String,
    shape: String,
    ms: f64,
    work: Work,
    note: String,
}

/// Mean milliseconds per call: 2 warm-up calls, then as many as fit in ~0.3 s (3..=200).
fn time(gpu: &Gpu, mut f: impl FnMut() -> Result<(), CudaError>) -> Res<f64> {
    f()?;
    f()?;
    gpu.synchronize()?;
    let t0 = Instant::now();
    f()?;
    gpu.synchronize()?;
    let once = t0.elapsed().as_secs_f64();
    let iters = ((0.3 / once.max(1e-6)) as usize).clamp(3, 200);
    let t0 = Instant::now();
    for _ in 0..iters {
        f()?;
    }
    gpu.synchronize()?;
    Ok(t0.elapsed().as_secs_f64() * 1e3 / iters as f64)
}

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            ((s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect()
}

fn upload_random(gpu: &Gpu, n: usize, seed: u64) -> Res<CudaSlice<f32>> {
    Ok(gpu.upload(&random(n, seed))?)
}

fn upload_bf16(gpu: &Gpu, n: usize, seed: u64) -> Res<CudaSlice<u16>> {
    let bits: Vec<u16> = random(n, seed)
        .iter()
        .map(|&x| kernels::cuda::f32_to_bf16_bits(x))
        .collect();
    Ok(gpu.upload(&bits)?)
}

#[cfg(feature = "cublas")]
mod blas {
    use cudarc::cublas::{result, sys, CudaBlas};
    use cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DevicePtrMut};
    use std::sync::Arc;

    pub fn new(stream: Arc<CudaStream>) -> Result<CudaBlas, String> {
        // SAFETY: only tries to dlopen libcublas; no symbol is called.
        if !unsafe { sys::is_culib_present() } {
            return Err("libcublas could not be loaded".into());
        }
        CudaBlas::new(stream).map_err(|e| format!("{e:?}"))
    }

    /// Row-major C[m, n] (f32) = A[m, k] · B[k, n] (bf16, f32 accumulation). cuBLAS is
    /// column-major, so it computes Cᵀ = Bᵀ·Aᵀ: the row-major buffers read as column-major are
    /// exactly those transposes.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm(
        blas: &CudaBlas,
        stream: &Arc<CudaStream>,
        m: usize,
        k: usize,
        n: usize,
        a: &CudaSlice<u16>,
        b: &CudaSlice<u16>,
        c: &mut CudaSlice<f32>,
    ) -> Result<(), String> {
        let (pa, _ga) = a.device_ptr(stream);
        let (pb, _gb) = b.device_ptr(stream);
        let (pc, _gc) = c.device_ptr_mut(stream);
        let (alpha, beta) = (1.0f32, 0.0f32);
        // SAFETY: the pointers cover k·n, m·k and m·n elements of the stated types.
        unsafe {
            result::gemm_ex(
                *blas.handle(),
                sys::cublasOperation_t::CUBLAS_OP_N,
                sys::cublasOperation_t::CUBLAS_OP_N,
                n as i32,
                m as i32,
                k as i32,
                &alpha as *const f32 as *const _,
                pb as *const _,
                sys::cudaDataType::CUDA_R_16BF,
                n as i32,
                pa as *const _,
                sys::cudaDataType::CUDA_R_16BF,
                k as i32,
                &beta as *const f32 as *const _,
                pc as *mut _,
                sys::cudaDataType::CUDA_R_32F,
                n as i32,
                sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| format!("{e:?}"))
    }
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Res<()> {
    let out_path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/cuda-bench.md".into());
    let gpu = Gpu::new(0)?;
    let name = gpu.name()?;
    let peak = peak_for(&name);
    println!(
        "GPU: {name} ({}); peaks: {}",
        gpu.arch(),
        match peak {
            Some(p) => format!(
                "bf16 {} TFLOP/s, f32 {} TFLOP/s, {} GB/s",
                p.bf16_tflops, p.f32_tflops, p.gbps
            ),
            None => "unknown (set FERRO_PEAK)".into(),
        }
    );
    let mut rows: Vec<Row> = Vec::new();
    let mut push = |r: Row| {
        println!("{:<28} {:<26} {:>10.4} ms", r.kernel, r.shape, r.ms);
        rows.push(r);
    };

    // ---- GEMM 4096^3
    let s = 4096usize;
    let gemm_flops = 2.0 * (s * s * s) as f64;
    let a16 = upload_bf16(&gpu, s * s, 1)?;
    let b16 = upload_bf16(&gpu, s * s, 2)?;
    let mut c = gpu.zeros::<f32>(s * s)?;
    let op = |trans| Bf16Operand {
        trans,
        ld: s,
        batch_stride: 0,
    };
    let ours_nn = time(&gpu, || {
        gpu.gemm_bf16(
            1,
            s,
            s,
            s,
            1.0,
            &a16,
            op(false),
            &b16,
            op(false),
            0.0,
            &mut c,
            s,
            0,
        )
    })?;
    push(Row {
        kernel: "gemm_bf16_tc_nn".into(),
        shape: "4096^3".into(),
        ms: ours_nn,
        work: Work::Bf16Flops(gemm_flops),
        note: String::new(),
    });
    let ours_nt = time(&gpu, || {
        gpu.gemm_bf16(
            1,
            s,
            s,
            s,
            1.0,
            &a16,
            op(false),
            &b16,
            op(true),
            0.0,
            &mut c,
            s,
            0,
        )
    })?;
    push(Row {
        kernel: "gemm_bf16_tc_nt".into(),
        shape: "4096^3".into(),
        ms: ours_nt,
        work: Work::Bf16Flops(gemm_flops),
        note: String::new(),
    });
    #[cfg(feature = "cublas")]
    {
        match blas::new(gpu.stream().clone()) {
            Ok(handle) => {
                let mut err = None;
                let ms = time(&gpu, || {
                    if let Err(e) = blas::gemm(&handle, gpu.stream(), s, s, s, &a16, &b16, &mut c) {
                        err = Some(e);
                    }
                    Ok(())
                })?;
                if let Some(e) = err {
                    push(Row {
                        kernel: "cuBLAS bf16 (gemm_ex)".into(),
                        shape: "4096^3".into(),
                        ms: f64::NAN,
                        work: Work::None,
                        note: format!("failed: {e}"),
                    });
                } else {
                    push(Row {
                        kernel: "cuBLAS bf16 (gemm_ex)".into(),
                        shape: "4096^3".into(),
                        ms,
                        work: Work::Bf16Flops(gemm_flops),
                        note: format!("ours (nn) = {:.0}% of cuBLAS", 100.0 * ms / ours_nn),
                    });
                }
            }
            Err(e) => push(Row {
                kernel: "cuBLAS bf16".into(),
                shape: "4096^3".into(),
                ms: f64::NAN,
                work: Work::None,
                note: format!("not run: {e}"),
            }),
        }
    }
    #[cfg(not(feature = "cublas"))]
    push(Row {
        kernel: "cuBLAS bf16".into(),
        shape: "4096^3".into(),
        ms: f64::NAN,
        work: Work::None,
        note: "not built (feature cublas off)".into(),
    });
    drop((a16, b16));
    let a32 = upload_random(&gpu, s * s, 3)?;
    let b32 = upload_random(&gpu, s * s, 4)?;
    let rm = Strides::row_major(s, s);
    let ms = time(&gpu, || {
        gpu.gemm_f32(1, s, s, s, 1.0, &a32, rm, &b32, rm, 0.0, &mut c, rm)
    })?;
    push(Row {
        kernel: "gemm_f32_tiled".into(),
        shape: "4096^3".into(),
        ms,
        work: Work::F32Flops(gemm_flops),
        note: String::new(),
    });
    drop((a32, b32, c));

    // ---- attention B8 H12 T1024 D64 (f32)
    let (bh, t, d) = (8 * 12, 1024usize, 64usize);
    let n = bh * t * d;
    let (q, k, v, dout) = (
        upload_random(&gpu, n, 5)?,
        upload_random(&gpu, n, 6)?,
        upload_random(&gpu, n, 7)?,
        upload_random(&gpu, n, 8)?,
    );
    let mut o = gpu.zeros::<f32>(n)?;
    let mut lse = gpu.zeros::<f32>(bh * t)?;
    // Causal: half of the 4·T²·D multiply-adds of QKᵀ and PV per head.
    let fwd_flops = 2.0 * (bh * t * t * d) as f64;
    let fwd = time(&gpu, || {
        gpu.attention_fwd(&q, &k, &v, bh, t, d, &mut o, &mut lse)
    })?;
    let mut note = String::new();
    for (var, label) in [("TORCH_SDPA_MS_F32", "f32"), ("TORCH_SDPA_MS_BF16", "bf16")] {
        if let Some(ms) = std::env::var(var).ok().and_then(|x| x.parse::<f64>().ok()) {
            let _ = write!(
                note,
                "torch SDPA {label}: {ms:.3} ms (ours = {:.0}% of its speed); ",
                100.0 * ms / fwd
            );
        }
    }
    if note.is_empty() {
        note = "no PyTorch to compare with".into();
    }
    push(Row {
        kernel: "attention_fwd_f32".into(),
        shape: "B8 H12 T1024 D64".into(),
        ms: fwd,
        work: Work::F32Flops(fwd_flops),
        note,
    });
    let (mut gq, mut gk, mut gv) = (
        gpu.zeros::<f32>(n)?,
        gpu.zeros::<f32>(n)?,
        gpu.zeros::<f32>(n)?,
    );
    let ms = time(&gpu, || {
        gpu.attention_bwd(
            &q, &k, &v, &o, &lse, &dout, bh, t, d, &mut gq, &mut gk, &mut gv,
        )
    })?;
    push(Row {
        kernel: "attention_bwd_f32 (3 kernels)".into(),
        shape: "B8 H12 T1024 D64".into(),
        ms,
        work: Work::F32Flops(2.5 * fwd_flops),
        note: "P recomputed; FLOPs counted as 2.5x forward".into(),
    });
    // The same shape in bf16 on the tensor cores (the target: >= 50% of SDPA bf16).
    let q16 = upload_bf16(&gpu, n, 5)?;
    let k16 = upload_bf16(&gpu, n, 6)?;
    let v16 = upload_bf16(&gpu, n, 7)?;
    let dout16 = upload_bf16(&gpu, n, 8)?;
    let mut o16 = gpu.zeros::<u16>(n)?;
    let fwd16 = time(&gpu, || {
        gpu.attention_fwd_bf16(&q16, &k16, &v16, bh, t, d, &mut o16, &mut lse)
    })?;
    let sdpa16 = std::env::var("TORCH_SDPA_MS_BF16")
        .ok()
        .and_then(|x| x.parse::<f64>().ok());
    push(Row {
        kernel: "attention_fwd_bf16_d64".into(),
        shape: "B8 H12 T1024 D64".into(),
        ms: fwd16,
        work: Work::Bf16Flops(fwd_flops),
        note: match sdpa16 {
            Some(ms) => format!(
                "torch SDPA bf16: {ms:.3} ms (ours = {:.0}% of its speed)",
                100.0 * ms / fwd16
            ),
            None => "no PyTorch to compare with".into(),
        },
    });
    let ms = time(&gpu, || {
        gpu.attention_bwd_bf16(
            &q16, &k16, &v16, &o16, &lse, &dout16, bh, t, d, &mut gq, &mut gk, &mut gv,
        )
    })?;
    push(Row {
        kernel: "attention_bwd_bf16_d64 (3 kernels)".into(),
        shape: "B8 H12 T1024 D64".into(),
        ms,
        work: Work::Bf16Flops(2.5 * fwd_flops),
        note: "P recomputed; FLOPs counted as 2.5x forward".into(),
    });
    drop((q16, k16, v16, dout16, o16));
    drop((q, k, v, dout, o, lse, gq, gk, gv));

    // ---- memory-bound kernels at GPT-2 small shapes (B16 x T1024 tokens, C 768)
    let (rows_, cols) = (16 * 1024usize, 768usize);
    let nx = rows_ * cols;
    let x = upload_random(&gpu, nx, 9)?;
    let res = upload_random(&gpu, nx, 10)?;
    let gamma = upload_random(&gpu, cols, 11)?;
    let beta = upload_random(&gpu, cols, 12)?;
    let mut y = gpu.zeros::<f32>(nx)?;
    let mut sum = gpu.zeros::<f32>(nx)?;
    let (mut mean, mut rstd) = (gpu.zeros::<f32>(rows_)?, gpu.zeros::<f32>(rows_)?);
    let f4 = 4.0f64;
    let ms = time(&gpu, || {
        gpu.layernorm_fwd(
            &x, &gamma, &beta, rows_, cols, 1e-5, &mut y, &mut mean, &mut rstd,
        )
    })?;
    push(Row {
        kernel: "layernorm_fwd_f32".into(),
        shape: "16384x768".into(),
        ms,
        work: Work::Bytes(2.0 * f4 * nx as f64),
        note: String::new(),
    });
    let ms = time(&gpu, || {
        gpu.layernorm_residual_fwd(
            &x, &res, &gamma, &beta, rows_, cols, 1e-5, &mut sum, &mut y, &mut mean, &mut rstd,
        )
    })?;
    push(Row {
        kernel: "layernorm_residual_fwd_f32".into(),
        shape: "16384x768".into(),
        ms,
        work: Work::Bytes(4.0 * f4 * nx as f64),
        note: String::new(),
    });
    let (mut dx, mut dg, mut db) = (
        gpu.zeros::<f32>(nx)?,
        gpu.zeros::<f32>(cols)?,
        gpu.zeros::<f32>(cols)?,
    );
    let ms = time(&gpu, || {
        gpu.layernorm_bwd(
            &res, &x, &gamma, &mean, &rstd, rows_, cols, &mut dx, &mut dg, &mut db,
        )
    })?;
    push(Row {
        kernel: "layernorm_bwd (dx + dgamma/dbeta)".into(),
        shape: "16384x768".into(),
        ms,
        work: Work::Bytes(5.0 * f4 * nx as f64),
        note: String::new(),
    });

    let ng = rows_ * 4 * cols;
    let xg = upload_random(&gpu, ng, 13)?;
    let dyg = upload_random(&gpu, ng, 14)?;
    let mut yg = gpu.zeros::<f32>(ng)?;
    let ms = time(&gpu, || gpu.gelu_fwd(&xg, &mut yg))?;
    push(Row {
        kernel: "gelu_fwd_f32".into(),
        shape: "16384x3072".into(),
        ms,
        work: Work::Bytes(2.0 * f4 * ng as f64),
        note: String::new(),
    });
    let ms = time(&gpu, || gpu.gelu_bwd(&xg, &dyg, &mut yg))?;
    push(Row {
        kernel: "gelu_bwd_f32".into(),
        shape: "16384x3072".into(),
        ms,
        work: Work::Bytes(3.0 * f4 * ng as f64),
        note: String::new(),
    });
    let ms = time(&gpu, || gpu.add(&xg, &dyg, &mut yg))?;
    push(Row {
        kernel: "add_f32".into(),
        shape: "50M".into(),
        ms,
        work: Work::Bytes(3.0 * f4 * ng as f64),
        note: String::new(),
    });
    let ms = time(&gpu, || gpu.sum(&xg).map(|_| ()))?;
    push(Row {
        kernel: "sum (2 passes + copy back)".into(),
        shape: "50M".into(),
        ms,
        work: Work::Bytes(f4 * ng as f64),
        note: "includes the wait for the result".into(),
    });
    let mut bits = gpu.zeros::<u16>(ng)?;
    let ms = time(&gpu, || gpu.to_bf16(&xg, &mut bits))?;
    push(Row {
        kernel: "f32_to_bf16".into(),
        shape: "50M".into(),
        ms,
        work: Work::Bytes(6.0 * ng as f64),
        note: String::new(),
    });
    // bf16 activations: the same GELU and layernorm on bf16 storage (half the bytes).
    let mut ybits = gpu.zeros::<u16>(ng)?;
    let ms = time(&gpu, || gpu.gelu_fwd(&bits, &mut ybits))?;
    push(Row {
        kernel: "gelu_fwd_bf16".into(),
        shape: "16384x3072".into(),
        ms,
        work: Work::Bytes(4.0 * ng as f64),
        note: String::new(),
    });
    let mut lnb = gpu.zeros::<u16>(nx)?;
    let xb = bits.slice(0..nx);
    let xb = gpu.stream().clone_dtod(&xb)?;
    let ms = time(&gpu, || {
        gpu.layernorm_fwd(
            &xb, &gamma, &beta, rows_, cols, 1e-5, &mut lnb, &mut mean, &mut rstd,
        )
    })?;
    push(Row {
        kernel: "layernorm_fwd_bf16".into(),
        shape: "16384x768".into(),
        ms,
        work: Work::Bytes(4.0 * nx as f64),
        note: String::new(),
    });
    drop((xg, dyg, yg, bits, ybits, lnb, xb));

    // Embedding: GPT-2 token table, 16384 tokens.
    let vocab = 50257usize;
    let table = upload_random(&gpu, vocab * cols, 15)?;
    let ids: Vec<i32> = (0..rows_).map(|i| ((i * 7919) % vocab) as i32).collect();
    let dids = gpu.upload(&ids)?;
    let ms = time(&gpu, || {
        gpu.embedding_fwd(&dids, &table, vocab, cols, &mut y)
    })?;
    push(Row {
        kernel: "embedding_fwd_f32".into(),
        shape: "16384 ids, 50257x768".into(),
        ms,
        work: Work::Bytes(2.0 * f4 * nx as f64),
        note: String::new(),
    });
    let groups = EmbeddingGroups::new(&gpu, &ids, vocab)?;
    let mut dtable = gpu.zeros::<f32>(vocab * cols)?;
    let ms = time(&gpu, || {
        gpu.embedding_bwd(&x, &groups, vocab, cols, true, &mut dtable)
    })?;
    push(Row {
        kernel: "embedding_bwd_f32 (accumulate)".into(),
        shape: "16384 ids, 50257x768".into(),
        ms,
        work: Work::Bytes(3.0 * f4 * nx as f64),
        note: "host grouping not timed".into(),
    });
    drop((table, dtable, x, res, y, sum, dx));

    // Softmax / cross-entropy over the vocabulary: 4096 rows of 50257.
    let (r, vcb) = (4096usize, vocab);
    let nl = r * vcb;
    let logits = upload_random(&gpu, nl, 16)?;
    let mut out = gpu.zeros::<f32>(nl)?;
    let ms = time(&gpu, || gpu.softmax_fwd(&logits, r, vcb, &mut out))?;
    push(Row {
        kernel: "softmax_fwd_f32".into(),
        shape: "4096x50257".into(),
        ms,
        work: Work::Bytes(2.0 * f4 * nl as f64),
        note: String::new(),
    });
    let targets: Vec<i64> = (0..r)
        .map(|i| {
            if i % 10 == 0 {
                -100
            } else {
                ((i * 31) % vcb) as i64
            }
        })
        .collect();
    let dt = gpu.upload(&targets)?;
    let (mut losses, mut lse) = (gpu.zeros::<f32>(r)?, gpu.zeros::<f32>(r)?);
    let ms = time(&gpu, || {
        gpu.cross_entropy_fwd(&logits, &dt, r, vcb, -100, &mut losses, &mut lse)
    })?;
    push(Row {
        kernel: "cross_entropy_fwd_f32".into(),
        shape: "4096x50257".into(),
        ms,
        work: Work::Bytes(f4 * nl as f64),
        note: String::new(),
    });
    let dl = upload_random(&gpu, r, 17)?;
    let ms = time(&gpu, || {
        gpu.cross_entropy_bwd(&logits, &dt, &lse, &dl, r, vcb, -100, &mut out)
    })?;
    push(Row {
        kernel: "cross_entropy_bwd_f32".into(),
        shape: "4096x50257".into(),
        ms,
        work: Work::Bytes(2.0 * f4 * nl as f64),
        note: String::new(),
    });
    drop((logits, out));

    // AdamW over GPT-2 small's 124M parameters.
    let np = 124_000_000usize;
    let mut p = upload_random(&gpu, np, 18)?;
    let g = upload_random(&gpu, np, 19)?;
    let (mut m, mut v) = (gpu.zeros::<f32>(np)?, gpu.zeros::<f32>(np)?);
    let h = AdamWStep {
        lr: 6e-4,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.1,
        step: 1,
    };
    let ms = time(&gpu, || gpu.adamw(&mut p, &g, &mut m, &mut v, h))?;
    push(Row {
        kernel: "adamw_f32".into(),
        shape: "124M params".into(),
        ms,
        work: Work::Bytes(7.0 * f4 * np as f64),
        note: String::new(),
    });
    let mut copy = gpu.zeros::<u16>(np)?;
    let ms = time(&gpu, || {
        gpu.adamw_with_bf16_copy(&mut p, &g, &mut m, &mut v, &mut copy, h)
    })?;
    push(Row {
        kernel: "adamw_f32_bf16_copy".into(),
        shape: "124M params".into(),
        ms,
        work: Work::Bytes((7.0 * f4 + 2.0) * np as f64),
        note: "also writes the bf16 weight copy".into(),
    });
    drop(copy);
    let mut g2 = g.clone();
    let ms = time(&gpu, || gpu.clip_grad_norm(&mut [&mut g2], 1e9).map(|_| ()))?;
    push(Row {
        kernel: "clip_grad_norm (3 kernels)".into(),
        shape: "124M params".into(),
        ms,
        work: Work::Bytes(3.0 * f4 * np as f64),
        note: "includes the wait for the norm".into(),
    });

    // ---- the table
    let mut table_md = String::new();
    let _ = writeln!(
        table_md,
        "| kernel | shape | ms | throughput | % of peak | note |"
    );
    let _ = writeln!(table_md, "|---|---|---:|---:|---:|---|");
    for r in &rows {
        let (thr, pct) = match (r.work, peak) {
            (Work::Bf16Flops(f), p) => (
                format!("{:.1} TFLOP/s", f / r.ms / 1e9),
                p.map(|p| 100.0 * f / r.ms / 1e9 / p.bf16_tflops),
            ),
            (Work::F32Flops(f), p) => (
                format!("{:.1} TFLOP/s", f / r.ms / 1e9),
                p.map(|p| 100.0 * f / r.ms / 1e9 / p.f32_tflops),
            ),
            (Work::Bytes(b), p) => (
                format!("{:.0} GB/s", b / r.ms / 1e6),
                p.map(|p| 100.0 * b / r.ms / 1e6 / p.gbps),
            ),
            (Work::None, _) => ("-".into(), None),
        };
        let pct = pct
            .map(|x| format!("{x:.0}%"))
            .unwrap_or_else(|| "-".into());
        let ms = if r.ms.is_nan() {
            "-".into()
        } else {
            format!("{:.4}", r.ms)
        };
        let _ = writeln!(
            table_md,
            "| {} | {} | {} | {} | {} | {} |",
            r.kernel, r.shape, ms, thr, pct, r.note
        );
    }
    let header = format!(
        "# ferrochat CUDA kernel benchmark\n\nGPU: {name} ({}), peaks {}\n\n",
        gpu.arch(),
        match peak {
            Some(p) => format!(
                "bf16 {} TFLOP/s, f32 {} TFLOP/s, {} GB/s (datasheet, dense)",
                p.bf16_tflops, p.f32_tflops, p.gbps
            ),
            None => "unknown".into(),
        }
    );
    std::fs::write(&out_path, format!("{header}{table_md}"))?;
    println!("\n{table_md}\n(written to {out_path})");
    Ok(())
}
