//! How high can a win rate against a policy go? Samples `SAMPLES` answers per held-out prompt
//! from a policy at temperature 1 (as the pipeline's evaluation does) and has the noisy
//! labeler judge, pair by pair, two other answer sets against them:
//!
//! - the ideal answers: no policy can expect a higher win rate (they tie with the policy's
//!   perfect answers and are truly better than the rest);
//! - the policy's own greedy answer: what a perfectly sharpened copy of the policy (all its
//!   probability on its most likely answer) would win — the gain PPO could get without
//!   learning anything the policy does not already know.
//!
//! `cargo run --release -p rlhf --example win_rate_ceiling -- POLICY_DIR [SAMPLES]`
//! (e.g. `runs/demo/sft`).

use model::tokenizer::Tokenizer;
use model::{checkpoint, Result};
use rlhf::chat::Answer;
use rlhf::policy::{sample_answers, win_rate};
use rlhf::world::{Split, World};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(
        args.get(1)
            .expect("usage: win_rate_ceiling POLICY_DIR [SAMPLES]"),
    );
    let samples: usize = args.get(2).map_or(4, |s| s.parse().expect("SAMPLES"));
    let policy = checkpoint::load(&dir)?;
    let tok = Tokenizer::load(&dir)?;
    let world = World::new(0);
    let (mut records, mut sampled, mut ideal, mut greedy) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, r) in world.prompts(Split::Heldout).iter().enumerate() {
        let at_t1 = sample_answers(&policy, &tok, &r.prompt, samples, 1.0, 48, 1000 + i as u64)?;
        let best = sample_answers(&policy, &tok, &r.prompt, 1, 0.0, 48, 7)?; // greedy
        for s in at_t1 {
            records.push(r.clone());
            sampled.push(s.answer);
            ideal.push(Answer::ended(r.ideal.clone()));
            greedy.push(best[0].answer.clone());
        }
    }
    println!(
        "{} held-out answers of {} at temperature 1, judged by the noisy labeler:",
        sampled.len(),
        dir.display()
    );
    for (name, answers) in [("ideal answers", &ideal), ("greedy answers", &greedy)] {
        let w = win_rate(&records, answers, &sampled, 5);
        println!("  {name:<14} win {}", w.percent());
    }
    Ok(())
}
