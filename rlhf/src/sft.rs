//! Supervised fine-tuning (InstructGPT step 1): next-token cross-entropy on demonstrations,
//! counted on the completion's tokens only — the prompt's positions are masked out, as trl's
//! `SFTTrainer` does with completion-only loss (labels = −100 on the prompt).
//!
//! A demonstration is tokenised as `chat_prompt(prompt) + completion` (the completion ends
//! with `<|end|>`, so the model learns to stop). For a sequence s of n tokens the inputs are
//! s[..n−1] and the target at position i is s[i+1] when s[i+1] belongs to the completion, and
//! ignored otherwise.

use engine::ops::IGNORE_INDEX;
use engine::optim::AdamWConfig;
use engine::Rng;
use model::tokenizer::Tokenizer;
use model::train::{evaluate, Batch, StepStats, TrainConfig, Trainer};
use model::Gpt;

use crate::chat::chat_prompt;
use crate::data::Demonstration;

/// One tokenised example: inputs and per-position targets (prompt masked).
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub ids: Vec<usize>,
    pub targets: Vec<i64>,
}

/// Tokenises a demonstration for completion-only training, cut to `context` positions
/// (the end of a long completion is dropped; the prompt is kept). `None` if the prompt alone
/// fills the context, or the completion is empty.
pub fn encode_example(
    tok: &Tokenizer,
    prompt: &str,
    completion: &str,
    context: usize,
) -> Option<Example> {
    let prompt_ids: Vec<usize> = tok
        .encode(&chat_prompt(prompt))
        .into_iter()
        .map(|t| t as usize)
        .collect();
    let completion_ids: Vec<usize> = tok
        .encode(completion)
        .into_iter()
        .map(|t| t as usize)
        .collect();
    if completion_ids.is_empty() || prompt_ids.len() >= context {
        return None;
    }
    let mut seq = prompt_ids.clone();
    seq.extend(completion_ids);
    seq.truncate(context + 1);
    let n = seq.len();
    let targets = (0..n - 1)
        .map(|i| {
            if i + 1 >= prompt_ids.len() {
                seq[i + 1] as i64
            } else {
                IGNORE_INDEX
            }
        })
        .collect();
    Some(Example {
        ids: seq[..n - 1].to_vec(),
        targets,
    })
}

/// Packs examples into one batch, right-padded to the longest (padding: input 0, target
/// ignored; causal attention means padding never affects the real positions).
pub fn pad_batch(examples: &[&Example]) -> Batch {
    let seq = examples.iter().map(|e| e.ids.len()).max().unwrap_or(1);
    let mut ids = Vec::with_capacity(examples.len() * seq);
    let mut targets = Vec::with_capacity(examples.len() * seq);
    for e in examples {
        ids.extend(&e.ids);
        ids.extend(std::iter::repeat_n(0, seq - e.ids.len()));
        targets.extend(&e.targets);
        targets.extend(std::iter::repeat_n(IGNORE_INDEX, seq - e.targets.len()));
    }
    Batch {
        ids,
        targets,
        batch: examples.len(),
        seq,
    }
}

/// SFT hyper-parameters. InstructGPT (App. C.1) trains 16 epochs with dropout 0.2 and a cosine
/// schedule to 10% of the peak; the demo's tiny model needs fewer.
#[derive(Clone, Debug)]
pub struct SftConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub max_lr: f64,
    /// Dropout while fine-tuning (set on the model's residual and embedding dropout).
    pub dropout: f64,
    pub grad_clip: f64,
    pub weight_decay: f64,
    pub seed: u64,
}

impl Default for SftConfig {
    fn default() -> Self {
        SftConfig {
            epochs: 4,
            batch_size: 16,
            max_lr: 5e-4,
            dropout: 0.1,
            grad_clip: 1.0,
            weight_decay: 0.0,
            seed: 0,
        }
    }
}

/// What SFT reports as it goes.
#[derive(Clone, Debug)]
pub enum SftEvent {
    /// Training is about to run `total` steps.
    Start {
        total: u64,
        examples: usize,
    },
    Step {
        epoch: usize,
        stats: StepStats,
    },
    /// Mean completion loss on the held-out demonstrations after an epoch.
    Eval {
        epoch: usize,
        step: u64,
        heldout_loss: f64,
    },
}

/// Fine-tunes `model` on `train` (shuffled each epoch), evaluating on `heldout` after each
/// epoch. Returns the last held-out loss. The model's dropout is set to `config.dropout`
/// while training and restored afterwards.
pub fn train_sft(
    model: &mut Gpt,
    tok: &Tokenizer,
    train: &[Demonstration],
    heldout: &[Demonstration],
    config: &SftConfig,
    mut on_event: impl FnMut(SftEvent),
) -> model::Result<f64> {
    let context = model.config.n_positions;
    let encode = |ds: &[Demonstration]| -> Vec<Example> {
        ds.iter()
            .filter_map(|d| encode_example(tok, &d.prompt, &d.completion, context))
            .collect()
    };
    let (train_ex, held_ex) = (encode(train), encode(heldout));
    if train_ex.is_empty() {
        return Err(model::Error::Invalid(
            "no demonstrations to fine-tune on".into(),
        ));
    }
    let bs = config.batch_size.max(1);
    let steps_per_epoch = train_ex.len().div_ceil(bs) as u64;
    let total = steps_per_epoch * config.epochs as u64;
    let mut trainer = Trainer::new(TrainConfig {
        steps: total,
        batch_size: bs,
        seq_len: context,
        grad_accum: 1,
        max_lr: config.max_lr,
        min_lr: config.max_lr / 10.0,
        warmup: (total / 20).max(1),
        grad_clip: config.grad_clip,
        adamw: AdamWConfig {
            beta2: 0.95,
            weight_decay: config.weight_decay,
            ..AdamWConfig::default()
        },
        dropout: config.dropout > 0.0,
    });
    let saved = (model.config.resid_pdrop, model.config.embd_pdrop);
    model.config.resid_pdrop = config.dropout;
    model.config.embd_pdrop = config.dropout;
    let held_batches: Vec<Batch> = held_ex
        .chunks(bs)
        .map(|c| pad_batch(&c.iter().collect::<Vec<_>>()))
        .collect();
    let mut rng = Rng::new(config.seed);
    let mut order: Vec<usize> = (0..train_ex.len()).collect();
    on_event(SftEvent::Start {
        total,
        examples: train_ex.len(),
    });
    let mut last = f64::NAN;
    let result = (|| -> model::Result<()> {
        for epoch in 0..config.epochs {
            rng.shuffle(&mut order);
            for chunk in order.chunks(bs) {
                let batch = pad_batch(&chunk.iter().map(|&i| &train_ex[i]).collect::<Vec<_>>());
                let stats = trainer.step(model, std::slice::from_ref(&batch), &mut rng)?;
                on_event(SftEvent::Step { epoch, stats });
            }
            if !held_batches.is_empty() {
                last = evaluate(model, &held_batches)?;
                on_event(SftEvent::Eval {
                    epoch,
                    step: trainer.step,
                    heldout_loss: last,
                });
            }
        }
        Ok(())
    })();
    (model.config.resid_pdrop, model.config.embd_pdrop) = saved;
    result.map(|()| last)
}
