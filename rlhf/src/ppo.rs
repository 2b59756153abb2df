//! PPO with a KL penalty to the SFT policy: InstructGPT's third step (Ouyang et al. 2022, §3.5
//! and App. C.4), computed as the HF blog "The N implementation details of RLHF with PPO"
//! (Huang et al. 2023, on openai/lm-human-preferences) and trl's `PPOTrainer` compute it.
//! Formulas and defaults follow `reference/rlhf.md`.
//!
//! One PPO iteration ([`PpoTrainer::step`]):
//!
//! 1. the caller samples [`Rollout`]s from the policy (temperature T, no top-k/top-p), scores
//!    them with the reward model and computes the reference (SFT) policy's log-probs of the
//!    response tokens ([`response_logprobs`] does that for any [`Gpt`]);
//! 2. the policy's and the value model's log-probs and values before the update are
//!    recomputed without gradients (trl recomputes rather than trusting the sampler's numbers);
//! 3. per-token rewards ([`token_rewards`]): −β·KL on every response token, the score on the
//!    last one ([`adjusted_score`] first subtracts the missing-EOS penalty);
//! 4. GAE with γ = 1, λ = 0.95 ([`gae`]); returns = A + V; advantages whitened over the
//!    batch's real response tokens ([`masked_whiten`]);
//! 5. `ppo_epochs` passes over shuffled minibatches of the clipped policy loss
//!    ([`policy_loss`]) plus `vf_coef` times the clipped value loss ([`value_loss`]), plus an
//!    optional PPO-ptx term; gradients clipped and AdamW steps taken;
//! 6. the KL controller ([`KlController`]) sees the batch's KL.
//!
//! Sequences are laid out as prompt ++ response, right-padded to the longest in the batch.
//! Right padding is exact here: attention is causal, so a pad token after a sequence never
//! changes what the positions before it compute, and every sequence starts at position 0.
//! The log-prob of response token j and the value of the state before it are both read at
//! position `prompt_len + j − 1`, as trl does (`values[:, context_length − 1 : −1]`).
//!
//! This file has its own per-token log-prob helper ([`response_logprobs`]); a shared one is
//! being written in `logprobs.rs` in another branch and may replace it.

use engine::optim::{clip_grad_norm, AdamW, AdamWConfig};
use engine::{no_grad, ops, Rng, Storage, Tensor};
use model::{Gpt, GptConfig};
use serde::Serialize;

/// Errors of the PPO step: an engine or model error, or inconsistent inputs (one line naming
/// the rollout and what is wrong).
#[derive(Debug, thiserror::Error)]
pub enum PpoError {
    /// A model error (token ids out of range, a sequence longer than the context...).
    #[error(transparent)]
    Model(#[from] model::Error),
    /// An engine error (a shape, a dtype).
    #[error(transparent)]
    Engine(#[from] engine::Error),
    /// Inputs that do not fit together.
    #[error("ppo: {0}")]
    Invalid(String),
}

/// The PPO module's result type.
pub type Result<T> = std::result::Result<T, PpoError>;

fn invalid<T>(msg: impl Into<String>) -> Result<T> {
    Err(PpoError::Invalid(msg.into()))
}

/// One sampled sequence, as the sampler hands it over.
#[derive(Clone, Debug, PartialEq)]
pub struct Rollout {
    /// The prompt's token ids (the chat prompt, ending with `<|assistant|>`); not empty.
    pub prompt: Vec<usize>,
    /// The sampled response's token ids, including the end token when it ended; not empty.
    pub response: Vec<usize>,
    /// Whether the response ended with the end token (`<|end|>`), rather than being cut at
    /// the length limit.
    pub ended: bool,
    /// The behaviour policy's log-prob of each response token under the temperature-scaled
    /// softmax (one per response token). Used only as a check ([`PpoStats::logprob_mismatch`]);
    /// the step recomputes them. May be empty when the sampler does not provide them.
    pub logprobs: Vec<f64>,
}

/// How the per-token KL penalty is estimated from the sample (John Schulman, "Approximating
/// KL divergence", 2020; trl `kl_estimator`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum KlEstimator {
    /// k1 = logπ(a) − logπ_ref(a): the plain log-ratio, InstructGPT eq. 2 (the default).
    LogRatio,
    /// k3 = (r − 1) − log r with r = π_ref(a)/π(a): unbiased and never negative.
    K3,
}

/// The KL coefficient β: fixed (InstructGPT C.4: β = 0.02) or adaptive (Ziegler et al. 2019,
/// "Fine-Tuning Language Models from Human Preferences", §2.2; lm-human-preferences
/// `AdaptiveKLController`; trl `AdaptiveKLController`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct KlController {
    /// The current β.
    pub beta: f64,
    /// `Some((target KL, horizon))` for the adaptive controller, `None` for a fixed β.
    pub adaptive: Option<(f64, f64)>,
}

impl KlController {
    /// A fixed β.
    pub fn fixed(beta: f64) -> KlController {
        KlController {
            beta,
            adaptive: None,
        }
    }

    /// The adaptive controller, starting at `beta`, steering the KL towards `target` (nats
    /// per sequence) with time constant `horizon` (in sequences). lm-human-preferences and
    /// trl use target 6, horizon 10000.
    pub fn adaptive(beta: f64, target: f64, horizon: f64) -> KlController {
        KlController {
            beta,
            adaptive: Some((target, horizon)),
        }
    }

    /// After a batch of `n_steps` sequences whose mean KL was `kl`:
    /// err = clip(KL/target − 1, −0.2, 0.2), β ← β·(1 + err·n_steps/horizon) (Ziegler et al.
    /// 2019, eq. in §2.2). A fixed controller does nothing.
    pub fn update(&mut self, kl: f64, n_steps: usize) {
        if let Some((target, horizon)) = self.adaptive {
            let err = (kl / target - 1.0).clamp(-0.2, 0.2);
            self.beta *= 1.0 + err * n_steps as f64 / horizon;
        }
    }
}

