//! Why the `ferrochat` binary runs its commands on a rayon worker
//! (`kernels::cpu::on_worker_thread`): times a small GEMM (256³ by default, two threads)
//! called from the main thread, where each parallel split is injected into the pool while
//! the caller sleeps, and called from a worker, where the caller runs one half itself.
//!
//!   cargo run --release -p kernels --example sgemm_caller_thread -- [n]

use kernels::cpu::matmul::sgemm;
use std::time::Instant;

/// Milliseconds per n³ GEMM: (fastest, median) of 50 timings of 20 calls each.
fn time_gemm(n: usize) -> (f64, f64) {
    let a: Vec<f32> = (0..n * n).map(|i| (i % 7) as f32 * 0.1).collect();
    let mut c = vec![0f32; n * n];
    let mut ms: Vec<f64> = (0..50)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..20 {
                sgemm(n, n, n, 1.0, &a, n, 1, &a, n, 1, 0.0, &mut c, n, 1);
            }
            t.elapsed().as_secs_f64() / 20.0 * 1e3
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    (ms[0], ms[ms.len() / 2])
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(256);
    let threads = rayon::current_num_threads();
    let report = |label: &str, (min, med): (f64, f64)| {
        println!("{n}³ on {threads} threads, called from {label}: fastest {min:.3} ms, median {med:.3} ms")
    };
    report("the main thread", time_gemm(n));
    report(
        "a rayon worker",
        kernels::cpu::on_worker_thread(|| time_gemm(n)),
    );
}
