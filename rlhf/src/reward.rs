//! The reward model (InstructGPT section 3.5): the GPT trunk with its unembedding replaced
//! by a scalar head, read at the last token of `chat_prompt(prompt) + completion`, trained on
//! K-way rankings with the loss of InstructGPT eq. 1, then shifted by a bias so that the
//! demonstrations score 0 on average.
//!
//! ```text
//! r(x, y) = w · ln_f(h_L)[last token of x ++ y] + b + b_norm
//! loss(r) = −1/C(K,2) · Σ_{(y_w, y_l)} log σ(r(x, y_w) − r(x, y_l))      InstructGPT eq. 1
//! ```
//!
//! **One ranking, one batch element.** The K answers of a prompt go through the model in one
//! forward pass (K sequences), and the C(K,2) pair terms are formed from those K scores;
//! shuffling pairs as independent examples makes each answer appear K−1 times per epoch and
//! overfits (InstructGPT footnote 5). A batch is B prompts (every answer of all of them in one
//! forward per micro-batch); the batch loss is the mean of the per-prompt losses. Pairs the
//! labeler tied are left out; a prompt left with no pair is skipped.
//!
//! **Different lengths.** Sequences are right-padded to the longest one and each score is read
//! at the sequence's own last index (an `index_select` of rows `i·T + len_i − 1` of the
//! `[N·T]` per-token scores). Causal attention means a real token never sees the padding after
//! it, so the read is the same as for the sequence alone, and one forward serves the batch
//! (rather than grouping by length, which would cost one forward per distinct length).
//!
//! **Context.** A sequence longer than the model's context is truncated from the LEFT: the end
//! (the answer and where the score is read) is kept, the oldest prompt tokens are dropped.

use std::path::Path;

use engine::optim::{clip_grad_norm, AdamW, AdamWConfig, LrSchedule};
use engine::{no_grad, ops, DType, Gradients, Rng, Tensor};
use model::checkpoint::{self, load_tensors, save_tensors};
use model::gpt::Dropout;
use model::tokenizer::Tokenizer;
use model::{Error, Gpt, Result};

use crate::data::{Demonstration, Pair, Ranking};
use crate::logprobs::encode_chat;

/// The file, beside the trunk's `config.json` and `model.safetensors`, that holds the head.
pub const HEAD_FILE: &str = "reward_head.safetensors";
/// The head's weight `[1, C]` in [`HEAD_FILE`] (HF `GPT2ForSequenceClassification` layout).
pub const SCORE_WEIGHT: &str = "score.weight";
/// The head's bias `[1]` in [`HEAD_FILE`].
pub const SCORE_BIAS: &str = "score.bias";
/// The normalisation bias `[1]` (f64) in [`HEAD_FILE`].
pub const NORM_BIAS: &str = "normalization.bias";

/// A reward model: a GPT trunk and a scalar head read at the last token.
#[derive(Clone, Debug)]
pub struct RewardModel {
    /// The transformer (its tied unembedding `wte` serves only as the token embedding here).
    pub trunk: Gpt,
    /// The head's weight `[1, C]`.
    pub score_w: Tensor,
    /// The head's bias `[1]`.
    pub score_b: Tensor,
    /// Added to every score so that the demonstrations score mean 0 (InstructGPT 3.5); not
    /// trained, set by [`normalize`].
    pub norm_bias: f64,
}

impl RewardModel {
    /// A reward model from a policy (the SFT model in InstructGPT): its trunk, and a fresh
    /// head `w ~ N(0, 1/(d+1))` (std 1/√(d+1), as openai/lm-human-preferences), `b = 0`, no
    /// normalisation yet.
    pub fn from_policy(gpt: Gpt, rng: &mut Rng) -> RewardModel {
        let d = gpt.config.n_embd;
        let std = 1.0 / ((d + 1) as f64).sqrt();
        let dtype = gpt.wte.dtype();
        RewardModel {
            trunk: gpt,
            score_w: rng.normal_tensor(&[1, d], 0.0, std, dtype).requires_grad(),
            score_b: Tensor::zeros(&[1], dtype).requires_grad(),
            norm_bias: 0.0,
        }
    }