/// PPO hyper-parameters. Defaults: `reference/rlhf.md` (InstructGPT C.4, lm-human-preferences,
/// trl).
#[derive(Clone, Debug)]
pub struct PpoConfig {
    /// The KL coefficient and how it changes (default fixed β = 0.02, InstructGPT C.4).
    pub kl: KlController,
    /// The per-token KL estimate in the reward (default the plain log-ratio).
    pub kl_estimator: KlEstimator,
    /// Subtracted from the score of a response that did not end with the end token (trl
    /// `missing_eos_penalty`; trl's examples use 1.0, its default is off). 0 turns it off.
    pub missing_eos_penalty: f64,
    /// GAE discount γ (default 1).
    pub gamma: f64,
    /// GAE λ (default 0.95).
    pub lam: f64,
    /// Whiten the per-token rewards (without shifting their mean) before GAE (trl
    /// `whiten_rewards`, default off).
    pub whiten_rewards: bool,
    /// Policy ratio clip ε (default 0.2).
    pub cliprange: f64,
    /// Value clip around the old value (default 0.2).
    pub cliprange_value: f64,
    /// Weight of the value loss (default 0.1).
    pub vf_coef: f64,
    /// Sampling temperature; the log-probs recomputed here divide the logits by it too
    /// (default 1, InstructGPT; lm-human-preferences and trl use 0.7).
    pub temperature: f64,
    /// Passes over the batch per iteration (default 4, lm-human-preferences and trl;
    /// InstructGPT used 1).
    pub ppo_epochs: usize,
    /// Sequences per minibatch (default 64, InstructGPT C.4).
    pub minibatch_size: usize,
    /// Policy learning rate.
    pub policy_lr: f64,
    /// Value model learning rate.
    pub value_lr: f64,
    /// Global gradient-norm clip, applied to the policy and to the value model separately.
    pub max_grad_norm: f64,
    /// γ_ptx, the weight of the pretraining log-likelihood (InstructGPT eq. 2: 27.8 for
    /// PPO-ptx; default 0, plain PPO).
    pub ptx_coef: f64,
    /// AdamW settings for both optimizers (default: no weight decay, ε = 1e-5 as in
    /// lm-human-preferences; see the N-implementation-details blog, "Adam epsilon").
    pub adam: AdamWConfig,
}

impl Default for PpoConfig {
    fn default() -> Self {
        PpoConfig {
            kl: KlController::fixed(0.02),
            kl_estimator: KlEstimator::LogRatio,
            missing_eos_penalty: 1.0,
            gamma: 1.0,
            lam: 0.95,
            whiten_rewards: false,
            cliprange: 0.2,
            cliprange_value: 0.2,
            vf_coef: 0.1,
            temperature: 1.0,
            ppo_epochs: 4,
            minibatch_size: 64,
            policy_lr: 1e-5,
            value_lr: 1e-5,
            max_grad_norm: 1.0,
            ptx_coef: 0.0,
            adam: AdamWConfig {
                eps: 1e-5,
                weight_decay: 0.0,
                ..AdamWConfig::default()
            },
        }
    }
}

impl PpoConfig {
    /// Checks the settings a step divides by or loops over: temperature > 0, at least one
    /// epoch, clip ranges > 0, λ and γ in [0, 1].
    pub fn validate(&self) -> Result<()> {
        let checks = [
            (self.temperature > 0.0, "temperature must be > 0"),
            (self.ppo_epochs >= 1, "ppo_epochs must be >= 1"),
            (self.cliprange > 0.0, "cliprange must be > 0"),
            (self.cliprange_value > 0.0, "cliprange_value must be > 0"),
            ((0.0..=1.0).contains(&self.gamma), "gamma must be in [0, 1]"),
            ((0.0..=1.0).contains(&self.lam), "lam must be in [0, 1]"),
        ];
        match checks.iter().find(|(ok, _)| !ok) {
            Some((_, msg)) => invalid(*msg),
            None => Ok(()),
        }
    }
}

/// A batch of pretraining tokens for the PPO-ptx term: `batch × seq` input ids and their
/// next-token targets (`ops::IGNORE_INDEX` where none).
#[derive(Clone, Debug)]
pub struct PtxBatch {
    pub ids: Vec<usize>,
    pub targets: Vec<i64>,
    pub batch: usize,
    pub seq: usize,
}

/// What one PPO iteration measured (the names follow trl's logged metrics where they exist).
#[derive(Clone, Debug, Default, Serialize)]
pub struct PpoStats {
    /// Mean reward-model score, after the missing-EOS penalty (trl `objective/scores`).
    pub score: f64,
    /// Mean over sequences of Σ_t −β·kl_t (trl `objective/non_score_reward`).
    pub non_score_reward: f64,
    /// score + non-score reward (trl `objective/rlhf_reward`).
    pub rlhf_reward: f64,
    /// Mean over sequences of Σ_t (logπ_old − logπ_ref) (trl `objective/kl`).
    pub kl: f64,
    /// The β used for this batch's rewards.
    pub beta: f64,
    /// Mean over minibatches of 0.5·mean(logratio²) of the new against the old policy
    /// (trl `policy/approxkl_avg`).
    pub approx_kl: f64,
    /// Fraction of response tokens whose clipped policy term was the larger one
    /// (trl `policy/clipfrac_avg`).
    pub clip_frac: f64,
    /// Fraction of response tokens whose clipped value term was the larger one.
    pub value_clip_frac: f64,
    /// Mean per-token entropy (nats) of the sampling distribution before the update.
    pub entropy: f64,
    /// Mean policy loss over minibatches.
    pub policy_loss: f64,
    /// Mean value loss over minibatches (before `vf_coef`).
    pub value_loss: f64,
    /// Mean pretraining cross-entropy over minibatches (0 when PPO-ptx is off).
    pub ptx_loss: f64,
    /// 1 − Var(R − V_old)/Var(R) over the batch's response tokens.
    pub explained_variance: f64,
    /// Mean new/old probability ratio over minibatches.
    pub ratio: f64,
    /// Mean response length in tokens.
    pub response_length: f64,
    /// Fraction of responses that ended with the end token.
    pub frac_ended: f64,
    /// Mean policy gradient norm before clipping.
    pub policy_grad_norm: f64,
    /// Mean value gradient norm before clipping.
    pub value_grad_norm: f64,
    /// Largest |behaviour log-prob − recomputed log-prob| over tokens (0 when the rollouts
    /// carry none): a check that the sampler and the update use the same temperature.
    pub logprob_mismatch: f64,
}

/// The value function: a GPT trunk with a scalar head read at every position.
/// InstructGPT initialises it from the reward model (§3.5, C.4); lm-human-preferences used a
/// zero-initialised head ([`ValueModel::zero_head`]).
#[derive(Clone, Debug)]
pub struct ValueModel {
    pub trunk: Gpt,
    /// Head weights, `[C]`.
    pub head_w: Tensor,
    /// Head bias, `[1]`.
    pub head_b: Tensor,
}

