//! `ferrochat world`: write the embedded task world of a seed to files — the pretraining
//! corpus and the demonstrations (train and held-out), as the other commands read them.

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use rlhf::data::write_jsonl;
use rlhf::world::{Split, World};

#[derive(clap::Args)]
pub struct Args {
    /// The folder to write corpus.txt, demonstrations.jsonl and heldout.jsonl into.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Size of the pretraining corpus in bytes.
    #[arg(long, default_value_t = 3_000_000)]
    pub corpus_bytes: usize,
}

pub fn run(args: Args) -> Result<()> {
    std::fs::create_dir_all(&args.out).map_err(|e| anyhow!("{}: {e}", args.out.display()))?;
    let world = World::new(args.seed);
    let corpus = rlhf::corpus::corpus(args.seed, args.corpus_bytes);
    let corpus_path = args.out.join("corpus.txt");
    model::checkpoint::write_atomic(&corpus_path, corpus.as_bytes()).map_err(|e| anyhow!("{e}"))?;
    for (name, split) in [
        ("demonstrations.jsonl", Split::Train),
        ("heldout.jsonl", Split::Heldout),
    ] {
        write_jsonl(args.out.join(name), &world.demonstrations(split))
            .map_err(|e| anyhow!("{e}"))?;
    }
    println!(
        "world {}: corpus.txt ({} bytes), demonstrations.jsonl ({} train prompts), heldout.jsonl ({} held-out prompts) in {}",
        args.seed,
        corpus.len(),
        world.prompts(Split::Train).len(),
        world.prompts(Split::Heldout).len(),
        args.out.display()
    );
    Ok(())
}