    /// The head applied at every position, `[B, T]`, for `ids` (row-major `[B, T]`), bias and
    /// normalisation included. The reward is the value at a sequence's last token; the other
    /// positions are what a value model initialised from the RM starts from.
    pub fn token_scores(
        &self,
        ids: &[usize],
        batch: usize,
        seq: usize,
        dropout: Dropout,
    ) -> Result<Tensor> {
        let h = self.trunk.hidden(ids, batch, seq, dropout)?; // [B, T, C]
        let s = ops::matmul_ex(&h, &self.score_w, false, true)?; // [B, T, 1]
        let s = ops::add(&ops::reshape(&s, &[batch, seq])?, &self.score_b)?;
        Ok(ops::add_scalar(&s, self.norm_bias)?)
    }

    /// The reward of each sequence, `[N]`: the head at its own last token (see the module docs
    /// for padding and left truncation). Sequences may have different lengths; none may be
    /// empty.
    pub fn scores(&self, sequences: &[Vec<usize>], dropout: Dropout) -> Result<Tensor> {
        if let Some(i) = sequences.iter().position(Vec::is_empty) {
            return Err(Error::Invalid(format!("sequence {i} is empty")));
        }
        if sequences.is_empty() {
            return Err(Error::Invalid("no sequences to score".into()));
        }
        let ctx = self.trunk.config.n_positions;
        let kept: Vec<&[usize]> = sequences
            .iter()
            .map(|s| &s[s.len().saturating_sub(ctx)..])
            .collect();
        let (n, seq) = (kept.len(), kept.iter().map(|s| s.len()).max().unwrap_or(1));
        let mut ids = vec![0usize; n * seq];
        let mut last = Vec::with_capacity(n);
        for (i, s) in kept.iter().enumerate() {
            ids[i * seq..i * seq + s.len()].copy_from_slice(s);
            last.push(i * seq + s.len() - 1);
        }
        let all = ops::reshape(&self.token_scores(&ids, n, seq, dropout)?, &[n * seq])?;
        Ok(ops::index_select(&all, 0, &last)?)
    }

    /// Every trained parameter: the trunk's (in [`Gpt::params`] order), then the head's
    /// weight and bias.
    pub fn params(&self) -> Vec<&Tensor> {
        let mut v = self.trunk.params();
        v.push(&self.score_w);
        v.push(&self.score_b);
        v
    }

    /// Every trained parameter, mutable (for the optimizer), in [`RewardModel::params`] order.
    pub fn params_mut(&mut self) -> Vec<&mut Tensor> {
        let mut v = self.trunk.params_mut();
        v.push(&mut self.score_w);
        v.push(&mut self.score_b);
        v
    }

    /// The model with its parameters converted to `dtype` (f64 for gradient checks).
    pub fn to_dtype(&self, dtype: DType) -> Result<RewardModel> {
        let leaf = |t: &Tensor| t.to_dtype(dtype).detach().requires_grad();
        Ok(RewardModel {
            trunk: self.trunk.to_dtype(dtype)?,
            score_w: leaf(&self.score_w),
            score_b: leaf(&self.score_b),
            norm_bias: self.norm_bias,
        })
    }

