//! The chat format, defined in this one place.
//!
//! A conversation turn is written
//!
//! ```text
//! <|user|>What is 3 plus 4?<|assistant|>3 plus 4 is 7.<|end|>
//! ```
//!
//! with no spaces or newlines around the special tokens: the prompt is everything between
//! [`USER`] and [`ASSISTANT`], the answer everything between [`ASSISTANT`] and [`END`].
//! Pretraining documents are separated by [`ENDOFTEXT`]. All four are special tokens of the
//! tokenizer (one id each, never split by BPE).

use serde::{Deserialize, Serialize};

/// Opens a user turn.
pub const USER: &str = "<|user|>";
/// Opens the assistant's turn; a prompt given to the model ends right after it.
pub const ASSISTANT: &str = "<|assistant|>";
/// Ends the assistant's turn. An answer that stops properly ends with this token.
pub const END: &str = "<|end|>";
/// Separates pretraining documents.
pub const ENDOFTEXT: &str = "<|endoftext|>";
/// The special tokens of the tokenizer, in a fixed order.
pub const SPECIAL_TOKENS: [&str; 4] = [ENDOFTEXT, USER, ASSISTANT, END];

/// The text given to the model to answer `prompt`: `<|user|>{prompt}<|assistant|>`.
pub fn chat_prompt(prompt: &str) -> String {
    format!("{USER}{prompt}{ASSISTANT}")
}

/// A whole turn: `<|user|>{prompt}<|assistant|>{answer}<|end|>`.
pub fn chat_example(prompt: &str, answer: &str) -> String {
    format!("{}{answer}{END}", chat_prompt(prompt))
}

/// An assistant's answer: its text (without the closing token) and whether it ended with
/// [`END`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// The answer text, without the closing special token.
    pub text: String,
    /// True when the answer was closed by [`END`]; false when it ran on (hit the length
    /// limit, or started another turn or document instead).
    pub ended: bool,
}

impl Answer {
    /// An answer that ended properly with [`END`].
    pub fn ended(text: impl Into<String>) -> Answer {
        Answer {
            text: text.into(),
            ended: true,
        }
    }

    /// An answer that never emitted [`END`].
    pub fn unended(text: impl Into<String>) -> Answer {
        Answer {
            text: text.into(),
            ended: false,
        }
    }

    /// The answer as a completion of [`chat_prompt`]: the text, then [`END`] if it ended.
    /// [`parse_completion`] reads it back.
    pub fn completion(&self) -> String {
        if self.ended {
            format!("{}{END}", self.text)
        } else {
            self.text.clone()
        }
    }
}

/// Reads the model's continuation of [`chat_prompt`]: the answer is the text up to the first
/// special token; it `ended` only if that token is [`END`]. A continuation that reaches
/// `<|user|>`, `<|assistant|>` or `<|endoftext|>` first, or no special token at all, did not
/// end properly.
pub fn parse_completion(completion: &str) -> Answer {
    let first = SPECIAL_TOKENS
        .iter()
        .filter_map(|t| completion.find(t).map(|i| (i, *t)))
        .min();
    match first {
        Some((i, tok)) => Answer {
            text: completion[..i].to_string(),
            ended: tok == END,
        },
        None => Answer::unended(completion),
    }
}
