//! KV-cache inference and sampling: the cache against full recomputation, greedy decoding
//! against the argmax of the full forward, the filters, determinism, stop tokens, errors.

use engine::{DType, Rng};
use model::generate::{
    argmax, generate, log_softmax, sample_token, top_k_filter, top_p_filter, FinishReason, KvCache,
    SamplingConfig,
};
use model::{Gpt, GptConfig};
use proptest::prelude::*;

const VOCAB: usize = 37;
const CTX: usize = 24;

/// A tiny model with every parameter random (biases and layernorm gains too), large enough
/// that the logits differ clearly between tokens and attention is far from uniform. Heads of
/// width 20: two full 8-wide chunks of the cached attention's dot product plus a tail.
fn tiny(seed: u64) -> Gpt {
    let config = GptConfig::new(VOCAB, CTX, 40, 2, 2);
    let mut rng = Rng::new(seed);
    let mut gpt = Gpt::new(config, &mut rng).unwrap();
    for t in gpt.params_mut() {
        let shape = t.shape().to_vec();
        let mean = if shape.len() == 1 { 0.5 } else { 0.0 };
        *t = rng.normal_tensor(&shape, mean, 0.4, DType::F32);
    }
    gpt
}

fn ids(n: usize, seed: u64) -> Vec<usize> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| rng.below(VOCAB as u64) as usize).collect()
}

/// max |a − b| / max |b|.
fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let diff = a
        .iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
    diff / scale
}

/// Full-forward logits `[batch, seq, V]` of `seqs`, as f64.
fn full_logits(gpt: &Gpt, seqs: &[usize], batch: usize, seq: usize) -> Vec<f64> {
    engine::no_grad(|| gpt.forward(seqs, batch, seq, None))
        .unwrap()
        .to_vec_f64()
}

/// Logits of `seqs` (`[batch, seq]`) computed over a cache in chunks of the given sizes,
/// gathered back into `[batch, seq, V]`.
fn chunked_logits(gpt: &Gpt, seqs: &[usize], batch: usize, chunks: &[usize]) -> Vec<f64> {
    let seq: usize = chunks.iter().sum();
    let mut cache = KvCache::new(gpt, batch);
    let mut out = vec![0.0; batch * seq * VOCAB];
    let mut p = 0;
    for &n in chunks {
        let new: Vec<usize> = (0..batch)
            .flat_map(|b| seqs[b * seq + p..b * seq + p + n].to_vec())
            .collect();
        let logits = gpt.forward_cached(&new, batch, n, &mut cache).unwrap();
        assert_eq!(logits.shape(), &[batch, n, VOCAB]);
        let v = logits.to_vec_f64();
        for b in 0..batch {
            out[(b * seq + p) * VOCAB..(b * seq + p + n) * VOCAB]
                .copy_from_slice(&v[b * n * VOCAB..(b + 1) * n * VOCAB]);
        }
        p += n;
        assert_eq!(cache.len(), p);
    }
    out
}

#[test]
fn prefill_then_one_token_at_a_time_equals_full_forward() {
    let gpt = tiny(1);
    let (batch, seq) = (2, 20);
    let seqs = ids(batch * seq, 2);
    let full = full_logits(&gpt, &seqs, batch, seq);
    let mut chunks = vec![7];
    chunks.extend(vec![1; seq - 7]);
    let cached = chunked_logits(&gpt, &seqs, batch, &chunks);
    let err = rel_err(&cached, &full);
    assert!(err < 1e-5, "relative error {err:e}");
}

#[test]
fn prefill_in_chunks_equals_full_forward() {
    let gpt = tiny(3);
    let (batch, seq) = (3, CTX);
    let seqs = ids(batch * seq, 4);
    let full = full_logits(&gpt, &seqs, batch, seq);
    // The one-chunk prefill (6 heads × 24² × 20) is large enough to run the heads in parallel.
    for chunks in [vec![5, 19], vec![1, 8, 15], vec![CTX]] {
        let cached = chunked_logits(&gpt, &seqs, batch, &chunks);
        let err = rel_err(&cached, &full);
        assert!(err < 1e-5, "chunks {chunks:?}: relative error {err:e}");
    }
}

