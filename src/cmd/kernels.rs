//! `ferrochat kernels`: each CPU kernel's time, fast vs reference, in GFLOP/s or GB/s.
//! A quick look, not a benchmark: `cargo bench` runs the criterion benches.

use std::time::Instant;

use anyhow::Result;
use engine::{DType, Rng};
use kernels::cpu::{adamw, attention, crossentropy, gelu, layernorm, matmul, softmax};

#[derive(clap::Args)]
pub struct Args {
    /// Also time the slow reference versions (the triple-loop matmul takes seconds).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    reference: bool,
}

/// Median seconds of `f` over repeats filling about `budget` seconds (at least 3 runs, at
/// most 1000), after 0.2 s of warm-up (at least one run): caches, page faults, and the
/// thread pool started and its threads spread over the cores — a 256³ GEMM timed in the
/// first milliseconds of the process sometimes ran at one thread's speed.
fn time(budget: f64, mut f: impl FnMut()) -> f64 {
    let warm = Instant::now();
    f();
    while warm.elapsed().as_secs_f64() < 0.2 {
        f();
    }
    let mut times = vec![];
    let start = Instant::now();
    while times.len() < 3 || (start.elapsed().as_secs_f64() < budget && times.len() < 1000) {
        let t = Instant::now();
        f();
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn randn(rng: &mut Rng, n: usize) -> Vec<f32> {
    rng.normal_tensor(&[n], 0.0, 1.0, DType::F32).to_vec_f32()
}

struct Row {
    kernel: String,
    shape: String,
    unit: &'static str,
    work: f64,
    fast: f64,
    reference: Option<f64>,
    baseline: Option<(&'static str, f64)>,
}

fn print_row(r: &Row) {
    let rate = |s: f64| r.work / s / 1e9;
    let reference = r
        .reference
        .map(|s| format!("{:>9.3} ms {:>8.1}  x{:<6.1}", s * 1e3, rate(s), s / r.fast))
        .unwrap_or_else(|| format!("{:>31}", "-"));
    let baseline = r
        .baseline
        .map(|(name, s)| {
            format!(
                "{name} {:.3} ms {:.1} {}  (fast/baseline speed x{:.2})",
                s * 1e3,
                rate(s),
                r.unit,
                s / r.fast
            )
        })
        .unwrap_or_default();
    println!(
        "{:<22} {:<18} {:>9.3} ms {:>8.1} {:<7} {reference}  {baseline}",
        r.kernel,
        r.shape,
        r.fast * 1e3,
        rate(r.fast),
        r.unit
    );
}

pub fn run(args: Args) -> Result<()> {
    let mut rng = Rng::new(0);
    println!(
        "SIMD: {}{} (matmul microkernel: {})   threads: {}   (median of repeats; reference = plain version, xN = how much faster the fast one is)\n",
        kernels::simd_level(),
        if kernels::avx512_usable() {
            ", AVX-512 kernels where they exist"
        } else {
            ""
        },
        matmul::microkernel(),
        rayon::current_num_threads()
    );
    println!(
        "{:<22} {:<18} {:>12} {:>8} {:<7} {:>12} {:>8}  speed-up",
        "kernel", "shape", "fast", "rate", "unit", "reference", "rate"
    );
    let with_ref = args.reference;

    // matmul, beside the matrixmultiply crate (the baseline to beat).
    std::env::set_var(
        "MATMUL_NUM_THREADS",
        rayon::current_num_threads().to_string(),
    );
    // Square sizes, then the GEMMs of a GPT-2 (124M) block's forward at T=128, one sequence:
    // QKV, attention output, MLP up and MLP down projections (M = 128 rows).
    for &(m, k, n) in &[
        (256, 256, 256),
        (512, 768, 768),
        (1024, 768, 3072),
        (2048, 2048, 2048),
        (128, 768, 2304),
        (128, 768, 768),
        (128, 768, 3072),
        (128, 3072, 768),
    ] {
        let a = randn(&mut rng, m * k);
        let b = randn(&mut rng, k * n);
        let mut c = vec![0.0f32; m * n];
        let fast = time(1.0, || {
            matmul::sgemm(m, k, n, 1.0, &a, k, 1, &b, n, 1, 0.0, &mut c, n, 1)
        });
        let base = time(1.0, || unsafe {
            // SAFETY: the pointers cover m×k, k×n and m×n row-major matrices.
            matrixmultiply::sgemm(
                m,
                k,
                n,
                1.0,
                a.as_ptr(),
                k as isize,
                1,
                b.as_ptr(),
                n as isize,
                1,
                0.0,
                c.as_mut_ptr(),
                n as isize,
                1,
            )
        });
        let reference = (with_ref && m * k * n <= 512 * 768 * 768).then(|| {
            time(0.5, || {
                matmul::gemm_ref(m, k, n, 1.0, &a, k, 1, &b, n, 1, 0.0, &mut c, n, 1)
            })
        });
        print_row(&Row {
            kernel: "matmul (sgemm)".into(),
            shape: format!("{m}x{k}x{n}"),
            unit: "GFLOP/s",
            work: 2.0 * (m * k * n) as f64,
            fast,
            reference,
            baseline: Some(("matrixmultiply", base)),
        });
    }

    // layernorm 8192x768: bytes moved (fwd reads x, writes y; bwd reads dy, x, writes dx).
    let (rows, cols) = (8192, 768);
    let x = randn(&mut rng, rows * cols);
    let dy = randn(&mut rng, rows * cols);
    let (g, b) = (randn(&mut rng, cols), randn(&mut rng, cols));
    let (mut y, mut mu, mut rs) = (vec![0.0; rows * cols], vec![0.0; rows], vec![0.0; rows]);
    let (mut dx, mut dg, mut db) = (vec![0.0; rows * cols], vec![0.0; cols], vec![0.0; cols]);
    let mut ln = |fast: bool| {
        if fast {
            layernorm::layernorm_fwd(&x, &g, &b, rows, cols, 1e-5, &mut y, &mut mu, &mut rs);
            layernorm::layernorm_bwd(&dy, &x, &g, &mu, &rs, rows, cols, &mut dx, &mut dg, &mut db);
        } else {
            layernorm::layernorm_fwd_ref(&x, &g, &b, rows, cols, 1e-5, &mut y, &mut mu, &mut rs);
            layernorm::layernorm_bwd_ref(
                &dy, &x, &g, &mu, &rs, rows, cols, &mut dx, &mut dg, &mut db,
            );
        }
    };
    let fast = time(1.0, || ln(true));
    let reference = with_ref.then(|| time(1.0, || ln(false)));
    print_row(&Row {
        kernel: "layernorm fwd+bwd".into(),
        shape: format!("{rows}x{cols}"),
        unit: "GB/s",
        work: (5 * rows * cols * 4) as f64,
        fast,
        reference,
        baseline: None,
    });

    // causal attention fwd+bwd at B4 H12 T1024 D64 (issue 6's shape; B·H = 48 heads);
    // FLOPs of the causal half.
    let (bh, t, d) = (48, 1024, 64);
    let q = randn(&mut rng, bh * t * d);
    let k_ = randn(&mut rng, bh * t * d);
    let v = randn(&mut rng, bh * t * d);
    let dout = randn(&mut rng, bh * t * d);
    let (mut o, mut lse) = (vec![0.0; bh * t * d], vec![0.0; bh * t]);
    let (mut dq, mut dk, mut dv) = (
        vec![0.0; bh * t * d],
        vec![0.0; bh * t * d],
        vec![0.0; bh * t * d],
    );
    let mut attn = |fast: bool| {
        if fast {
            attention::causal_attention_fwd(&q, &k_, &v, bh, t, d, &mut o, &mut lse);
            attention::causal_attention_bwd(
                &q, &k_, &v, &o, &lse, &dout, bh, t, d, &mut dq, &mut dk, &mut dv,
            );
        } else {
            attention::causal_attention_fwd_ref(&q, &k_, &v, bh, t, d, &mut o, &mut lse);
            attention::causal_attention_bwd_ref(
                &q, &k_, &v, &o, &lse, &dout, bh, t, d, &mut dq, &mut dk, &mut dv,
            );
        }
    };
    let fast = time(1.0, || attn(true));
    let reference = with_ref.then(|| time(1.0, || attn(false)));
    print_row(&Row {
        kernel: "attention fwd+bwd".into(),
        shape: format!("B4H12 T{t} D{d}"),
        unit: "GFLOP/s",
        // forward: QKᵀ and PV (2 matmuls); backward: recompute QKᵀ, dV, dP, dQ, dK (5 matmuls);
        // each 2·(t²/2)·d flops over the causal half.
        work: 7.0 * (bh * t * t * d) as f64,
        fast,
        reference,
        baseline: None,
    });

    // softmax fwd+bwd 4096x512 (bytes: fwd read+write, bwd read y, dy, write dx).
    let (rows, cols) = (4096, 512);
    let x = randn(&mut rng, rows * cols);
    let mut y = vec![0.0; rows * cols];
    let mut dx = vec![0.0; rows * cols];
    let dy = randn(&mut rng, rows * cols);
    let fast = time(0.5, || {
        softmax::softmax_fwd(&x, rows, cols, &mut y);
        softmax::softmax_bwd(&y, &dy, rows, cols, &mut dx);
    });
    let reference = with_ref.then(|| {
        time(0.5, || {
            softmax::softmax_fwd_ref(&x, rows, cols, &mut y);
            softmax::softmax_bwd_ref(&y, &dy, rows, cols, &mut dx);
        })
    });
    print_row(&Row {
        kernel: "softmax fwd+bwd".into(),
        shape: format!("{rows}x{cols}"),
        unit: "GB/s",
        work: (5 * rows * cols * 4) as f64,
        fast,
        reference,
        baseline: None,
    });

    // cross-entropy fwd+bwd 2048x8192.
    let (rows, vocab) = (2048, 8192);
    let logits = randn(&mut rng, rows * vocab);
    let targets: Vec<i64> = (0..rows).map(|_| rng.below(vocab as u64) as i64).collect();
    let (mut losses, mut lse) = (vec![0.0; rows], vec![0.0; rows]);
    let dl = vec![1.0 / rows as f32; rows];
    let mut dlogits = vec![0.0; rows * vocab];
    let mut ce = |fast: bool| {
        if fast {
            crossentropy::cross_entropy_fwd(
                &logits,
                &targets,
                rows,
                vocab,
                -100,
                &mut losses,
                &mut lse,
            );
            crossentropy::cross_entropy_bwd(
                &logits,
                &targets,
                &lse,
                &dl,
                rows,
                vocab,
                -100,
                &mut dlogits,
            );
        } else {
            crossentropy::cross_entropy_fwd_ref(
                &logits,
                &targets,
                rows,
                vocab,
                -100,
                &mut losses,
                &mut lse,
            );
            crossentropy::cross_entropy_bwd_ref(
                &logits,
                &targets,
                &lse,
                &dl,
                rows,
                vocab,
                -100,
                &mut dlogits,
            );
        }
    };
    let fast = time(0.5, || ce(true));
    let reference = with_ref.then(|| time(0.5, || ce(false)));
    print_row(&Row {
        kernel: "cross-entropy fwd+bwd".into(),
        shape: format!("{rows}x{vocab}"),
        unit: "GB/s",
        work: (3 * rows * vocab * 4) as f64,
        fast,
        reference,
        baseline: None,
    });

    // GELU fwd+bwd on 4M elements.
    let n = 1 << 22;
    let x = randn(&mut rng, n);
    let dy = randn(&mut rng, n);
    let (mut y, mut dx) = (vec![0.0; n], vec![0.0; n]);
    let fast = time(0.5, || {
        gelu::gelu_fwd(&x, &mut y);
        gelu::gelu_bwd(&x, &dy, &mut dx);
    });
    let reference = with_ref.then(|| {
        time(0.5, || {
            gelu::gelu_fwd_ref(&x, &mut y);
            gelu::gelu_bwd_ref(&x, &dy, &mut dx);
        })
    });
    print_row(&Row {
        kernel: "gelu fwd+bwd".into(),
        shape: format!("{n}"),
        unit: "GB/s",
        work: (5 * n * 4) as f64,
        fast,
        reference,
        baseline: None,
    });

    // AdamW on 4M parameters: reads p, g, m, v; writes p, m, v.
    let mut p = randn(&mut rng, n);
    let g = randn(&mut rng, n);
    let (mut m, mut v) = (vec![0.0; n], vec![0.0; n]);
    let h = adamw::AdamWStep {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.1,
        step: 1,
    };
    let fast = time(0.5, || adamw::adamw(&mut p, &g, &mut m, &mut v, h));
    let reference = with_ref.then(|| time(0.5, || adamw::adamw_ref(&mut p, &g, &mut m, &mut v, h)));
    print_row(&Row {
        kernel: "adamw".into(),
        shape: format!("{n}"),
        unit: "GB/s",
        work: (7 * n * 4) as f64,
        fast,
        reference,
        baseline: None,
    });
    Ok(())
}
