//! Tokenizer behaviour: round trips, training, merges, special tokens, files and errors.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use model::tokenizer::{
    Tokenizer, TokenizerError, ASSISTANT, DEFAULT_SPECIAL_TOKENS, END_OF_TEXT, END_OF_TURN, USER,
};
use proptest::prelude::*;

/// A small mixed corpus: English-like sentences plus accented words, CJK, emoji, digits,
/// code and whitespace runs, so merges form across many kinds of pre-token.
fn corpus() -> String {
    let lines = [
        "The quick brown fox jumps over the lazy dog. It's 3.14 o'clock, isn't it?",
        "We'll see you there; they've said they'd come at 10:30 with 2 friends.",
        "Café, naïve, façade — déjà vu. Ünïcödé wörds ärë fïnë.",
        "日本語のテキストも少し。中文也有一点。한국어도 조금.",
        "Emoji: 🙂🙂 👍🏽 🚀✨ and flags 🇫🇷🇯🇵.",
        "fn main() { let x = vec![1, 2, 3]; println!(\"{:?}\", x); }",
        "    indented line\n\n\ttabbed\r\n   trailing spaces   ",
        "the model learns the reward, the policy follows the reward model.",
    ];
    let mut out = String::new();
    for i in 0..40 {
        for line in lines {
            out.push_str(line);
            out.push_str(if i % 3 == 0 { "\n" } else { " " });
        }
        out.push_str(END_OF_TEXT);
    }
    out
}