#[test]
fn cache_equals_full_forward_in_f64_to_rounding() {
    let gpt = tiny(5).to_dtype(DType::F64).unwrap();
    let (batch, seq) = (2, 16);
    let seqs = ids(batch * seq, 6);
    let full = full_logits(&gpt, &seqs, batch, seq);
    let cached = chunked_logits(&gpt, &seqs, batch, &[3, 1, 1, 6, 5]);
    let err = rel_err(&cached, &full);
    assert!(err < 1e-12, "relative error {err:e}");
}

#[test]
fn exceeding_the_context_is_an_error_and_leaves_the_cache_usable() {
    let gpt = tiny(7);
    let mut cache = KvCache::new(&gpt, 1);
    gpt.forward_cached(&ids(CTX - 1, 8), 1, CTX - 1, &mut cache)
        .unwrap();
    let err = gpt
        .forward_cached(&[1, 2], 1, 2, &mut cache)
        .unwrap_err()
        .to_string();
    assert!(err.contains("exceed the context"), "{err}");
    assert_eq!(cache.len(), CTX - 1);
    gpt.forward_cached(&[1], 1, 1, &mut cache).unwrap();
    assert_eq!(cache.len(), CTX);
    assert!(gpt.forward_cached(&[1], 1, 1, &mut cache).is_err());
}

#[test]
fn cache_rejects_a_wrong_batch_bad_ids_and_another_model() {
    let gpt = tiny(9);
    let mut cache = KvCache::new(&gpt, 2);
    let e = gpt
        .forward_cached(&[1, 2, 3], 3, 1, &mut cache)
        .unwrap_err();
    assert!(e.to_string().contains("does not match"), "{e}");
    let e = gpt
        .forward_cached(&[1, VOCAB], 2, 1, &mut cache)
        .unwrap_err();
    assert!(e.to_string().contains("out of range"), "{e}");
    let other = Gpt::new(GptConfig::new(VOCAB, CTX, 8, 1, 2), &mut Rng::new(0)).unwrap();
    let e = other.forward_cached(&[1, 2], 2, 1, &mut cache).unwrap_err();
    assert!(e.to_string().contains("different model"), "{e}");
    assert!(cache.select_rows(&[0, 2]).is_err());
    assert_eq!(cache.len(), 0);
}

#[test]
fn select_rows_repeats_and_drops_sequences() {
    let gpt = tiny(10);
    let seqs = ids(2 * 6, 11);
    let mut cache = KvCache::new(&gpt, 2);
    gpt.forward_cached(&seqs, 2, 6, &mut cache).unwrap();
    // Rows [1, 1, 0]: continue each with token 3 and compare with full forwards.
    let mut picked = cache.select_rows(&[1, 1, 0]).unwrap();
    let next = gpt
        .forward_cached_last(&[3, 3, 3], 3, 1, &mut picked)
        .unwrap()
        .to_vec_f64();
    for (row, src) in [(0, 1), (1, 1), (2, 0)] {
        let mut s = seqs[src * 6..(src + 1) * 6].to_vec();
        s.push(3);
        let full = full_logits(&gpt, &s, 1, 7);
        let err = rel_err(&next[row * VOCAB..(row + 1) * VOCAB], &full[6 * VOCAB..]);
        assert!(err < 1e-5, "row {row}: relative error {err:e}");
    }
}

#[test]
fn greedy_decoding_equals_argmax_of_the_full_forward() {
    let gpt = tiny(12);
    let prompt = ids(5, 13);
    let out = generate(&gpt, &prompt, 2, &SamplingConfig::greedy(12)).unwrap();
    assert_eq!(out[0], out[1]);
    let s = &out[0];
    assert_eq!(s.tokens.len(), 12);
    assert_eq!(s.finish, FinishReason::MaxTokens);
    let mut seq = prompt.clone();
    for (i, &tok) in s.tokens.iter().enumerate() {
        let logits = full_logits(&gpt, &seq, 1, seq.len());
        let last = &logits[(seq.len() - 1) * VOCAB..];
        assert_eq!(tok, argmax(last), "step {i}");
        assert_eq!(s.logprobs[i], 0.0);
        assert!((s.logprobs_scaled[i] - log_softmax(last)[tok]).abs() < 1e-4);
        seq.push(tok);
    }
}

