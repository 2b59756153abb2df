//! `ferrochat pipeline`: the whole InstructGPT recipe on the embedded task world — pretrain,
//! SFT, collect rankings, reward model, PPO (and β = 0, and DPO for comparison) — into one
//! run folder, with the numbers that show each step worked.

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rlhf::pipeline::{run as run_pipeline, Event, PipelineConfig, PpoReward};

#[derive(clap::Args)]
pub struct Args {
    /// `demo` (0.9M parameters, minutes on a laptop) or `tiny` (every stage in miniature,
    /// for tests).
    #[arg(long, default_value = "demo")]
    pub preset: String,
    /// The run folder.
    #[arg(long, default_value = "runs/demo")]
    pub out: PathBuf,
    #[arg(long)]
    pub seed: Option<u64>,
    #[arg(long)]
    pub world_seed: Option<u64>,
    /// Skip the β = 0 run (it doubles PPO's time).
    #[arg(long)]
    pub no_beta_zero: bool,
    /// Skip DPO, the comparison baseline (about 40 s of the demo).
    #[arg(long)]
    pub no_dpo: bool,
    /// Reuse the pretrained model of an earlier run (its `pretrain` folder) instead of
    /// pretraining again: the RLHF stages alone, in a few minutes.
    #[arg(long)]
    pub pretrained: Option<PathBuf>,
    /// What PPO maximises: `model` (the reward model, the recipe) or `gold` (the labeler's own
    /// rubric score: what PPO could reach with a perfect reward model, a diagnostic).
    #[arg(long, default_value = "model")]
    pub ppo_reward: String,
    /// SFT on the demonstrations of the first N train prompts only, or `all` of them (the
    /// demo preset: 40); rankings and PPO still use every train prompt.
    #[arg(long, value_parser = parse_demonstrations)]
    pub demonstrations: Option<usize>,
    /// PPO's KL coefficient β (the demo preset: 0.3; InstructGPT: 0.02).
    #[arg(long)]
    pub beta: Option<f64>,
}

/// `all` → 0 (`PipelineConfig::demonstrations`' "every one"), or a count of at least 1.
fn parse_demonstrations(text: &str) -> Result<usize, String> {
    if text == "all" {
        return Ok(0);
    }
    match text.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "expected `all` or a number of at least 1, got {text:?}"
        )),
    }
}

pub fn run(args: Args) -> Result<()> {
    let mut config = match args.preset.as_str() {
        "demo" => PipelineConfig::demo(),
        "tiny" => PipelineConfig::tiny(),
        other => return Err(anyhow!("unknown preset {other:?} (expected demo or tiny)")),
    };
    if let Some(s) = args.seed {
        config.seed = s;
    }
    if let Some(s) = args.world_seed {
        config.world_seed = s;
    }
    if args.no_beta_zero {
        config.beta_zero = false;
    }
    if args.no_dpo {
        config.dpo = None;
    }
    config.pretrained = args.pretrained;
    if let Some(n) = args.demonstrations {
        config.demonstrations = n;
    }
    if let Some(beta) = args.beta {
        if !(beta.is_finite() && beta >= 0.0) {
            return Err(anyhow!("--beta must be a number ≥ 0, got {beta}"));
        }
        config.ppo.kl = rlhf::ppo::KlController::fixed(beta);
    }
    config.ppo_reward = match args.ppo_reward.as_str() {
        "model" => PpoReward::Model,
        "gold" => PpoReward::Gold,
        other => {
            return Err(anyhow!(
                "unknown --ppo-reward {other:?} (expected model or gold)"
            ))
        }
    };
    let bar = ProgressBar::new_spinner();
    let style = |stage: &str| {
        ProgressStyle::with_template(&format!(
            "{stage:>12} {{bar:30}} {{pos}}/{{len}} {{msg}} [{{elapsed}}]"
        ))
        .expect("valid template")
    };
    let mut stage = String::new();
    let summary = run_pipeline(&config, &args.out, |event| match event {
        Event::Stage(name) => {
            stage = name.to_string();
            bar.set_style(style(name));
            bar.set_position(0);
            bar.set_length(0);
            bar.set_message("");
        }
        Event::Note(line) => crate::cmd::say(&bar, line),
        Event::Progress { done, total, msg } => {
            if total > 0 {
                bar.set_length(total);
            } else {
                bar.set_length(done.max(1));
            }
            bar.set_position(done);
            bar.set_message(msg);
        }
    })
    .map_err(|e| anyhow!("{stage}: {e}"))?;
    bar.finish_and_clear();
    println!(
        "{}",
        serde_json::to_string_pretty(&summary).expect("plain data serialises")
    );
    println!(
        "run saved in {} ({:.0} s)",
        args.out.display(),
        summary.seconds
    );
    Ok(())
}
