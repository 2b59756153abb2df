//! The two roofs of this machine, measured: peak f32 FMA throughput (a loop of independent
//! FMAs on registers only, no memory) and memory bandwidth (STREAM-style copy and triad on
//! arrays far larger than the caches), each on 1 thread and on `RAYON_NUM_THREADS` threads.
//!
//! `cargo run --release -p kernels --example roofline`
//!
//! Conventions: an FMA counts 2 flops; copy moves 8 bytes per element (read a, write c),
//! triad 12 (read a, b; write c) — STREAM's counting, which leaves out the write-allocate
//! read of the destination.

use std::time::Instant;

use rayon::prelude::*;

/// Best of `reps` wall-clock times of `f`, in seconds.
fn best(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// `iters` rounds of FMAs on `N` independent accumulators of `W` lanes (no loads or stores
/// in the loop). Returns a value depending on every accumulator so none is optimised out.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fma_loop_avx512(iters: usize) -> f32 {
    use std::arch::x86_64::*;
    // 12 chains of 512-bit FMAs: enough to cover 2 FMA pipes × 4-cycle latency, with room.
    let mut acc = [_mm512_set1_ps(1.0); 12];
    let (a, b) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
    for _ in 0..iters {
        for x in acc.iter_mut() {
            *x = _mm512_fmadd_ps(*x, a, b);
        }
    }
    let mut s = _mm512_setzero_ps();
    for x in acc {
        s = _mm512_add_ps(s, x);
    }
    _mm512_reduce_add_ps(s)
}

/// As [`fma_loop_avx512`] with 256-bit AVX2 FMAs.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_loop_avx2(iters: usize) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_set1_ps(1.0); 12];
    let (a, b) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
    for _ in 0..iters {
        for x in acc.iter_mut() {
            *x = _mm256_fmadd_ps(*x, a, b);
        }
    }
    let mut out = [0.0f32; 8];
    let mut s = _mm256_setzero_ps();
    for x in acc {
        s = _mm256_add_ps(s, x);
    }
    _mm256_storeu_ps(out.as_mut_ptr(), s);
    out.iter().sum()
}

/// GFLOP/s of `kernel` (flops per iteration given) on `threads` threads at once: by wall
/// time, and summed over the threads by each one's on-CPU time (which other processes on a
/// shared machine do not inflate). (Only the x86-64 FMA loops exist, so other machines
/// print memory bandwidth alone.)
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn peak(threads: usize, flops_per_iter: f64, kernel: fn(usize) -> f32) -> (f64, f64) {
    let iters = 50_000_000;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool");
    let mut on_cpu = 0.0f64;
    let secs = best(3, || {
        let cpu: f64 = pool.install(|| {
            (0..threads)
                .into_par_iter()
                .map(|_| {
                    let c0 = kernels::cputime::thread_seconds();
                    std::hint::black_box(kernel(iters));
                    iters as f64 * flops_per_iter / (kernels::cputime::thread_seconds() - c0) / 1e9
                })
                .sum()
        });
        on_cpu = on_cpu.max(cpu);
    });
    (
        threads as f64 * iters as f64 * flops_per_iter / secs / 1e9,
        on_cpu,
    )
}

/// GB/s of copy (c = a) and triad (c = a + s·b) on arrays of `n` floats, `threads` threads
/// each owning one contiguous chunk.
fn bandwidth(threads: usize, n: usize) -> (f64, f64) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool");
    let a = vec![1.0f32; n];
    let b = vec![2.0f32; n];
    let mut c = vec![0.0f32; n];
    let chunk = n.div_ceil(threads);
    let copy = best(5, || {
        pool.install(|| {
            c.par_chunks_mut(chunk)
                .zip(a.par_chunks(chunk))
                .for_each(|(c, a)| c.copy_from_slice(a))
        })
    });
    let triad = best(5, || {
        pool.install(|| {
            c.par_chunks_mut(chunk)
                .zip(a.par_chunks(chunk).zip(b.par_chunks(chunk)))
                .for_each(|(c, (a, b))| {
                    for ((c, &a), &b) in c.iter_mut().zip(a).zip(b) {
                        *c = a + 3.0 * b;
                    }
                })
        })
    });
    std::hint::black_box(&c);
    let gb = |bytes: usize, s: f64| (bytes * n) as f64 / s / 1e9;
    (gb(8, copy), gb(12, triad))
}

fn main() {
    let threads = rayon::current_num_threads();
    println!("threads: 1 and {threads}");
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F is present (checked just above).
            let f = |iters| unsafe { fma_loop_avx512(iters) };
            let fl = 12.0 * 16.0 * 2.0;
            let ((w1, c1), (wn, cn)) = (peak(1, fl, f), peak(threads, fl, f));
            println!(
                "peak FMA AVX-512: {w1:.1} GFLOP/s on 1 thread, {wn:.1} on {threads} (wall); on-CPU {c1:.1} and {cn:.1}"
            );
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: AVX2 and FMA are present (checked just above).
            let f = |iters| unsafe { fma_loop_avx2(iters) };
            let fl = 12.0 * 8.0 * 2.0;
            let ((w1, c1), (wn, cn)) = (peak(1, fl, f), peak(threads, fl, f));
            println!(
                "peak FMA AVX2:    {w1:.1} GFLOP/s on 1 thread, {wn:.1} on {threads} (wall); on-CPU {c1:.1} and {cn:.1}"
            );
        }
    }
    // 3 arrays of 64M floats (256 MiB each): 24× the 32 MiB L3.
    let n = 64 << 20;
    for t in [1, threads] {
        let (copy, triad) = bandwidth(t, n);
        println!("memory, {t} thread(s): copy {copy:.1} GB/s, triad {triad:.1} GB/s");
    }
    // The same on 3 arrays of 1M floats (4 MiB each, 12 MiB together): inside the L3.
    for t in [1, threads] {
        let (copy, triad) = bandwidth(t, 1 << 20);
        println!(
            "L3-resident (3 x 4 MiB), {t} thread(s): copy {copy:.1} GB/s, triad {triad:.1} GB/s"
        );
    }
}