impl ValueModel {
    /// A value model from a trunk and scalar head weights (`head_w: [C]`, `head_b: [1]`), e.g.
    /// a reward model's trunk and `score` head. Every tensor becomes a fresh trainable leaf
    /// (sharing storage until first updated), so its gradients never mix with those of a
    /// policy cloned from the same checkpoint.
    pub fn new(trunk: &Gpt, head_w: &Tensor, head_b: &Tensor) -> Result<ValueModel> {
        let c = trunk.config.n_embd;
        if head_w.shape() != [c] || head_b.shape() != [1] {
            return invalid(format!(
                "value head must be [{c}] and [1], got {:?} and {:?}",
                head_w.shape(),
                head_b.shape()
            ));
        }
        let fresh = |t: &Tensor| t.detach().requires_grad();
        let params = trunk.params().into_iter().map(fresh).collect();
        Ok(ValueModel {
            trunk: Gpt::from_params(trunk.config.clone(), params)?,
            head_w: fresh(head_w),
            head_b: fresh(head_b),
        })
    }

    /// A value model on `trunk` with a zero head (lm-human-preferences).
    pub fn zero_head(trunk: &Gpt) -> Result<ValueModel> {
        let dtype = trunk.wte.dtype();
        let c = trunk.config.n_embd;
        ValueModel::new(
            trunk,
            &Tensor::zeros(&[c], dtype),
            &Tensor::zeros(&[1], dtype),
        )
    }

    /// The value at every position, `[batch, seq]`: V = ln_f(h)·w + b.
    pub fn values(&self, ids: &[usize], batch: usize, seq: usize) -> Result<Tensor> {
        let h = self.trunk.hidden(ids, batch, seq, None)?;
        let c = self.trunk.config.n_embd;
        let w = ops::reshape(&self.head_w, &[c, 1])?;
        let v = ops::add(&ops::matmul(&h, &w)?, &self.head_b)?;
        Ok(ops::reshape(&v, &[batch, seq])?)
    }

    /// Every parameter: the trunk's, then the head's.
    pub fn params(&self) -> Vec<&Tensor> {
        let mut v = self.trunk.params();
        v.push(&self.head_w);
        v.push(&self.head_b);
        v
    }

    /// Every parameter, mutable, in [`ValueModel::params`] order.
    pub fn params_mut(&mut self) -> Vec<&mut Tensor> {
        let mut v = self.trunk.params_mut();
        v.push(&mut self.head_w);
        v.push(&mut self.head_b);
        v
    }
}

// ---- rewards, GAE, whitening (plain numbers) ------------------------------------------------

/// The score with the missing-EOS penalty: `score − penalty` when the response did not end
/// with the end token (trl: `scores[~contain_eos_token] -= missing_eos_penalty`).
pub fn adjusted_score(score: f64, ended: bool, missing_eos_penalty: f64) -> f64 {
    if ended {
        score
    } else {
        score - missing_eos_penalty
    }
}

/// The per-token KL estimate of one token from the policy's and the reference's log-probs.
pub fn kl_estimate(logprob: f64, ref_logprob: f64, estimator: KlEstimator) -> f64 {
    match estimator {
        KlEstimator::LogRatio => logprob - ref_logprob,
        KlEstimator::K3 => {
            let log_r = ref_logprob - logprob;
            log_r.exp() - 1.0 - log_r
        }
    }
}

/// Per-token rewards of one response (InstructGPT eq. 2 spread over tokens, as
/// lm-human-preferences and trl do): r_t = −β·kl_t for every response token, with the
/// (adjusted) score added on the last one. Returns (rewards, per-token KL estimates).
pub fn token_rewards(
    logprobs: &[f64],
    ref_logprobs: &[f64],
    score: f64,
    beta: f64,
    estimator: KlEstimator,
) -> (Vec<f64>, Vec<f64>) {
    let kl: Vec<f64> = logprobs
        .iter()
        .zip(ref_logprobs)
        .map(|(&lp, &rl)| kl_estimate(lp, rl, estimator))
        .collect();
    let mut rewards: Vec<f64> = kl.iter().map(|&k| -beta * k).collect();
    if let Some(last) = rewards.last_mut() {
        *last += score;
    }
    (rewards, kl)
}

/// Generalised advantage estimation (Schulman et al. 2016, eq. 16) over one response:
/// δ_t = r_t + γ·V_{t+1} − V_t (V after the last token is 0), A_t = δ_t + γλ·A_{t+1};
/// returns R_t = A_t + V_t. Returns (advantages, returns).
pub fn gae(rewards: &[f64], values: &[f64], gamma: f64, lam: f64) -> (Vec<f64>, Vec<f64>) {
    let n = rewards.len();
    let mut adv = vec![0.0; n];
    let mut last = 0.0;
    for t in (0..n).rev() {
        let next_value = if t + 1 < n { values[t + 1] } else { 0.0 };
        let delta = rewards[t] + gamma * next_value - values[t];
        last = delta + gamma * lam * last;
        adv[t] = last;
    }
    let returns = adv.iter().zip(values).map(|(a, v)| a + v).collect();
    (adv, returns)
}

/// Mean and unbiased variance (Bessel-corrected, as trl's `masked_var`) of the entries where
/// `mask` is true.
fn masked_mean_var(values: &[f64], mask: &[bool]) -> (f64, f64) {
    let picked: Vec<f64> = values
        .iter()
        .zip(mask)
        .filter(|(_, &m)| m)
        .map(|(&v, _)| v)
        .collect();
    let n = picked.len() as f64;
    if n < 2.0 {
        // One value (or none) has no spread; trl would divide by zero here.
        return (picked.first().copied().unwrap_or(0.0), 0.0);
    }
    let mean = picked.iter().sum::<f64>() / n;
    let var = picked.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var)
}

/// trl's `masked_whiten`: (x − mean)/√(var + 1e-8) with mean and unbiased variance taken over
/// the entries where `mask` is true; with `shift_mean` false the mean is added back. Entries
/// outside the mask are set to 0 (trl's `masked_fill` after whitening advantages).
pub fn masked_whiten(values: &[f64], mask: &[bool], shift_mean: bool) -> Vec<f64> {
    let (mean, var) = masked_mean_var(values, mask);
    let scale = 1.0 / (var + 1e-8).sqrt();
    values
        .iter()
        .zip(mask)
        .map(|(&v, &m)| match (m, shift_mean) {
            (false, _) => 0.0,
            (true, true) => (v - mean) * scale,
            (true, false) => (v - mean) * scale + mean,
        })
        .collect()
}

