//! Learning BPE merges from a corpus.
//!
//! The merge order matches Hugging Face's `BpeTrainer` for the same words and byte ids:
//! the most frequent adjacent pair wins, ties go to the smallest `(left id, right id)`.
//! Pair counts are kept up to date incrementally: a merge only revisits the words that
//! contain the merged pair, so training cost follows the corpus, not vocab × corpus.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rustc_hash::{FxHashMap, FxHashSet};

use super::byte_level::{byte_chars_in_vocab_order, byte_to_char};
use super::pretokenize::{pre_tokens, split_on_specials, Segment};
use super::{Result, Tokenizer, TokenizerError};

type Pair = (u32, u32);

impl Tokenizer {
    /// Trains a tokenizer on `text`: the 256 byte tokens (ids 0..256, GPT-2's order), then
    /// merges until `vocab_size` is reached or no pair repeats, then `special_tokens`.
    ///
    /// `vocab_size` counts the special tokens. Special tokens found in `text` are cut out
    /// before counting, and no merge ever produces a special token's text. The result
    /// depends only on the arguments.
    pub fn train(text: &str, vocab_size: usize, special_tokens: &[&str]) -> Result<Tokenizer> {
        let specials: Vec<String> = special_tokens.iter().map(|s| s.to_string()).collect();
        check_specials(&specials)?;
        let base = 256 + specials.len();
        if vocab_size < base {
            return Err(TokenizerError::Train(format!(
                "vocab_size {vocab_size} is below 256 byte tokens + {} special tokens",
                specials.len()
            )));
        }

        let mut tokens: Vec<String> = byte_chars_in_vocab_order()
            .into_iter()
            .map(|(_, c)| c.to_string())
            .collect();
        let mut words = count_words(text, &specials);
        let forbidden: FxHashSet<String> = specials.iter().cloned().collect();
        let merges = learn_merges(
            &mut words,
            vocab_size - specials.len(),
            &mut tokens,
            &forbidden,
        );

        let first_special = tokens.len() as u32;
        tokens.extend(specials.iter().cloned());
        let special_ids = (first_special..tokens.len() as u32).collect();
        Ok(Tokenizer::from_parts(tokens, special_ids, merges))
    }
}

/// Special tokens must be non-empty, distinct, and not spell a single-byte token.
fn check_specials(specials: &[String]) -> Result<()> {
    let table = byte_to_char();
    for (i, s) in specials.iter().enumerate() {
        if s.is_empty() {
            return Err(TokenizerError::Train("empty special token".into()));
        }
        if specials[..i].contains(s) {
            return Err(TokenizerError::Train(format!(
                "special token {s:?} given twice"
            )));
        }
        if s.chars().count() == 1 && table.contains(&s.chars().next().unwrap_or('\0')) {
            return Err(TokenizerError::Train(format!(
                "special token {s:?} is also a byte token"
            )));
        }
    }
    Ok(())
}

/// A distinct pre-token word as byte-token ids, and how often it occurs.
struct Word {
    ids: Vec<u32>,
    count: i64,
}

/// Pre-tokenizes the corpus (outside special tokens) and counts each distinct word.
fn count_words(text: &str, specials: &[String]) -> Vec<Word> {
    let mut counts: FxHashMap<&str, i64> = FxHashMap::default();
    for segment in split_on_specials(text, specials) {
        if let Segment::Text(t) = segment {
            for word in pre_tokens(t) {
                *counts.entry(word).or_default() += 1;
            }
        }
    }
    // Byte b's token id is its position in GPT-2's byte order.
    let mut byte_id = [0u32; 256];
    for (id, (b, _)) in byte_chars_in_vocab_order().into_iter().enumerate() {
        byte_id[b as usize] = id as u32;
    }
    // Sorted so the word list (and anything derived from it) is the same on every run.
    let mut words: Vec<(&str, i64)> = counts.into_iter().collect();
    words.sort_unstable();
    words
        .into_iter()
        .map(|(w, count)| Word {
            ids: w.bytes().map(|b| byte_id[b as usize]).collect(),
            count,
        })
        .collect()
}

