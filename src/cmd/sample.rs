//! `ferrochat sample`: continue a prompt with a checkpoint (KV cache, batched samples,
//! temperature, top-k, top-p, stop tokens).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use model::generate::{generate, FinishReason, SamplingConfig};
use model::tokenizer::{Tokenizer, END_OF_TEXT};
use model::{checkpoint, Gpt};

#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint folder (config.json, model.safetensors and the tokenizer files).
    #[arg(long)]
    pub model: PathBuf,
    /// The text to continue (special tokens like <|user|> are single tokens).
    #[arg(long)]
    pub prompt: String,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f64,
    /// Keep only the k most likely tokens (0 = all).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Keep the smallest set of tokens with probability mass ≥ p (1 = all).
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Samples drawn together (one batch, sharing the prompt's cache).
    #[arg(long, default_value_t = 1)]
    pub num_samples: usize,
    /// Stop at this token (each must be a single token, e.g. "<|end|>"); default <|endoftext|>.
    #[arg(long)]
    pub stop: Vec<String>,
}

/// The model and tokenizer of a checkpoint folder; a missing tokenizer is an error naming it.
pub fn load_model_and_tokenizer(dir: &Path) -> Result<(Gpt, Tokenizer)> {
    let model = checkpoint::load(dir).map_err(|e| anyhow!("{e}"))?;
    if !dir.join("vocab.json").exists() {
        bail!(
            "{}: no tokenizer (vocab.json, merges.txt) in the model folder",
            dir.display()
        );
    }
    let tok = Tokenizer::load(dir).map_err(|e| anyhow!("{e}"))?;
    if tok.vocab_size() > model.config.vocab_size {
        bail!(
            "{}: the tokenizer has {} tokens but the model only {}",
            dir.display(),
            tok.vocab_size(),
            model.config.vocab_size
        );
    }
    Ok((model, tok))
}

/// The ids of the stop texts; each must be exactly one token.
pub fn stop_ids(tok: &Tokenizer, stops: &[String]) -> Result<Vec<usize>> {
    stops
        .iter()
        .map(|s| match tok.encode(s).as_slice() {
            [id] => Ok(*id as usize),
            ids => Err(anyhow!("stop text {s:?} is {} tokens, not one", ids.len())),
        })
        .collect()
}

pub fn run(args: Args) -> Result<()> {
    let (model, tok) = load_model_and_tokenizer(&args.model)?;
    let stops = if args.stop.is_empty() {
        tok.token_to_id(END_OF_TEXT)
            .map(|id| vec![id as usize])
            .unwrap_or_default()
    } else {
        stop_ids(&tok, &args.stop)?
    };
    let prompt: Vec<usize> = tok
        .encode(&args.prompt)
        .into_iter()
        .map(|t| t as usize)
        .collect();
    if prompt.len() >= model.config.n_positions {
        bail!(
            "the prompt is {} tokens, but the model's context is {} (room is needed for at least one new token)",
            prompt.len(),
            model.config.n_positions
        );
    }
    let cfg = SamplingConfig {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        max_new_tokens: args.max_new_tokens,
        stop_tokens: stops,
        seed: args.seed,
    };
    let samples = generate(&model, &prompt, args.num_samples, &cfg).map_err(|e| anyhow!("{e}"))?;
    for (i, s) in samples.iter().enumerate() {
        let ids: Vec<u32> = s.tokens.iter().map(|&t| t as u32).collect();
        let text = tok.decode(&ids).map_err(|e| anyhow!("{e}"))?;
        let why = match s.finish {
            FinishReason::Stop => "stop token",
            FinishReason::MaxTokens => "max tokens",
            FinishReason::Context => "context full",
        };
        println!("--- sample {} ({} tokens, {why})", i + 1, s.tokens.len());
        println!("{}{text}", args.prompt);
    }
    Ok(())
}