/// 1 − Var(returns − values)/Var(returns) over masked entries (CleanRL's PPO diagnostic): 1 is
/// a perfect value function, 0 no better than a constant; NaN when the returns are constant.
pub fn explained_variance(values: &[f64], returns: &[f64], mask: &[bool]) -> f64 {
    let (_, var_y) = masked_mean_var(returns, mask);
    let diff: Vec<f64> = returns.iter().zip(values).map(|(r, v)| r - v).collect();
    let (_, var_d) = masked_mean_var(&diff, mask);
    if var_y == 0.0 {
        f64::NAN
    } else {
        1.0 - var_d / var_y
    }
}

// ---- the losses (tensors, so they can be gradchecked) --------------------------------------

/// Σ(x∘mask)/Σmask: the mean over real response tokens.
fn masked_mean(x: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let n: f64 = mask.to_vec_f64().iter().sum();
    if n == 0.0 {
        return invalid("masked mean over an empty mask");
    }
    let s = ops::sum_all(&ops::mul(x, mask)?)?;
    Ok(ops::mul_scalar(&s, 1.0 / n)?)
}

/// PPO's clipped surrogate (Schulman et al. 2017, eq. 7, as a loss): with
/// ratio = exp(logπ − logπ_old), the mean over response tokens of
/// max(−A·ratio, −A·clip(ratio, 1 − ε, 1 + ε)). All inputs `[B, R]`; `mask` is 1 on real
/// response tokens and 0 on padding; only `logprobs` carries gradient in use.
pub fn policy_loss(
    logprobs: &Tensor,
    old_logprobs: &Tensor,
    advantages: &Tensor,
    mask: &Tensor,
    cliprange: f64,
) -> Result<Tensor> {
    let ratio = ops::exp(&ops::sub(logprobs, old_logprobs)?)?;
    let neg_adv = ops::neg(advantages)?;
    let unclipped = ops::mul(&neg_adv, &ratio)?;
    let clipped = ops::mul(
        &neg_adv,
        &ops::clamp(&ratio, 1.0 - cliprange, 1.0 + cliprange)?,
    )?;
    masked_mean(&ops::maximum(&unclipped, &clipped)?, mask)
}

/// The clipped value loss (lm-human-preferences, trl): with
/// V_clip = V_old + clip(V − V_old, −c, c), the mean over response tokens of
/// 0.5·max((V − R)², (V_clip − R)²). All inputs `[B, R]`.
pub fn value_loss(
    values: &Tensor,
    old_values: &Tensor,
    returns: &Tensor,
    mask: &Tensor,
    cliprange_value: f64,
) -> Result<Tensor> {
    let step = ops::clamp(
        &ops::sub(values, old_values)?,
        -cliprange_value,
        cliprange_value,
    )?;
    let clipped = ops::add(old_values, &step)?;
    let l1 = ops::powf(&ops::sub(values, returns)?, 2.0)?;
    let l2 = ops::powf(&ops::sub(&clipped, returns)?, 2.0)?;
    let m = masked_mean(&ops::maximum(&l1, &l2)?, mask)?;
    Ok(ops::mul_scalar(&m, 0.5)?)
}

/// [`policy_loss`] and its gradient with respect to each log-prob, from plain numbers (flat
/// `[B·R]`, f64): returns (loss, g) with g_t = ∂L/∂logπ_t. With r_t = exp(logπ_t − logπ_old,t),
/// N the number of real tokens and `ops::maximum` / `ops::clamp`'s conventions (the first
/// argument wins ties; clamp passes the gradient on the closed range):
///
/// ```text
/// g_t = −A_t·r_t / N   where −A·r ≥ −A·clip(r, 1−ε, 1+ε) (the unclipped term is the max)
///                      or 1−ε ≤ r_t ≤ 1+ε (the clipped term equals it and passes it on)
/// g_t = 0              otherwise (clipped: the max is a constant), and on padding.
/// ```
///
/// Since logπ_t = −CE_t (the cross-entropy of the token under softmax(logits/T)), the
/// surrogate's gradient w.r.t. the logits of token t is −g_t·(1/T)·(softmax − onehot): a
/// cross-entropy backward with weight c_t = −g_t (`rlhf::cuda_ppo`).
pub fn policy_loss_grad(
    logprobs: &[f64],
    old_logprobs: &[f64],
    advantages: &[f64],
    mask: &[bool],
    cliprange: f64,
) -> Result<(f64, Vec<f64>)> {
    let n = mask.iter().filter(|&&m| m).count() as f64;
    if n == 0.0 {
        return invalid("masked mean over an empty mask");
    }
    let (lo, hi) = (1.0 - cliprange, 1.0 + cliprange);
    let (mut loss, mut grad) = (0.0, vec![0.0; logprobs.len()]);
    for t in 0..logprobs.len() {
        if !mask[t] {
            continue;
        }
        let ratio = (logprobs[t] - old_logprobs[t]).exp();
        let a = advantages[t];
        let (unclipped, clipped) = (-a * ratio, -a * ratio.clamp(lo, hi));
        loss += unclipped.max(clipped);
        if unclipped >= clipped || (lo..=hi).contains(&ratio) {
            grad[t] = -a * ratio / n;
        }
    }
    Ok((loss / n, grad))
}

/// [`value_loss`] and its gradient with respect to each value, from plain numbers (flat
/// `[B·R]`, f64): returns (loss, g) with g_t = ∂L/∂V_t. With V_clip = V_old + clip(V − V_old,
/// −c, c), l₁ = (V − R)², l₂ = (V_clip − R)², L = 0.5·mean(max(l₁, l₂)):
///
/// ```text
/// g_t = (V_t − R_t) / N        where l₁ ≥ l₂
/// g_t = (V_clip,t − R_t) / N   where l₂ > l₁ and −c ≤ V_t − V_old,t ≤ c
/// g_t = 0                      otherwise, and on padding.
/// ```
pub fn value_loss_grad(
    values: &[f64],
    old_values: &[f64],
    returns: &[f64],
    mask: &[bool],
    cliprange_value: f64,
) -> Result<(f64, Vec<f64>)> {
    let n = mask.iter().filter(|&&m| m).count() as f64;
    if n == 0.0 {
        return invalid("masked mean over an empty mask");
    }
    let c = cliprange_value;
    let (mut loss, mut grad) = (0.0, vec![0.0; values.len()]);
    for t in 0..values.len() {
        if !mask[t] {
            continue;
        }
        let step = values[t] - old_values[t];
        let v_clip = old_values[t] + step.clamp(-c, c);
        let (l1, l2) = (
            (values[t] - returns[t]).powi(2),
            (v_clip - returns[t]).powi(2),
        );
        loss += 0.5 * l1.max(l2);
        if l1 >= l2 {
            grad[t] = (values[t] - returns[t]) / n;
        } else if (-c..=c).contains(&step) {
            grad[t] = (v_clip - returns[t]) / n;
        }
    }
    Ok((loss / n, grad))
}

