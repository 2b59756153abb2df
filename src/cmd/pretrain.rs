//! `ferrochat pretrain`: train a GPT-2 on a text file (presets `tiny` and `small`), with a
//! progress bar, periodic validation, samples, checkpoints and exact `--resume`.

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use engine::optim::AdamWConfig;
use indicatif::{ProgressBar, ProgressStyle};
use model::pretrain::{self, Event, ModelShape, PretrainOptions, TrainPrecision};
use model::train::TrainConfig;

#[derive(clap::Args)]
pub struct Args {
    /// The training text (UTF-8).
    #[arg(long)]
    pub data: PathBuf,
    /// The run folder: checkpoint, tokenizer, optimizer state, metrics.jsonl.
    #[arg(long)]
    pub out: PathBuf,
    /// Continue the run saved in this folder (same data and seed → the same losses as an
    /// uninterrupted run).
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Model size and training defaults: `tiny` (0.9M parameters, vocab 512, 4 layers of 128,
    /// context 128) or `small` (14M, vocab 8192, 6 layers of 384, context 256).
    #[arg(long, default_value = "tiny")]
    pub preset: String,
    #[arg(long)]
    pub steps: Option<u64>,
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Tokens per training sequence (at most the context).
    #[arg(long)]
    pub seq_len: Option<usize>,
    /// Micro-batches per optimizer step.
    #[arg(long)]
    pub grad_accum: Option<usize>,
    /// Peak learning rate (after warm-up; cosine decay to a tenth of it).
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long)]
    pub warmup: Option<u64>,
    /// Clip the global gradient norm (0 = off).
    #[arg(long)]
    pub grad_clip: Option<f64>,
    #[arg(long)]
    pub weight_decay: Option<f64>,
    #[arg(long)]
    pub dropout: Option<f64>,
    /// Tokenizer vocabulary size when one is trained for the run.
    #[arg(long)]
    pub vocab_size: Option<usize>,
    #[arg(long, default_value_t = 100)]
    pub eval_every: u64,
    #[arg(long, default_value_t = 8)]
    pub eval_batches: usize,
    #[arg(long, default_value_t = 500)]
    pub sample_every: u64,
    #[arg(long, default_value = "The")]
    pub sample_prompt: String,
    #[arg(long, default_value_t = 500)]
    pub checkpoint_every: u64,
    #[arg(long, default_value_t = 0.05)]
    pub val_fraction: f64,
    #[arg(long, default_value_t = 1337)]
    pub seed: u64,
    /// Stop after this many steps of this invocation (the schedule still spans --steps);
    /// `--resume` continues.
    #[arg(long)]
    pub stop_after: Option<u64>,
    /// Where to train: `cpu`, or `cuda` / `cuda:N` for the GPU trainer (a build with
    /// `--features cuda` and a GPU; no dropout, --grad-accum 1).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// The GPU trainer's arithmetic: `f32`, or `bf16` (bf16 activations and weight copies,
    /// f32 master weights, gradients and AdamW state; needs a head dimension of 64).
    #[arg(long, default_value = "f32")]
    pub precision: String,
}

/// The options of a preset, before flags override them.
pub fn preset(name: &str) -> Result<(ModelShape, TrainConfig)> {
    let adamw = AdamWConfig {
        beta2: 0.95,
        ..AdamWConfig::default()
    };
    let (shape, batch_size, seq_len, steps, max_lr) = match name {
        "tiny" => (
            ModelShape {
                vocab_size: 512,
                n_positions: 128,
                n_embd: 128,
                n_layer: 4,
                n_head: 4,
                dropout: 0.0,
            },
            16,
            128,
            1000,
            2e-3,
        ),
        "small" => (
            ModelShape {
                vocab_size: 8192,
                n_positions: 256,
                n_embd: 384,
                n_layer: 6,
                n_head: 6,
                dropout: 0.1,
            },
            8,
            256,
            5000,
            6e-4,
        ),
        other => return Err(anyhow!("unknown preset {other:?} (expected tiny or small)")),
    };
    let train = TrainConfig {
        steps,
        batch_size,
        seq_len,
        grad_accum: 1,
        max_lr,
        min_lr: max_lr / 10.0,
        warmup: steps / 20,
        grad_clip: 1.0,
        adamw,
        dropout: shape.dropout > 0.0,
    };
    Ok((shape, train))
}

