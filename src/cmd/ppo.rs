//! `ferrochat ppo`: optimise a policy against a reward model with PPO and a KL penalty to
//! the starting (SFT) policy — InstructGPT eq. 2 — on the world's prompts or your own.

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use model::train::TokenData;
use rlhf::pipeline::{run_ppo, Event, PipelineConfig, PpoData};
use rlhf::ppo::KlController;
use rlhf::reward::RewardModel;
use rlhf::world::{Split, World};

use crate::cmd::sample::load_model_and_tokenizer;

#[derive(clap::Args)]
pub struct Args {
    /// The starting policy (SFT); also the KL reference.
    #[arg(long)]
    pub model: PathBuf,
    /// The reward model folder (from `ferrochat rm`).
    #[arg(long)]
    pub rm: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
    /// Prompts, one per line; default: the task world's train prompts (whose held-out prompts
    /// are then judged by the labeler as PPO goes).
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    #[arg(long, default_value_t = 40)]
    pub iterations: usize,
    /// KL coefficient β (InstructGPT: 0.02).
    #[arg(long, default_value_t = 0.02)]
    pub beta: f64,
    /// Adapt β towards this KL per answer (Ziegler et al.) instead of keeping it fixed.
    #[arg(long)]
    pub target_kl: Option<f64>,
    /// PPO-ptx coefficient γ on the pretraining log-likelihood (0 = plain PPO).
    #[arg(long, default_value_t = 0.0)]
    pub ptx_coef: f64,
    /// Pretraining text for PPO-ptx (default: the task world's corpus, as the demo pipeline
    /// generates it).
    #[arg(long)]
    pub ptx_data: Option<PathBuf>,
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// Policy learning rate (the value model's is 3× it).
    #[arg(long, default_value_t = 3e-5)]
    pub lr: f64,
    /// Prompts per iteration (each answered 4 times).
    #[arg(long, default_value_t = 16)]
    pub batch_prompts: usize,
    #[arg(long, default_value_t = 0)]
    pub world_seed: u64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn run(args: Args) -> Result<()> {
    let (sft, tok) = load_model_and_tokenizer(&args.model)?;
    let rm = RewardModel::load(&args.rm).map_err(|e| anyhow!("{e}"))?;
    let mut config = PipelineConfig::demo();
    config.seed = args.seed;
    config.ppo_iterations = args.iterations;
    config.ppo.kl = match args.target_kl {
        Some(target) => KlController::adaptive(args.beta, target, 10_000.0),
        None => KlController::fixed(args.beta),
    };
    config.ppo.ptx_coef = args.ptx_coef;
    config.ppo.temperature = args.temperature;
    config.ppo.policy_lr = args.lr;
    config.ppo.value_lr = 3.0 * args.lr;
    config.ppo_prompts = args.batch_prompts;
    let world = World::new(args.world_seed);
    let (prompts, heldout) = match &args.prompts {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| anyhow!("{}: {e}", path.display()))?;
            let prompts: Vec<String> = text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_string)
                .collect();
            if prompts.is_empty() {
                return Err(anyhow!("{}: no prompts", path.display()));
            }
            (prompts, vec![])
        }
        None => (
            world
                .prompts(Split::Train)
                .iter()
                .map(|r| r.prompt.clone())
                .collect(),
            world.prompts(Split::Heldout).to_vec(),
        ),
    };
    let ptx = if args.ptx_coef > 0.0 {
        let text = match &args.ptx_data {
            Some(path) => {
                std::fs::read_to_string(path).map_err(|e| anyhow!("{}: {e}", path.display()))?
            }
            None => rlhf::corpus::corpus(args.world_seed, config.corpus_bytes),
        };
        Some(TokenData {
            train: tok.encode(&text),
            val: Vec::new(),
        })
    } else {
        None
    };
    let data = PpoData {
        sft: &sft,
        rm: &rm,
        tok: &tok,
        prompts: &prompts,
        heldout: &heldout,
        ptx: ptx.as_ref(),
    };
    let (_, stats) = run_ppo(&config, &config.ppo, &data, &args.out, &mut |e| match e {
        Event::Note(line) => eprintln!("{line}"),
        Event::Progress { done, total, msg } => eprintln!("iteration {done}/{total}: {msg}"),
        Event::Stage(_) => {}
    })
    .map_err(|e| anyhow!("{e}"))?;
    if let Some(last) = stats.last() {
        println!(
            "{} iterations: RM score {:.3}, KL {:.3}, clip fraction {:.3}; policy saved in {}",
            stats.len(),
            last.score,
            last.kl,
            last.clip_frac,
            args.out.display()
        );
    }
    Ok(())
}
