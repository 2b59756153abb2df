//! GPT-2's byte-level BPE tokenizer, compatible with Hugging Face's `GPT2TokenizerFast`.
//!
//! Text is cut around special tokens, then into pieces by GPT-2's regex ([`GPT2_PATTERN`]);
//! each piece's UTF-8 bytes start as one token per byte and are merged pairwise by the
//! learned merge ranks. Every string has an encoding, so `decode_bytes(encode(s)) ==
//! s.as_bytes()`. Training follows Hugging Face's `BpeTrainer` merge for merge, and the
//! files are GPT-2's `vocab.json` + `merges.txt`, so vocabularies move both ways.
//!
//! ```
//! use model::tokenizer::{Tokenizer, END_OF_TEXT};
//! let tok = Tokenizer::train("the cat sat on the mat. the end.", 270, &[END_OF_TEXT]).unwrap();
//! let ids = tok.encode("the mat<|endoftext|>");
//! assert_eq!(ids.last(), tok.token_to_id(END_OF_TEXT).as_ref());
//! assert_eq!(tok.decode(&ids).unwrap(), "the mat<|endoftext|>");
//! ```

mod byte_level;
mod files;
mod pretokenize;
mod train;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::path::PathBuf;
use std::sync::Mutex;

use rustc_hash::FxHashMap;

use pretokenize::{pre_tokens, split_on_specials, Segment};

pub use pretokenize::GPT2_PATTERN;

/// Ends a document (GPT-2's own special token).
pub const END_OF_TEXT: &str = "<|endoftext|>";
/// Starts a system message in a chat transcript.
pub const SYSTEM: &str = "<|system|>";
/// Starts a user turn in a chat transcript.
pub const USER: &str = "<|user|>";
/// Starts an assistant turn in a chat transcript.
pub const ASSISTANT: &str = "<|assistant|>";
/// Ends a chat turn; generation stops on it.
pub const END_OF_TURN: &str = "<|end|>";
/// The special tokens ferrochat trains with: end of text plus the chat-turn markers.
pub const DEFAULT_SPECIAL_TOKENS: [&str; 5] = [END_OF_TEXT, SYSTEM, USER, ASSISTANT, END_OF_TURN];

/// Number of distinct words the encode cache holds before it starts over.
const CACHE_CAPACITY: usize = 1 << 17;

/// Errors from training, loading, saving and decoding.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A JSON file does not parse (the message gives line and column).
    #[error("{path}: invalid JSON: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        source: serde_json::Error,
    },
    /// A file parses but one of its lines or entries is wrong.
    #[error("{path}: {at}: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// Which line or entry, e.g. `line 7` or `entry "abc"`.
        at: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A token id is not in the vocabulary.
    #[error("token id {id} is out of range for a vocabulary of {vocab_size}")]
    IdOutOfRange {
        /// The offending id.
        id: u32,
        /// The vocabulary size.
        vocab_size: usize,
    },
    /// `train` was asked for something impossible.
    #[error("cannot train: {0}")]
    Train(String),
}

/// Result type of this module.
pub type Result<T> = std::result::Result<T, TokenizerError>;

/// A byte-level BPE tokenizer: vocabulary, merge ranks and special tokens.
pub struct Tokenizer {
    /// Token text by id, spelled as in `vocab.json` (byte-level characters).
    tokens: Vec<String>,
    /// Token bytes by id (what `decode` emits).
    token_bytes: Vec<Vec<u8>>,
    token_ids: FxHashMap<String, u32>,
    /// Id of the single-byte token for each byte.
    byte_ids: [u32; 256],
    /// Merges in rank order: the pair of ids merged.
    merges: Vec<(u32, u32)>,
    /// Pair → (rank, id of the merged token).
    merge_ranks: FxHashMap<(u32, u32), (u32, u32)>,
    /// Special token texts and their ids.
    specials: Vec<String>,
    special_ids: Vec<u32>,
    /// Word → ids; most words repeat, and BPE on a word is the slow part of encoding.
    cache: Mutex<FxHashMap<String, Vec<u32>>>,
}

impl Tokenizer {
    /// Builds a tokenizer from validated parts: token texts by id (byte-level spelling),
    /// the ids that are special tokens, and the merges in rank order. Callers guarantee
    /// that non-special tokens are byte-level strings, that every single byte has a token,
    /// and that each merge's result is in the vocabulary.
    fn from_parts(tokens: Vec<String>, special_ids: Vec<u32>, merges: Vec<(u32, u32)>) -> Self {
        let token_ids: FxHashMap<String, u32> = tokens
            .iter()
            .enumerate()
            .map(|(id, t)| (t.clone(), id as u32))
            .collect();
        let token_bytes = tokens
            .iter()
            .enumerate()
            .map(|(id, t)| {
                if special_ids.contains(&(id as u32)) {
                    t.as_bytes().to_vec()
                } else {
                    byte_level::token_string_to_bytes(t).expect("validated byte-level token")
                }
            })
            .collect();
        let table = byte_level::byte_to_char();
        let mut byte_ids = [0u32; 256];
        for (b, slot) in byte_ids.iter_mut().enumerate() {
            *slot = token_ids[&table[b].to_string()];
        }
        let merge_ranks = merges
            .iter()
            .enumerate()
            .map(|(rank, &(a, b))| {
                let merged = format!("{}{}", tokens[a as usize], tokens[b as usize]);
                ((a, b), (rank as u32, token_ids[&merged]))
            })
            .collect();
        let specials = special_ids
            .iter()
            .map(|&id| tokens[id as usize].clone())
            .collect();
        Tokenizer {
            tokens,
            token_bytes,
            token_ids,
            byte_ids,
            merges,
            merge_ranks,
            specials,
            special_ids,
            cache: Mutex::new(FxHashMap::default()),
        }
    }

