//! What a model knows against what it says in chat. The pretraining corpus holds worked
//! examples `Q: <prompt>\nA: <ideal answer>` for *every* prompt, held-out ones included
//! (`World::worked_doc` in rlhf/src/corpus.rs), but chat transcripts only for train prompts.
//! So on a held-out prompt a model may give the right answer after `Q: … A:` and a wrong one
//! in the chat format: knowledge that alignment has not (yet) elicited.
//!
//! For each policy, samples N answers per held-out prompt at temperature 1 both ways — after
//! `Q: <prompt>\nA:` (the answer is the text up to the line's end) and in the chat format (as
//! the pipeline's evaluation does) — and prints, kind by kind, the share the rubric judges
//! correct.
//!
//! `cargo run --release -p rlhf --example knows_vs_says -- N DIR...`
//! (e.g. `4 runs/demo/pretrain runs/demo/sft runs/demo/ppo`).

use model::generate::{generate, SamplingConfig};
use model::tokenizer::Tokenizer;
use model::{checkpoint, Result};
use rlhf::labeler::judge;
use rlhf::policy::sample_answers;
use rlhf::world::{Kind, Split, World};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: knows_vs_says N DIR...";
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).expect(usage);
    assert!(args.len() > 2, "{usage}");
    let world = World::new(0);
    println!(
        "{:<28} {:<11} {:>14} {:>14}",
        "policy", "kind", "Q:/A: correct", "chat correct"
    );
    for dir in &args[2..] {
        let (model, tok) = (checkpoint::load(dir)?, Tokenizer::load(dir)?);
        // (correct after "Q: … A:", correct in chat, answers) per kind, in Kind::ALL's order.
        let mut counts = [(0usize, 0usize, 0usize); Kind::ALL.len()];
        for (i, record) in world.prompts(Split::Heldout).iter().enumerate() {
            let seed = 1000 + i as u64;
            let k = record.kind().index();
            let qa_ids: Vec<usize> = tok
                .encode(&format!("Q: {}\nA:", record.prompt))
                .into_iter()
                .map(|t| t as usize)
                .collect();
            let cfg = SamplingConfig {
                temperature: 1.0,
                top_k: 0,
                top_p: 1.0,
                max_new_tokens: 48,
                stop_tokens: Vec::new(),
                seed,
            };
            for sample in generate(&model, &qa_ids, n, &cfg)? {
                let ids: Vec<u32> = sample.tokens.iter().map(|&t| t as u32).collect();
                let text = tok.decode(&ids)?;
                // The answer is the rest of the `A:` line (a special token ends it too).
                let line = text.split('\n').next().unwrap_or("");
                let answer = line.split("<|").next().unwrap_or("").trim();
                counts[k].0 += judge(record, answer, true).correct as usize;
            }
            for s in sample_answers(&model, &tok, &record.prompt, n, 1.0, 48, seed)? {
                counts[k].1 += judge(record, &s.answer.text, s.answer.ended).correct as usize;
            }
            counts[k].2 += n;
        }
        let pct = |c: usize, t: usize| format!("{:.1}%", 100.0 * c as f64 / t.max(1) as f64);
        for (kind, &(qa, chat, total)) in Kind::ALL.iter().zip(&counts) {
            println!(
                "{dir:<28} {:<11} {:>14} {:>14}",
                kind.name(),
                pct(qa, total),
                pct(chat, total)
            );
        }
        let sum = |f: fn(&(usize, usize, usize)) -> usize| counts.iter().map(f).sum::<usize>();
        let total = sum(|c| c.2);
        println!(
            "{dir:<28} {:<11} {:>14} {:>14}",
            "all",
            pct(sum(|c| c.0), total),
            pct(sum(|c| c.1), total)
        );
    }
    Ok(())
}
