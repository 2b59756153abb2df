//! `ferrochat judge`: how a model answers held-out prompts, by the simulated labeler's rubric,
//! and, with `--against`, how often its answers beat another model's in head-to-heads. The
//! defaults are the `demo` pipeline's evaluation settings and seeds, so
//! `judge --model RUN/ppo --against RUN/sft` reproduces the numbers of RUN's report.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use model::tokenizer::Tokenizer;
use model::Gpt;
use rlhf::chat::Answer;
use rlhf::pipeline::PipelineConfig;
use rlhf::policy::{
    compare, eval_seeds, evaluate_policy, ideal_answers, repeated, score_gain, win_rate, PolicyEval,
};
use rlhf::world::{Split, World};

use crate::cmd::sample::load_model_and_tokenizer;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    pub model: PathBuf,
    /// Judge MODEL's answers against this model's, prompt by prompt: MODEL's win rate and its
    /// labeler score difference, each with a 95% interval, and how often the rubric alone
    /// finds its answer better, tied or worse (e.g. RUN/ppo against RUN/sft).
    #[arg(long)]
    pub against: Option<PathBuf>,
    /// The task world's seed.
    #[arg(long, default_value_t = PipelineConfig::demo().world_seed)]
    pub world_seed: u64,
    /// How many held-out prompts (0 = all).
    #[arg(long, default_value_t = PipelineConfig::demo().eval_prompts)]
    pub prompts: usize,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = PipelineConfig::demo().eval_temperature)]
    pub temperature: f64,
    /// The run's seed (`pipeline --seed`): the sampling and judging seeds derive from it as in
    /// the pipeline's evaluation.
    #[arg(long, default_value_t = PipelineConfig::demo().seed)]
    pub seed: u64,
    /// Answers to each prompt (more answers, a tighter estimate).
    #[arg(long, default_value_t = PipelineConfig::demo().eval_samples)]
    pub samples: usize,
    /// The longest answer, in tokens.
    #[arg(long, default_value_t = PipelineConfig::demo().max_new_tokens)]
    pub max_new_tokens: usize,
}

pub fn run(args: Args) -> Result<()> {
    if !(args.temperature.is_finite() && args.temperature >= 0.0) {
        bail!("--temperature {} must be finite and >= 0", args.temperature);
    }
    let world = World::new(args.world_seed);
    let mut heldout = world.prompts(Split::Heldout).to_vec();
    if args.prompts > 0 {
        heldout.truncate(args.prompts);
    }
    let records = repeated(&heldout, args.samples);
    let (sampling_seed, judging_seed) = eval_seeds(args.seed);
    // Both models load before either answers: a bad --against path fails at once.
    let model = load_model_and_tokenizer(&args.model)?;
    let against = match &args.against {
        Some(dir) => Some((dir, load_model_and_tokenizer(dir)?)),
        None => None,
    };
    let answer = |dir: &Path, (model, tok): &(Gpt, Tokenizer)| {
        evaluate_policy(
            model,
            tok,
            &records,
            args.temperature,
            args.max_new_tokens,
            sampling_seed,
        )
        .map_err(|e| anyhow!("{}: {e}", dir.display()))
    };

    let (e, answers) = answer(&args.model, &model)?;
    for (r, a) in records.iter().zip(&answers).take(5) {
        println!(
            "{:?} -> {:?}{}",
            r.prompt,
            a.text,
            if a.ended { "" } else { " (no end)" }
        );
    }
    print_eval(&args.model, &e);
    let Some((against, against_model)) = against else {
        return Ok(());
    };
    let (e_against, against_answers) = answer(against, &against_model)?;
    print_eval(against, &e_against);

    println!(
        "{} against {}, {} answers ({} held-out prompts × {}):",
        args.model.display(),
        against.display(),
        records.len(),
        heldout.len(),
        args.samples.max(1)
    );
    // Each head-to-head: the noisy labeler's win rate, then what it is made of.
    let head_to_head = |name: &str, answers: &[Answer]| {
        let win = win_rate(&records, answers, &against_answers, judging_seed);
        let by_rubric = compare(&records, answers, &against_answers);
        println!("  {name:<15} win rate {}", win.percent());
        println!(
            "  {:<15} by the rubric {} (a noiseless labeler's win rate: {:.1}%)",
            "",
            by_rubric.percent(),
            100.0 * by_rubric.noiseless_win_rate()
        );
    };
    head_to_head("the model", &answers);
    let gain = score_gain(&records, &answers, &against_answers);
    println!(
        "  {:<15} labeler score {:+.3} (95% interval {})",
        "",
        gain.mean,
        gain.signed_interval()
    );
    // No model can expect more than the ideal answers win.
    head_to_head("ideal answers", &ideal_answers(&records));
    Ok(())
}

fn print_eval(dir: &Path, e: &PolicyEval) {
    println!(
        "{}: {} answers to held-out prompts: score {:.3}  correct {:.1}%  format {:.1}%  rude {:.1}%  ended {:.1}%  {:.0} chars",
        dir.display(),
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
}
