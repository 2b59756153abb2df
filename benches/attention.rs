//! Causal attention benchmark: the fast f32 kernels at GPT-2-small shape (B4 H12 T1024 D64),
//! and the reference beside the fast one on a smaller shape.
//!
//! Throughput is reported in "elements" = causal FLOPs: only the matmul work of the unmasked
//! half, counted as 2 flops per multiply-add. Forward = 2 matmuls (S = QKᵀ, O = PV), each
//! 2·d·t(t+1)/2 per head; backward = 5 (S recompute, dV, dP, dQ, dK). So
//! fwd = 2·bh·d·t(t+1), fwd+bwd = 3.5 × that. exp/softmax work is not counted.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kernels::cpu::attention::*;
use std::hint::black_box;

fn inputs(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32) * 2.0 - 1.0
        })
        .collect()
}

fn fwd_flops(bh: usize, t: usize, d: usize) -> u64 {
    (2 * bh * d * t * (t + 1)) as u64
}

fn bench(c: &mut Criterion) {
    eprintln!(
        "SIMD level: {}, rayon threads: {}",
        kernels::simd_level(),
        rayon::current_num_threads()
    );
    let (bh, t, d) = (4 * 12, 1024, 64);
    let n = bh * t * d;
    let (q, k, v, g) = (inputs(n, 1), inputs(n, 2), inputs(n, 3), inputs(n, 4));
    let (mut out, mut lse) = (vec![0.0f32; n], vec![0.0f32; bh * t]);
    let (mut dq, mut dk, mut dv) = (vec![0.0f32; n], vec![0.0f32; n], vec![0.0f32; n]);

    let mut grp = c.benchmark_group("attention_B4H12T1024D64");
    grp.sample_size(10);
    grp.throughput(Throughput::Elements(fwd_flops(bh, t, d)));
    grp.bench_function("fwd", |b| {
        b.iter(|| causal_attention_fwd(black_box(&q), &k, &v, bh, t, d, &mut out, &mut lse))
    });
    grp.throughput(Throughput::Elements(fwd_flops(bh, t, d) * 7 / 2));
    grp.bench_function("fwd+bwd", |b| {
        b.iter(|| {
            causal_attention_fwd(black_box(&q), &k, &v, bh, t, d, &mut out, &mut lse);
            causal_attention_bwd(
                &q, &k, &v, &out, &lse, &g, bh, t, d, &mut dq, &mut dk, &mut dv,
            );
        })
    });
    grp.finish();

    // The reference (single-threaded, scalar) is far too slow at full size: compare on B1 H2 T256.
    let (bh, t, d) = (2, 256, 64);
    let n = bh * t * d;
    let (q, k, v, g) = (inputs(n, 5), inputs(n, 6), inputs(n, 7), inputs(n, 8));
    let (mut out, mut lse) = (vec![0.0f32; n], vec![0.0f32; bh * t]);
    let (mut dq, mut dk, mut dv) = (vec![0.0f32; n], vec![0.0f32; n], vec![0.0f32; n]);
    let mut grp = c.benchmark_group("attention_B1H2T256D64");
    grp.sample_size(10);
    grp.throughput(Throughput::Elements(fwd_flops(bh, t, d) * 7 / 2));
    grp.bench_function("ref fwd+bwd", |b| {
        b.iter(|| {
            causal_attention_fwd_ref(black_box(&q), &k, &v, bh, t, d, &mut out, &mut lse);
            causal_attention_bwd_ref(
                &q, &k, &v, &out, &lse, &g, bh, t, d, &mut dq, &mut dk, &mut dv,
            );
        })
    });
    grp.bench_function("fast fwd+bwd", |b| {
        b.iter(|| {
            causal_attention_fwd(black_box(&q), &k, &v, bh, t, d, &mut out, &mut lse);
            causal_attention_bwd(
                &q, &k, &v, &out, &lse, &g, bh, t, d, &mut dq, &mut dk, &mut dv,
            );
        })
    });
    grp.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