/// The diagnostics of one minibatch from plain numbers (flat `[B·R]`, masked): clip fraction
/// of the policy term, approx KL = 0.5·mean(logratio²) (trl), mean ratio, clip fraction of the
/// value term.
pub(crate) fn minibatch_diagnostics(
    mb: &Minibatch,
    new_lp: &[f64],
    new_v: &[f64],
    c: &PpoConfig,
) -> [f64; 4] {
    let (mut clipped, mut akl, mut ratio_sum, mut vclipped, mut n) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for i in 0..new_lp.len() {
        if !mb.mask[i] {
            continue;
        }
        let logratio = new_lp[i] - mb.old_lp[i];
        let ratio = logratio.exp();
        let a = mb.adv[i];
        let (pg1, pg2) = (
            -a * ratio,
            -a * ratio.clamp(1.0 - c.cliprange, 1.0 + c.cliprange),
        );
        let dv = (new_v[i] - mb.old_v[i]).clamp(-c.cliprange_value, c.cliprange_value);
        let (vf1, vf2) = (
            (new_v[i] - mb.ret[i]).powi(2),
            (mb.old_v[i] + dv - mb.ret[i]).powi(2),
        );
        clipped += (pg2 > pg1) as i32 as f64;
        vclipped += (vf2 > vf1) as i32 as f64;
        akl += 0.5 * logratio * logratio;
        ratio_sum += ratio;
        n += 1.0;
    }
    [clipped / n, akl / n, ratio_sum / n, vclipped / n]
}

// ---- batching ------------------------------------------------------------------------------

/// Rollouts laid out for one forward pass: prompt ++ response, right-padded with token 0 to
/// `seq`, and for each (sequence, response token j < width) the position whose output
/// predicts it, `prompt_len + j − 1` (the last real one for padding, masked out).
pub(crate) struct Padded {
    pub(crate) ids: Vec<usize>,
    /// Next-token targets `[B, S]` (0 past the end; never read there).
    pub(crate) targets: Vec<usize>,
    pub(crate) batch: usize,
    pub(crate) seq: usize,
    /// Response width R (the longest response in the whole batch).
    pub(crate) width: usize,
    /// `[B, R]` positions.
    pub(crate) positions: Vec<usize>,
    /// `[B, R]`: true on real response tokens.
    pub(crate) mask: Vec<bool>,
}

impl Padded {
    pub(crate) fn new(rollouts: &[&Rollout], width: usize) -> Padded {
        let batch = rollouts.len();
        let seq = rollouts
            .iter()
            .map(|r| r.prompt.len() + r.response.len())
            .max()
            .unwrap_or(1);
        let (mut ids, mut targets) = (vec![0; batch * seq], vec![0; batch * seq]);
        let (mut positions, mut mask) = (vec![0; batch * width], vec![false; batch * width]);
        for (b, r) in rollouts.iter().enumerate() {
            let (p, n) = (r.prompt.len(), r.response.len());
            let row = &mut ids[b * seq..(b + 1) * seq];
            row[..p].copy_from_slice(&r.prompt);
            row[p..p + n].copy_from_slice(&r.response);
            for t in 0..p + n - 1 {
                targets[b * seq + t] = ids[b * seq + t + 1];
            }
            for j in 0..width {
                positions[b * width + j] = p - 1 + j.min(n - 1);
                mask[b * width + j] = j < n;
            }
        }
        Padded {
            ids,
            targets,
            batch,
            seq,
            width,
            positions,
            mask,
        }
    }

    /// Picks the response positions of `x` (`[B, S]`) into `[B, R]`.
    pub(crate) fn pick(&self, x: &Tensor) -> Result<Tensor> {
        Ok(ops::gather(
            x,
            1,
            &self.positions,
            &[self.batch, self.width],
        )?)
    }
}

/// The log-prob of each response token under softmax(logits/T), `[B, R]` (differentiable),
/// and the full log-softmax `[B, S, V]` (for the entropy).
pub(crate) fn token_logprobs(
    policy: &Gpt,
    p: &Padded,
    temperature: f64,
) -> Result<(Tensor, Tensor)> {
    let logits = policy.forward(&p.ids, p.batch, p.seq, None)?;
    let logp = ops::log_softmax(&ops::mul_scalar(&logits, 1.0 / temperature)?, -1)?;
    let tok = ops::gather(&logp, 2, &p.targets, &[p.batch, p.seq, 1])?;
    let tok = ops::reshape(&tok, &[p.batch, p.seq])?;
    Ok((p.pick(&tok)?, logp))
}

/// Entropy −Σ p·log p of the next-token distributions at the real response positions,
/// summed, and how many there are. Reads the `[B, S, V]` log-softmax in place (no copy).
fn entropy_sum(p: &Padded, logp: &Tensor) -> (f64, f64) {
    let v = logp.shape()[2];
    let at: Box<dyn Fn(usize) -> f64 + '_> = match logp.storage() {
        Storage::F32(d) => Box::new(move |i| d[i] as f64),
        Storage::F64(d) => Box::new(move |i| d[i]),
    };
    let (mut sum, mut n) = (0.0, 0.0);
    for (i, (&pos, &m)) in p.positions.iter().zip(&p.mask).enumerate() {
        if m {
            let start = (i / p.width * p.seq + pos) * v;
            sum -= (start..start + v).map(|k| at(k).exp() * at(k)).sum::<f64>();
            n += 1.0;
        }
    }
    (sum, n)
}

