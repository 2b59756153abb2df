//! `ferrochat rm`: train a reward model on rankings (InstructGPT eq. 1), normalise it so the
//! demonstrations score 0, and report its held-out pairwise accuracy.

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use engine::Rng;
use rlhf::data::{read_jsonl, read_preferences, Demonstration};
use rlhf::reward::{evaluate, normalize, train_reward_model, RewardConfig, RewardModel};

use crate::cmd::sample::load_model_and_tokenizer;

#[derive(clap::Args)]
pub struct Args {
    /// The model whose trunk the reward model starts from (InstructGPT: the SFT model).
    #[arg(long)]
    pub model: PathBuf,
    /// Rankings or pairs, JSONL.
    #[arg(long)]
    pub data: PathBuf,
    /// Held-out rankings or pairs for the pairwise accuracy.
    #[arg(long)]
    pub heldout: Option<PathBuf>,
    /// Demonstrations: the reward model is shifted so that they score mean 0.
    #[arg(long)]
    pub demos: Option<PathBuf>,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 3e-4)]
    pub lr: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn run(args: Args) -> Result<()> {
    let (model, tok) = load_model_and_tokenizer(&args.model)?;
    let train = read_preferences(&args.data).map_err(|e| anyhow!("{e}"))?;
    let heldout = match &args.heldout {
        Some(p) => read_preferences(p).map_err(|e| anyhow!("{e}"))?,
        None => vec![],
    };
    let config = RewardConfig {
        epochs: args.epochs,
        batch_size: args.batch_size,
        micro_batch: args.batch_size.min(8),
        lr: args.lr,
        seed: args.seed,
        ..RewardConfig::default()
    };
    let mut rm = RewardModel::from_policy(model, &mut Rng::new(args.seed));
    let steps = train_reward_model(&mut rm, &train, &tok, &config, |s| {
        eprintln!(
            "step {}: loss {:.4}, batch accuracy {:.2}",
            s.step, s.loss, s.accuracy
        )
    })
    .map_err(|e| anyhow!("{e}"))?;
    if let Some(p) = &args.demos {
        let demos: Vec<Demonstration> = read_jsonl(p).map_err(|e| anyhow!("{e}"))?;
        normalize(&mut rm, &demos, &tok).map_err(|e| anyhow!("{e}"))?;
    }
    rm.save(&args.out).map_err(|e| anyhow!("{e}"))?;
    tok.save(&args.out).map_err(|e| anyhow!("{e}"))?;
    print!("{} steps on {} rankings", steps.len(), train.len());
    if !heldout.is_empty() {
        let e = evaluate(&rm, &heldout, &tok).map_err(|e| anyhow!("{e}"))?;
        print!(
            "; held-out pairwise accuracy {:.1}% over {} pairs",
            100.0 * e.accuracy,
            e.pairs
        );
    }
    println!("; reward model saved in {}", args.out.display());
    Ok(())
}