    /// Saves into the folder `dir`: the trunk as a normal GPT-2 checkpoint
    /// ([`checkpoint::save`]) and the head in [`HEAD_FILE`] (`score.weight`, `score.bias`,
    /// `normalization.bias`), each written atomically.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        checkpoint::save(&self.trunk, dir)?;
        let head = vec![
            (SCORE_WEIGHT.to_string(), self.score_w.to_dtype(DType::F32)),
            (SCORE_BIAS.to_string(), self.score_b.to_dtype(DType::F32)),
            (
                NORM_BIAS.to_string(),
                Tensor::from_vec(vec![self.norm_bias], &[1])?,
            ),
        ];
        save_tensors(dir.join(HEAD_FILE), &head)
    }

    /// Loads a reward model saved by [`RewardModel::save`]; its parameters are f32 leaves that
    /// require gradients. A missing or misshapen head tensor is an error naming it.
    pub fn load(dir: impl AsRef<Path>) -> Result<RewardModel> {
        let dir = dir.as_ref();
        let trunk = checkpoint::load(dir)?;
        let path = dir.join(HEAD_FILE);
        if !path.exists() {
            // The usual mistake: a policy (SFT, PPO) folder where a reward model belongs.
            return Err(format_err(
                &path,
                format!(
                    "no such file: {} is a GPT checkpoint but not a reward model \
                     (`ferrochat rm` writes one)",
                    dir.display()
                ),
            ));
        }
        let tensors = load_tensors(&path)?;
        let get = |name: &str, shape: &[usize]| -> Result<Tensor> {
            let t = tensors
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t)
                .ok_or_else(|| format_err(&path, format!("missing tensor `{name}`")))?;
            if t.shape() != shape {
                return Err(format_err(
                    &path,
                    format!(
                        "tensor `{name}` has shape {:?}, expected {shape:?}",
                        t.shape()
                    ),
                ));
            }
            Ok(t.clone())
        };
        let param = |t: Tensor| t.to_dtype(DType::F32).detach().requires_grad();
        let d = trunk.config.n_embd;
        let score_w = param(get(SCORE_WEIGHT, &[1, d])?);
        let score_b = param(get(SCORE_BIAS, &[1])?);
        let norm_bias = get(NORM_BIAS, &[1])?.to_vec_f64()[0];
        Ok(RewardModel {
            trunk,
            score_w,
            score_b,
            norm_bias,
        })
    }
}

fn format_err(path: &Path, msg: String) -> Error {
    Error::Format {
        path: path.display().to_string(),
        msg,
    }
}

/// The model input for `completion` to `prompt`: the ids of `chat_prompt(prompt) + completion`.
pub fn encode_sequence(tokenizer: &Tokenizer, prompt: &str, completion: &str) -> Vec<usize> {
    let (mut p, c) = encode_chat(tokenizer, prompt, completion);
    p.extend(c);
    p
}

/// The (better, worse) index pairs of a ranking, best first, ties left out: the pairs of
/// InstructGPT eq. 1 (indices into `ranking.responses`).
pub fn ranking_pairs(ranking: &Ranking) -> Vec<(usize, usize)> {
    let order = &ranking.ranking;
    let mut out = Vec::new();
    for (i, &better) in order.iter().enumerate() {
        for &worse in &order[i + 1..] {
            if !ranking.tied(better, worse) {
                out.push((better, worse));
            }
        }
    }
    out
}

/// A pair as a ranking of K = 2 (`chosen` first): the common open-source preference format
/// fed to the same loss.
pub fn ranking_from_pair(pair: &Pair) -> Ranking {
    Ranking {
        prompt: pair.prompt.clone(),
        responses: vec![pair.chosen.clone(), pair.rejected.clone()],
        ranking: vec![0, 1],
        ties: Vec::new(),
    }
}

/// The reward-model loss of InstructGPT eq. 1 over a batch of prompts, as a function of the
/// scores: `scores` is `[N]` (every answer of every prompt), and `groups[g]` lists prompt
/// g's (better, worse) pairs as indices into `scores`. Each prompt contributes
/// −1/C_g Σ log σ(s_w − s_l) over its C_g pairs; the result is the mean over the prompts that
/// have at least one pair. No pair at all is an error.
pub fn ranking_loss(scores: &Tensor, groups: &[Vec<(usize, usize)>]) -> Result<Tensor> {
    let counted = groups.iter().filter(|g| !g.is_empty()).count();
    if counted == 0 {
        return Err(Error::Invalid(
            "no ranked pair to train on (all tied?)".into(),
        ));
    }
    let mut better = Vec::new();
    let mut worse = Vec::new();
    let mut weight = Vec::new();
    for g in groups.iter().filter(|g| !g.is_empty()) {
        let w = 1.0 / (g.len() * counted) as f64;
        for &(b, l) in g {
            better.push(b);
            worse.push(l);
            weight.push(w);
        }
    }
    let diff = ops::sub(
        &ops::index_select(scores, 0, &better)?,
        &ops::index_select(scores, 0, &worse)?,
    )?;
    let n = weight.len();
    let weight = Tensor::from_vec(weight, &[n])?.to_dtype(scores.dtype());
    let weighted = ops::mul(&ops::logsigmoid(&diff)?, &weight)?;
    Ok(ops::neg(&ops::sum_all(&weighted)?)?)
}