/// Each response token's log-prob under `model` with logits divided by `temperature` (no
/// gradient), one vector per rollout: what the reference policy gives for the KL penalty.
/// Runs [`LOGPROB_CHUNK`] rollouts per forward pass, so memory stays bounded for big batches.
pub fn response_logprobs(
    model: &Gpt,
    rollouts: &[Rollout],
    temperature: f64,
) -> Result<Vec<Vec<f64>>> {
    if temperature <= 0.0 {
        return invalid(format!("temperature {temperature} must be > 0"));
    }
    let refs: Vec<&Rollout> = rollouts.iter().collect();
    check_rollouts(&model.config, &refs)?;
    let mut out = Vec::with_capacity(refs.len());
    for chunk in refs.chunks(LOGPROB_CHUNK) {
        let width = chunk.iter().map(|r| r.response.len()).max().unwrap_or(0);
        let p = Padded::new(chunk, width);
        let (lp, _) = no_grad(|| token_logprobs(model, &p, temperature))?;
        out.extend(unpad(&lp.to_vec_f64(), chunk, width));
    }
    Ok(out)
}

/// Rollouts per forward pass in [`response_logprobs`].
pub const LOGPROB_CHUNK: usize = 64;

/// Splits a flat `[B, R]` array back into one vector per rollout (its response length).
fn unpad(flat: &[f64], rollouts: &[&Rollout], width: usize) -> Vec<Vec<f64>> {
    rollouts
        .iter()
        .enumerate()
        .map(|(b, r)| flat[b * width..b * width + r.response.len()].to_vec())
        .collect()
}

/// Checks that every rollout has a prompt and a response that fit in the context.
pub(crate) fn check_rollouts(config: &GptConfig, rollouts: &[&Rollout]) -> Result<()> {
    if rollouts.is_empty() {
        return invalid("no rollouts");
    }
    for (i, r) in rollouts.iter().enumerate() {
        let len = r.prompt.len() + r.response.len();
        if r.prompt.is_empty() || r.response.is_empty() {
            return invalid(format!("rollout {i}: empty prompt or response"));
        }
        if len > config.n_positions {
            return invalid(format!(
                "rollout {i}: {len} tokens exceed the context of {}",
                config.n_positions
            ));
        }
        if !r.logprobs.is_empty() && r.logprobs.len() != r.response.len() {
            return invalid(format!(
                "rollout {i}: {} behaviour log-probs for {} response tokens",
                r.logprobs.len(),
                r.response.len()
            ));
        }
    }
    Ok(())
}

// ---- the PPO iteration ---------------------------------------------------------------------

/// The per-token quantities of the whole batch, flat `[N, R]` in rollout order.
pub(crate) struct Prepared {
    old_lp: Vec<f64>,
    old_v: Vec<f64>,
    adv: Vec<f64>,
    ret: Vec<f64>,
    mask: Vec<bool>,
}

/// One minibatch's rows of [`Prepared`] with its padded layout.
pub(crate) struct Minibatch {
    pub(crate) padded: Padded,
    pub(crate) old_lp: Vec<f64>,
    pub(crate) old_v: Vec<f64>,
    pub(crate) adv: Vec<f64>,
    pub(crate) ret: Vec<f64>,
    pub(crate) mask: Vec<bool>,
}

impl Minibatch {
    pub(crate) fn new(
        all: &Prepared,
        rollouts: &[&Rollout],
        rows: &[usize],
        width: usize,
    ) -> Minibatch {
        let picked: Vec<&Rollout> = rows.iter().map(|&i| rollouts[i]).collect();
        let take = |x: &[f64]| -> Vec<f64> {
            rows.iter()
                .flat_map(|&i| x[i * width..(i + 1) * width].iter().copied())
                .collect()
        };
        Minibatch {
            padded: Padded::new(&picked, width),
            old_lp: take(&all.old_lp),
            old_v: take(&all.old_v),
            adv: take(&all.adv),
            ret: take(&all.ret),
            mask: rows
                .iter()
                .flat_map(|&i| all.mask[i * width..(i + 1) * width].iter().copied())
                .collect(),
        }
    }
}

/// Holds what persists across PPO iterations: the configuration, the KL controller and the
/// two AdamW optimizers. The policy and the value model are separate networks (InstructGPT),
/// so they get separate optimizers, learning rates and gradient-norm clips; one backward pass
/// of policy loss + vf_coef·value loss (+ ptx) gives both their gradients.
#[derive(Clone, Debug)]
pub struct PpoTrainer {
    pub config: PpoConfig,
    /// The KL coefficient now (starts as `config.kl`).
    pub kl: KlController,
    pub policy_opt: AdamW,
    pub value_opt: AdamW,
}

impl PpoTrainer {
    /// A trainer whose optimizers have taken no step.
    pub fn new(config: PpoConfig) -> PpoTrainer {
        PpoTrainer {
            kl: config.kl,
            policy_opt: AdamW::new(config.adam),
            value_opt: AdamW::new(config.adam),
            config,
        }
    }