#[test]
fn top_k_one_equals_greedy() {
    let gpt = tiny(14);
    let prompt = ids(4, 15);
    let greedy = generate(&gpt, &prompt, 1, &SamplingConfig::greedy(15)).unwrap();
    let cfg = SamplingConfig {
        temperature: 0.8,
        top_k: 1,
        max_new_tokens: 15,
        seed: 99,
        ..SamplingConfig::default()
    };
    for s in generate(&gpt, &prompt, 3, &cfg).unwrap() {
        assert_eq!(s.tokens, greedy[0].tokens);
        assert!(
            s.logprobs.iter().all(|&l| l.abs() < 1e-12),
            "{:?}",
            s.logprobs
        );
    }
}

#[test]
fn logprobs_match_the_full_forward_at_the_temperature() {
    let gpt = tiny(16);
    let prompt = ids(3, 17);
    let t = 0.7;
    let cfg = SamplingConfig {
        temperature: t,
        max_new_tokens: 10,
        seed: 5,
        ..SamplingConfig::default()
    };
    let filtered = SamplingConfig {
        top_k: 5,
        top_p: 0.8,
        ..cfg.clone()
    };
    for cfg in [cfg, filtered] {
        for s in generate(&gpt, &prompt, 2, &cfg).unwrap() {
            let mut seq = prompt.clone();
            seq.extend(&s.tokens);
            let logits = full_logits(&gpt, &seq, 1, seq.len());
            for (i, &tok) in s.tokens.iter().enumerate() {
                let pos = prompt.len() - 1 + i;
                let scaled: Vec<f64> = logits[pos * VOCAB..(pos + 1) * VOCAB]
                    .iter()
                    .map(|l| l / t)
                    .collect();
                let want = log_softmax(&scaled)[tok];
                assert!((s.logprobs_scaled[i] - want).abs() < 1e-4, "step {i}");
                assert!(
                    s.logprobs[i] >= s.logprobs_scaled[i] - 1e-9,
                    "filtering adds mass"
                );
                if cfg.top_k == 0 {
                    assert!((s.logprobs[i] - s.logprobs_scaled[i]).abs() < 1e-12);
                }
            }
        }
    }
}

#[test]
fn top_p_keeps_the_smallest_set_with_mass_at_least_p() {
    // P = [0.05, 0.5, 0.15, 0.3] (shuffled on purpose): sorted 0.5, 0.3, 0.15, 0.05.
    let probs = [0.05f64, 0.5, 0.15, 0.3];
    let kept = |p: f64| -> Vec<usize> {
        let mut l: Vec<f64> = probs.iter().map(|x| x.ln() + 3.0).collect();
        top_p_filter(&mut l, p);
        (0..4).filter(|&i| l[i].is_finite()).collect()
    };
    assert_eq!(kept(0.3), vec![1]);
    assert_eq!(kept(0.49), vec![1]);
    assert_eq!(kept(0.51), vec![1, 3]);
    assert_eq!(kept(0.75), vec![1, 3]);
    assert_eq!(kept(0.9), vec![1, 2, 3]);
    assert_eq!(kept(0.97), vec![0, 1, 2, 3]);
    assert_eq!(kept(1.0), vec![0, 1, 2, 3]);
}

proptest! {
    #[test]
    fn top_p_set_is_minimal_and_holds_the_most_likely(
        logits in proptest::collection::vec(-5.0f64..5.0, 2..40),
        p in 0.01f64..0.99,
    ) {
        let probs: Vec<f64> = log_softmax(&logits).iter().map(|l| l.exp()).collect();
        let mut l = logits.clone();
        top_p_filter(&mut l, p);
        let kept: Vec<usize> = (0..l.len()).filter(|&i| l[i].is_finite()).collect();
        let mass: f64 = kept.iter().map(|&i| probs[i]).sum();
        let min_kept = kept.iter().map(|&i| probs[i]).fold(f64::INFINITY, f64::min);
        prop_assert!(mass >= p - 1e-12, "mass {mass} < p {p}");
        prop_assert!(mass - min_kept < p, "not minimal: {mass} - {min_kept} >= {p}");
        for i in (0..l.len()).filter(|i| !kept.contains(i)) {
            prop_assert!(probs[i] <= min_kept);
        }
        for &i in &kept {
            prop_assert_eq!(l[i], logits[i]);
        }
    }
}

