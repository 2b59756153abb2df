//! Direct Preference Optimization (Rafailov et al. 2023), the comparison baseline: the policy
//! is trained on preference pairs directly, with no reward model and no sampling.
//!
//! ```text
//! h(y)  = β · (log π(y|x) − log π_ref(y|x))            the implicit reward
//! loss  = −log σ(h(y_w) − h(y_l))                       DPO eq. 7, mean over pairs
//! ```
//!
//! log π(y|x) is the sum of the completion's token log-probs, the prompt masked
//! ([`sequence_logprobs`]). The reference is the frozen starting policy (the SFT model); its
//! log-probs are computed without gradients. Metrics use trl's names: `rewards/chosen` =
//! mean h(y_w), `rewards/rejected` = mean h(y_l), `rewards/margins` = their mean difference,
//! `rewards/accuracies` = fraction with h(y_w) > h(y_l).

use engine::optim::{clip_grad_norm, AdamW, AdamWConfig, LrSchedule};
use engine::{no_grad, ops, Gradients, Rng, Tensor};
use model::tokenizer::Tokenizer;
use model::{Error, Gpt, Result};

use crate::data::{Pair, Ranking};
use crate::logprobs::{encode_chat, sequence_logprobs};

/// The DPO loss (DPO eq. 7), mean over pairs, from the four `[N]` sequence log-probs:
/// −mean log σ(β[(π_w − ref_w) − (π_l − ref_l)]).
pub fn dpo_loss(
    policy_chosen: &Tensor,
    policy_rejected: &Tensor,
    ref_chosen: &Tensor,
    ref_rejected: &Tensor,
    beta: f64,
) -> Result<Tensor> {
    let (hw, hl) = implicit_rewards(
        policy_chosen,
        policy_rejected,
        ref_chosen,
        ref_rejected,
        beta,
    )?;
    let logits = ops::sub(&hw, &hl)?;
    Ok(ops::neg(&ops::mean_all(&ops::logsigmoid(&logits)?)?)?)
}

/// The implicit rewards β(log π − log π_ref) of the chosen and the rejected completions.
fn implicit_rewards(
    policy_chosen: &Tensor,
    policy_rejected: &Tensor,
    ref_chosen: &Tensor,
    ref_rejected: &Tensor,
    beta: f64,
) -> Result<(Tensor, Tensor)> {
    let h =
        |p: &Tensor, r: &Tensor| -> Result<Tensor> { Ok(ops::mul_scalar(&ops::sub(p, r)?, beta)?) };
    Ok((
        h(policy_chosen, ref_chosen)?,
        h(policy_rejected, ref_rejected)?,
    ))
}

/// How to train with DPO. Defaults follow trl's `DPOConfig` where it gives them.
#[derive(Clone, Debug)]
pub struct DpoConfig {
    /// β, the strength of the implicit KL constraint (trl and the paper: 0.1).
    pub beta: f64,
    /// Passes over the pairs.
    pub epochs: usize,
    /// Pairs per optimizer step.
    pub batch_size: usize,
    /// Pairs per forward pass; a step accumulates the gradients of its micro-batches.
    pub micro_batch: usize,
    /// Peak learning rate (trl: 1e-6 for billion-parameter models; small models want more).
    pub lr: f64,
    /// Final learning rate as a fraction of `lr`.
    pub min_lr_ratio: f64,
    /// Fraction of the steps spent in linear warm-up.
    pub warmup_fraction: f64,
    /// Clip the global gradient norm to this (0 = no clipping).
    pub grad_clip: f64,
    /// AdamW settings.
    pub adamw: AdamWConfig,
    /// Seed of the shuffling.
    pub seed: u64,
}

impl Default for DpoConfig {
    fn default() -> Self {
        DpoConfig {
            beta: 0.1,
            epochs: 1,
            batch_size: 64,
            micro_batch: 16,
            lr: 1e-6,
            min_lr_ratio: 0.1,
            warmup_fraction: 0.1,
            grad_clip: 1.0,
            adamw: AdamWConfig::default(),
            seed: 0,
        }
    }
}

/// DPO metrics over a set of pairs (trl's names in the field docs).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DpoStats {
    /// The step just taken (1 for the first); 0 for an evaluation.
    pub step: u64,
    /// The DPO loss.
    pub loss: f64,
    /// `rewards/chosen`: mean β(log π(y_w) − log π_ref(y_w)).
    pub rewards_chosen: f64,
    /// `rewards/rejected`: mean β(log π(y_l) − log π_ref(y_l)).
    pub rewards_rejected: f64,
    /// `rewards/margins`: mean of chosen − rejected rewards.
    pub margins: f64,
    /// `rewards/accuracies`: fraction of pairs with chosen reward > rejected reward.
    pub accuracies: f64,
    /// Pairs.
    pub pairs: usize,
    /// Global gradient norm before clipping (0 for an evaluation).
    pub grad_norm: f64,
    /// Learning rate of the step (0 for an evaluation).
    pub lr: f64,
}

