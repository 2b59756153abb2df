//! `ferrochat chat`: ask a model questions in the terminal, one line at a time.
//!
//! Single-turn: each question is answered on its own, wrapped with [`chat_prompt`]; earlier
//! turns are not fed back (the models are small and so is their context). Reads stdin, so it
//! also answers questions piped in: `echo "What is 3 plus 4?" | ferrochat chat --model DIR`.

use std::io::{self, BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};
use rlhf::chat::{chat_prompt, Answer};
use rlhf::policy::sample_answers;

use crate::cmd::sample::load_model_and_tokenizer;

/// The options of `ferrochat chat`.
#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint folder (config.json, model.safetensors and the tokenizer files).
    #[arg(long)]
    pub model: PathBuf,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f64,
    /// The longest answer, in tokens.
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// Question i is sampled with seed + i.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// An answer as shown to the person: its text (control characters, which an undertrained
/// model draws, shown as `�`), and a note when it never emitted `<|end|>`.
pub fn show(a: &Answer) -> String {
    let text: String = a
        .text
        .trim()
        .chars()
        .map(|c| match c {
            '\n' | '\t' => c,
            c if c.is_control() => char::REPLACEMENT_CHARACTER,
            c => c,
        })
        .collect();
    let text = if text.is_empty() { "(empty)" } else { &text };
    if a.ended {
        text.to_string()
    } else {
        format!("{text} (no end token)")
    }
}

/// Reads one trimmed line, printing `prompt` first when stdin is a terminal; `None` at EOF.
pub fn ask(prompt: &str) -> Result<Option<String>> {
    if io::stdin().is_terminal() {
        print!("{prompt}");
        io::stdout().flush()?;
    }
    let mut line = String::new();
    if io::stdin().lock().read_line(&mut line)? == 0 {
        return Ok(None);
    }
    Ok(Some(line.trim().to_string()))
}

/// Answers each line of stdin until end of input, an empty line or `/quit`.
pub fn run(args: Args) -> Result<()> {
    if !(args.temperature.is_finite() && args.temperature >= 0.0) {
        bail!("--temperature {} must be finite and >= 0", args.temperature);
    }
    let (model, tok) = load_model_and_tokenizer(&args.model)?;
    if io::stdin().is_terminal() {
        println!("Ask a question (each is answered on its own). An empty line or /quit ends.");
    }
    let context = model.config.n_positions;
    for turn in 0u64.. {
        let question = match ask("> ")? {
            Some(q) if !q.is_empty() && q != "/quit" => q,
            _ => break,
        };
        let len = tok.encode(&chat_prompt(&question)).len();
        if len >= context {
            println!("(too long: {len} tokens, the model's context is {context})");
            continue;
        }
        let seed = args.seed.wrapping_add(turn);
        let answers = sample_answers(
            &model,
            &tok,
            &question,
            1,
            args.temperature,
            args.max_new_tokens,
            seed,
        )
        .map_err(|e| anyhow!("{e}"))?;
        println!("{}", show(&answers[0].answer));
    }
    Ok(())
}
