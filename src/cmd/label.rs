//! `ferrochat label`: a person ranks K sampled answers to each prompt, as InstructGPT's
//! labelers did; each ranking is appended to a JSONL file the moment it is given.
//!
//! The answers are numbered 1..K on screen; the ranking is typed best to worst as digits
//! (`3 1 4 2` or `3142`) and stored 0-based, like the simulated labeler's. `s` skips a prompt,
//! `q` (or the end of input) quits; what was written stays written.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};
use rlhf::chat::chat_prompt;
use rlhf::data::{read_preferences, JsonlWriter, Ranking};
use rlhf::policy::sample_answers;
use rlhf::world::{Split, World};

use crate::cmd::chat::{ask, show};
use crate::cmd::sample::load_model_and_tokenizer;

/// The options of `ferrochat label`.
#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint folder (config.json, model.safetensors and the tokenizer files).
    #[arg(long)]
    pub model: PathBuf,
    /// The JSONL file the rankings are appended to (created if missing; existing lines are
    /// checked first, and kept).
    #[arg(long)]
    pub out: PathBuf,
    /// Answers to rank per prompt, 4 to 9 (as in InstructGPT).
    #[arg(long, default_value_t = 4)]
    pub k: usize,
    /// The task world whose train prompts are ranked.
    #[arg(long, default_value_t = 0)]
    pub world_seed: u64,
    /// How many prompts (0 = all).
    #[arg(long, default_value_t = 0)]
    pub prompts: usize,
    /// Rank these prompts instead, one per line (blank lines skipped).
    #[arg(long)]
    pub prompt_file: Option<PathBuf>,
    /// Sampling temperature of the answers.
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// The longest answer, in tokens.
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// Prompt i is sampled with seed + i.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Reads a ranking of `k` answers typed best to worst as digits 1..=k (spaces and commas
/// optional) into 0-based indices; the error says what is wrong with it.
pub fn parse_ranking(input: &str, k: usize) -> Result<Vec<usize>, String> {
    let mut ranking = Vec::with_capacity(k);
    for c in input.chars().filter(|c| !c.is_whitespace() && *c != ',') {
        match c.to_digit(10) {
            Some(d) if (1..=k as u32).contains(&d) => {
                let i = d as usize - 1;
                if ranking.contains(&i) {
                    return Err(format!("answer {d} appears twice"));
                }
                ranking.push(i);
            }
            _ => return Err(format!("{c:?} is not an answer number 1 to {k}")),
        }
    }
    if ranking.len() != k {
        return Err(format!(
            "{} numbers given; rank all {k} answers, each once",
            ranking.len()
        ));
    }
    Ok(ranking)
}

/// The prompts to rank: the prompt file's lines, or the world's train prompts.
fn prompts(args: &Args) -> Result<Vec<String>> {
    let mut prompts: Vec<String> = match &args.prompt_file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| anyhow!("{}: {e}", path.display()))?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect(),
        None => World::new(args.world_seed)
            .prompts(Split::Train)
            .iter()
            .map(|r| r.prompt.clone())
            .collect(),
    };
    if args.prompts > 0 {
        prompts.truncate(args.prompts);
    }
    if prompts.is_empty() {
        bail!("no prompts to rank");
    }
    Ok(prompts)
}

/// Shows each prompt's K answers, reads the person's ranking and appends it to `--out`.
pub fn run(args: Args) -> Result<()> {
    if !(4..=9).contains(&args.k) {
        bail!("--k {} is out of range: rank 4 to 9 answers", args.k);
    }
    // A person's time is what this command spends: a bad line already in the file is found
    // now, not by `ferrochat rm` after an hour of ranking.
    if args.out.exists() {
        let earlier = read_preferences(&args.out)
            .map_err(|e| anyhow!("{e} (label appends to this file: mend or move it first)"))?;
        println!(
            "{} rankings already in {}",
            earlier.len(),
            args.out.display()
        );
    }
    let prompts = prompts(&args)?;
    let (model, tok) = load_model_and_tokenizer(&args.model)?;
    let mut out = JsonlWriter::<Ranking>::append(&args.out).map_err(|e| anyhow!("{e}"))?;
    let context = model.config.n_positions;
    let (mut written, mut skipped) = (0, 0);
    'prompts: for (i, prompt) in prompts.iter().enumerate() {
        println!("\n[{}/{}] {prompt}", i + 1, prompts.len());
        let len = tok.encode(&chat_prompt(prompt)).len();
        if len >= context {
            println!("(skipped: {len} tokens, the model's context is {context})");
            skipped += 1;
            continue;
        }
        let seed = args.seed.wrapping_add(i as u64);
        let answers = sample_answers(
            &model,
            &tok,
            prompt,
            args.k,
            args.temperature,
            args.max_new_tokens,
            seed,
        )
        .map_err(|e| anyhow!("{e}"))?;
        for (n, s) in answers.iter().enumerate() {
            println!("  {}. {}", n + 1, show(&s.answer).replace('\n', "\n     "));
        }
        let ranking = loop {
            let hint = format!(
                "Rank best to worst (e.g. {}), s = skip, q = quit: ",
                example(args.k)
            );
            match ask(&hint)?.as_deref() {
                None | Some("q") => break 'prompts,
                Some("s") => {
                    skipped += 1;
                    continue 'prompts;
                }
                Some(line) => match parse_ranking(line, args.k) {
                    Ok(r) => break r,
                    Err(why) => println!("Not a ranking: {why}. Try again."),
                },
            }
        };
        out.write(&Ranking {
            prompt: prompt.clone(),
            responses: answers.iter().map(|s| s.answer.completion()).collect(),
            ranking,
            ties: Vec::new(),
        })
        .map_err(|e| anyhow!("{e}"))?;
        written += 1;
    }
    println!(
        "\n{written} rankings appended to {} ({skipped} skipped)",
        args.out.display()
    );
    Ok(())
}

/// An example ranking of `k` answers: `2 1 3 4` for four.
fn example(k: usize) -> String {
    let mut digits: Vec<String> = (1..=k).map(|d| d.to_string()).collect();
    digits.swap(0, 1);
    digits.join(" ")
}

#[cfg(test)]
mod tests {
    use super::parse_ranking;

    #[test]
    fn rankings_are_permutations_of_one_to_k() {
        assert_eq!(parse_ranking("3 1 4 2", 4), Ok(vec![2, 0, 3, 1]));
        assert_eq!(parse_ranking("3142", 4), Ok(vec![2, 0, 3, 1]));
        assert_eq!(parse_ranking("3,1, 4,2", 4), Ok(vec![2, 0, 3, 1]));
        assert!(parse_ranking("3 1 4", 4).unwrap_err().contains("3 numbers"));
        assert!(parse_ranking("3 1 4 3", 4).unwrap_err().contains("twice"));
        assert!(parse_ranking("5 1 4 2", 4).unwrap_err().contains("'5'"));
        assert!(parse_ranking("a b c d", 4).unwrap_err().contains("'a'"));
        assert!(parse_ranking("", 4).is_err());
    }
}