    /// One PPO iteration on a batch of rollouts (see the module doc): `ref_logprobs` holds the
    /// reference policy's log-prob of every response token ([`response_logprobs`]), `scores`
    /// the reward model's score of each rollout, `ptx` an optional pretraining batch for
    /// PPO-ptx (used when `ptx_coef` > 0, on every minibatch step).
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &mut self,
        policy: &mut Gpt,
        value_model: &mut ValueModel,
        rollouts: &[Rollout],
        ref_logprobs: &[Vec<f64>],
        scores: &[f64],
        ptx: Option<&PtxBatch>,
        rng: &mut Rng,
    ) -> Result<PpoStats> {
        let refs = check_step_inputs(&self.config, &policy.config, rollouts, ref_logprobs, scores)?;
        let c = self.config.clone();
        let width = refs.iter().map(|r| r.response.len()).max().unwrap_or(0);
        let mut stats = PpoStats {
            beta: self.kl.beta,
            ..PpoStats::default()
        };
        let prepared =
            self.prepare(policy, value_model, &refs, ref_logprobs, scores, &mut stats)?;
        run_epochs(&c, &prepared, &refs, width, rng, &mut stats, |mb, stats| {
            self.train_minibatch(policy, value_model, mb, ptx, stats)
        })?;
        self.kl.update(stats.kl, refs.len());
        Ok(stats)
    }

    /// The no-gradient part: old log-probs and values, rewards, GAE, whitened advantages, and
    /// the batch statistics that come from them.
    fn prepare(
        &self,
        policy: &Gpt,
        value_model: &ValueModel,
        refs: &[&Rollout],
        ref_logprobs: &[Vec<f64>],
        scores: &[f64],
        stats: &mut PpoStats,
    ) -> Result<Prepared> {
        let c = &self.config;
        let width = refs.iter().map(|r| r.response.len()).max().unwrap_or(0);
        let mb = c.minibatch_size.max(1);
        let (mut old_lp, mut old_v, mut ent, mut ent_n) = (vec![], vec![], 0.0, 0.0);
        for chunk in refs.chunks(mb) {
            let p = Padded::new(chunk, width);
            let (lp, logp, v) = no_grad(|| -> Result<_> {
                let (lp, logp) = token_logprobs(policy, &p, c.temperature)?;
                let v = p.pick(&value_model.values(&p.ids, p.batch, p.seq)?)?;
                Ok((lp, logp, v))
            })?;
            let (s, k) = entropy_sum(&p, &logp);
            (ent, ent_n) = (ent + s, ent_n + k);
            old_lp.extend(lp.to_vec_f64());
            old_v.extend(v.to_vec_f64());
        }
        let entropy = ent / ent_n;
        Ok(prepare_batch(
            c,
            self.kl.beta,
            refs,
            ref_logprobs,
            scores,
            (old_lp, old_v, entropy),
            stats,
        ))
    }
    /// One gradient step on a minibatch.
    fn train_minibatch(
        &mut self,
        policy: &mut Gpt,
        value_model: &mut ValueModel,
        mb: &Minibatch,
        ptx: Option<&PtxBatch>,
        stats: &mut PpoStats,
    ) -> Result<()> {
        let c = &self.config;
        let p = &mb.padded;
        let dtype = policy.wte.dtype();
        let shape = [p.batch, p.width];
        let t = |x: &[f64]| -> Result<Tensor> {
            Ok(Tensor::from_vec(x.to_vec(), &shape)?.to_dtype(dtype))
        };
        let mask_f: Vec<f64> = mb.mask.iter().map(|&m| m as i32 as f64).collect();
        let mask = t(&mask_f)?;

        let (new_lp, _) = token_logprobs(policy, p, c.temperature)?;
        let new_v = p.pick(&value_model.values(&p.ids, p.batch, p.seq)?)?;
        let pg = policy_loss(&new_lp, &t(&mb.old_lp)?, &t(&mb.adv)?, &mask, c.cliprange)?;
        let vf = value_loss(
            &new_v,
            &t(&mb.old_v)?,
            &t(&mb.ret)?,
            &mask,
            c.cliprange_value,
        )?;
        let mut loss = ops::add(&pg, &ops::mul_scalar(&vf, c.vf_coef)?)?;
        if let (Some(b), true) = (ptx, c.ptx_coef > 0.0) {
            // InstructGPT eq. 2 maximises γ_ptx·E[log π(x)]: as a loss, + γ_ptx·cross-entropy.
            let ce = policy.loss(&b.ids, &b.targets, b.batch, b.seq, None)?;
            stats.ptx_loss += ce.item()?;
            loss = ops::add(&loss, &ops::mul_scalar(&ce, c.ptx_coef)?)?;
        }
        let mut grads = loss.backward()?;
        stats.policy_grad_norm += clip_grad_norm(&mut grads, &policy.params(), c.max_grad_norm)?;
        stats.value_grad_norm +=
            clip_grad_norm(&mut grads, &value_model.params(), c.max_grad_norm)?;
        self.policy_opt
            .step(&mut policy.params_mut(), &grads, c.policy_lr)?;
        self.value_opt
            .step(&mut value_model.params_mut(), &grads, c.value_lr)?;

        let [clip, akl, ratio, vclip] =
            minibatch_diagnostics(mb, &new_lp.to_vec_f64(), &new_v.to_vec_f64(), c);
        stats.policy_loss += pg.item()?;
        stats.value_loss += vf.item()?;
        stats.clip_frac += clip;
        stats.approx_kl += akl;
        stats.ratio += ratio;
        stats.value_clip_frac += vclip;
        Ok(())
    }
}

/// The host part of a PPO iteration's preparation, shared by the CPU and the GPU step: from
/// the policy's log-probs and the values before the update (flat `[N, R]`, rollout order) and
/// the mean entropy, the per-token rewards (β = `beta`), GAE, returns, whitened advantages, and
/// the batch statistics that come from them.
pub(crate) fn prepare_batch(
    c: &PpoConfig,
    beta: f64,
    refs: &[&Rollout],
    ref_logprobs: &[Vec<f64>],
    scores: &[f64],
    (old_lp, old_v, entropy): (Vec<f64>, Vec<f64>, f64),
    stats: &mut PpoStats,
) -> Prepared {
    let width = refs.iter().map(|r| r.response.len()).max().unwrap_or(0);
    let mask: Vec<bool> = refs
        .iter()
        .flat_map(|r| (0..width).map(move |j| j < r.response.len()))
        .collect();
    let lp_rows = unpad(&old_lp, refs, width);
    let v_rows = unpad(&old_v, refs, width);

    let (mut rewards, mut kl_sums, mut nonscore_sums) = (vec![0.0; refs.len() * width], 0.0, 0.0);
    for (b, r) in refs.iter().enumerate() {
        let score = adjusted_score(scores[b], r.ended, c.missing_eos_penalty);
        let (rw, kl) = token_rewards(&lp_rows[b], &ref_logprobs[b], score, beta, c.kl_estimator);
        rewards[b * width..b * width + rw.len()].copy_from_slice(&rw);
        kl_sums += kl.iter().sum::<f64>();
        nonscore_sums -= beta * kl.iter().sum::<f64>();
        stats.score += score;
        stats.frac_ended += r.ended as i32 as f64;
        stats.response_length += r.response.len() as f64;
        for (j, &blp) in r.logprobs.iter().enumerate() {
            stats.logprob_mismatch = stats.logprob_mismatch.max((blp - lp_rows[b][j]).abs());
        }
    }
    if c.whiten_rewards {
        rewards = masked_whiten(&rewards, &mask, false);
    }
    let (mut adv, mut ret) = (vec![0.0; rewards.len()], vec![0.0; rewards.len()]);
    for (b, r) in refs.iter().enumerate() {
        let span = b * width..b * width + r.response.len();
        let (a, rt) = gae(&rewards[span.clone()], &v_rows[b], c.gamma, c.lam);
        adv[span.clone()].copy_from_slice(&a);
        ret[span].copy_from_slice(&rt);
    }
    let adv = masked_whiten(&adv, &mask, true);

    let n = refs.len() as f64;
    stats.score /= n;
    stats.frac_ended /= n;
    stats.response_length /= n;
    stats.kl = kl_sums / n;
    stats.non_score_reward = nonscore_sums / n;
    stats.rlhf_reward = stats.score + stats.non_score_reward;
    stats.entropy = entropy;
    stats.explained_variance = explained_variance(&old_v, &ret, &mask);
    Prepared {
        old_lp,
        old_v,
        adv,
        ret,
        mask,
    }
}

