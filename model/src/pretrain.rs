//! Pretraining a GPT from a text file: the tokenizer (trained if the run has none), token
//! windows with a train/validation split, the training loop with periodic validation,
//! samples and checkpoints, and exact resumption.
//!
//! A run folder holds `config.json` + `model.safetensors` (an HF GPT-2 checkpoint), the
//! tokenizer (`vocab.json`, `merges.txt`, ...), `trainer_state.json` + `optimizer.safetensors`
//! (step, random generator state, AdamW moments: what resuming needs), and `metrics.jsonl`
//! (one JSON object per step, validation and sample).

use std::path::{Path, PathBuf};

use engine::{DType, Device, Rng, Storage, Tensor};
use serde::{Deserialize, Serialize};

use crate::checkpoint;
use crate::metrics::MetricsWriter;
use crate::tokenizer::{Tokenizer, DEFAULT_SPECIAL_TOKENS};
use crate::train::{evaluate, Batch, StepStats, TokenData, TrainConfig, Trainer};
use crate::{format_err, io_err, Error, Gpt, GptConfig, Result};

/// The model's shape and dropout for a new run.
#[derive(Clone, Debug)]
pub struct ModelShape {
    pub vocab_size: usize,
    pub n_positions: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub dropout: f64,
}

/// Everything a pretraining run needs.
#[derive(Clone, Debug)]
pub struct PretrainOptions {
    /// The training text.
    pub data: PathBuf,
    /// The run folder (created if needed).
    pub out: PathBuf,
    /// A run folder to continue from (its model, tokenizer, optimizer and generator state).
    pub resume: Option<PathBuf>,
    pub shape: ModelShape,
    pub train: TrainConfig,
    /// Fraction of the tokens held out for validation (taken from the end of the data).
    pub val_fraction: f64,
    /// Validate every this many steps (0 = only at the end).
    pub eval_every: u64,
    /// Validation batches per evaluation.
    pub eval_batches: usize,
    /// Print a sample every this many steps (0 = never).
    pub sample_every: u64,
    /// The prompt samples start from.
    pub sample_prompt: String,
    /// Save a checkpoint every this many steps (0 = only at the end).
    pub checkpoint_every: u64,
    pub seed: u64,
    /// Stop after this many steps in this invocation (the schedule still spans
    /// `train.steps`), as if the run were interrupted; resume continues it.
    pub stop_after: Option<u64>,
    /// Where the training steps run: the CPU, or (feature `cuda`) a GPU with the llm.c-style
    /// trainer of [`crate::cuda_gpt`] (validation on the GPU too; samples and checkpoints
    /// from the parameters copied back).
    pub device: Device,
    /// Arithmetic of the GPU trainer (the CPU trains in f32 only).
    pub precision: TrainPrecision,
}

/// The arithmetic of a GPU training run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TrainPrecision {
    /// f32 everywhere.
    #[default]
    F32,
    /// Mixed precision: bf16 activations and weight copies; f32 master weights, gradients and
    /// AdamW moments.
    Bf16,
}

impl std::str::FromStr for TrainPrecision {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(TrainPrecision::F32),
            "bf16" => Ok(TrainPrecision::Bf16),
            other => Err(Error::Invalid(format!(
                "unknown precision {other:?} (expected f32 or bf16)"
            ))),
        }
    }
}

impl std::fmt::Display for TrainPrecision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TrainPrecision::F32 => "f32",
            TrainPrecision::Bf16 => "bf16",
        })
    }
}

/// What the loop reports as it goes (the CLI draws a progress bar from these).
#[derive(Clone, Debug)]
pub enum Event {
    /// The run is about to start at `step` of `total`.
    Start {
        step: u64,
        total: u64,
        params: usize,
        train_tokens: usize,
        val_tokens: usize,
    },
    /// A tokenizer was trained for this run.
    TokenizerTrained { vocab_size: usize },
    /// One optimizer step.
    Step {
        stats: StepStats,
        tokens_per_sec: f64,
    },
    /// A validation loss.
    Eval { step: u64, val_loss: f64 },
    /// A sampled continuation of the sample prompt.
    Sample { step: u64, text: String },
    /// A checkpoint was written.
    Checkpoint { step: u64 },
    /// The training steps run on a GPU (its name and the precision).
    Gpu { description: String },
}

