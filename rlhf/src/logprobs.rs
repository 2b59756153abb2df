//! Log-probabilities of completions under a policy: the quantity DPO compares with its
//! reference, and PPO's ratio and KL penalty are made of.
//!
//! A sequence is `prompt ++ completion` (token ids). Only the completion's tokens are scored
//! (the prompt is masked): for completion token `y_j`,
//!
//! ```text
//! log π(y_j | x, y_<j) = log_softmax(logits_{t-1} / T)[y_j]      t = position of y_j
//! log π(y | x)         = Σ_j log π(y_j | x, y_<j)
//! ```
//!
//! The logits are computed only at the positions that predict a completion token (the hidden
//! states are selected first, then multiplied by the unembedding), so a long prompt costs its
//! transformer pass but not its `[T, vocab]` logits.
//!
//! **Context.** When `prompt ++ completion` is longer than the model's context, the prompt is
//! truncated from the left (its oldest tokens are dropped); the completion is never cut. A
//! completion that leaves no room for at least one prompt token is an error.

use engine::{ops, Tensor};
use model::gpt::Dropout;
use model::tokenizer::Tokenizer;
use model::{Error, Gpt, Result};

use crate::chat::chat_prompt;

/// Per-token log-probabilities of a batch of completions, right-padded.
#[derive(Clone, Debug)]
pub struct TokenLogprobs {
    /// `[N, C]`: column `j` of row `i` is `log π(completion_i[j] | prompt_i, completion_i[..j])`;
    /// 0 past the completion's end. `C` is the longest completion (at least 1).
    pub logprobs: Tensor,
    /// `[N, C]`, 1 where a completion token is, 0 in the padding (same dtype as `logprobs`).
    pub mask: Tensor,
    /// Each completion's length in tokens.
    pub lengths: Vec<usize>,
}

/// The token ids of `chat_prompt(prompt)` and of `completion`, encoded separately (special
/// tokens such as `<|end|>` become their ids). Encoding them apart gives the same ids as
/// encoding the whole text, since `chat_prompt` ends with the special token `<|assistant|>`,
/// which BPE never merges across.
pub fn encode_chat(
    tokenizer: &Tokenizer,
    prompt: &str,
    completion: &str,
) -> (Vec<usize>, Vec<usize>) {
    let ids = |t: &str| {
        tokenizer
            .encode(t)
            .into_iter()
            .map(|i| i as usize)
            .collect()
    };
    (ids(&chat_prompt(prompt)), ids(completion))
}

/// Per-token log-probabilities of `completions[i]` following `prompts[i]` under `gpt` (see the
/// module docs), with logits divided by `temperature` (1.0 for the plain policy; PPO uses the
/// sampling temperature). `dropout` as in [`Gpt::hidden`].
pub fn token_logprobs(
    gpt: &Gpt,
    prompts: &[Vec<usize>],
    completions: &[Vec<usize>],
    temperature: f64,
    dropout: Dropout,
) -> Result<TokenLogprobs> {
    if prompts.len() != completions.len() || prompts.is_empty() {
        return Err(Error::Invalid(format!(
            "token_logprobs needs as many prompts as completions, at least one ({} and {})",
            prompts.len(),
            completions.len()
        )));
    }
    if temperature.is_nan() || temperature <= 0.0 {
        return Err(Error::Invalid(format!(
            "temperature {temperature} must be positive"
        )));
    }
    let ctx = gpt.config.n_positions;
    let windows = prompts
        .iter()
        .zip(completions)
        .map(|(p, c)| fit_window(p, c, ctx))
        .collect::<Result<Vec<_>>>()?;
    let n = windows.len();
    let seq = windows.iter().map(|w| w.len()).max().unwrap_or(1);
    let lengths: Vec<usize> = completions.iter().map(Vec::len).collect();
    let cols = lengths.iter().copied().max().unwrap_or(0).max(1);

    // Right-padded ids (pad id 0: causal attention never lets a real token see it).
    let mut ids = vec![0usize; n * seq];
    let mut rows = vec![0usize; n * cols]; // the hidden-state row predicting each target
    let mut targets = vec![0usize; n * cols];
    let mut mask = vec![0.0f64; n * cols];
    for (i, w) in windows.iter().enumerate() {
        ids[i * seq..i * seq + w.len()].copy_from_slice(w);
        let start = w.len() - lengths[i]; // position of the first completion token (≥ 1)
        for j in 0..lengths[i] {
            rows[i * cols + j] = i * seq + start + j - 1;
            targets[i * cols + j] = w[start + j];
            mask[i * cols + j] = 1.0;
        }
    }
    let c = gpt.config.n_embd;
    let hidden = ops::reshape(&gpt.hidden(&ids, n, seq, dropout)?, &[n * seq, c])?;
    let picked = ops::index_select(&hidden, 0, &rows)?; // [N·C, d]
    let logits = ops::matmul_ex(&picked, &gpt.wte, false, true)?; // [N·C, vocab]
    let logits = if temperature == 1.0 {
        logits
    } else {
        ops::mul_scalar(&logits, 1.0 / temperature)?
    };
    let logp = ops::log_softmax(&logits, -1)?;
    let chosen = ops::gather(&logp, 1, &targets, &[n * cols, 1])?;
    let mask = Tensor::from_vec(mask, &[n, cols])?.to_dtype(gpt.wte.dtype());
    let logprobs = ops::mul(&ops::reshape(&chosen, &[n, cols])?, &mask)?;
    Ok(TokenLogprobs {
        logprobs,
        mask,
        lengths,
    })
}

/// log π(completion | prompt) for each pair, `[N]`: the sum of [`token_logprobs`] at
/// temperature 1 over the completion tokens (prompt masked). An empty completion scores 0.
pub fn sequence_logprobs(
    gpt: &Gpt,
    prompts: &[Vec<usize>],
    completions: &[Vec<usize>],
    dropout: Dropout,
) -> Result<Tensor> {
    let t = token_logprobs(gpt, prompts, completions, 1.0, dropout)?;
    Ok(ops::sum(&t.logprobs, 1, false)?)
}

/// `prompt ++ completion`, its prompt cut from the left to fit `ctx` tokens. The completion
/// must leave room for at least one prompt token (its first token needs a predecessor).
fn fit_window(prompt: &[usize], completion: &[usize], ctx: usize) -> Result<Vec<usize>> {
    if prompt.is_empty() {
        return Err(Error::Invalid(
            "an empty prompt: the first completion token needs a preceding token".into(),
        ));
    }
    if completion.len() >= ctx {
        return Err(Error::Invalid(format!(
            "a completion of {} tokens leaves no room for the prompt in a context of {ctx}",
            completion.len()
        )));
    }
    let keep = prompt.len().min(ctx - completion.len());
    let mut w = prompt[prompt.len() - keep..].to_vec();
    w.extend_from_slice(completion);
    Ok(w)
}
