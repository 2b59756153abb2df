//! `ferrochat grads`: the loss of `eval`, its logits, and the gradient of that loss for every
//! parameter, written to one safetensors file (f32) for comparison with other frameworks.
//!
//! The file holds `loss` (shape `[]`), `logits` (`[lines, T, vocab]`, T the longest line), and
//! one tensor per parameter under its HF name (`transformer.h.0.attn.c_attn.weight`, ...).
//! When lines differ in length, shorter lines are padded with token 0 at the end: their logits
//! past the line's end are those of the padding and take no part in the loss.

use std::path::PathBuf;

use anyhow::Result;
use engine::{ops, DType, Tensor};
use model::checkpoint;

use super::eval::{load_model, read_token_lines, Batch};

#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint folder (config.json + model.safetensors).
    #[arg(long)]
    pub model: PathBuf,
    /// Token file: one sequence per line, whitespace-separated token ids.
    #[arg(long)]
    pub tokens: PathBuf,
    /// Output safetensors file (written atomically).
    #[arg(long)]
    pub out: PathBuf,
}

/// Computes the loss, logits and gradients for `args` and writes them to `args.out`.
pub fn run(args: Args) -> Result<()> {
    let model = load_model(&args.model)?;
    let lines = read_token_lines(&args.tokens, &model)?;
    let b = Batch::new(&lines);
    let logits = model.forward(&b.ids, b.batch, b.seq, None)?;
    let loss = ops::cross_entropy(&logits, &b.targets, ops::IGNORE_INDEX)?;
    let grads = loss.backward()?;
    let mut out = vec![
        ("loss".to_string(), loss.detach()),
        ("logits".to_string(), logits.detach()),
    ];
    for (name, p) in model.named_params() {
        let g = grads
            .get(p)
            .cloned()
            .unwrap_or_else(|| Tensor::zeros(p.shape(), DType::F32));
        out.push((name, g.to_dtype(DType::F32)));
    }
    checkpoint::save_tensors(&args.out, &out).map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("loss {}", loss.item()?);
    println!(
        "wrote {}: loss, logits {:?}, {} gradients",
        args.out.display(),
        logits.shape(),
        out.len() - 2
    );
    Ok(())
}