/// The saved state of the trainer besides the model and the AdamW moments.
#[derive(Serialize, Deserialize)]
struct TrainerState {
    step: u64,
    adamw_step: u64,
    rng: [u64; 4],
    total_steps: u64,
    seed: u64,
}

const TRAINER_STATE: &str = "trainer_state.json";
const OPTIMIZER: &str = "optimizer.safetensors";
/// The run's metrics, one JSON object per line.
pub const METRICS: &str = "metrics.jsonl";

/// Runs (or resumes) pretraining; returns the final validation loss.
pub fn run(opts: &PretrainOptions, mut on_event: impl FnMut(Event)) -> Result<f64> {
    check_device(opts)?;
    let text = std::fs::read_to_string(&opts.data).map_err(io_err(&opts.data))?;
    if text.trim().is_empty() {
        return Err(format_err(&opts.data, "the data file is empty"));
    }
    std::fs::create_dir_all(&opts.out).map_err(io_err(&opts.out))?;
    let tokenizer = tokenizer_for_run(opts, &text, &mut on_event)?;
    let tokens = tokenizer.encode(&text);
    let seq = opts.train.seq_len;
    let data = TokenData::split(tokens, opts.val_fraction, seq)
        .map_err(|e| format_err(&opts.data, e.to_string()))?;

    let (mut model, mut trainer, mut rng) = match &opts.resume {
        Some(dir) => resume(dir, opts)?,
        None => {
            let mut rng = Rng::new(opts.seed);
            let model = Gpt::new(new_config(&opts.shape, tokenizer.vocab_size()), &mut rng)?;
            (model, Trainer::new(opts.train.clone()), rng)
        }
    };
    if model.config.vocab_size < tokenizer.vocab_size() {
        return Err(Error::Invalid(format!(
            "the model's vocabulary ({}) is smaller than the tokenizer's ({})",
            model.config.vocab_size,
            tokenizer.vocab_size()
        )));
    }
    if seq > model.config.n_positions {
        return Err(Error::Invalid(format!(
            "sequence length {seq} is longer than the model's context ({})",
            model.config.n_positions
        )));
    }
    let metrics_path = opts.out.join(METRICS);
    truncate_metrics(&metrics_path, trainer.step)?;
    let mut metrics = MetricsWriter::append(&metrics_path)?;
    let val = data.val_batches(opts.eval_batches.max(1), opts.train.batch_size, seq);
    on_event(Event::Start {
        step: trainer.step,
        total: opts.train.steps,
        params: model.config.num_params(),
        train_tokens: data.train.len(),
        val_tokens: data.val.len(),
    });

    let mut gpu = open_gpu(opts, &model, &trainer)?;
    if let Some(g) = &gpu {
        on_event(Event::Gpu {
            description: gpu_describe(g),
        });
    }
    let end = match opts.stop_after {
        Some(n) => (trainer.step + n).min(opts.train.steps),
        None => opts.train.steps,
    };
    let every = |n: u64, step: u64| n > 0 && step.is_multiple_of(n);
    while trainer.step < end {
        let started = std::time::Instant::now();
        let batches: Vec<_> = (0..opts.train.grad_accum.max(1))
            .map(|_| data.random_batch(&mut rng, opts.train.batch_size, seq))
            .collect();
        let stats = match &mut gpu {
            None => trainer.step(&mut model, &batches, &mut rng)?,
            Some(g) => gpu_step(g, &mut trainer, &batches)?,
        };
        let tokens_per_sec = stats.tokens as f64 / started.elapsed().as_secs_f64();
        metrics.write(&serde_json::json!({
            "step": stats.step, "loss": stats.loss, "lr": stats.lr,
            "grad_norm": stats.grad_norm, "tokens_per_sec": tokens_per_sec,
        }))?;
        on_event(Event::Step {
            stats,
            tokens_per_sec,
        });
        let step = trainer.step;
        if every(opts.eval_every, step) || step == opts.train.steps {
            let val_loss = match &mut gpu {
                None => evaluate(&model, &val)?,
                Some(g) => gpu_evaluate(g, &val)?,
            };
            metrics.write(&serde_json::json!({"step": step, "val_loss": val_loss}))?;
            on_event(Event::Eval { step, val_loss });
        }
        let sampling = every(opts.sample_every, step);
        let saving = every(opts.checkpoint_every, step) || step == end;
        if let (Some(g), true) = (&gpu, sampling || saving) {
            gpu_sync(g, &mut model, &mut trainer)?;
        }
        if sampling {
            let text = sample(
                &model,
                &tokenizer,
                &opts.sample_prompt,
                48,
                opts.seed ^ step,
            )?;
            metrics.write(&serde_json::json!({"step": step, "sample": text}))?;
            on_event(Event::Sample { step, text });
        }
        if saving {
            save_run(&opts.out, &model, &trainer, &rng, opts.seed)?;
            on_event(Event::Checkpoint { step });
        }
    }
    match &mut gpu {
        None => evaluate(&model, &val),
        Some(g) => gpu_evaluate(g, &val),
    }
}

