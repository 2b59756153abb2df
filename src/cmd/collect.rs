//! `ferrochat collect`: sample K answers per prompt from a policy and have the simulated
//! labeler rank them (InstructGPT's comparison data), appended to a JSONL file of rankings.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};
use engine::Rng;
use rlhf::data::JsonlWriter;
use rlhf::policy::sample_answers;
use rlhf::world::{Split, World};
use rlhf::{Labeler, Ranking};

use crate::cmd::sample::load_model_and_tokenizer;

#[derive(clap::Args)]
pub struct Args {
    /// The policy that answers (usually the SFT model).
    #[arg(long)]
    pub model: PathBuf,
    /// Rankings are appended here (JSONL).
    #[arg(long)]
    pub out: PathBuf,
    /// Answers per prompt, 4 to 9 (InstructGPT).
    #[arg(long, default_value_t = 4)]
    pub k: usize,
    /// How many of the world's prompts to rank.
    #[arg(long, default_value_t = 200)]
    pub prompts: usize,
    /// Rank the held-out prompts instead of the train prompts (for the RM's held-out accuracy).
    #[arg(long)]
    pub heldout: bool,
    #[arg(long, default_value_t = 0)]
    pub world_seed: u64,
    /// Agreement of the simulated labeler with another one, pair by pair (InstructGPT ~0.73;
    /// 1 = noiseless).
    #[arg(long, default_value_t = 0.73)]
    pub agreement: f64,
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    #[arg(long, default_value_t = 48)]
    pub max_new_tokens: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn run(args: Args) -> Result<()> {
    if !(4..=9).contains(&args.k) {
        bail!(
            "--k {} is outside 4..=9 (InstructGPT ranks 4 to 9 answers)",
            args.k
        );
    }
    let labeler = if args.agreement >= 1.0 {
        Labeler::noiseless()
    } else {
        Labeler::new(args.agreement).map_err(|e| anyhow!("--agreement: {e}"))?
    };
    let (model, tok) = load_model_and_tokenizer(&args.model)?;
    let world = World::new(args.world_seed);
    let split = if args.heldout {
        Split::Heldout
    } else {
        Split::Train
    };
    let mut records = world.prompts(split).to_vec();
    let mut rng = Rng::new(args.seed);
    rng.shuffle(&mut records);
    records.truncate(args.prompts);
    let mut writer = JsonlWriter::<Ranking>::append(&args.out).map_err(|e| anyhow!("{e}"))?;
    for r in &records {
        let samples = sample_answers(
            &model,
            &tok,
            &r.prompt,
            args.k,
            args.temperature,
            args.max_new_tokens,
            rng.next_u64(),
        )
        .map_err(|e| anyhow!("{e}"))?;
        let completions = samples.into_iter().map(|s| s.completion).collect();
        writer
            .write(&labeler.ranking(r, completions, &mut rng))
            .map_err(|e| anyhow!("{e}"))?;
    }
    println!(
        "{} rankings of {} answers appended to {}",
        records.len(),
        args.k,
        args.out.display()
    );
    Ok(())
}
