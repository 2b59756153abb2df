//! Times the fast sgemm on one thread by *on-CPU* time of the calling thread (which a shared,
//! oversubscribed machine inflates far less than wall time), for the shapes of issue 6.
//!
//!   cargo run --release -p kernels --example sgemm_cpu_time -- [iters]
//!
//! Runs in a 1-thread rayon pool; the clock is `kernels::cputime::thread_seconds` (Unix). Compare
//! with numpy on one thread, timed the same way: benches/numpy_cpu_time.py.

use kernels::cpu::matmul::sgemm;
use std::time::Instant;

fn main() {
    let iters: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(|| {
        for (m, k, n) in [
            (256, 256, 256),
            (1024, 768, 3072),
            (2048, 2048, 2048),
            (128, 768, 2304),
            (128, 768, 768),
            (128, 768, 3072),
            (128, 3072, 768),
            (2048, 128, 384),
            (128, 2048, 384),
        ] {
            let mk = |len: usize, s: u32| -> Vec<f32> {
                (0..len)
                    .map(|i| (((i as u32).wrapping_mul(2_654_435_761) ^ s) % 1000) as f32 / 500.0 - 1.0)
                    .collect()
            };
            let (a, b) = (mk(m * k, 1), mk(k * n, 2));
            let mut c = vec![0.0f32; m * n];
            let flops = 2.0 * (m * k * n) as f64;
            let reps = iters.max((2e9 / flops) as usize);
            let (mut wall, mut cpu) = (f64::MAX, f64::MAX);
            sgemm(m, k, n, 1.0, &a, k, 1, &b, n, 1, 0.0, &mut c, n, 1);
            for _ in 0..reps {
                let (c0, t0) = (kernels::cputime::thread_seconds(), Instant::now());
                sgemm(m, k, n, 1.0, &a, k, 1, &b, n, 1, 0.0, &mut c, n, 1);
                wall = wall.min(t0.elapsed().as_secs_f64());
                cpu = cpu.min(kernels::cputime::thread_seconds() - c0);
            }
            println!(
                "sgemm {m}x{k}x{n} (1 thread): best wall {:.3} ms ({:.1} GFLOP/s), best cpu {:.3} ms ({:.1} GFLOP/s)",
                wall * 1e3,
                flops / wall / 1e9,
                cpu * 1e3,
                flops / cpu / 1e9
            );
        }
    });
}
