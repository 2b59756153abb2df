//! Compatibility with Hugging Face, against fixtures made by
//! `tests/reference/make_tokenizer_fixtures.py` (see the README beside them).

use std::path::PathBuf;

use model::tokenizer::{Tokenizer, DEFAULT_SPECIAL_TOKENS, END_OF_TEXT};
use serde::Deserialize;

const VOCAB_SIZE: usize = 1000;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/reference/fixtures/tokenizer")
}

#[derive(Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
}

fn cases(file: &str) -> Vec<Case> {
    let text = std::fs::read_to_string(fixtures().join(file)).unwrap();
    let cases: Vec<Case> = serde_json::from_str(&text).unwrap();
    assert!(cases.len() > 20, "{file} has only {} cases", cases.len());
    cases
}

fn corpus() -> String {
    String::from_utf8(std::fs::read(fixtures().join("corpus.txt")).unwrap()).unwrap()
}

/// Encodes every case and reports all mismatches at once.
fn check_cases(tok: &Tokenizer, cases: &[Case]) {
    let mut failures = Vec::new();
    for case in cases {
        let ids = tok.encode(&case.text);
        if ids != case.ids {
            failures.push(format!(
                "{:?}\n  ours: {:?}\n  HF:   {:?}",
                case.text, ids, case.ids
            ));
        }
        assert_eq!(tok.decode_bytes(&case.ids).unwrap(), case.text.as_bytes());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn gpt2_tokenizer_fast_encodes_a_ferrochat_vocab_as_ferrochat_does() {
    let tok = Tokenizer::load(fixtures().join("ferrochat")).unwrap();
    check_cases(&tok, &cases("ferrochat_ids.json"));
}

#[test]
fn ferrochat_encodes_an_hf_trained_vocab_as_hf_does() {
    let tok = Tokenizer::load(fixtures().join("hf")).unwrap();
    // HF's trainer puts its special token first; no added_tokens.json, found by name.
    assert_eq!(tok.token_to_id(END_OF_TEXT), Some(0));
    check_cases(&tok, &cases("hf_ids.json"));
}

#[test]
fn training_reproduces_the_committed_ferrochat_vocab() {
    let tok = Tokenizer::train(&corpus(), VOCAB_SIZE, &DEFAULT_SPECIAL_TOKENS).unwrap();
    let dir = std::env::temp_dir().join(format!("ferrochat-tok-hf-{}", std::process::id()));
    tok.save(&dir).unwrap();
    for file in ["vocab.json", "merges.txt"] {
        let ours = std::fs::read_to_string(dir.join(file)).unwrap();
        let committed = std::fs::read_to_string(fixtures().join("ferrochat").join(file)).unwrap();
        assert!(ours == committed, "{file} differs from the fixture");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn training_learns_the_same_merges_as_hf_bpe_trainer() {
    // Same corpus, same vocab size and special-token count: HF places the special token
    // at id 0 and ferrochat at the end, but the merges must agree one for one.
    let tok = Tokenizer::train(&corpus(), VOCAB_SIZE, &[END_OF_TEXT]).unwrap();
    let ours: Vec<String> = tok
        .merges()
        .iter()
        .map(|&(a, b)| {
            format!(
                "{} {}",
                tok.id_to_token(a).unwrap(),
                tok.id_to_token(b).unwrap()
            )
        })
        .collect();
    let hf_text = std::fs::read_to_string(fixtures().join("hf/merges.txt")).unwrap();
    let hf: Vec<&str> = hf_text
        .lines()
        .filter(|l| !l.starts_with("#version"))
        .collect();
    assert_eq!(ours.len(), hf.len());
    if let Some(i) = (0..hf.len()).find(|&i| ours[i] != hf[i]) {
        panic!("merge {i} differs: ours {:?}, HF {:?}", ours[i], hf[i]);
    }
}