fn trained() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| Tokenizer::train(&corpus(), 600, &DEFAULT_SPECIAL_TOKENS).unwrap())
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferrochat-tok-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// GPT-2's original BPE loop, the reference for the heap-based one: find the pair of
/// lowest rank, merge all its occurrences left to right, repeat.
fn reference_bpe(tok: &Tokenizer, word: &[u8]) -> Vec<u32> {
    // ASCII only: printable ASCII bytes are spelled as themselves, space as 'Ġ'.
    let byte_token = |b: u8| {
        if b == b' ' {
            "Ġ".to_string()
        } else {
            (b as char).to_string()
        }
    };
    let mut ids: Vec<u32> = word
        .iter()
        .map(|&b| tok.token_to_id(&byte_token(b)).unwrap())
        .collect();
    let rank = |a: u32, b: u32| tok.merges().iter().position(|&m| m == (a, b));
    loop {
        let best = (0..ids.len().saturating_sub(1))
            .filter_map(|i| rank(ids[i], ids[i + 1]).map(|r| (r, i)))
            .min();
        let Some((r, _)) = best else { return ids };
        let (a, b) = tok.merges()[r];
        let merged_text = format!(
            "{}{}",
            tok.id_to_token(a).unwrap(),
            tok.id_to_token(b).unwrap()
        );
        let merged = tok.token_to_id(&merged_text).unwrap();
        let mut out = Vec::new();
        let mut i = 0;
        while i < ids.len() {
            if i + 1 < ids.len() && (ids[i], ids[i + 1]) == (a, b) {
                out.push(merged);
                i += 2;
            } else {
                out.push(ids[i]);
                i += 1;
            }
        }
        ids = out;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_strings_round_trip(s in any::<String>()) {
        let tok = trained();
        let ids = tok.encode(&s);
        prop_assert_eq!(tok.decode_bytes(&ids).unwrap(), s.as_bytes());
        prop_assert_eq!(tok.decode(&ids).unwrap(), s.clone());
        prop_assert_eq!(tok.encode(&tok.decode(&ids).unwrap()), ids);
    }

    #[test]
    fn corpus_like_strings_round_trip(s in "[a-zA-Z0-9 .,'\\n\\t éü日本🙂<|>]{0,200}") {
        let tok = trained();
        let ids = tok.encode(&s);
        prop_assert_eq!(tok.decode_bytes(&ids).unwrap(), s.as_bytes());
    }

    #[test]
    fn bpe_matches_gpt2_reference_loop(word in "[a-zA-Z]{1,40}|(th|e|a|s| ){1,20}") {
        // One pre-token of letters (or a GPT-2 piece) goes through BPE as a whole.
        let tok = trained();
        let ids = tok.encode_ordinary(&word);
        let expected: Vec<u32> = tok_pieces(&word)
            .iter()
            .flat_map(|piece| reference_bpe(tok, piece.as_bytes()))
            .collect();
        prop_assert_eq!(ids, expected);
    }
}

/// The pieces of GPT-2's regex, straight from fancy-regex (the reference split).
fn tok_pieces(text: &str) -> Vec<String> {
    static RE: OnceLock<fancy_regex::Regex> = OnceLock::new();
    let re = RE.get_or_init(|| fancy_regex::Regex::new(model::tokenizer::GPT2_PATTERN).unwrap());
    re.find_iter(text)
        .map(|m| m.unwrap().as_str().to_string())
        .collect()
}

#[test]
fn training_is_deterministic() {
    let text = corpus();
    let a = Tokenizer::train(&text, 500, &DEFAULT_SPECIAL_TOKENS).unwrap();
    let b = Tokenizer::train(&text, 500, &DEFAULT_SPECIAL_TOKENS).unwrap();
    assert_eq!(a.merges(), b.merges());
    assert_eq!(a.vocab_size(), 500);
    let (da, db) = (temp_dir("det-a"), temp_dir("det-b"));
    a.save(&da).unwrap();
    b.save(&db).unwrap();
    for file in ["vocab.json", "merges.txt"] {
        assert_eq!(
            std::fs::read(da.join(file)).unwrap(),
            std::fs::read(db.join(file)).unwrap()
        );
    }
    std::fs::remove_dir_all(da).unwrap();
    std::fs::remove_dir_all(db).unwrap();
}

#[test]
fn frequent_words_become_single_tokens() {
    let tok = trained();
    // " the" appears hundreds of times in the corpus.
    assert_eq!(tok.encode(" the").len(), 1);
    assert_eq!(tok.id_to_token(tok.encode(" the")[0]), Some("Ġthe"));
    // Merges only ever shorten: a word never takes more tokens than bytes.
    let ids = tok.encode("The quick brown fox");
    assert!(ids.len() < "The quick brown fox".len() / 2);
}

#[test]
fn special_tokens_encode_to_single_ids() {
    let tok = trained();
    let text = format!("{USER}Hi there{END_OF_TURN}{ASSISTANT}Hello!{END_OF_TURN}{END_OF_TEXT}");
    let ids = tok.encode(&text);
    let id = |s: &str| tok.token_to_id(s).unwrap();
    assert_eq!(ids[0], id(USER));
    assert_eq!(ids.last(), Some(&id(END_OF_TEXT)));
    assert_eq!(ids.iter().filter(|&&i| i == id(END_OF_TURN)).count(), 2);
    assert_eq!(tok.decode(&ids).unwrap(), text);
    // The corpus has <|endoftext|> after every document, but training cuts it out first:
    // no learned token contains its pieces.
    for id in 256..tok.vocab_size() - DEFAULT_SPECIAL_TOKENS.len() {
        let token = tok.id_to_token(id as u32).unwrap();
        assert!(
            !token.contains("endoftext") && !token.contains("|>"),
            "{token}"
        );
    }
    // Specials sit after the merges, at the top of the vocabulary.
    assert_eq!(
        id(END_OF_TEXT) as usize,
        tok.vocab_size() - DEFAULT_SPECIAL_TOKENS.len()
    );
    // As plain text the same string is spelled out and contains no special id.
    let plain = tok.encode_ordinary(&text);
    assert!(plain
        .iter()
        .all(|&i| (i as usize) < tok.vocab_size() - DEFAULT_SPECIAL_TOKENS.len()));
    assert_eq!(tok.decode(&plain).unwrap(), text);
}

#[test]
fn merges_never_produce_a_special_token() {
    // "Ġab" is how vocab.json spells the frequent word " ab". Made a special token, it
    // must not also be learned as a merge (vocab.json could not hold both).
    let tok = Tokenizer::train(&" ab".repeat(200), 300, &["Ġab"]).unwrap();
    let special = tok.token_to_id("Ġab").unwrap();
    assert_eq!(special as usize, tok.vocab_size() - 1);
    assert!(!tok.merges().is_empty());
    for &(a, b) in tok.merges() {
        let text = format!(
            "{}{}",
            tok.id_to_token(a).unwrap(),
            tok.id_to_token(b).unwrap()
        );
        assert_ne!(text, "Ġab");
    }
    assert_eq!(tok.encode("Ġab"), [special]);
    assert_eq!(tok.encode(" ab").len(), 2);
}

#[test]
fn long_whitespace_and_words_encode_fast() {
    let tok = trained();
    let spaces = " ".repeat(200_000);
    let start = std::time::Instant::now();
    let ids = tok.encode(&spaces);
    let word = "a".repeat(200_000);
    let ids2 = tok.encode(&word);
    assert!(
        start.elapsed().as_secs_f64() < 2.0,
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(tok.decode_bytes(&ids).unwrap(), spaces.as_bytes());
    assert_eq!(tok.decode_bytes(&ids2).unwrap(), word.as_bytes());
}

#[test]
fn save_load_round_trip() {
    let tok = trained();
    let dir = temp_dir("roundtrip");
    tok.save(&dir).unwrap();
    let loaded = Tokenizer::load(&dir).unwrap();
    assert_eq!(loaded.vocab_size(), tok.vocab_size());
    assert_eq!(loaded.merges(), tok.merges());
    assert_eq!(loaded.special_tokens(), tok.special_tokens());
    let text = corpus();
    assert_eq!(loaded.encode(&text), tok.encode(&text));
    let merges = std::fs::read_to_string(dir.join("merges.txt")).unwrap();
    assert_eq!(merges.lines().next(), Some("#version: 0.2"));
    assert_eq!(merges.lines().count(), tok.merges().len() + 1);
    // No temporary files are left behind by the atomic writes.
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(!name.starts_with('.'), "leftover {name}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// Saves the trained tokenizer, lets `corrupt` damage a file, and returns the load error.
fn load_error(name: &str, corrupt: impl FnOnce(&Path)) -> String {
    let dir = temp_dir(name);
    trained().save(&dir).unwrap();
    corrupt(&dir);
    let err = Tokenizer::load(&dir).expect_err("load should fail");
    std::fs::remove_dir_all(&dir).unwrap();
    err.to_string()
}

fn edit(path: &Path, f: impl FnOnce(String) -> String) {
    let text = std::fs::read_to_string(path).unwrap();
    std::fs::write(path, f(text)).unwrap();
}

#[test]
fn missing_file_is_an_error_naming_it() {
    let msg = load_error("missing", |d| {
        std::fs::remove_file(d.join("merges.txt")).unwrap()
    });
    assert!(msg.contains("merges.txt"), "{msg}");
    let msg = load_error("missing-vocab", |d| {
        std::fs::remove_file(d.join("vocab.json")).unwrap()
    });
    assert!(msg.contains("vocab.json"), "{msg}");
}

#[test]
fn malformed_merges_line_is_an_error_naming_the_line() {
    let msg = load_error("bad-merge", |d| {
        edit(&d.join("merges.txt"), |t| {
            t.replacen('\n', "\nonlyonetoken\n", 2)
        })
    });
    assert!(
        msg.contains("merges.txt") && msg.contains("line 2"),
        "{msg}"
    );
    let msg = load_error("unknown-merge", |d| {
        edit(&d.join("merges.txt"), |t| format!("{t}Ġzz qq\n"))
    });
    assert!(
        msg.contains("merges.txt") && msg.contains("\"Ġzz\""),
        "{msg}"
    );
}

#[test]
fn bad_json_is_an_error_naming_the_file() {
    let msg = load_error("bad-json", |d| {
        edit(&d.join("vocab.json"), |t| t.replacen(": 5,", ": ,", 1))
    });
    assert!(msg.contains("vocab.json") && msg.contains("line"), "{msg}");
    let msg = load_error("bad-added", |d| {
        std::fs::write(d.join("added_tokens.json"), "[1,").unwrap()
    });
    assert!(msg.contains("added_tokens.json"), "{msg}");
}

#[test]
fn bad_vocab_entries_are_errors_naming_the_entry() {
    // An id past the end leaves a gap.
    let msg = load_error("gap", |d| {
        edit(&d.join("vocab.json"), |t| {
            t.replacen("\"!\": 0", "\"!\": 9999", 1)
        })
    });
    assert!(
        msg.contains("vocab.json") && msg.contains("entry \"!\""),
        "{msg}"
    );
    // A token with a character that is not a byte-level character.
    let msg = load_error("nonbyte", |d| {
        edit(&d.join("vocab.json"), |t| {
            t.replacen("\"Ġthe\"", "\"Ġthe€\"", 1)
        })
    });
    assert!(msg.contains("entry \"Ġthe€\""), "{msg}");
}

#[test]
fn decode_rejects_out_of_range_ids() {
    let tok = trained();
    let bad = tok.vocab_size() as u32;
    let err = tok.decode(&[1, bad]).unwrap_err();
    assert!(matches!(err, TokenizerError::IdOutOfRange { id, .. } if id == bad));
    assert!(err.to_string().contains(&bad.to_string()));
    assert!(tok.decode_bytes(&[u32::MAX]).is_err());
}

#[test]
fn decode_replaces_cut_utf8_like_hugging_face() {
    let tok = trained();
    // 日 is E6 97 A5; byte E6 alone is the token 'æ' and is not valid UTF-8 by itself.
    let first_byte = tok.token_to_id("æ").unwrap();
    assert_eq!(tok.decode_bytes(&[first_byte]).unwrap(), [0xE6]);
    assert_eq!(tok.decode(&[first_byte]).unwrap(), "\u{FFFD}");
}
