//! `ferrochat dpo`: Direct Preference Optimization on rankings or pairs, the comparison
//! baseline to the reward model + PPO.

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use rlhf::data::read_preferences;
use rlhf::dpo::{pairs_of, train_dpo, DpoConfig};

use crate::cmd::sample::load_model_and_tokenizer;

#[derive(clap::Args)]
pub struct Args {
    /// The policy to train; it is also the frozen reference.
    #[arg(long)]
    pub model: PathBuf,
    /// Rankings or pairs, JSONL.
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 0.1)]
    pub beta: f64,
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 5e-5)]
    pub lr: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn run(args: Args) -> Result<()> {
    let (reference, tok) = load_model_and_tokenizer(&args.model)?;
    let pairs = pairs_of(&read_preferences(&args.data).map_err(|e| anyhow!("{e}"))?);
    let config = DpoConfig {
        beta: args.beta,
        epochs: args.epochs,
        batch_size: args.batch_size,
        micro_batch: args.batch_size.min(8),
        lr: args.lr,
        seed: args.seed,
        ..DpoConfig::default()
    };
    let mut policy = reference.clone();
    train_dpo(&mut policy, &reference, &pairs, &tok, &config, |s| {
        eprintln!(
            "step {}: loss {:.4}, margin {:.3}, accuracy {:.2}",
            s.step, s.loss, s.margins, s.accuracies
        )
    })
    .map_err(|e| anyhow!("{e}"))?;
    model::checkpoint::save(&policy, &args.out).map_err(|e| anyhow!("{e}"))?;
    tok.save(&args.out).map_err(|e| anyhow!("{e}"))?;
    println!(
        "DPO on {} pairs; model saved in {}",
        pairs.len(),
        args.out.display()
    );
    Ok(())
}
