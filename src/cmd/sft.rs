//! `ferrochat sft`: supervised fine-tuning on demonstrations (prompt masked), InstructGPT's
//! first step.

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use indicatif::{ProgressBar, ProgressStyle};
use model::metrics::MetricsWriter;
use rlhf::data::{read_jsonl, Demonstration};
use rlhf::sft::{train_sft, SftConfig, SftEvent};

use crate::cmd::sample::load_model_and_tokenizer;

#[derive(clap::Args)]
pub struct Args {
    /// The model to fine-tune (a checkpoint folder with its tokenizer).
    #[arg(long)]
    pub model: PathBuf,
    /// Demonstrations, JSONL: {"prompt": ..., "completion": ...} per line (the completion
    /// ends with <|end|> to teach the model to stop).
    #[arg(long)]
    pub data: PathBuf,
    /// Held-out demonstrations for the validation loss.
    #[arg(long)]
    pub heldout: Option<PathBuf>,
    /// Where to write the fine-tuned checkpoint, its tokenizer and metrics.jsonl.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 4)]
    pub epochs: usize,
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 5e-4)]
    pub lr: f64,
    #[arg(long, default_value_t = 0.1)]
    pub dropout: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn run(args: Args) -> Result<()> {
    let (mut model, tok) = load_model_and_tokenizer(&args.model)?;
    let train: Vec<Demonstration> = read_jsonl(&args.data).map_err(|e| anyhow!("{e}"))?;
    let heldout: Vec<Demonstration> = match &args.heldout {
        Some(p) => read_jsonl(p).map_err(|e| anyhow!("{e}"))?,
        None => vec![],
    };
    let config = SftConfig {
        epochs: args.epochs,
        batch_size: args.batch_size,
        max_lr: args.lr,
        dropout: args.dropout,
        seed: args.seed,
        ..SftConfig::default()
    };
    std::fs::create_dir_all(&args.out).map_err(|e| anyhow!("{}: {e}", args.out.display()))?;
    let mut metrics =
        MetricsWriter::create(args.out.join("metrics.jsonl")).map_err(|e| anyhow!("{e}"))?;
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("sft {bar:30} {pos}/{len} steps {msg} [{elapsed} < {eta}]")
            .expect("valid template"),
    );
    let loss = train_sft(&mut model, &tok, &train, &heldout, &config, |event| {
        let line = match event {
            SftEvent::Start { total, examples } => {
                bar.set_length(total);
                crate::cmd::say(&bar, format!("{examples} demonstrations, {total} steps"));
                return;
            }
            SftEvent::Step { epoch, stats } => {
                bar.set_position(stats.step);
                bar.set_message(format!("epoch {} loss {:.4}", epoch + 1, stats.loss));
                serde_json::json!({"step": stats.step, "epoch": epoch, "loss": stats.loss, "lr": stats.lr})
            }
            SftEvent::Eval { epoch, step, heldout_loss } => {
                crate::cmd::say(&bar, format!("epoch {}: held-out loss {heldout_loss:.4}", epoch + 1));
                serde_json::json!({"step": step, "epoch": epoch, "val_loss": heldout_loss})
            }
        };
        metrics.log(line);
    })
    .map_err(|e| anyhow!("{e}"))?;
    bar.finish_and_clear();
    metrics.finish().map_err(|e| anyhow!("{e}"))?;
    model::checkpoint::save(&model, &args.out).map_err(|e| anyhow!("{e}"))?;
    tok.save(&args.out).map_err(|e| anyhow!("{e}"))?;
    println!(
        "held-out loss {loss:.4}; fine-tuned model saved in {}",
        args.out.display()
    );
    Ok(())
}
