//! `ferrochat tokenizer train|encode`: byte-level BPE from the command line.

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use model::tokenizer::{Tokenizer, DEFAULT_SPECIAL_TOKENS};

#[derive(clap::Subcommand)]
pub enum Args {
    /// Learn a vocabulary from a text file and save vocab.json + merges.txt in OUT.
    Train {
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        vocab_size: usize,
        #[arg(long)]
        out: PathBuf,
    },
    /// Read text on stdin and print the ids of each line, space-separated, one line per line.
    Encode {
        #[arg(long)]
        tokenizer: PathBuf,
    },
}

pub fn run(args: Args) -> Result<()> {
    match args {
        Args::Train {
            data,
            vocab_size,
            out,
        } => {
            let text =
                std::fs::read_to_string(&data).with_context(|| format!("{}", data.display()))?;
            if text.is_empty() {
                return Err(anyhow!("{}: the data file is empty", data.display()));
            }
            let tok = Tokenizer::train(&text, vocab_size, &DEFAULT_SPECIAL_TOKENS)
                .map_err(|e| anyhow!("{e}"))?;
            tok.save(&out).map_err(|e| anyhow!("{e}"))?;
            println!(
                "{} tokens ({} merges) saved in {}",
                tok.vocab_size(),
                tok.merges().len(),
                out.display()
            );
        }
        Args::Encode { tokenizer } => {
            let tok = Tokenizer::load(&tokenizer).map_err(|e| anyhow!("{e}"))?;
            for line in std::io::stdin().lock().lines() {
                let line = line.context("reading stdin")?;
                let ids: Vec<String> = tok.encode(&line).iter().map(u32::to_string).collect();
                println!("{}", ids.join(" "));
            }
        }
    }
    Ok(())
}