/// How to train a reward model. Defaults follow InstructGPT (App. C.2) where it gives them.
#[derive(Clone, Debug)]
pub struct RewardConfig {
    /// Passes over the rankings (InstructGPT: 1; more overfits).
    pub epochs: usize,
    /// Prompts (rankings) per optimizer step (InstructGPT: 64).
    pub batch_size: usize,
    /// Prompts per forward pass; a step accumulates the gradients of its micro-batches.
    pub micro_batch: usize,
    /// Peak learning rate (InstructGPT: 9e-6 for the 6B RM).
    pub lr: f64,
    /// Final learning rate as a fraction of `lr` (InstructGPT: cosine to 10%).
    pub min_lr_ratio: f64,
    /// Fraction of the steps spent in linear warm-up.
    pub warmup_fraction: f64,
    /// Clip the global gradient norm to this (0 = no clipping).
    pub grad_clip: f64,
    /// AdamW settings.
    pub adamw: AdamWConfig,
    /// Apply the trunk's dropout while training (trl disables it for reward modelling).
    pub dropout: bool,
    /// Seed of the shuffling and dropout.
    pub seed: u64,
}

impl Default for RewardConfig {
    fn default() -> Self {
        RewardConfig {
            epochs: 1,
            batch_size: 64,
            micro_batch: 8,
            lr: 9e-6,
            min_lr_ratio: 0.1,
            warmup_fraction: 0.05,
            grad_clip: 1.0,
            adamw: AdamWConfig {
                beta2: 0.95,
                ..AdamWConfig::default()
            },
            dropout: false,
            seed: 0,
        }
    }
}

/// What one reward-model optimizer step did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RewardStepStats {
    /// The step just taken (1 for the first).
    pub step: u64,
    /// The batch loss (InstructGPT eq. 1, mean over the batch's prompts).
    pub loss: f64,
    /// Fraction of the batch's pairs with r(better) > r(worse), before the update.
    pub accuracy: f64,
    /// Mean score of the better answer over the batch's pairs.
    pub chosen_mean: f64,
    /// Mean score of the worse answer over the batch's pairs.
    pub rejected_mean: f64,
    /// Pairs in the batch.
    pub pairs: usize,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Learning rate of the step.
    pub lr: f64,
}

/// A ranking, tokenised: one sequence per response, and its (better, worse) pairs.
struct Encoded {
    sequences: Vec<Vec<usize>>,
    pairs: Vec<(usize, usize)>,
}

fn encode_ranking(tokenizer: &Tokenizer, r: &Ranking) -> Encoded {
    Encoded {
        sequences: r
            .responses
            .iter()
            .map(|c| encode_sequence(tokenizer, &r.prompt, c))
            .collect(),
        pairs: ranking_pairs(r),
    }
}

/// Per prompt, its (better, worse) pairs as indices into a batch's scores.
type PairGroups = Vec<Vec<(usize, usize)>>;

/// The scores of a group of encoded rankings in one forward pass, and the pair groups as
/// indices into those scores.
fn score_group(
    rm: &RewardModel,
    group: &[&Encoded],
    dropout: Dropout,
) -> Result<(Tensor, PairGroups)> {
    let mut seqs = Vec::new();
    let mut groups = Vec::new();
    for e in group {
        let off = seqs.len();
        seqs.extend(e.sequences.iter().cloned());
        groups.push(e.pairs.iter().map(|&(b, w)| (off + b, off + w)).collect());
    }
    Ok((rm.scores(&seqs, dropout)?, groups))
}

