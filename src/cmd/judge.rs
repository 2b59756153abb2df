//! `ferrochat judge`: how a model answers held-out prompts, by the simulated labeler's rubric.

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use rlhf::policy::evaluate_policy;
use rlhf::world::{Split, World};

use crate::cmd::sample::load_model_and_tokenizer;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    pub model: PathBuf,
    /// The task world's seed.
    #[arg(long, default_value_t = 0)]
    pub world_seed: u64,
    /// How many held-out prompts (0 = all).
    #[arg(long, default_value_t = 0)]
    pub prompts: usize,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Answers to each prompt (more answers, a tighter estimate).
    #[arg(long, default_value_t = 1)]
    pub samples: usize,
}

pub fn run(args: Args) -> Result<()> {
    let (model, tok) = load_model_and_tokenizer(&args.model)?;
    let world = World::new(args.world_seed);
    let mut records = world.prompts(Split::Heldout).to_vec();
    if args.prompts > 0 {
        records.truncate(args.prompts);
    }
    let records: Vec<_> = (0..args.samples.max(1))
        .flat_map(|_| records.iter().cloned())
        .collect();
    let (e, answers) = evaluate_policy(&model, &tok, &records, args.temperature, 64, args.seed)
        .map_err(|e| anyhow!("{e}"))?;
    for (r, a) in records.iter().zip(&answers).take(5) {
        println!(
            "{:?} -> {:?}{}",
            r.prompt,
            a.text,
            if a.ended { "" } else { " (no end)" }
        );
    }
    println!(
        "{} answers to held-out prompts: score {:.3}  correct {:.1}%  format {:.1}%  rude {:.1}%  ended {:.1}%  {:.0} chars",
        e.answers,
        e.mean_score,
        100.0 * e.correct,
        100.0 * e.format_ok,
        100.0 * e.rude,
        100.0 * e.ended,
        e.mean_chars
    );
    for k in &e.by_kind {
        println!(
            "  {:<10} {:>3} answers: score {:.3}  correct {:.1}%",
            k.kind,
            k.answers,
            k.mean_score,
            100.0 * k.correct
        );
    }
    Ok(())
}
