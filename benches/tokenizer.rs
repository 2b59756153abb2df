//! Tokenizer speed on one core: encoding throughput (MB/s) of a 4096-token vocabulary on
//! ~1 MB of English-like text, and the time to train that vocabulary.
//!
//! Run: `cargo bench --bench tokenizer`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use model::tokenizer::{Tokenizer, DEFAULT_SPECIAL_TOKENS};

/// Deterministic English-like text: common English words and ~4000 made-up words of
/// English-like syllables, drawn with a Zipf-like skew, in capitalised sentences with
/// punctuation, numbers, contractions and paragraph breaks.
fn english_like(bytes: usize, seed: u64) -> String {
    const COMMON: &[&str] = &[
        "the", "of", "and", "to", "in", "a", "is", "that", "for", "it", "was", "on", "with", "he",
        "as", "you", "do", "at", "this", "but", "his", "by", "from", "they", "we", "say", "her",
        "she", "or", "an", "will", "my", "one", "all", "would", "there", "their", "what", "so",
        "up", "out", "if", "about", "who", "get", "which", "go", "me", "when", "make", "can",
        "like", "time", "no", "just", "him", "know", "take", "people", "into",
    ];
    const SYLLABLES: &[&str] = &[
        "ba", "con", "de", "ex", "fi", "gra", "hor", "in", "ja", "ki", "lo", "men", "na", "or",
        "pre", "qua", "ri", "sto", "tion", "un", "ver", "wa", "xy", "yo", "zen", "al", "ble",
        "cha", "dis", "er", "ful", "ing", "ly", "ment", "ness", "ous", "per", "re", "st", "th",
    ];
    let mut state = seed;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    let mut lexicon: Vec<String> = COMMON.iter().map(|w| w.to_string()).collect();
    while lexicon.len() < 4000 {
        let syllables = 1 + next() % 4;
        lexicon.push(
            (0..syllables)
                .map(|_| SYLLABLES[next() % SYLLABLES.len()])
                .collect(),
        );
    }
    let mut out = String::with_capacity(bytes + 64);
    while out.len() < bytes {
        let len = 4 + next() % 14;
        for i in 0..len {
            // A cubed uniform draw favours the front of the lexicon, like word frequencies.
            let u = (next() % 1_000_000) as f64 / 1_000_000.0;
            let word = &lexicon[(u * u * u * lexicon.len() as f64) as usize];
            if i == 0 {
                let mut c = word.chars();
                out.push(c.next().unwrap().to_ascii_uppercase());
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

/// Trains an 8192-token vocabulary on a few MB once and prints the time (too slow to
/// repeat as a criterion sample on a shared 2-core machine).
fn report_large_training() {
    let corpus = english_like(3_000_000, 3);
    let start = Instant::now();
    let tok = Tokenizer::train(&corpus, 8192, &DEFAULT_SPECIAL_TOKENS).expect("train");
    eprintln!(
        "trained vocab {} ({} merges) on {:.1} MB in {:.2?}",
        tok.vocab_size(),
        tok.merges().len(),
        corpus.len() as f64 / 1e6,
        start.elapsed()
    );
}

fn bench_tokenizer(c: &mut Criterion) {
    report_large_training();
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