/// The GPU trainer of a run (feature `cuda`); an uninhabited type in a build without it.
#[cfg(feature = "cuda")]
type GpuRun = Box<dyn crate::cuda_gpt::GpuModel>;
/// The GPU trainer of a run: none can exist in a build without the `cuda` feature.
#[cfg(not(feature = "cuda"))]
enum GpuRun {}

/// Checks, before any work, that the run's device, precision and training options go
/// together: bf16 only on a GPU; on a GPU one batch per step and no dropout.
fn check_device(opts: &PretrainOptions) -> Result<()> {
    match opts.device {
        Device::Cpu if opts.precision != TrainPrecision::F32 => Err(Error::Invalid(format!(
            "--precision {} needs a GPU (--device cuda); the CPU trains in f32",
            opts.precision
        ))),
        Device::Cpu => Ok(()),
        #[cfg(feature = "cuda")]
        Device::Cuda(_) => {
            if opts.train.grad_accum > 1 {
                return Err(Error::Invalid(
                    "the GPU trainer takes one batch per step: use --grad-accum 1 (or a larger --batch-size)".into(),
                ));
            }
            if opts.train.dropout {
                return Err(Error::Invalid(
                    "the GPU trainer has no dropout: pass --dropout 0".into(),
                ));
            }
            Ok(())
        }
    }
}

/// The GPU trainer when `opts.device` is a GPU (its parameters and AdamW state those of
/// `model` and `trainer`, so a resumed run continues on the GPU), `None` on the CPU. Expects
/// [`check_device`] to have passed.
#[cfg_attr(not(feature = "cuda"), allow(unused_variables))]
fn open_gpu(opts: &PretrainOptions, model: &Gpt, trainer: &Trainer) -> Result<Option<GpuRun>> {
    match opts.device {
        Device::Cpu => Ok(None),
        #[cfg(feature = "cuda")]
        Device::Cuda(ordinal) => {
            let mut g = crate::cuda_gpt::open(ordinal, opts.precision, model)?;
            g.set_adamw_state(trainer.opt.step, &trainer.opt.state)?;
            Ok(Some(g))
        }
    }
}

/// One optimizer step on the GPU at the trainer's scheduled rate.
#[cfg(feature = "cuda")]
fn gpu_step(g: &mut GpuRun, trainer: &mut Trainer, batches: &[Batch]) -> Result<StepStats> {
    let [b] = batches else {
        return Err(Error::Invalid(
            "the GPU trainer takes one batch per step".into(),
        ));
    };
    let lr = trainer.lr();
    let c = &trainer.config;
    let s = g.train_step(
        &b.ids,
        &b.targets,
        b.batch,
        b.seq,
        lr,
        &c.adamw,
        c.grad_clip,
    )?;
    trainer.step += 1;
    Ok(StepStats {
        step: trainer.step,
        loss: s.loss,
        grad_norm: s.grad_norm,
        lr,
        tokens: b.ids.len(),
    })
}

