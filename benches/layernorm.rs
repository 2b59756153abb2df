//! Row-wise kernels, fast f32 vs the plain reference, same inputs, same run.
//!
//! Throughput counts the bytes each op must move at minimum, f32 = 4 bytes (small per-row /
//! per-column vectors — γ, β, mean, rstd, dγ, dβ, lse, targets — are included, caches and
//! write-allocate traffic are not):
//! - layernorm fwd: read x, write y (+ γ, β, mean, rstd) = 2·N·4 + small.
//! - layernorm fwd+bwd: fwd, then read dy, x, write dx (+ γ, mean, rstd, dγ, dβ) = 5·N·4 + small.
//! - softmax fwd: read x, write y = 2·N·4.
//! - cross-entropy fwd+bwd: fwd reads logits; bwd reads logits, writes dlogits = 3·N·4 + small.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kernels::cpu::crossentropy::{
    cross_entropy_bwd, cross_entropy_bwd_ref, cross_entropy_fwd, cross_entropy_fwd_ref,
};
use kernels::cpu::layernorm::{layernorm_bwd, layernorm_bwd_ref, layernorm_fwd, layernorm_fwd_ref};
use kernels::cpu::softmax::{softmax_fwd, softmax_fwd_ref};
use std::hint::black_box;
use std::time::Duration;

/// Deterministic pseudo-random data in [−2, 2).
fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect()
}

fn group<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    g
}

fn layernorm(c: &mut Criterion) {
    eprintln!(
        "SIMD level: {}, rayon threads: {}",
        kernels::simd_level(),
        rayon::current_num_threads()
    );
    let (rows, cols) = (8192, 768);
    let n = rows * cols;
    let (x, dy) = (data(n, 1), data(n, 2));
    let (gamma, beta) = (data(cols, 3), data(cols, 4));
    let (mut y, mut mean, mut rstd) = (vec![0.0f32; n], vec![0.0f32; rows], vec![0.0f32; rows]);
    let (mut dx, mut dg, mut db) = (vec![0.0f32; n], vec![0.0f32; cols], vec![0.0f32; cols]);
    let small = (2 * cols + 2 * rows) as u64 * 4;

    let mut g = group(c, "layernorm_8192x768");
    g.throughput(Throughput::Bytes(2 * n as u64 * 4 + small));
    g.bench_function("fwd/fast", |b| {
        b.iter(|| {
            layernorm_fwd(
                black_box(&x),
                &gamma,
                &beta,
                rows,
                cols,
                1e-5,
                &mut y,
                &mut mean,
                &mut rstd,
            )
        })
    });
    g.bench_function("fwd/ref", |b| {
        b.iter(|| {
            layernorm_fwd_ref(
                black_box(&x),
                &gamma,
                &beta,
                rows,
                cols,
                1e-5,
                &mut y,
                &mut mean,
                &mut rstd,
            )
        })
    });
    g.throughput(Throughput::Bytes(
        5 * n as u64 * 4 + 2 * small + 3 * cols as u64 * 4,
    ));
    g.bench_function("fwd+bwd/fast", |b| {
        b.iter(|| {
            layernorm_fwd(
                black_box(&x),
                &gamma,
                &beta,
                rows,
                cols,
                1e-5,
                &mut y,
                &mut mean,
                &mut rstd,
            );
            layernorm_bwd(
                &dy, &x, &gamma, &mean, &rstd, rows, cols, &mut dx, &mut dg, &mut db,
            );
        })
    });
    g.bench_function("fwd+bwd/ref", |b| {
        b.iter(|| {
            layernorm_fwd_ref(
                black_box(&x),
                &gamma,
                &beta,
                rows,
                cols,
                1e-5,
                &mut y,
                &mut mean,
                &mut rstd,
            );
            layernorm_bwd_ref(
                &dy, &x, &gamma, &mean, &rstd, rows, cols, &mut dx, &mut dg, &mut db,
            );
        })
    });
    g.finish();
}

fn softmax(c: &mut Criterion) {
    let (rows, cols) = (4096, 512);
    let n = rows * cols;
    let x: Vec<f32> = data(n, 5).iter().map(|v| v * 4.0).collect();
    let mut y = vec![0.0f32; n];
    let mut g = group(c, "softmax_4096x512");
    g.throughput(Throughput::Bytes(2 * n as u64 * 4));
    g.bench_function("fwd/fast", |b| {
        b.iter(|| softmax_fwd(black_box(&x), rows, cols, &mut y))
    });
    g.bench_function("fwd/ref", |b| {
        b.iter(|| softmax_fwd_ref(black_box(&x), rows, cols, &mut y))
    });
    g.finish();
}

fn cross_entropy(c: &mut Criterion) {
    let (rows, vocab) = (2048, 8192);
    let n = rows * vocab;
    let logits: Vec<f32> = data(n, 6).iter().map(|v| v * 4.0).collect();
    let targets: Vec<i64> = (0..rows)
        .map(|r| {
            if r % 16 == 15 {
                -100
            } else {
                (r * 7919 % vocab) as i64
            }
        })
        .collect();
    let dl = vec![1.0 / rows as f32; rows];
    let (mut loss, mut lse, mut dx) = (vec![0.0f32; rows], vec![0.0f32; rows], vec![0.0f32; n]);
    let mut g = group(c, "cross_entropy_2048x8192");
    g.throughput(Throughput::Bytes(
        3 * n as u64 * 4 + rows as u64 * (8 + 4 * 4),
    ));
    g.bench_function("fwd+bwd/fast", |b| {
        b.iter(|| {
            cross_entropy_fwd(
                black_box(&logits),
                &targets,
                rows,
                vocab,
                -100,
                &mut loss,
                &mut lse,
            );
            cross_entropy_bwd(&logits, &targets, &lse, &dl, rows, vocab, -100, &mut dx);
        })
    });
    g.bench_function("fwd+bwd/ref", |b| {
        b.iter(|| {
            cross_entropy_fwd_ref(
                black_box(&logits),
                &targets,
                rows,
                vocab,
                -100,
                &mut loss,
                &mut lse,
            );
            cross_entropy_bwd_ref(&logits, &targets, &lse, &dl, rows, vocab, -100, &mut dx);
        })
    });
    g.finish();
}

criterion_group!(benches, layernorm, softmax, cross_entropy);
criterion_main!(benches);
