//! Decoding cost: one new token over a KV cache at different positions, against recomputing
//! the whole sequence without a cache.
//!
//! Model: vocab 2048, n_positions 512, width 128, 4 layers, 4 heads (f32, batch 1 unless
//! named). With the cache, a decoded token costs the per-token matmuls (≈ 24·L·C² + 2·V·C
//! flops, independent of the position) plus attention over the `p` cached keys
//! (≈ 4·L·p·C flops): at this size the attention term at p = 256 is ~1/4 of the rest. Without a
//! cache every step recomputes all p+1 positions, so its cost grows linearly (plus the
//! quadratic attention).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use engine::{no_grad, ops, Rng};
use model::generate::KvCache;
use model::{Gpt, GptConfig};
use std::hint::black_box;
use std::time::Duration;

const VOCAB: usize = 2048;

fn model() -> Gpt {
    let config = GptConfig::new(VOCAB, 512, 128, 4, 4);
    Gpt::new(config, &mut Rng::new(0)).unwrap()
}

fn ids(n: usize) -> Vec<usize> {
    let mut rng = Rng::new(1);
    (0..n).map(|_| rng.below(VOCAB as u64) as usize).collect()
}

/// A cache of `batch` copies of a `p`-token prompt, with room for one more token.
fn prefilled(gpt: &Gpt, p: usize, batch: usize) -> KvCache {
    let mut cache = KvCache::new(gpt, 1);
    cache.reserve(p + 1);
    gpt.forward_cached(&ids(p), 1, p, &mut cache).unwrap();
    cache.select_rows(&vec![0; batch]).unwrap()
}

fn bench(c: &mut Criterion) {
    let gpt = model();
    let mut g = c.benchmark_group("decode_one_token");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    for p in [16, 64, 256] {
        let cache = prefilled(&gpt, p, 1);
        g.bench_function(format!("cached/pos{p}"), |b| {
            b.iter_batched(
                || cache.clone(),
                |mut c| black_box(gpt.forward_cached_last(&[7], 1, 1, &mut c).unwrap()),
                BatchSize::SmallInput,
            )
        });
        let seq = ids(p + 1);
        g.bench_function(format!("no_cache/pos{p}"), |b| {
            b.iter(|| {
                no_grad(|| {
                    let h = gpt.hidden(&seq, 1, p + 1, None).unwrap();
                    let last = ops::slice(&h, 1, p, p + 1).unwrap();
                    black_box(gpt.unembed(&last).unwrap())
                })
            })
        });
    }
    // A batch of 8 samples decoded together (how RLHF draws K answers per prompt).
    let cache = prefilled(&gpt, 64, 8);
    g.bench_function("cached_batch8/pos64", |b| {
        b.iter_batched(
            || cache.clone(),
            |mut c| black_box(gpt.forward_cached_last(&[7; 8], 8, 1, &mut c).unwrap()),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