/// Every pair of every ranking (ties left out): DPO's training data.
pub fn pairs_of(rankings: &[Ranking]) -> Vec<Pair> {
    rankings.iter().flat_map(Ranking::pairs).collect()
}

/// A pair, tokenised, with its reference log-probs.
struct Encoded {
    prompt: Vec<usize>,
    chosen: Vec<usize>,
    rejected: Vec<usize>,
    ref_chosen: f64,
    ref_rejected: f64,
}

/// Sums of the metrics over a micro-batch, to average over the batch.
#[derive(Default)]
struct Sums {
    loss: f64,
    chosen: f64,
    rejected: f64,
    correct: usize,
    pairs: usize,
}

impl Sums {
    fn add(&mut self, o: &Sums) {
        self.loss += o.loss;
        self.chosen += o.chosen;
        self.rejected += o.rejected;
        self.correct += o.correct;
        self.pairs += o.pairs;
    }

    fn stats(&self) -> DpoStats {
        let n = self.pairs.max(1) as f64;
        DpoStats {
            step: 0,
            loss: self.loss / n,
            rewards_chosen: self.chosen / n,
            rewards_rejected: self.rejected / n,
            margins: (self.chosen - self.rejected) / n,
            accuracies: self.correct as f64 / n,
            pairs: self.pairs,
            grad_norm: 0.0,
            lr: 0.0,
        }
    }
}

/// Tokenises `pairs` and computes their reference log-probs (no gradients), 16 pairs per
/// forward pass.
fn encode_pairs(reference: &Gpt, pairs: &[Pair], tokenizer: &Tokenizer) -> Result<Vec<Encoded>> {
    let mut out = Vec::with_capacity(pairs.len());
    for chunk in pairs.chunks(16) {
        let mut prompts = Vec::new();
        let mut chosen = Vec::new();
        let mut rejected = Vec::new();
        for p in chunk {
            let (pr, c) = encode_chat(tokenizer, &p.prompt, &p.chosen);
            let (_, r) = encode_chat(tokenizer, &p.prompt, &p.rejected);
            prompts.push(pr);
            chosen.push(c);
            rejected.push(r);
        }
        let (rc, rr) = no_grad(|| pair_logprobs(reference, &prompts, &chosen, &rejected))?;
        let (rc, rr) = (rc.to_vec_f64(), rr.to_vec_f64());
        for (i, ((p, c), r)) in prompts.into_iter().zip(chosen).zip(rejected).enumerate() {
            out.push(Encoded {
                prompt: p,
                chosen: c,
                rejected: r,
                ref_chosen: rc[i],
                ref_rejected: rr[i],
            });
        }
    }
    Ok(out)
}

/// log π of the chosen and the rejected completions, in one forward pass over all 2N.
fn pair_logprobs(
    gpt: &Gpt,
    prompts: &[Vec<usize>],
    chosen: &[Vec<usize>],
    rejected: &[Vec<usize>],
) -> Result<(Tensor, Tensor)> {
    let n = prompts.len();
    let both_prompts: Vec<Vec<usize>> = prompts.iter().chain(prompts).cloned().collect();
    let both: Vec<Vec<usize>> = chosen.iter().chain(rejected).cloned().collect();
    let lp = sequence_logprobs(gpt, &both_prompts, &both, None)?;
    Ok((ops::slice(&lp, 0, 0, n)?, ops::slice(&lp, 0, n, 2 * n)?))
}

/// The DPO loss of a micro-batch (mean over its pairs) and its metric sums.
fn micro_loss(policy: &Gpt, items: &[&Encoded], beta: f64) -> Result<(Tensor, Sums)> {
    let prompts: Vec<Vec<usize>> = items.iter().map(|e| e.prompt.clone()).collect();
    let chosen: Vec<Vec<usize>> = items.iter().map(|e| e.chosen.clone()).collect();
    let rejected: Vec<Vec<usize>> = items.iter().map(|e| e.rejected.clone()).collect();
    let (pc, pr) = pair_logprobs(policy, &prompts, &chosen, &rejected)?;
    let n = items.len();
    let dtype = pc.dtype();
    let refs = |f: fn(&Encoded) -> f64| -> Result<Tensor> {
        let v: Vec<f64> = items.iter().map(|e| f(e)).collect();
        Ok(Tensor::from_vec(v, &[n])?.to_dtype(dtype))
    };
    let (rc, rr) = (refs(|e| e.ref_chosen)?, refs(|e| e.ref_rejected)?);
    let loss = dpo_loss(&pc, &pr, &rc, &rr, beta)?;
    let (hw, hl) = implicit_rewards(&pc, &pr, &rc, &rr, beta)?;
    let (hw, hl) = (hw.to_vec_f64(), hl.to_vec_f64());
    let sums = Sums {
        loss: loss.item()? * n as f64,
        chosen: hw.iter().sum(),
        rejected: hl.iter().sum(),
        correct: hw.iter().zip(&hl).filter(|(w, l)| w > l).count(),
        pairs: n,
    };
    Ok((loss, sums))
}