pub fn run(args: Args) -> Result<()> {
    // The device first: without a GPU (or a cuda build) this is the one-line error.
    let device = engine::Device::parse(&args.device).map_err(|e| anyhow!("{e}"))?;
    let precision: TrainPrecision = args.precision.parse().map_err(|e| anyhow!("{e}"))?;
    let (mut shape, mut train) = preset(&args.preset)?;
    if let Some(v) = args.vocab_size {
        shape.vocab_size = v;
    }
    if let Some(p) = args.dropout {
        shape.dropout = p;
        train.dropout = p > 0.0;
    }
    if let Some(s) = args.steps {
        train.steps = s;
        train.warmup = s / 20;
    }
    train.batch_size = args.batch_size.unwrap_or(train.batch_size);
    train.seq_len = args.seq_len.unwrap_or(train.seq_len);
    train.grad_accum = args.grad_accum.unwrap_or(train.grad_accum);
    if let Some(lr) = args.lr {
        train.max_lr = lr;
        train.min_lr = lr / 10.0;
    }
    train.warmup = args.warmup.unwrap_or(train.warmup);
    train.grad_clip = args.grad_clip.unwrap_or(train.grad_clip);
    train.adamw.weight_decay = args.weight_decay.unwrap_or(train.adamw.weight_decay);
    let opts = PretrainOptions {
        data: args.data,
        out: args.out,
        resume: args.resume,
        shape,
        train,
        val_fraction: args.val_fraction,
        eval_every: args.eval_every,
        eval_batches: args.eval_batches,
        sample_every: args.sample_every,
        sample_prompt: args.sample_prompt,
        checkpoint_every: args.checkpoint_every,
        seed: args.seed,
        stop_after: args.stop_after,
        device,
        precision,
    };
    let bar = ProgressBar::hidden();
    let val_loss = pretrain::run(&opts, |event| report(&bar, event)).map_err(|e| anyhow!("{e}"))?;
    bar.finish();
    println!(
        "final val loss {val_loss:.4}; run saved in {}",
        opts.out.display()
    );
    Ok(())
}

/// Draws the progress bar and prints the events worth a line.
fn report(bar: &ProgressBar, event: Event) {
    match event {
        Event::TokenizerTrained { vocab_size } => {
            crate::cmd::say(bar, format!("trained a tokenizer: {vocab_size} tokens"))
        }
        Event::Start {
            step,
            total,
            params,
            train_tokens,
            val_tokens,
        } => {
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            bar.set_length(total);
            bar.set_position(step);
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} steps {msg} [{elapsed} < {eta}]",
                )
                .expect("valid template"),
            );
            crate::cmd::say(bar, format!(
                "{params} parameters; {train_tokens} training and {val_tokens} validation tokens; from step {step} of {total}"
            ));
        }
        Event::Step {
            stats,
            tokens_per_sec,
        } => {
            bar.set_position(stats.step);
            bar.set_message(format!(
                "loss {:.4}  lr {:.2e}  {:.0} tok/s",
                stats.loss, stats.lr, tokens_per_sec
            ));
        }
        Event::Eval { step, val_loss } => {
            crate::cmd::say(bar, format!("step {step}: val loss {val_loss:.4}"))
        }
        Event::Sample { step, text } => {
            crate::cmd::say(bar, format!("step {step} sample: {text:?}"))
        }
        Event::Checkpoint { .. } => {}
        Event::Gpu { description } => crate::cmd::say(bar, format!("training on {description}")),
    }
}