/// Pairwise sums over the groups' pairs: (pairs ranked right, Σ r(better), Σ r(worse), pairs).
fn pair_sums(scores: &[f64], groups: &[Vec<(usize, usize)>]) -> (usize, f64, f64, usize) {
    let (mut correct, mut chosen, mut rejected, mut n) = (0, 0.0, 0.0, 0);
    for &(b, w) in groups.iter().flatten() {
        correct += usize::from(scores[b] > scores[w]);
        chosen += scores[b];
        rejected += scores[w];
        n += 1;
    }
    (correct, chosen, rejected, n)
}

/// Trains `rm` on `rankings` (InstructGPT eq. 1; see the module docs): `config.epochs`
/// shuffled passes, batches of `config.batch_size` prompts, AdamW with linear warm-up and
/// cosine decay to `min_lr_ratio · lr`, global-norm clipping. Rankings with no untied pair are
/// skipped. `on_step` sees each step's metrics as it is taken; all of them are returned.
/// Call [`normalize`] afterwards.
pub fn train_reward_model(
    rm: &mut RewardModel,
    rankings: &[Ranking],
    tokenizer: &Tokenizer,
    config: &RewardConfig,
    mut on_step: impl FnMut(&RewardStepStats),
) -> Result<Vec<RewardStepStats>> {
    if config.batch_size == 0 || config.micro_batch == 0 {
        return Err(Error::Invalid(
            "batch_size and micro_batch must be positive".into(),
        ));
    }
    let data: Vec<Encoded> = rankings
        .iter()
        .map(|r| encode_ranking(tokenizer, r))
        .filter(|e| !e.pairs.is_empty())
        .collect();
    if data.is_empty() {
        return Err(Error::Invalid("no ranking with an untied pair".into()));
    }
    let per_epoch = data.len().div_ceil(config.batch_size) as u64;
    let total = per_epoch * config.epochs as u64;
    let schedule = LrSchedule {
        max_lr: config.lr,
        min_lr: config.lr * config.min_lr_ratio,
        warmup: (total as f64 * config.warmup_fraction).round() as u64,
        total,
    };
    let mut opt = AdamW::new(config.adamw);
    let mut rng = Rng::new(config.seed);
    let mut drop_rng = rng.fork(1);
    let mut stats = Vec::with_capacity(total as usize);
    for _ in 0..config.epochs {
        let mut order: Vec<usize> = (0..data.len()).collect();
        rng.shuffle(&mut order);
        for batch in order.chunks(config.batch_size) {
            let items: Vec<&Encoded> = batch.iter().map(|&i| &data[i]).collect();
            let lr = schedule.lr(stats.len() as u64);
            let dropout = config.dropout.then_some(&mut drop_rng);
            let s = reward_step(rm, &mut opt, &items, config, lr, dropout)?;
            let s = RewardStepStats {
                step: stats.len() as u64 + 1,
                ..s
            };
            on_step(&s);
            stats.push(s);
        }
    }
    Ok(stats)
}

/// One optimizer step over a batch of rankings (gradients accumulated over micro-batches,
/// each weighted by its share of the batch's prompts).
fn reward_step(
    rm: &mut RewardModel,
    opt: &mut AdamW,
    items: &[&Encoded],
    config: &RewardConfig,
    lr: f64,
    mut dropout: Dropout,
) -> Result<RewardStepStats> {
    let mut grads = Gradients::default();
    let (mut loss, mut correct, mut chosen, mut rejected, mut pairs) = (0.0, 0, 0.0, 0.0, 0);
    for micro in items.chunks(config.micro_batch) {
        let (scores, groups) = score_group(rm, micro, dropout.as_deref_mut())?;
        let share = micro.len() as f64 / items.len() as f64;
        let l = ops::mul_scalar(&ranking_loss(&scores, &groups)?, share)?;
        loss += l.item()?;
        let (c, sc, sr, n) = pair_sums(&scores.to_vec_f64(), &groups);
        (correct, chosen, rejected, pairs) = (correct + c, chosen + sc, rejected + sr, pairs + n);
        grads.accumulate(l.backward()?)?;
    }
    let max_norm = if config.grad_clip > 0.0 {
        config.grad_clip
    } else {
        f64::INFINITY
    };
    let grad_norm = clip_grad_norm(&mut grads, &rm.params(), max_norm)?;
    no_grad(|| opt.step(&mut rm.params_mut(), &grads, lr))?;
    let n = pairs as f64;
    Ok(RewardStepStats {
        step: 0,
        loss,
        accuracy: correct as f64 / n,
        chosen_mean: chosen / n,
        rejected_mean: rejected / n,
        pairs,
        grad_norm,
        lr,
    })
}

