//! Training a GPT on next-token prediction: batches of token windows, one optimizer step
//! (gradient accumulation, global-norm clipping, AdamW on a warm-up + cosine schedule), and
//! evaluation. Pretraining and SFT both use it: SFT only masks the prompt's targets.

use engine::optim::{clip_grad_norm, AdamW, AdamWConfig, LrSchedule};
use engine::{no_grad, ops, Gradients, Rng};

use crate::{Error, Gpt, Result};

/// A batch of `batch` sequences of `seq` tokens, and the target of each position
/// (`ops::IGNORE_INDEX` where the position does not count).
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub ids: Vec<usize>,
    pub targets: Vec<i64>,
    pub batch: usize,
    pub seq: usize,
}

/// A tokenised corpus split into a training and a validation part.
#[derive(Clone, Debug)]
pub struct TokenData {
    pub train: Vec<u32>,
    pub val: Vec<u32>,
}

impl TokenData {
    /// Splits `tokens`: the last `val_fraction` becomes validation data. Each part must hold
    /// at least one window of `seq + 1` tokens.
    pub fn split(tokens: Vec<u32>, val_fraction: f64, seq: usize) -> Result<TokenData> {
        let n_val = ((tokens.len() as f64) * val_fraction) as usize;
        let n_train = tokens.len() - n_val;
        if n_train < seq + 1 || n_val < seq + 1 {
            return Err(Error::Invalid(format!(
                "{} tokens are too few for train and validation windows of {} tokens",
                tokens.len(),
                seq + 1
            )));
        }
        let mut train = tokens;
        let val = train.split_off(n_train);
        Ok(TokenData { train, val })
    }

    /// `batch` windows at random offsets of the training part: inputs `t[i..i+seq]`,
    /// targets `t[i+1..i+seq+1]` (nanoGPT's sampling).
    pub fn random_batch(&self, rng: &mut Rng, batch: usize, seq: usize) -> Batch {
        let starts: Vec<usize> = (0..batch)
            .map(|_| rng.below((self.train.len() - seq) as u64) as usize)
            .collect();
        windows(&self.train, &starts, seq)
    }

    /// `count` batches of evenly spaced windows of the validation part: the same every call,
    /// so validation losses are comparable across steps and runs.
    pub fn val_batches(&self, count: usize, batch: usize, seq: usize) -> Vec<Batch> {
        let total = count * batch;
        let span = self.val.len() - seq;
        let starts: Vec<usize> = (0..total).map(|i| i * span / total.max(1)).collect();
        starts
            .chunks(batch)
            .map(|s| windows(&self.val, s, seq))
            .collect()
    }
}

fn windows(tokens: &[u32], starts: &[usize], seq: usize) -> Batch {
    let mut ids = Vec::with_capacity(starts.len() * seq);
    let mut targets = Vec::with_capacity(starts.len() * seq);
    for &s in starts {
        ids.extend(tokens[s..s + seq].iter().map(|&t| t as usize));
        targets.extend(tokens[s + 1..s + seq + 1].iter().map(|&t| t as i64));
    }
    Batch {
        ids,
        targets,
        batch: starts.len(),
        seq,
    }
}

/// How to train.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    /// Optimizer steps in the whole run (the schedule's length).
    pub steps: u64,
    pub batch_size: usize,
    pub seq_len: usize,
    /// Micro-batches per optimizer step (gradients are averaged over them).
    pub grad_accum: usize,
    pub max_lr: f64,
    pub min_lr: f64,
    pub warmup: u64,
    /// Clip the global gradient norm to this (0 = no clipping).
    pub grad_clip: f64,
    pub adamw: AdamWConfig,
    /// Apply the model's dropout while training.
    pub dropout: bool,
}

/// What one optimizer step did.
#[derive(Clone, Copy, Debug)]
pub struct StepStats {
    /// The step just taken (1 for the first).
    pub step: u64,
    /// Mean loss over the step's micro-batches.
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    pub lr: f64,
    /// Tokens processed in the step.
    pub tokens: usize,
}

/// The optimizer, its schedule and the step count: everything that, with the model and the
/// random generator, lets a run continue exactly where it stopped.
#[derive(Clone, Debug)]
pub struct Trainer {
    pub config: TrainConfig,
    pub opt: AdamW,
    /// Optimizer steps taken so far.
    pub step: u64,
}

impl Trainer {
    /// A trainer at step 0.
    pub fn new(config: TrainConfig) -> Trainer {
        let opt = AdamW::new(config.adamw);
        Trainer {
            config,
            opt,
            step: 0,
        }
    }

    /// The schedule's learning rate for the next step.
    pub fn lr(&self) -> f64 {
        LrSchedule {
            max_lr: self.config.max_lr,
            min_lr: self.config.min_lr,
            warmup: self.config.warmup,
            total: self.config.steps,
        }
        .lr(self.step)
    }

    /// One optimizer step over `micro_batches`: forward and backward each (loss scaled by
    /// 1/len so the gradients average), clip, then AdamW at the scheduled rate. `rng` draws the
    /// dropout masks.
    pub fn step(
        &mut self,
        model: &mut Gpt,
        micro_batches: &[Batch],
        rng: &mut Rng,
    ) -> Result<StepStats> {
        if micro_batches.is_empty() {
            return Err(Error::Invalid(
                "a training step needs at least one batch".into(),
            ));
        }
        let scale = 1.0 / micro_batches.len() as f64;
        let mut grads = Gradients::default();
        let mut loss_sum = 0.0;
        let mut tokens = 0;
        for b in micro_batches {
            let dropout = if self.config.dropout {
                Some(&mut *rng)
            } else {
                None
            };
            let loss = model.loss(&b.ids, &b.targets, b.batch, b.seq, dropout)?;
            loss_sum += loss.item()?;
            tokens += b.ids.len();
            grads.accumulate(ops::mul_scalar(&loss, scale)?.backward()?)?;
        }
        let grad_norm = {
            let params = model.params();
            let max_norm = if self.config.grad_clip > 0.0 {
                self.config.grad_clip
            } else {
                f64::INFINITY
            };
            clip_grad_norm(&mut grads, &params, max_norm)?
        };
        let lr = self.lr();
        no_grad(|| self.opt.step(&mut model.params_mut(), &grads, lr))?;
        self.step += 1;
        Ok(StepStats {
            step: self.step,
            loss: loss_sum * scale,
            grad_norm,
            lr,
            tokens,
        })
    }
}

/// Mean loss of `model` over `batches`, without dropout or gradients.
pub fn evaluate(model: &Gpt, batches: &[Batch]) -> Result<f64> {
    if batches.is_empty() {
        return Err(Error::Invalid("nothing to evaluate".into()));
    }
    no_grad(|| {
        let mut sum = 0.0;
        for b in batches {
            sum += model
                .loss(&b.ids, &b.targets, b.batch, b.seq, None)?
                .item()?;
        }
        Ok(sum / batches.len() as f64)
    })
}
