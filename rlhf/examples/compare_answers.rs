//! Side by side: several policies' sampled answers to the held-out prompts of one kind, each
//! marked `+` (correct) or `-` (wrong) by the labeler's rubric. Shows what PPO did to SFT's
//! answers prompt by prompt — where it picked the right answer out of SFT's spread, and where
//! it settled on a wrong one the reward model happened to prefer.
//!
//! `cargo run --release -p rlhf --example compare_answers -- KIND N DIR...`
//! (KIND: arithmetic, reverse, spell, sort, count, fact or format; N answers per prompt, at
//! temperature 1; DIRs: policy checkpoints, e.g. runs/demo/sft runs/demo/ppo).

use model::tokenizer::Tokenizer;
use model::{checkpoint, Result};
use rlhf::labeler::judge;
use rlhf::policy::sample_answers;
use rlhf::world::{Kind, Split, World};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: compare_answers KIND N DIR...";
    let kind_name = args.get(1).expect(usage);
    let kind = Kind::ALL
        .into_iter()
        .find(|k| k.name() == kind_name)
        .unwrap_or_else(|| panic!("unknown kind {kind_name:?}; {usage}"));
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).expect(usage);
    assert!(args.len() > 3, "{usage}");
    let policies = args[3..]
        .iter()
        .map(|dir| Ok((checkpoint::load(dir)?, Tokenizer::load(dir)?)))
        .collect::<Result<Vec<_>>>()?;
    let world = World::new(0);
    let mut correct = vec![0usize; policies.len()];
    let mut total = 0;
    for (i, record) in world.prompts(Split::Heldout).iter().enumerate() {
        if record.kind() != kind {
            continue;
        }
        println!("{}   (ideal: {})", record.prompt, record.ideal);
        for (p, (policy, tok)) in policies.iter().enumerate() {
            // The same seed for every policy: differences come from the weights alone.
            let samples = sample_answers(policy, tok, &record.prompt, n, 1.0, 48, 1000 + i as u64)?;
            let marked: Vec<String> = samples
                .iter()
                .map(|s| {
                    let ok = judge(record, &s.answer.text, s.answer.ended).correct;
                    correct[p] += ok as usize;
                    format!("{}{}", if ok { '+' } else { '-' }, s.answer.text)
                })
                .collect();
            println!("  {:<24} {}", short(&args[3 + p]), marked.join(" | "));
        }
        total += n;
    }
    for (p, c) in correct.iter().enumerate() {
        println!(
            "{}: {c} of {total} correct ({:.1}%)",
            args[3 + p],
            100.0 * *c as f64 / total.max(1) as f64
        );
    }
    Ok(())
}

/// The last two components of a path (`runs/demo/ppo` → `demo/ppo`).
fn short(dir: &str) -> String {
    let parts: Vec<&str> = dir.trim_end_matches('/').rsplit('/').take(2).collect();
    parts.into_iter().rev().collect::<Vec<_>>().join("/")
}