#[test]
fn top_k_keeps_the_k_largest_and_ties_at_the_boundary() {
    let mut l = vec![1.0, 4.0, 2.0, 3.0, 2.0];
    top_k_filter(&mut l, 2);
    assert_eq!(
        l,
        vec![
            f64::NEG_INFINITY,
            4.0,
            f64::NEG_INFINITY,
            3.0,
            f64::NEG_INFINITY
        ]
    );
    let mut l = vec![1.0, 4.0, 2.0, 3.0, 2.0];
    top_k_filter(&mut l, 3);
    assert_eq!(l, vec![f64::NEG_INFINITY, 4.0, 2.0, 3.0, 2.0]);
    let mut l = vec![1.0, 4.0];
    top_k_filter(&mut l, 0);
    assert_eq!(l, vec![1.0, 4.0]);
}

#[test]
fn sample_token_draws_with_the_filtered_probabilities() {
    let probs = [0.1f64, 0.4, 0.2, 0.3];
    let logits: Vec<f64> = probs.iter().map(|p| p.ln()).collect();
    let n = 40_000;
    let freq = |cfg: &SamplingConfig| -> Vec<f64> {
        let mut rng = Rng::new(1);
        let mut counts = [0usize; 4];
        for _ in 0..n {
            counts[sample_token(&logits, cfg, &mut rng).token] += 1;
        }
        counts.iter().map(|&c| c as f64 / n as f64).collect()
    };
    // Plain: the probabilities themselves (sd of a frequency ≤ 0.0025).
    let f = freq(&SamplingConfig::default());
    for (got, want) in f.iter().zip(probs) {
        assert!((got - want).abs() < 0.015, "{f:?}");
    }
    // top-k 2 keeps 0.4 and 0.3, renormalised to 4/7 and 3/7.
    let f = freq(&SamplingConfig {
        top_k: 2,
        ..SamplingConfig::default()
    });
    assert_eq!((f[0], f[2]), (0.0, 0.0));
    assert!(
        (f[1] - 4.0 / 7.0).abs() < 0.015 && (f[3] - 3.0 / 7.0).abs() < 0.015,
        "{f:?}"
    );
    // Temperature 0.5 squares the probabilities before renormalising.
    let f = freq(&SamplingConfig {
        temperature: 0.5,
        ..SamplingConfig::default()
    });
    let z: f64 = probs.iter().map(|p| p * p).sum();
    for (got, p) in f.iter().zip(probs) {
        assert!((got - p * p / z).abs() < 0.015, "{f:?}");
    }
}

#[test]
fn same_seed_same_samples_different_seed_different() {
    let gpt = tiny(18);
    let prompt = ids(4, 19);
    let cfg = |seed| SamplingConfig {
        temperature: 1.5,
        max_new_tokens: 16,
        seed,
        ..SamplingConfig::default()
    };
    let a = generate(&gpt, &prompt, 4, &cfg(7)).unwrap();
    let b = generate(&gpt, &prompt, 4, &cfg(7)).unwrap();
    let c = generate(&gpt, &prompt, 4, &cfg(8)).unwrap();
    assert_eq!(a, b);
    assert_ne!(a[0].tokens, c[0].tokens);
    // The samples of one batch differ from each other too.
    assert_ne!(a[0].tokens, a[1].tokens);
}

#[test]
fn a_sample_does_not_depend_on_the_batch_it_is_drawn_in() {
    let gpt = tiny(20);
    let prompt = ids(6, 21);
    let cfg = SamplingConfig {
        max_new_tokens: 12,
        seed: 3,
        stop_tokens: vec![0, 1, 2, 3],
        ..SamplingConfig::default()
    };
    let one = generate(&gpt, &prompt, 1, &cfg).unwrap();
    let many = generate(&gpt, &prompt, 5, &cfg).unwrap();
    assert_eq!(one[0].tokens, many[0].tokens);
    assert_eq!(one[0].finish, many[0].finish);
    assert!(rel_err(&one[0].logprobs, &many[0].logprobs) < 1e-5);
}

