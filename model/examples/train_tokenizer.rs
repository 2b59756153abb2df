//! Trains a tokenizer on a text file and saves it in GPT-2 format.
//!
//! `cargo run --release -p model --example train_tokenizer -- CORPUS VOCAB_SIZE OUT_DIR [SPECIAL...]`
//!
//! Without SPECIAL arguments it uses ferrochat's default special tokens.

use std::process::ExitCode;
use std::time::Instant;

use model::tokenizer::{Tokenizer, DEFAULT_SPECIAL_TOKENS};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [corpus, vocab_size, out_dir, specials @ ..] = args.as_slice() else {
        eprintln!("usage: train_tokenizer CORPUS VOCAB_SIZE OUT_DIR [SPECIAL...]");
        return ExitCode::from(2);
    };
    let specials: Vec<&str> = if specials.is_empty() {
        DEFAULT_SPECIAL_TOKENS.to_vec()
    } else {
        specials.iter().map(String::as_str).collect()
    };
    let Ok(vocab_size) = vocab_size.parse::<usize>() else {
        eprintln!("VOCAB_SIZE must be a number, got {vocab_size:?}");
        return ExitCode::from(2);
    };
    let text = match std::fs::read_to_string(corpus) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{corpus}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let start = Instant::now();
    let result = Tokenizer::train(&text, vocab_size, &specials).and_then(|tok| {
        tok.save(out_dir)?;
        Ok(tok)
    });
    match result {
        Ok(tok) => {
            eprintln!(
                "trained {} tokens ({} merges) on {} bytes in {:.2?}; saved to {out_dir}",
                tok.vocab_size(),
                tok.merges().len(),
                text.len(),
                start.elapsed()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
