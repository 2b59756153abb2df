//! `ferrochat eval`: the mean next-token cross-entropy of a checkpoint on a file of token ids.
//!
//! The token file holds one sequence per line as whitespace-separated ids; blank lines are
//! skipped. Each line of n tokens contributes n − 1 predictions (inputs ids[..n-1], targets
//! ids[1..]); the loss is the mean over every prediction of every line.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use engine::ops;
use model::{checkpoint, Gpt};

#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint folder (config.json + model.safetensors).
    #[arg(long)]
    pub model: PathBuf,
    /// Token file: one sequence per line, whitespace-separated token ids.
    #[arg(long)]
    pub tokens: PathBuf,
}

/// Token positions per forward pass when evaluating (bounds the logits' memory).
const TOKENS_PER_CHUNK: usize = 8192;

/// Prints `loss <value>` for the checkpoint and token file of `args`.
pub fn run(args: Args) -> Result<()> {
    let model = load_model(&args.model)?;
    let lines = read_token_lines(&args.tokens, &model)?;
    let loss = mean_loss(&model, &lines)?;
    println!("loss {loss}");
    Ok(())
}

/// Loads a checkpoint; the error is the model crate's one line (file and tensor), without
/// repeating its cause.
pub fn load_model(dir: &Path) -> Result<Gpt> {
    checkpoint::load(dir).map_err(|e| anyhow!("{e}"))
}

/// Mean next-token loss over every prediction of every line, in chunks of lines, without
/// building a graph. Chunk means are weighted by their number of predictions.
fn mean_loss(model: &Gpt, lines: &[Vec<usize>]) -> Result<f64> {
    let longest = lines.iter().map(Vec::len).max().unwrap_or(1);
    let per_chunk = (TOKENS_PER_CHUNK / longest).max(1);
    let (mut sum, mut count) = (0.0, 0usize);
    for chunk in lines.chunks(per_chunk) {
        let b = Batch::new(chunk);
        let loss = engine::no_grad(|| model.loss(&b.ids, &b.targets, b.batch, b.seq, None))?;
        sum += loss.item()? * b.predictions as f64;
        count += b.predictions;
    }
    Ok(sum / count as f64)
}

/// Lines of different lengths as one `[batch, seq]` batch: each line padded with token 0 to
/// the longest, padded positions and each line's last position targeted at
/// [`ops::IGNORE_INDEX`]. Causal attention keeps padding from changing the real positions.
pub struct Batch {
    /// Token ids, row-major `[batch, seq]`.
    pub ids: Vec<usize>,
    /// The next token of each position, or [`ops::IGNORE_INDEX`].
    pub targets: Vec<i64>,
    /// Number of lines.
    pub batch: usize,
    /// Length of the longest line.
    pub seq: usize,
    /// Number of counted (non-ignored) targets.
    pub predictions: usize,
}

impl Batch {
    /// The padded batch of `lines` (each at least 2 tokens).
    pub fn new(lines: &[Vec<usize>]) -> Batch {
        let seq = lines.iter().map(Vec::len).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(lines.len() * seq);
        let mut targets = Vec::with_capacity(lines.len() * seq);
        for line in lines {
            for t in 0..seq {
                ids.push(line.get(t).copied().unwrap_or(0));
                targets.push(line.get(t + 1).map_or(ops::IGNORE_INDEX, |&id| id as i64));
            }
        }
        Batch {
            ids,
            targets,
            batch: lines.len(),
            seq,
            predictions: lines.iter().map(|l| l.len() - 1).sum(),
        }
    }
}

/// Reads a token file for `model`: every id inside the vocabulary, every line between 2
/// tokens and the context length, at least one line. Errors name the file and line.
pub fn read_token_lines(path: &Path, model: &Gpt) -> Result<Vec<Vec<usize>>> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    let mut lines = vec![];
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let ids =
            parse_line(line, model).with_context(|| format!("{}:{}", path.display(), i + 1))?;
        lines.push(ids);
    }
    if lines.is_empty() {
        bail!("{}: no token sequences (the file is empty)", path.display());
    }
    Ok(lines)
}

/// One line's token ids, checked against the model's vocabulary and context.
fn parse_line(line: &str, model: &Gpt) -> Result<Vec<usize>> {
    let (vocab, context) = (model.config.vocab_size, model.config.n_positions);
    let ids = line
        .split_whitespace()
        .map(|tok| {
            let id: usize = tok
                .parse()
                .ok()
                .with_context(|| format!("{tok:?} is not a token id"))?;
            if id >= vocab {
                bail!("token id {id} is out of range for the vocabulary of {vocab}");
            }
            Ok(id)
        })
        .collect::<Result<Vec<_>>>()?;
    if ids.len() < 2 {
        bail!("a line needs at least 2 tokens, this one has {}", ids.len());
    }
    if ids.len() > context {
        bail!(
            "{} tokens are more than the model's context of {context}",
            ids.len()
        );
    }
    Ok(ids)
}