/// Learns merges until `tokens` holds `target` tokens (or no pair is left), appending each
/// new token's text to `tokens`. Two merges can spell the same text (`Ġt he`, `Ġth e`); as
/// in Hugging Face, the later one reuses the existing token and adds no new one.
fn learn_merges(
    words: &mut [Word],
    target: usize,
    tokens: &mut Vec<String>,
    forbidden: &FxHashSet<String>,
) -> Vec<Pair> {
    let mut pair_counts: FxHashMap<Pair, i64> = FxHashMap::default();
    // Words that contained the pair when it was recorded (may be stale; rechecked on use).
    let mut pair_words: FxHashMap<Pair, FxHashSet<u32>> = FxHashMap::default();
    for (wi, word) in words.iter().enumerate() {
        for p in word.ids.windows(2) {
            let pair = (p[0], p[1]);
            *pair_counts.entry(pair).or_default() += word.count;
            pair_words.entry(pair).or_default().insert(wi as u32);
        }
    }
    // Max-heap on (count, smallest pair). Entries go stale as counts fall; a popped entry
    // whose count no longer matches is pushed back with the current count.
    let mut heap: BinaryHeap<(i64, Reverse<Pair>)> = pair_counts
        .iter()
        .map(|(&pair, &count)| (count, Reverse(pair)))
        .collect();

    let mut token_ids: FxHashMap<String, u32> = tokens
        .iter()
        .enumerate()
        .map(|(id, t)| (t.clone(), id as u32))
        .collect();
    let mut merges = Vec::with_capacity(target.saturating_sub(tokens.len()));
    while tokens.len() < target {
        let Some((count, Reverse(pair))) = heap.pop() else {
            break;
        };
        let current = pair_counts.get(&pair).copied().unwrap_or(0);
        if current != count {
            if current > 0 {
                heap.push((current, Reverse(pair)));
            }
            continue;
        }
        let merged = format!("{}{}", tokens[pair.0 as usize], tokens[pair.1 as usize]);
        if forbidden.contains(&merged) {
            // Never learn a token that spells a special token; drop the pair for good.
            pair_counts.remove(&pair);
            continue;
        }
        let new_id = match token_ids.get(&merged) {
            Some(&id) => id,
            None => {
                let id = tokens.len() as u32;
                token_ids.insert(merged.clone(), id);
                tokens.push(merged);
                id
            }
        };
        merges.push(pair);

        let affected = pair_words.remove(&pair).unwrap_or_default();
        let mut delta: FxHashMap<Pair, i64> = FxHashMap::default();
        for wi in affected {
            let word = &mut words[wi as usize];
            apply_merge(word, pair, new_id, &mut delta);
            for p in word.ids.windows(2) {
                if p[0] == new_id || p[1] == new_id {
                    pair_words.entry((p[0], p[1])).or_default().insert(wi);
                }
            }
        }
        pair_counts.remove(&pair);
        // Sorted so the heap sees the same pushes in the same order on every run.
        let mut delta: Vec<(Pair, i64)> = delta.into_iter().filter(|&(_, d)| d != 0).collect();
        delta.sort_unstable();
        for (p, d) in delta {
            let count = pair_counts.entry(p).or_default();
            *count += d;
            let count = *count;
            if count <= 0 {
                pair_counts.remove(&p);
            } else if d > 0 {
                heap.push((count, Reverse(p)));
            }
        }
    }
    merges
}

/// Merges every occurrence of `pair` in the word, left to right, and records how the
/// word's pair counts change.
fn apply_merge(word: &mut Word, pair: Pair, new_id: u32, delta: &mut FxHashMap<Pair, i64>) {
    let ids = &word.ids;
    if !ids.windows(2).any(|p| (p[0], p[1]) == pair) {
        return;
    }
    for p in ids.windows(2) {
        *delta.entry((p[0], p[1])).or_default() -= word.count;
    }
    let mut merged = Vec::with_capacity(ids.len());
    let mut i = 0;
    while i < ids.len() {
        if i + 1 < ids.len() && (ids[i], ids[i + 1]) == pair {
            merged.push(new_id);
            i += 2;
        } else {
            merged.push(ids[i]);
            i += 1;
        }
    }
    for p in merged.windows(2) {
        *delta.entry((p[0], p[1])).or_default() += word.count;
    }
    word.ids = merged;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_most_frequent_pair_first() {
        let tok = Tokenizer::train("ab ab ab cd cd", 258, &[]).unwrap();
        let names: Vec<String> = tok
            .merges()
            .iter()
            .map(|&(a, b)| format!("{} {}", tok.tokens[a as usize], tok.tokens[b as usize]))
            .collect();
        // Words "ab" ×1, "Ġab" ×2, "Ġcd" ×2: (a,b) has 3 and goes first. Then (Ġ,ab),
        // (Ġ,c) and (c,d) tie at 2 and the smallest ids win: c=66, d=67 (Ġ is 220).
        assert_eq!(names, ["a b", "c d"]);
    }

    #[test]
    fn rejects_too_small_vocab_and_bad_specials() {
        assert!(Tokenizer::train("x", 257, &["<|a|>", "<|b|>"]).is_err());
        assert!(Tokenizer::train("x", 300, &["<|a|>", "<|a|>"]).is_err());
        assert!(Tokenizer::train("x", 300, &[""]).is_err());
        assert!(Tokenizer::train("x", 300, &["a"]).is_err());
    }
}