#[test]
fn each_sample_stops_at_its_first_stop_token() {
    let gpt = tiny(22);
    let prompt = ids(5, 23);
    // Greedy: stop at the token greedy decoding draws fourth.
    let free = generate(&gpt, &prompt, 1, &SamplingConfig::greedy(10)).unwrap();
    let stop = free[0].tokens[3];
    let first = free[0].tokens.iter().position(|&t| t == stop).unwrap();
    let cfg = SamplingConfig {
        stop_tokens: vec![stop],
        ..SamplingConfig::greedy(10)
    };
    let s = &generate(&gpt, &prompt, 1, &cfg).unwrap()[0];
    assert_eq!(s.tokens, free[0].tokens[..=first]);
    assert_eq!(s.finish, FinishReason::Stop);
    assert_eq!(s.logprobs.len(), s.tokens.len());
    assert_eq!(s.logprobs_scaled.len(), s.tokens.len());

    // Sampling with half the vocabulary as stop tokens: samples end at different steps.
    let stops: Vec<usize> = (0..VOCAB).filter(|t| t % 2 == 0).collect();
    let cfg = SamplingConfig {
        temperature: 2.0,
        max_new_tokens: 8,
        stop_tokens: stops.clone(),
        seed: 4,
        ..SamplingConfig::default()
    };
    let out = generate(&gpt, &prompt, 16, &cfg).unwrap();
    let mut lengths = std::collections::BTreeSet::new();
    for s in &out {
        let (last, body) = s.tokens.split_last().unwrap();
        assert!(body.iter().all(|t| !stops.contains(t)), "{:?}", s.tokens);
        match s.finish {
            FinishReason::Stop => assert!(stops.contains(last)),
            FinishReason::MaxTokens => {
                assert_eq!(s.tokens.len(), 8);
                assert!(!stops.contains(last));
            }
            FinishReason::Context => panic!("context cannot fill"),
        }
        lengths.insert(s.tokens.len());
    }
    assert!(lengths.len() > 2, "lengths {lengths:?}");
    assert!(out.iter().any(|s| s.finish == FinishReason::Stop));
}

#[test]
fn generation_stops_when_the_context_is_full() {
    let gpt = tiny(24);
    let out = generate(&gpt, &ids(CTX - 3, 25), 2, &SamplingConfig::default()).unwrap();
    for s in &out {
        assert_eq!(s.tokens.len(), 3);
        assert_eq!(s.finish, FinishReason::Context);
    }
    let out = generate(&gpt, &ids(CTX, 25), 1, &SamplingConfig::default()).unwrap();
    assert!(out[0].tokens.is_empty());
    assert_eq!(out[0].finish, FinishReason::Context);
    let out = generate(&gpt, &ids(3, 25), 1, &SamplingConfig::greedy(0)).unwrap();
    assert!(out[0].tokens.is_empty());
    assert_eq!(out[0].finish, FinishReason::MaxTokens);
}

#[test]
fn bad_inputs_are_errors_naming_the_problem() {
    let gpt = tiny(26);
    let ok = SamplingConfig::default();
    let err = |prompt: &[usize], n: usize, cfg: &SamplingConfig| {
        generate(&gpt, prompt, n, cfg).unwrap_err().to_string()
    };
    assert!(err(&[], 1, &ok).contains("empty"));
    assert!(err(&ids(CTX + 1, 0), 1, &ok).contains("longer than the context"));
    let e = err(&[1, VOCAB + 3, 2], 1, &ok);
    assert!(
        e.contains("token id 40") && e.contains("out of range"),
        "{e}"
    );
    assert!(err(&[1], 0, &ok).contains("num_samples"));
    for (cfg, what) in [
        (
            SamplingConfig {
                temperature: -1.0,
                ..ok.clone()
            },
            "temperature",
        ),
        (
            SamplingConfig {
                temperature: f64::NAN,
                ..ok.clone()
            },
            "temperature",
        ),
        (
            SamplingConfig {
                top_p: 0.0,
                ..ok.clone()
            },
            "top_p",
        ),
        (
            SamplingConfig {
                top_p: 1.5,
                ..ok.clone()
            },
            "top_p",
        ),
        (
            SamplingConfig {
                stop_tokens: vec![VOCAB],
                ..ok.clone()
            },
            "stop token",
        ),
    ] {
        let e = err(&[1], 1, &cfg);
        assert!(e.contains(what), "{what}: {e}");
    }
}