/// Mean loss over `batches`, forward passes on the GPU.
#[cfg(feature = "cuda")]
fn gpu_evaluate(g: &mut GpuRun, batches: &[Batch]) -> Result<f64> {
    if batches.is_empty() {
        return Err(Error::Invalid("nothing to evaluate".into()));
    }
    let mut sum = 0.0;
    for b in batches {
        sum += g.loss(&b.ids, &b.targets, b.batch, b.seq)?;
    }
    Ok(sum / batches.len() as f64)
}

/// Copies the GPU's parameters and AdamW state into `model` and `trainer` (before a sample or
/// a checkpoint).
#[cfg(feature = "cuda")]
fn gpu_sync(g: &GpuRun, model: &mut Gpt, trainer: &mut Trainer) -> Result<()> {
    *model = g.to_cpu()?;
    let (step, state) = g.adamw_state()?;
    trainer.opt.step = step;
    trainer.opt.state = state;
    Ok(())
}

#[cfg(feature = "cuda")]
fn gpu_describe(g: &GpuRun) -> String {
    g.describe()
}

#[cfg(not(feature = "cuda"))]
fn gpu_step(g: &mut GpuRun, _: &mut Trainer, _: &[Batch]) -> Result<StepStats> {
    match *g {}
}
#[cfg(not(feature = "cuda"))]
fn gpu_evaluate(g: &mut GpuRun, _: &[Batch]) -> Result<f64> {
    match *g {}
}
#[cfg(not(feature = "cuda"))]
fn gpu_sync(g: &GpuRun, _: &mut Gpt, _: &mut Trainer) -> Result<()> {
    match *g {}
}
#[cfg(not(feature = "cuda"))]
fn gpu_describe(g: &GpuRun) -> String {
    match *g {}
}

/// A config for a new model of `shape` (the vocabulary is at least the tokenizer's).
fn new_config(shape: &ModelShape, tokenizer_vocab: usize) -> GptConfig {
    let mut c = GptConfig::new(
        shape.vocab_size.max(tokenizer_vocab),
        shape.n_positions,
        shape.n_embd,
        shape.n_layer,
        shape.n_head,
    );
    c.resid_pdrop = shape.dropout;
    c.embd_pdrop = shape.dropout;
    c.attn_pdrop = shape.dropout;
    c
}

/// The run's tokenizer: the resumed run's, else one already in the output folder, else one
/// trained on the data (and saved there).
fn tokenizer_for_run(
    opts: &PretrainOptions,
    text: &str,
    on_event: &mut impl FnMut(Event),
) -> Result<Tokenizer> {
    for dir in opts.resume.iter().chain(std::iter::once(&opts.out)) {
        if dir.join("vocab.json").exists() {
            let tok = Tokenizer::load(dir)?;
            if dir != &opts.out {
                tok.save(&opts.out)?;
            }
            return Ok(tok);
        }
    }
    let tok = Tokenizer::train(text, opts.shape.vocab_size, &DEFAULT_SPECIAL_TOKENS)?;
    tok.save(&opts.out)?;
    on_event(Event::TokenizerTrained {
        vocab_size: tok.vocab_size(),
    });
    Ok(tok)
}

/// Writes the model, the optimizer moments and the trainer state (each file atomically).
pub fn save_run(dir: &Path, model: &Gpt, trainer: &Trainer, rng: &Rng, seed: u64) -> Result<()> {
    checkpoint::save(model, dir)?;
    let mut moments = Vec::new();
    for ((name, p), (m, v)) in model.named_params().into_iter().zip(&trainer.opt.state) {
        moments.push((
            format!("m.{name}"),
            Tensor::from_storage(m.clone(), p.shape())?,
        ));
        moments.push((
            format!("v.{name}"),
            Tensor::from_storage(v.clone(), p.shape())?,
        ));
    }
    checkpoint::save_tensors(dir.join(OPTIMIZER), &moments)?;
    let state = TrainerState {
        step: trainer.step,
        adamw_step: trainer.opt.step,
        rng: rng.state(),
        total_steps: trainer.config.steps,
        seed,
    };
    let json = serde_json::to_string_pretty(&state).expect("plain data serialises");
    checkpoint::write_atomic(dir.join(TRAINER_STATE), json.as_bytes())
}