/// Held-out quality of a reward model on rankings (ties left out).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RewardEval {
    /// Fraction of pairs with r(better) > r(worse) (InstructGPT's RM: 72.4%).
    pub accuracy: f64,
    /// Mean of r(better) − r(worse).
    pub mean_margin: f64,
    /// Mean score of the better answers.
    pub chosen_mean: f64,
    /// Mean score of the worse answers.
    pub rejected_mean: f64,
    /// Pairs compared.
    pub pairs: usize,
}

/// Pairwise accuracy and margin of `rm` on `rankings`, without dropout or gradients (16
/// prompts per forward pass).
pub fn evaluate(
    rm: &RewardModel,
    rankings: &[Ranking],
    tokenizer: &Tokenizer,
) -> Result<RewardEval> {
    let data: Vec<Encoded> = rankings
        .iter()
        .map(|r| encode_ranking(tokenizer, r))
        .collect();
    let refs: Vec<&Encoded> = data.iter().collect();
    let (mut correct, mut chosen, mut rejected, mut pairs) = (0, 0.0, 0.0, 0);
    no_grad(|| -> Result<()> {
        for group in refs.chunks(16) {
            let (scores, groups) = score_group(rm, group, None)?;
            let (c, sc, sr, n) = pair_sums(&scores.to_vec_f64(), &groups);
            (correct, chosen, rejected, pairs) =
                (correct + c, chosen + sc, rejected + sr, pairs + n);
        }
        Ok(())
    })?;
    if pairs == 0 {
        return Err(Error::Invalid("no untied pair to evaluate".into()));
    }
    let n = pairs as f64;
    Ok(RewardEval {
        accuracy: correct as f64 / n,
        mean_margin: (chosen - rejected) / n,
        chosen_mean: chosen / n,
        rejected_mean: rejected / n,
        pairs,
    })
}

/// The reward of each (prompt, completion), without dropout or gradients, `batch` sequences
/// per forward pass.
pub fn score_completions(
    rm: &RewardModel,
    tokenizer: &Tokenizer,
    items: &[(&str, &str)],
    batch: usize,
) -> Result<Vec<f64>> {
    let seqs: Vec<Vec<usize>> = items
        .iter()
        .map(|(p, c)| encode_sequence(tokenizer, p, c))
        .collect();
    no_grad(|| {
        let mut out = Vec::with_capacity(seqs.len());
        for chunk in seqs.chunks(batch.max(1)) {
            out.extend(rm.scores(chunk, None)?.to_vec_f64());
        }
        Ok(out)
    })
}

/// Sets the normalisation bias so that the demonstrations score mean 0 (InstructGPT 3.5:
/// "so that the labeler demonstrations achieve a mean score of 0 before doing RL"). Returns
/// the new bias.
pub fn normalize(
    rm: &mut RewardModel,
    demonstrations: &[Demonstration],
    tokenizer: &Tokenizer,
) -> Result<f64> {
    if demonstrations.is_empty() {
        return Err(Error::Invalid("no demonstrations to normalise on".into()));
    }
    let items: Vec<(&str, &str)> = demonstrations
        .iter()
        .map(|d| (d.prompt.as_str(), d.completion.as_str()))
        .collect();
    let scores = score_completions(rm, tokenizer, &items, 32)?;
    let mean = scores.iter().sum::<f64>() / scores.len() as f64;
    rm.norm_bias -= mean;
    Ok(rm.norm_bias)
}
