//! Times the fast causal attention (B4 H12 T1024 D64) by *on-CPU* time of the calling thread,
//! which a shared, oversubscribed machine inflates far less than wall time.
//!
//!   cargo run --release -p kernels --example attention_cpu_time -- [fwd|bwd|fwdbwd] [iters]
//!
//! Runs in a 1-thread rayon pool (env NT=n for more; then only the calling thread's CPU time
//! is counted, so the "cpu" column is meaningful for NT=1 only). Linux only (reads
//! /proc/thread-self/schedstat). GFLOP/s use the causal count of benches/attention.rs.

use kernels::cpu::attention::*;
use std::time::Instant;

fn main() {
    let threads = std::env::var("NT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(run);
}

fn run() {
    let args: Vec<String> = std::env::args().collect();
    let what = args.get(1).map(String::as_str).unwrap_or("fwd");
    let iters: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5);
    let (bh, t, d) = (48, 1024, 64);
    let n = bh * t * d;
    let mk = |s: u32| -> Vec<f32> {
        (0..n)
            .map(|i| (((i as u32).wrapping_mul(2_654_435_761) ^ s) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    };
    let (q, k, v, g) = (mk(1), mk(2), mk(3), mk(4));
    let (mut out, mut lse) = (vec![0.0f32; n], vec![0.0f32; bh * t]);
    let (mut dq, mut dk, mut dv) = (vec![0.0f32; n], vec![0.0f32; n], vec![0.0f32; n]);
    causal_attention_fwd(&q, &k, &v, bh, t, d, &mut out, &mut lse);
    let fwd_flops = 2.0 * (bh * d * t * (t + 1)) as f64;
    let flops = match what {
        "fwd" => fwd_flops,
        "bwd" => 2.5 * fwd_flops,
        _ => 3.5 * fwd_flops,
    };
    let (mut wall, mut cpu) = (f64::MAX, f64::MAX);
    for _ in 0..iters {
        let (c0, t0) = (kernels::cputime::thread_seconds(), Instant::now());
        if what != "bwd" {
            causal_attention_fwd(&q, &k, &v, bh, t, d, &mut out, &mut lse);
        }
        if what != "fwd" {
            causal_attention_bwd(
                &q, &k, &v, &out, &lse, &g, bh, t, d, &mut dq, &mut dk, &mut dv,
            );
        }
        wall = wall.min(t0.elapsed().as_secs_f64());
        cpu = cpu.min(kernels::cputime::thread_seconds() - c0);
    }
    println!(
        "{what} ({} threads, {}{}): best wall {:.1} ms ({:.1} GFLOP/s), best cpu {:.1} ms ({:.1} GFLOP/s)",
        rayon::current_num_threads(),
        kernels::simd_level(),
        // Attention has an AVX-512 version, chosen over the AVX2 one where it may run.
        if kernels::avx512_usable() { ", AVX-512 kernels" } else { "" },
        wall * 1e3,
        flops / wall / 1e9,
        cpu * 1e3,
        flops / cpu / 1e9
    );
}
