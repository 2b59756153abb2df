//! Prints a sample of the world of a seed: its sizes, prompts with ideal answers, each
//! behaviour's answer with its rubric score, and the start of the pretraining corpus.
//!
//! `cargo run --release -p rlhf --example world_sample -- [seed] [corpus bytes to time]`

use engine::Rng;
use rlhf::labeler::judge;
use rlhf::world::{Behaviour, Kind, Split, World};

fn main() {
    let seed = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let world = World::new(seed);
    println!(
        "seed {seed}: {} animals, {} train prompts, {} held-out prompts",
        world.entities.len(),
        world.train.len(),
        world.heldout.len()
    );
    for kind in Kind::ALL {
        let count = |split| {
            world
                .prompts(split)
                .iter()
                .filter(|r| r.kind() == kind)
                .count()
        };
        println!(
            "  {:<10} train {:>3}  held-out {:>3}",
            kind.name(),
            count(Split::Train),
            count(Split::Heldout)
        );
    }
    let mut rng = Rng::new(seed).fork(9);
    for kind in Kind::ALL {
        let record = world.train.iter().find(|r| r.kind() == kind).unwrap();
        println!("\n[{}] {}", kind.name(), record.prompt);
        for b in Behaviour::ALL {
            let a = world.respond(record, b, &mut rng);
            let j = judge(record, &a.text, a.ended);
            let text: String = a.text.chars().take(90).collect();
            println!("  {:<9} {:.3}  {text:?}", format!("{b:?}"), j.total);
        }
    }
    let text = rlhf::corpus(seed, 3000);
    println!("\ncorpus excerpt:\n{text}");
    if let Some(bytes) = std::env::args().nth(2).and_then(|s| s.parse().ok()) {
        let start = std::time::Instant::now();
        let text = rlhf::corpus(seed, bytes);
        println!(
            "\ngenerated a {} byte corpus in {:.2} s",
            text.len(),
            start.elapsed().as_secs_f64()
        );
    }
}