/// Trains `policy` with DPO against the frozen `reference` on `pairs`: `config.epochs`
/// shuffled passes, batches of `config.batch_size` pairs, AdamW with warm-up and cosine
/// decay, global-norm clipping, no dropout. The reference's log-probs are computed once, up
/// front, without gradients. `on_step` sees each step's metrics (measured
/// before the step's update); all of them are returned.
pub fn train_dpo(
    policy: &mut Gpt,
    reference: &Gpt,
    pairs: &[Pair],
    tokenizer: &Tokenizer,
    config: &DpoConfig,
    mut on_step: impl FnMut(&DpoStats),
) -> Result<Vec<DpoStats>> {
    if pairs.is_empty() || config.batch_size == 0 || config.micro_batch == 0 {
        return Err(Error::Invalid(
            "DPO needs pairs and positive batch_size and micro_batch".into(),
        ));
    }
    let data = encode_pairs(reference, pairs, tokenizer)?;
    let total = (data.len().div_ceil(config.batch_size) * config.epochs) as u64;
    let schedule = LrSchedule {
        max_lr: config.lr,
        min_lr: config.lr * config.min_lr_ratio,
        warmup: (total as f64 * config.warmup_fraction).round() as u64,
        total,
    };
    let mut opt = AdamW::new(config.adamw);
    let mut rng = Rng::new(config.seed);
    let mut stats: Vec<DpoStats> = Vec::with_capacity(total as usize);
    for _ in 0..config.epochs {
        let mut order: Vec<usize> = (0..data.len()).collect();
        rng.shuffle(&mut order);
        for batch in order.chunks(config.batch_size) {
            let items: Vec<&Encoded> = batch.iter().map(|&i| &data[i]).collect();
            let lr = schedule.lr(stats.len() as u64);
            let s = dpo_step(policy, &mut opt, &items, config, lr)?;
            let s = DpoStats {
                step: stats.len() as u64 + 1,
                ..s
            };
            on_step(&s);
            stats.push(s);
        }
    }
    Ok(stats)
}

/// One DPO optimizer step over a batch of pairs (micro-batch gradients weighted by their
/// share of the batch).
fn dpo_step(
    policy: &mut Gpt,
    opt: &mut AdamW,
    items: &[&Encoded],
    config: &DpoConfig,
    lr: f64,
) -> Result<DpoStats> {
    let mut grads = Gradients::default();
    let mut sums = Sums::default();
    for micro in items.chunks(config.micro_batch) {
        let (loss, s) = micro_loss(policy, micro, config.beta)?;
        let share = micro.len() as f64 / items.len() as f64;
        grads.accumulate(ops::mul_scalar(&loss, share)?.backward()?)?;
        sums.add(&s);
    }
    let max_norm = if config.grad_clip > 0.0 {
        config.grad_clip
    } else {
        f64::INFINITY
    };
    let grad_norm = clip_grad_norm(&mut grads, &policy.params(), max_norm)?;
    no_grad(|| opt.step(&mut policy.params_mut(), &grads, lr))?;
    Ok(DpoStats {
        grad_norm,
        lr,
        ..sums.stats()
    })
}

/// The DPO metrics of `policy` against `reference` on `pairs` (held-out), without gradients.
pub fn evaluate_dpo(
    policy: &Gpt,
    reference: &Gpt,
    pairs: &[Pair],
    tokenizer: &Tokenizer,
    beta: f64,
) -> Result<DpoStats> {
    if pairs.is_empty() {
        return Err(Error::Invalid("no pairs to evaluate".into()));
    }
    let data = encode_pairs(reference, pairs, tokenizer)?;
    let refs: Vec<&Encoded> = data.iter().collect();
    let mut sums = Sums::default();
    no_grad(|| -> Result<()> {
        for chunk in refs.chunks(16) {
            let (_, s) = micro_loss(policy, chunk, beta)?;
            sums.add(&s);
        }
        Ok(())
    })?;
    Ok(sums.stats())
}