/// Loads a run folder written by [`save_run`]: the model, a trainer at its step with its
/// AdamW moments, and the random generator where it was.
fn resume(dir: &Path, opts: &PretrainOptions) -> Result<(Gpt, Trainer, Rng)> {
    let model = checkpoint::load(dir)?;
    let state_path = dir.join(TRAINER_STATE);
    let text = std::fs::read_to_string(&state_path).map_err(io_err(&state_path))?;
    let state: TrainerState =
        serde_json::from_str(&text).map_err(|e| format_err(&state_path, e.to_string()))?;
    let opt_path = dir.join(OPTIMIZER);
    let mut saved: std::collections::HashMap<String, Tensor> =
        checkpoint::load_tensors(&opt_path)?.into_iter().collect();
    let mut trainer = Trainer::new(opts.train.clone());
    trainer.step = state.step;
    trainer.opt.step = state.adamw_step;
    for (name, p) in model.named_params() {
        let mut take = |prefix: &str| -> Result<Storage> {
            let key = format!("{prefix}.{name}");
            let t = saved
                .remove(&key)
                .ok_or_else(|| format_err(&opt_path, format!("missing tensor {key}")))?;
            if t.shape() != p.shape() {
                return Err(format_err(
                    &opt_path,
                    format!("{key} has shape {:?}, expected {:?}", t.shape(), p.shape()),
                ));
            }
            Ok(t.to_dtype(DType::F32).storage().clone())
        };
        let (m, v) = (take("m")?, take("v")?);
        trainer.opt.state.push((m, v));
    }
    Ok((model, trainer, Rng::from_state(state.rng)))
}

/// Drops metric lines of steps after `step` (written by a run that was interrupted after its
/// last checkpoint), so a resumed run's metrics read as one run.
fn truncate_metrics(path: &Path, step: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                .is_some_and(|s| s <= step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    checkpoint::write_atomic(path, kept.as_bytes())
}

/// A short sample continuing `prompt` (temperature 0.8, top 40 tokens) with the KV-cache
/// sampler: a peek at what the model has learned so far.
fn sample(
    model: &Gpt,
    tok: &Tokenizer,
    prompt: &str,
    new_tokens: usize,
    seed: u64,
) -> Result<String> {
    let mut ids: Vec<usize> = tok.encode(prompt).into_iter().map(|t| t as usize).collect();
    if ids.is_empty() {
        return Ok(String::new());
    }
    // Keep room for the new tokens in the context.
    let room = model.config.n_positions.saturating_sub(new_tokens).max(1);
    if ids.len() > room {
        ids.drain(..ids.len() - room);
    }
    let cfg = crate::generate::SamplingConfig {
        temperature: 0.8,
        top_k: 40,
        top_p: 1.0,
        max_new_tokens: new_tokens,
        stop_tokens: vec![],
        seed,
    };
    let samples = crate::generate::generate(model, &ids, 1, &cfg)?;
    let new: Vec<u32> = samples[0].tokens.iter().map(|&t| t as u32).collect();
    Ok(format!("{prompt}{}", tok.decode(&new)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_names_parse() {
        assert_eq!(
            "f32".parse::<TrainPrecision>().unwrap(),
            TrainPrecision::F32
        );
        assert_eq!(
            "bf16".parse::<TrainPrecision>().unwrap(),
            TrainPrecision::Bf16
        );
        assert!("fp16".parse::<TrainPrecision>().is_err());
        assert_eq!(TrainPrecision::Bf16.to_string(), "bf16");
    }
}