/// The `ppo_epochs` passes over shuffled minibatches, shared by the CPU and the GPU step:
/// each epoch shuffles the rollout indices with `rng` and calls `train` on consecutive chunks
/// of `minibatch_size` (the last one shorter); then the per-minibatch statistics are turned
/// into means.
pub(crate) fn run_epochs(
    c: &PpoConfig,
    prepared: &Prepared,
    refs: &[&Rollout],
    width: usize,
    rng: &mut Rng,
    stats: &mut PpoStats,
    mut train: impl FnMut(&Minibatch, &mut PpoStats) -> Result<()>,
) -> Result<()> {
    let n = refs.len();
    let mb_size = c.minibatch_size.clamp(1, n);
    let mut updates = 0.0;
    for _ in 0..c.ppo_epochs {
        let mut order: Vec<usize> = (0..n).collect();
        rng.shuffle(&mut order);
        for rows in order.chunks(mb_size) {
            let mb = Minibatch::new(prepared, refs, rows, width);
            train(&mb, stats)?;
            updates += 1.0;
        }
    }
    for x in [
        &mut stats.policy_loss,
        &mut stats.value_loss,
        &mut stats.ptx_loss,
        &mut stats.approx_kl,
        &mut stats.clip_frac,
        &mut stats.value_clip_frac,
        &mut stats.ratio,
        &mut stats.policy_grad_norm,
        &mut stats.value_grad_norm,
    ] {
        *x /= updates;
    }
    Ok(())
}

/// The checks that open a PPO iteration, on the CPU ([`PpoTrainer::step`]) and on the GPU
/// (`cuda_ppo`): a valid `config`, rollouts that fit the `model`, one reference log-prob per
/// response token and one score per rollout. Returns the rollouts by reference.
pub(crate) fn check_step_inputs<'a>(
    config: &PpoConfig,
    model: &GptConfig,
    rollouts: &'a [Rollout],
    ref_logprobs: &[Vec<f64>],
    scores: &[f64],
) -> Result<Vec<&'a Rollout>> {
    config.validate()?;
    let refs: Vec<&Rollout> = rollouts.iter().collect();
    check_rollouts(model, &refs)?;
    check_lengths(&refs, ref_logprobs, scores)?;
    Ok(refs)
}

/// Checks that there is one reference log-prob per response token and one score per rollout.
fn check_lengths(refs: &[&Rollout], ref_logprobs: &[Vec<f64>], scores: &[f64]) -> Result<()> {
    if ref_logprobs.len() != refs.len() || scores.len() != refs.len() {
        return invalid(format!(
            "{} rollouts but {} reference log-prob rows and {} scores",
            refs.len(),
            ref_logprobs.len(),
            scores.len()
        ));
    }
    for (i, (r, lp)) in refs.iter().zip(ref_logprobs).enumerate() {
        if lp.len() != r.response.len() {
            return invalid(format!(
                "rollout {i}: {} reference log-probs for {} response tokens",
                lp.len(),
                r.response.len()
            ));
        }
    }
    Ok(())
}

// ---- a minimal sampler ----------------------------------------------------------------------

/// A minimal batched sampler without a KV cache (every step re-runs the whole prefix, so it is
/// O(T²); `model::generate` is the fast one): samples up to `max_new_tokens` tokens for each
/// prompt from softmax(logits/T), stopping a sequence at `end_token` or at the context
/// length, and records each token's log-prob under that distribution.
pub fn sample_rollouts(
    policy: &Gpt,
    prompts: &[Vec<usize>],
    max_new_tokens: usize,
    end_token: usize,
    temperature: f64,
    rng: &mut Rng,
) -> Result<Vec<Rollout>> {
    let mut out: Vec<Rollout> = prompts
        .iter()
        .map(|p| Rollout {
            prompt: p.clone(),
            response: vec![],
            ended: false,
            logprobs: vec![],
        })
        .collect();
    let ctx = policy.config.n_positions;
    for _ in 0..max_new_tokens {
        let active: Vec<usize> = (0..out.len())
            .filter(|&i| !out[i].ended && out[i].prompt.len() + out[i].response.len() < ctx)
            .collect();
        if active.is_empty() {
            break;
        }
        let seqs: Vec<Vec<usize>> = active
            .iter()
            .map(|&i| [out[i].prompt.as_slice(), &out[i].response].concat())
            .collect();
        let seq = seqs.iter().map(Vec::len).max().unwrap_or(1);
        let mut ids = vec![0; active.len() * seq];
        for (b, s) in seqs.iter().enumerate() {
            ids[b * seq..b * seq + s.len()].copy_from_slice(s);
        }
        let logits = no_grad(|| policy.forward(&ids, active.len(), seq, None))?;
        let logits = logits.to_vec_f64();
        let v = policy.config.vocab_size;
        for (b, &i) in active.iter().enumerate() {
            let at = (b * seq + seqs[b].len() - 1) * v;
            let (tok, lp) = sample_token(&logits[at..at + v], temperature, rng);
            let r = &mut out[i];
            r.response.push(tok);
            r.logprobs.push(lp);
            r.ended = tok == end_token;
        }
    }
    Ok(out)
}

/// Draws one token from softmax(logits/T); returns it with its log-prob.
fn sample_token(logits: &[f64], temperature: f64, rng: &mut Rng) -> (usize, f64) {
    let scaled: Vec<f64> = logits.iter().map(|l| l / temperature).collect();
    let max = scaled.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let lse = max + scaled.iter().map(|s| (s - max).exp()).sum::<f64>().ln();
    let u = rng.uniform();
    let mut acc = 0.0;
    for (i, s) in scaled.iter().enumerate() {
        acc += (s - lse).exp();
        if u < acc {
            return (i, s - lse);
        }
    }
    let last = scaled.len() - 1;
    (last, scaled[last] - lse)
}
