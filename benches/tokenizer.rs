//! Tokenizer speed on one core: encoding throughput (MB/s) of a 4096-token vocabulary on
//! ~1 MB of English-like text, and the time to train that vocabulary.
//!
//! Run: `cargo bench --bench tokenizer`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use model::tokenizer::{Tokenizer, DEFAULT_SPECIAL_TOKENS};

/// Deterministic English-like text: words drawn from a small lexicon with a Zipf-ish skew,
/// capitalised sentences, punctuation, numbers, a few contractions and newlines.
fn english_like(bytes: usize, seed: u64) -> String {
    const WORDS: &[&str] = &[
        "the",
        "of",
        "and",
        "to",
        "in",
        "a",
        "is",
        "that",
        "for",
        "it",
        "was",
        "on",
        "with",
        "he",
        "as",
        "you",
        "do",
        "at",
        "this",
        "but",
        "his",
        "by",
        "from",
        "they",
        "we",
        "say",
        "her",
        "she",
        "or",
        "an",
        "will",
        "my",
        "one",
        "all",
        "would",
        "there",
        "their",
        "what",
        "so",
        "up",
        "out",
        "if",
        "about",
        "who",
        "get",
        "which",
        "go",
        "me",
        "when",
        "make",
        "can",
        "like",
        "time",
        "no",
        "just",
        "him",
        "know",
        "take",
        "people",
        "into",
        "year",
        "your",
        "good",
        "some",
        "could",
        "them",
        "see",
        "other",
        "than",
        "then",
        "now",
        "look",
        "only",
        "come",
        "its",
        "over",
        "think",
        "also",
        "back",
        "after",
        "use",
        "two",
        "how",
        "our",
        "work",
        "first",
        "well",
        "way",
        "even",
        "new",
        "want",
        "because",
        "any",
        "these",
        "give",
        "day",
        "most",
        "us",
        "model",
        "training",
        "reward",
        "policy",
        "gradient",
        "language",
        "answer",
        "question",
        "assistant",
        "helpful",
        "careful",
        "mountain",
        "river",
        "garden",
        "library",
        "computer",
        "kitchen",
        "morning",
        "evening",
        "remarkable",
        "understanding",
        "information",
        "development",
        "relationship",
    ];
    let mut state = seed;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    let mut out = String::with_capacity(bytes + 64);
    while out.len() < bytes {
        let len = 4 + next() % 14;
        for i in 0..len {
            // Squaring a uniform draw favours the front of the lexicon.
            let r = next() % 1000;
            let word = WORDS[(r * r / 1000) * WORDS.len() / 1000];
            if i == 0 {
                let mut c = word.chars();
                let first = c.next().unwrap().to_ascii_uppercase();
                out.push(first);
                out.push_str(c.as_str());
            } else {
                out.push(' ');
                out.push_str(word);
            }
            match next() % 40 {
                0 => out.push_str("'s"),
                1 => out.push(','),
                2 => out.push_str(&format!(" {}", next() % 2000)),
                _ => {}
            }
        }
        out.push_str(if next() % 5 == 0 { ".\n\n" } else { ". " });
    }
    out
}

fn bench_tokenizer(c: &mut Criterion) {
    let corpus = english_like(300_000, 1);
    let start = Instant::now();
    let tok = Tokenizer::train(&corpus, 4096, &DEFAULT_SPECIAL_TOKENS).expect("train");
    eprintln!(
        "trained vocab {} ({} merges) on {} KB in {:.2?}",
        tok.vocab_size(),
        tok.merges().len(),
        corpus.len() / 1000,
        start.elapsed()
    );

    let text = english_like(1_000_000, 2);
    let mut group = c.benchmark_group("tokenizer");
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    // Warm cache: the steady state when encoding a large corpus.
    group.bench_function("encode_1MB", |b| b.iter(|| black_box(tok.encode(&text))));
    // Cold cache: every distinct word goes through BPE once.
    group.bench_function("encode_1MB_fresh_tokenizer", |b| {
        b.iter_batched(
            || tok.clone(),
            |t| black_box(t.encode(&text)),
            criterion::BatchSize::LargeInput,
        )
    });
    group.finish();

    let mut group = c.benchmark_group("tokenizer_train");
    group.sample_size(10);
    group.bench_function("train_4096_on_300KB", |b| {
        b.iter(|| black_box(Tokenizer::train(&corpus, 4096, &DEFAULT_SPECIAL_TOKENS)))
    });
    group.finish();
}

criterion_group!(benches, bench_tokenizer);
criterion_main!(benches);