    /// Number of tokens, special tokens included.
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// The id of a token, spelled as in `vocab.json` (byte-level: a space is `Ġ`), or a
    /// special token's text.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.token_ids.get(token).copied()
    }

    /// The `vocab.json` spelling of a token id.
    pub fn id_to_token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// The special tokens' texts, in id order of their declaration.
    pub fn special_tokens(&self) -> &[String] {
        &self.specials
    }

    /// The merges in rank order, as pairs of token ids.
    pub fn merges(&self) -> &[(u32, u32)] {
        &self.merges
    }

    /// Encodes text; special tokens that appear in it become their single ids.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        let mut cache = self.cache.try_lock().ok();
        for segment in split_on_specials(text, &self.specials) {
            match segment {
                Segment::Special(i) => out.push(self.special_ids[i]),
                Segment::Text(t) => self.encode_text(t, cache.as_deref_mut(), &mut out),
            }
        }
        out
    }

    /// Encodes text as plain text: special-token strings in it are spelled out byte by
    /// byte, so user-typed `<|end|>` cannot forge a turn boundary.
    pub fn encode_ordinary(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        let mut cache = self.cache.try_lock().ok();
        self.encode_text(text, cache.as_deref_mut(), &mut out);
        out
    }

    /// Encodes text without special tokens. The cache is `None` when another thread holds
    /// it: encoding then proceeds uncached instead of waiting.
    fn encode_text(
        &self,
        text: &str,
        mut cache: Option<&mut FxHashMap<String, Vec<u32>>>,
        out: &mut Vec<u32>,
    ) {
        for word in pre_tokens(text) {
            if word.len() == 1 {
                out.push(self.byte_ids[word.as_bytes()[0] as usize]);
                continue;
            }
            match cache.as_deref_mut() {
                Some(cache) => {
                    if let Some(ids) = cache.get(word) {
                        out.extend_from_slice(ids);
                        continue;
                    }
                    let ids = self.bpe(word.as_bytes());
                    out.extend_from_slice(&ids);
                    if cache.len() >= CACHE_CAPACITY {
                        cache.clear();
                    }
                    cache.insert(word.to_owned(), ids);
                }
                None => out.extend(self.bpe(word.as_bytes())),
            }
        }
    }

    /// Applies the merges to one word: repeatedly merge the adjacent pair of lowest rank
    /// (leftmost first among equals). A heap over a linked list of symbols keeps this
    /// O(n log n), so a long run of spaces or one huge "word" does not go quadratic.
    fn bpe(&self, bytes: &[u8]) -> Vec<u32> {
        const NONE: usize = usize::MAX;
        struct Symbol {
            id: u32,
            prev: usize,
            next: usize,
            alive: bool,
        }
        let n = bytes.len();
        let mut syms: Vec<Symbol> = bytes
            .iter()
            .enumerate()
            .map(|(i, &b)| Symbol {
                id: self.byte_ids[b as usize],
                prev: if i == 0 { NONE } else { i - 1 },
                next: if i + 1 == n { NONE } else { i + 1 },
                alive: true,
            })
            .collect();
        let mut heap: BinaryHeap<Reverse<(u32, usize)>> = BinaryHeap::new();
        for i in 0..n.saturating_sub(1) {
            if let Some(&(rank, _)) = self.merge_ranks.get(&(syms[i].id, syms[i + 1].id)) {
                heap.push(Reverse((rank, i)));
            }
        }
        while let Some(Reverse((rank, i))) = heap.pop() {
            // Skip entries made stale by an earlier merge at or next to this position.
            let j = syms[i].next;
            if !syms[i].alive || j == NONE {
                continue;
            }
            let Some(&(r, merged)) = self.merge_ranks.get(&(syms[i].id, syms[j].id)) else {
                continue;
            };
            if r != rank {
                continue;
            }
            syms[i].id = merged;
            syms[j].alive = false;
            let after = syms[j].next;
            syms[i].next = after;
            if after != NONE {
                syms[after].prev = i;
                if let Some(&(r, _)) = self.merge_ranks.get(&(merged, syms[after].id)) {
                    heap.push(Reverse((r, i)));
                }
            }
            let before = syms[i].prev;
            if before != NONE {
                if let Some(&(r, _)) = self.merge_ranks.get(&(syms[before].id, merged)) {
                    heap.push(Reverse((r, before)));
                }
            }
        }
        let mut ids = Vec::new();
        let mut i = 0;
        while i != NONE {
            ids.push(syms[i].id);
            i = syms[i].next;
        }
        ids
    }

    /// The exact bytes the ids stand for; fails on an id outside the vocabulary.
    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            let bytes = self
                .token_bytes
                .get(id as usize)
                .ok_or(TokenizerError::IdOutOfRange {
                    id,
                    vocab_size: self.vocab_size(),
                })?;
            out.extend_from_slice(bytes);
        }
        Ok(out)
    }

    /// Decodes ids to text. Bytes that are not valid UTF-8 (a sequence cut inside a
    /// multi-byte character, as a sampled model may produce) become U+FFFD, as in Hugging
    /// Face; use [`Tokenizer::decode_bytes`] for the exact bytes.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let bytes = self.decode_bytes(ids)?;
        Ok(match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }
}

// Encoding from several threads at once is supported (the cache sits behind a mutex).
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Tokenizer>();
};

impl Clone for Tokenizer {
    fn clone(&self) -> Self {
        Tokenizer::from_parts(
            self.tokens.clone(),
            self.special_ids.clone(),
            self.merges.clone(),
        )
    }
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("merges", &self.merges.len())
            .field("specials", &self.specials)
            .finish()
    }
}
