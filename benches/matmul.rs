//! GEMM throughput: ferrochat's own `sgemm` against the `matrixmultiply` crate, in the same
//! run, on the shapes a GPT-2-small step uses plus the classic squares.
//!
//! Throughput is reported in "elements" = 2·m·k·n flops per iteration, so criterion's
//! "Melem/s" (or "Gelem/s") figure reads directly as MFLOP/s (GFLOP/s). Both libraries run
//! on 2 threads: rayon's global pool (which defaults to one thread per core; this machine has
//! 2) and `MATMUL_NUM_THREADS=2` for matrixmultiply, set before its first use.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use std::time::Duration;

/// (m, k, n): C (m×n) = A (m×k) · B (k×n), all row-major.
const SHAPES: [(usize, usize, usize); 4] = [
    (256, 256, 256),
    (512, 768, 768),
    (1024, 768, 3072),
    (2048, 2048, 2048),
];

fn bench_matmul(c: &mut Criterion) {
    // matrixmultiply reads this once, at its first threaded call.
    std::env::set_var("MATMUL_NUM_THREADS", "2");
    let mut group = c.benchmark_group("sgemm");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for (m, k, n) in SHAPES {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 17) as f32 * 0.125 - 1.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 13) as f32 * 0.25 - 1.5).collect();
        let mut out = vec![0.0f32; m * n];
        let label = format!("{m}x{k}x{n}");
        group.throughput(Throughput::Elements((2 * m * k * n) as u64));
        group.bench_function(BenchmarkId::new("ferrochat", &label), |bench| {
            bench.iter(|| {
                kernels::cpu::matmul::sgemm(
                    m,
                    k,
                    n,
                    1.0,
                    black_box(&a),
                    k,
                    1,
                    black_box(&b),
                    n,
                    1,
                    0.0,
                    &mut out,
                    n,
                    1,
                )
            })
        });
        group.bench_function(BenchmarkId::new("matrixmultiply", &label), |bench| {
            bench.iter(|| {
                // SAFETY: a is m×k, b is k×n, out is m×n, all row-major and fully allocated;
                // `out` does not alias `a` or `b`.
                unsafe {
                    matrixmultiply::sgemm(
                        m,
                        k,
                        n,
                        1.0,
                        black_box(a.as_ptr()),
                        k as isize,
                        1,
                        black_box(b.as_ptr()),
                        n as isize,
                        1,
                        0.0,
                        out.as_mut_ptr(),
                        n as isize,
                        1,
                    )
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_matmul);
criterion_main!(benches);
