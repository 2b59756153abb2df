//! Does the reward model carry the labeler's signal? Best-of-n on held-out prompts: sample `n`
//! answers per prompt from a policy, pick the one the reward model scores highest, and judge
//! it with the labeler's rubric beside a random pick (the policy alone) and the best possible
//! pick (an oracle). PPO can only learn what best-of-n already shows; if the RM's pick is no
//! better than a random one, more PPO will not help. The last column shows, kind by kind,
//! whether the RM can tell a correct answer from a wrong one at all: where it cannot, PPO has
//! nothing to climb, and a weak KL penalty lets it drift onto whichever answer the RM happens
//! to score higher.
//!
//! `cargo run --release -p rlhf --example best_of_n -- RUN_DIR [N] [PROMPTS]`
//! (RUN_DIR from `ferrochat pipeline`: uses RUN_DIR/sft and RUN_DIR/rm; set POLICY=DIR to
//! sample from another policy, e.g. RUN_DIR/ppo).

use model::tokenizer::Tokenizer;
use model::{checkpoint, Result};
use rlhf::labeler::judge;
use rlhf::policy::sample_answers;
use rlhf::reward::{score_completions, RewardModel};
use rlhf::world::{Kind, Split, World};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let run =
        std::path::PathBuf::from(args.get(1).expect("usage: best_of_n RUN_DIR [N] [PROMPTS]"));
    let n: usize = args.get(2).map_or(8, |s| s.parse().expect("N"));
    let prompts: usize = args.get(3).map_or(167, |s| s.parse().expect("PROMPTS"));
    let policy_dir = std::env::var("POLICY").map_or(run.join("sft"), Into::into);
    let policy = checkpoint::load(&policy_dir)?;
    let tok = Tokenizer::load(&policy_dir)?;
    let rm = RewardModel::load(run.join("rm"))?;
    let world = World::new(0);
    let records = world.prompts(Split::Heldout);
    let mut sums = vec![[0.0f64; 6]; Kind::ALL.len()];
    let mut counts = vec![0usize; Kind::ALL.len()];
    // Per kind: pairs of one correct and one wrong answer, and how many the RM orders right.
    let mut pairs = vec![(0usize, 0usize); Kind::ALL.len()];
    for (i, r) in records.iter().take(prompts).enumerate() {
        let samples = sample_answers(&policy, &tok, &r.prompt, n, 1.0, 48, 1000 + i as u64)?;
        let items: Vec<(&str, &str)> = samples
            .iter()
            .map(|s| (r.prompt.as_str(), s.completion.as_str()))
            .collect();
        let scores = score_completions(&rm, &tok, &items, 32)?;
        let judged: Vec<_> = samples
            .iter()
            .map(|s| judge(r, &s.answer.text, s.answer.ended))
            .collect();
        let best_rm = (0..n)
            .max_by(|&a, &b| scores[a].total_cmp(&scores[b]))
            .unwrap_or(0);
        let best = judged.iter().map(|b| b.total).fold(f64::MIN, f64::max);
        let k = r.kind().index();
        counts[k] += 1;
        let s = &mut sums[k];
        s[0] += judged[0].total;
        s[1] += judged[best_rm].total;
        s[2] += best;
        s[3] += judged[0].correct as u8 as f64;
        s[4] += judged[best_rm].correct as u8 as f64;
        for a in 0..n {
            for b in 0..n {
                if judged[a].correct && !judged[b].correct {
                    pairs[k].0 += 1;
                    pairs[k].1 += (scores[a] > scores[b]) as usize;
                }
            }
        }
        s[5] += 1.0;
    }
    println!(
        "best-of-{n} on held-out prompts (policy {})",
        policy_dir.display()
    );
    println!(
        "{:<10} {:>4} {:>8} {:>8} {:>8} {:>9} {:>9} {:>14}",
        "kind", "n", "random", "rm-pick", "oracle", "corr-rand", "corr-rm", "rm-right-pairs"
    );
    let percent = |(n, right): (usize, usize)| {
        if n == 0 {
            "-".to_string()
        } else {
            format!("{:.1}% of {n}", 100.0 * right as f64 / n as f64)
        }
    };
    let mut tot = [0.0; 6];
    for (k, kind) in Kind::ALL.iter().enumerate() {
        let c = counts[k].max(1) as f64;
        let s = sums[k];
        for j in 0..6 {
            tot[j] += s[j];
        }
        println!(
            "{:<10} {:>4} {:>8.3} {:>8.3} {:>8.3} {:>8.1}% {:>8.1}% {:>14}",
            kind.name(),
            counts[k],
            s[0] / c,
            s[1] / c,
            s[2] / c,
            100.0 * s[3] / c,
            100.0 * s[4] / c,
            percent(pairs[k])
        );
    }
    let c = tot[5];
    let all_pairs = pairs
        .iter()
        .fold((0, 0), |(n, r), &(pn, pr)| (n + pn, r + pr));
    println!(
        "{:<10} {:>4} {:>8.3} {:>8.3} {:>8.3} {:>8.1}% {:>8.1}% {:>14}",
        "all",
        c,
        tot[0] / c,
        tot[1] / c,
        tot[2] / c,
        100.0 * tot[3] / c,
        100.0 * tot[4] / c,
        percent(all_pairs)
    );
    println!(
        "rm-right-pairs: of the pairs of one correct and one wrong answer to the same prompt, \
         those the RM scores the correct one higher (50% = it cannot tell)"
    );
    Ok(())
}
