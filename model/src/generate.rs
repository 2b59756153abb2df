//! Inference: a KV cache, incremental forward passes over it, and batched sampling
//! (temperature, top-k, top-p, stop tokens) with the log-probabilities RLHF needs.
//!
//! # The cache
//!
//! A forward pass over positions `p..p+n` with a [`KvCache`] that holds the keys and values of
//! positions `0..p` computes only the new positions. In every block, the new queries, keys and
//! values are computed as in [`Gpt::forward`], the keys and values are appended to the cache,
//! and query `i` (absolute position `p+i`) attends over all cached keys with the causal mask:
//!
//! ```text
//! S_ij = q_i·k_j / √D            for j ≤ p+i   (keys j > p+i are masked: S_ij = −∞)
//! y_i  = Σ_j softmax_j(S_i)·v_j
//! ```
//!
//! which is exactly the attention of the full forward restricted to rows `p..p+n`; everything
//! else in a block acts on positions independently. So prefilling a prompt and then decoding one
//! token at a time gives the same logits as the full forward over the whole sequence.
//!
//! # Sampling
//!
//! For next-token logits `l` and temperature `T > 0`, the *scaled* distribution is
//! `softmax(l/T)`. The *sampling* distribution filters `l/T` first — top-k, then top-p, the
//! order Hugging Face applies them — and renormalises what is left:
//!
//! - top-k keeps the tokens whose scaled logit is ≥ the k-th largest (ties at the boundary are
//!   kept, as in HF);
//! - top-p (nucleus) sorts the tokens by probability, descending, and keeps the smallest prefix
//!   whose mass is ≥ p: token `t_k` is kept iff `Σ_{j<k} P(t_j) < p` (so the top token always
//!   is).
//!
//! [`generate`] returns, for each drawn token, its log-probability under both: the sampling
//! distribution (what the sampler actually did) and the scaled distribution `log softmax(l/T)`
//! (what a policy-gradient loss recomputes from the logits with the same temperature).
//! Temperature 0 is greedy decoding (see [`sample_token`] for its log-probabilities).

use engine::{no_grad, ops, DType, Rng, Storage, Tensor};
use kernels::Float;
use rayon::prelude::*;

use crate::{Error, Gpt, Result};

// ---- the KV cache ------------------------------------------------------------------------

/// The keys and values of the positions seen so far, per layer, for a batch of sequences that
/// all have the same length [`len`](KvCache::len).
///
/// Each layer holds a key and a value buffer laid out `[batch, n_head, capacity, head_dim]`, of
/// which positions `0..len` are filled. The capacity grows (doubling, up to the model's
/// `n_positions`) as tokens are appended; [`reserve`](KvCache::reserve) sizes it up front.
#[derive(Clone, Debug)]
pub struct KvCache {
    batch: usize,
    n_head: usize,
    head_dim: usize,
    max_len: usize,
    len: usize,
    capacity: usize,
    dtype: DType,
    /// (keys, values) per layer.
    layers: Vec<(Storage, Storage)>,
}

impl KvCache {
    /// An empty cache for `batch` sequences of `model` (its dtype, layers, heads, context).
    pub fn new(model: &Gpt, batch: usize) -> KvCache {
        let c = &model.config;
        let dtype = model.wte.dtype();
        KvCache {
            batch,
            n_head: c.n_head,
            head_dim: c.head_dim(),
            max_len: c.n_positions,
            len: 0,
            capacity: 0,
            dtype,
            layers: (0..c.n_layer)
                .map(|_| (Storage::zeros(dtype, 0), Storage::zeros(dtype, 0)))
                .collect(),
        }
    }

    /// Number of positions cached (the position of the next token).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no position is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of sequences in the batch.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Number of positions the buffers hold without growing.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Grows the buffers to hold at least `total` positions (capped at the context length).
    pub fn reserve(&mut self, total: usize) {
        let new_cap = total.min(self.max_len);
        if new_cap <= self.capacity {
            return;
        }
        let bh = self.batch * self.n_head;
        let (old_cap, len, d) = (self.capacity, self.len, self.head_dim);
        let regrow = |s: &Storage| match s {
            Storage::F32(v) => Storage::F32(relayout(v, bh, old_cap, new_cap, len, d)),
            Storage::F64(v) => Storage::F64(relayout(v, bh, old_cap, new_cap, len, d)),
        };
        for (k, v) in &mut self.layers {
            *k = regrow(k);
            *v = regrow(v);
        }
        self.capacity = new_cap;
    }

    /// A cache whose row `i` is row `rows[i]` of this one: repeats rows (one prompt prefilled
    /// once, then decoded as many samples), reorders them, or drops finished ones.
    pub fn select_rows(&self, rows: &[usize]) -> Result<KvCache> {
        if let Some(&r) = rows.iter().find(|&&r| r >= self.batch) {
            return Err(Error::Invalid(format!(
                "row {r} is out of range for a cache of {} sequences",
                self.batch
            )));
        }
        let block = self.n_head * self.capacity * self.head_dim;
        let pick = |s: &Storage| match s {
            Storage::F32(v) => Storage::F32(gather_rows(v, rows, block)),
            Storage::F64(v) => Storage::F64(gather_rows(v, rows, block)),
        };
        Ok(KvCache {
            batch: rows.len(),
            layers: self
                .layers
                .iter()
                .map(|(k, v)| (pick(k), pick(v)))
                .collect(),
            ..self.clone_shape()
        })
    }

    /// This cache's sizes with empty buffers (for building a modified copy).
    fn clone_shape(&self) -> KvCache {
        KvCache {
            layers: Vec::new(),
            ..*self
        }
    }

    /// Checks that `model` and a forward over `batch × n_new` new tokens fit this cache.
    fn check(&self, model: &Gpt, batch: usize, n_new: usize) -> Result<()> {
        let c = &model.config;
        if self.layers.len() != c.n_layer
            || self.n_head != c.n_head
            || self.head_dim != c.head_dim()
            || self.max_len != c.n_positions
            || self.dtype != model.wte.dtype()
        {
            return Err(Error::Invalid(
                "the KV cache was made for a different model".into(),
            ));
        }
        if batch != self.batch {
            return Err(Error::Invalid(format!(
                "a batch of {batch} sequences does not match the KV cache's {}",
                self.batch
            )));
        }
        if self.len + n_new > self.max_len {
            return Err(Error::Invalid(format!(
                "{} cached + {n_new} new tokens exceed the context of {} positions",
                self.len, self.max_len
            )));
        }
        Ok(())
    }

    /// Writes the new keys and values of `layer` (each `[batch, n_head, n, head_dim]`) at
    /// positions `len..len+n`. [`len`](KvCache::len) moves on once every layer is written.
    fn write(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<()> {
        let (bh, cap, d, p) = (
            self.batch * self.n_head,
            self.capacity,
            self.head_dim,
            self.len,
        );
        let (kc, vc) = &mut self.layers[layer];
        for (buf, new) in [(kc, k), (vc, v)] {
            match buf {
                Storage::F32(b) => write_positions(b, new.data::<f32>()?, bh, cap, d, p),
                Storage::F64(b) => write_positions(b, new.data::<f64>()?, bh, cap, d, p),
            }
        }
        Ok(())
    }

    /// Attention of the new queries `q` (`[batch, n_head, n, head_dim]`, absolute positions
    /// `len..len+n`, whose keys and values are written already) over the cached keys and
    /// values of `layer`.
    fn attend(&self, layer: usize, q: &Tensor) -> Result<Tensor> {
        let n = q.shape()[2];
        let (bh, cap, d) = (self.batch * self.n_head, self.capacity, self.head_dim);
        let p = self.len + n;
        let out = match &self.layers[layer] {
            (Storage::F32(k), Storage::F32(v)) => {
                Storage::F32(cached_attention(q.data()?, k, v, bh, n, cap, d, p))
            }
            (Storage::F64(k), Storage::F64(v)) => {
                Storage::F64(cached_attention(q.data()?, k, v, bh, n, cap, d, p))
            }
            _ => unreachable!("keys and values share the cache's dtype"),
        };
        Ok(Tensor::from_storage(out, q.shape())?)
    }
}

/// `[bh, old_cap, d]` (first `len` positions filled) → `[bh, new_cap, d]`.
fn relayout<F: Float>(
    v: &[F],
    bh: usize,
    old_cap: usize,
    new_cap: usize,
    len: usize,
    d: usize,
) -> Vec<F> {
    let mut out = vec![F::zero(); bh * new_cap * d];
    for h in 0..bh {
        out[h * new_cap * d..][..len * d].copy_from_slice(&v[h * old_cap * d..][..len * d]);
    }
    out
}

/// Row blocks `rows[i]` of `v` (blocks of `block` values), in order.
fn gather_rows<F: Float>(v: &[F], rows: &[usize], block: usize) -> Vec<F> {
    let mut out = Vec::with_capacity(rows.len() * block);
    for &r in rows {
        out.extend_from_slice(&v[r * block..(r + 1) * block]);
    }
    out
}

/// Copies `new` (`[bh, n, d]`) into `buf` (`[bh, cap, d]`) at positions `p..p+n`.
fn write_positions<F: Float>(buf: &mut [F], new: &[F], bh: usize, cap: usize, d: usize, p: usize) {
    let n = new.len() / (bh * d).max(1);
    for h in 0..bh {
        buf[(h * cap + p) * d..][..n * d].copy_from_slice(&new[h * n * d..][..n * d]);
    }
}

/// softmax(q·Kᵀ/√d + mask)·V for `n` queries per head at absolute positions `p-n..p` over
/// the keys and values `0..p` of a `[bh, cap, d]` cache; query `i` sees keys `j ≤ p-n+i`.
/// Heads run in parallel when the work is large enough to pay for it; each head's result does
/// not depend on the thread count.
#[allow(clippy::too_many_arguments)]
fn cached_attention<F: Float>(
    q: &[F],
    k: &[F],
    v: &[F],
    bh: usize,
    n: usize,
    cap: usize,
    d: usize,
    p: usize,
) -> Vec<F> {
    let mut out = vec![F::zero(); bh * n * d];
    let head = |h: usize, out_h: &mut [F]| {
        let kv = h * cap * d..(h * cap + p) * d;
        attend_head(&q[h * n * d..][..n * d], &k[kv.clone()], &v[kv], d, out_h);
    };
    if bh * n * p * d >= PAR_MIN_WORK && bh > 1 {
        out.par_chunks_mut(n * d)
            .enumerate()
            .for_each(|(h, o)| head(h, o));
    } else {
        out.chunks_mut(n * d)
            .enumerate()
            .for_each(|(h, o)| head(h, o));
    }
    out
}

/// Below this many multiply-adds (per product) the cached attention runs on one thread.
const PAR_MIN_WORK: usize = 1 << 16;

/// One head: the last `n` of `p` positions attend over keys `k` and values `v` (`[p, d]`);
/// writes `out` (`[n, d]`, zeroed).
fn attend_head<F: Float>(q: &[F], k: &[F], v: &[F], d: usize, out: &mut [F]) {
    let (n, p) = (q.len() / d, k.len() / d);
    let scale = F::one() / F::from_f64(d as f64).sqrt();
    let mut scores = vec![F::zero(); p];
    for i in 0..n {
        let seen = p - n + i + 1;
        let qi = &q[i * d..][..d];
        let mut max = F::neg_infinity();
        for (j, s) in scores[..seen].iter_mut().enumerate() {
            *s = scale * dot(qi, &k[j * d..][..d]);
            max = max.max(*s);
        }
        let mut denom = F::zero();
        for s in &mut scores[..seen] {
            *s = (*s - max).exp();
            denom += *s;
        }
        let oi = &mut out[i * d..][..d];
        for (j, &w) in scores[..seen].iter().enumerate() {
            let w = w / denom;
            for (o, &x) in oi.iter_mut().zip(&v[j * d..][..d]) {
                *o += w * x;
            }
        }
    }
}

/// Σ a∘b with 8 independent accumulators (a fixed summation order the compiler can
/// vectorise).
fn dot<F: Float>(a: &[F], b: &[F]) -> F {
    let mut acc = [F::zero(); 8];
    let (mut ia, mut ib) = (a.chunks_exact(8), b.chunks_exact(8));
    for (ca, cb) in (&mut ia).zip(&mut ib) {
        for ((s, &x), &y) in acc.iter_mut().zip(ca).zip(cb) {
            *s += x * y;
        }
    }
    let tail = ia.remainder().iter().zip(ib.remainder());
    acc.iter().copied().sum::<F>() + tail.map(|(&x, &y)| x * y).sum::<F>()
}

// ---- incremental forward -----------------------------------------------------------------

impl Gpt {
    /// The final hidden states `ln_f(h_L)`, `[batch, n_new, C]`, of `n_new` new tokens per
    /// sequence (`ids_new` row-major `[batch, n_new]`) at positions `p..p+n_new`, where
    /// `p = cache.len()`; their keys and values are appended to `cache`. Runs without
    /// autograd. Errors (leaving the cache as it was) if the ids are bad, the batch differs from
    /// the cache's, or `p + n_new` exceeds the context.
    pub fn hidden_cached(
        &self,
        ids_new: &[usize],
        batch: usize,
        n_new: usize,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        self.check_ids(ids_new, batch, n_new)?;
        cache.check(self, batch, n_new)?;
        let p = cache.len;
        if p + n_new > cache.capacity {
            cache.reserve((p + n_new).max(2 * cache.capacity));
        }
        no_grad(|| {
            let tok = ops::embedding(&self.wte, ids_new, &[batch, n_new])?;
            let mut h = ops::add(&tok, &ops::slice(&self.wpe, 0, p, p + n_new)?)?;
            for (layer, b) in self.blocks.iter().enumerate() {
                let a = ops::layer_norm(&h, &b.ln_1_w, &b.ln_1_b, self.config.layer_norm_epsilon)?;
                let (q, k, v) = self.qkv(b, &a)?;
                cache.write(layer, &k, &v)?;
                let y = cache.attend(layer, &q)?;
                h = ops::add(&h, &self.attention_out(b, &y)?)?;
                h = ops::add(&h, &self.mlp(b, &h)?)?;
            }
            cache.len = p + n_new;
            Ok(ops::layer_norm(
                &h,
                &self.ln_f_w,
                &self.ln_f_b,
                self.config.layer_norm_epsilon,
            )?)
        })
    }

    /// The next-token logits `[batch, n_new, vocab]` of `n_new` new tokens per sequence,
    /// computed over `cache` (see [`Gpt::hidden_cached`]). Equal, up to rounding, to rows
    /// `p..p+n_new` of [`Gpt::forward`] over the whole sequences.
    pub fn forward_cached(
        &self,
        ids_new: &[usize],
        batch: usize,
        n_new: usize,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let h = self.hidden_cached(ids_new, batch, n_new, cache)?;
        no_grad(|| self.unembed(&h))
    }

    /// The next-token logits of the last of the `n_new` new tokens only, `[batch, vocab]`
    /// (what decoding needs; skips the unembedding of the other positions).
    pub fn forward_cached_last(
        &self,
        ids_new: &[usize],
        batch: usize,
        n_new: usize,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let h = self.hidden_cached(ids_new, batch, n_new, cache)?;
        no_grad(|| {
            let last = ops::slice(&h, 1, n_new - 1, n_new)?;
            let logits = self.unembed(&last)?;
            Ok(ops::reshape(&logits, &[batch, self.config.vocab_size])?)
        })
    }
}

// ---- sampling ----------------------------------------------------------------------------

/// How to draw tokens: temperature, then top-k, then top-p filtering; when to stop.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingConfig {
    /// Divides the logits; 0 means greedy decoding (argmax). Must be finite and ≥ 0.
    pub temperature: f64,
    /// Keep the `top_k` most likely tokens (ties at the boundary included); 0 = no limit.
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens with mass ≥ `top_p`, in (0, 1]; 1 = all.
    pub top_p: f64,
    /// At most this many new tokens per sample (fewer if the context fills up first).
    pub max_new_tokens: usize,
    /// A sample ends at the first of these it draws (which is kept in its tokens).
    pub stop_tokens: Vec<usize>,
    /// Seed of the draws: the same seed, model and prompt give the same samples.
    pub seed: u64,
}

impl Default for SamplingConfig {
    /// Plain sampling at temperature 1 (no top-k, no top-p), 64 new tokens, no stop token,
    /// seed 0.
    fn default() -> SamplingConfig {
        SamplingConfig {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            max_new_tokens: 64,
            stop_tokens: Vec::new(),
            seed: 0,
        }
    }
}

impl SamplingConfig {
    /// Greedy decoding (temperature 0) of up to `max_new_tokens` tokens.
    pub fn greedy(max_new_tokens: usize) -> SamplingConfig {
        SamplingConfig {
            temperature: 0.0,
            max_new_tokens,
            ..SamplingConfig::default()
        }
    }

    /// Checks the settings against a vocabulary of `vocab_size` tokens; the message names the
    /// bad one.
    pub fn validate(&self, vocab_size: usize) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(Error::Invalid(format!(
                "temperature {} must be finite and >= 0",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::Invalid(format!(
                "top_p {} must be in (0, 1]",
                self.top_p
            )));
        }
        if let Some(&t) = self.stop_tokens.iter().find(|&&t| t >= vocab_size) {
            return Err(Error::Invalid(format!(
                "stop token {t} is out of range for a vocabulary of {vocab_size}"
            )));
        }
        Ok(())
    }
}

/// Why a sample ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// It drew a stop token (the last of its tokens).
    Stop,
    /// It reached `max_new_tokens`.
    MaxTokens,
    /// The prompt plus its tokens filled the context (`n_positions`).
    Context,
}

/// One generated continuation of the prompt.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The new tokens (the prompt not included; a final stop token included).
    pub tokens: Vec<usize>,
    /// log P(token) under the sampling distribution (scaled, top-k and top-p filtered,
    /// renormalised), one per token.
    pub logprobs: Vec<f64>,
    /// log softmax(logits/T)\[token\], unfiltered, one per token (see [`sample_token`] for
    /// T = 0).
    pub logprobs_scaled: Vec<f64>,
    /// Why it ended.
    pub finish: FinishReason,
}

/// A drawn token and its log-probabilities (see [`Sample`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Choice {
    /// The token drawn.
    pub token: usize,
    /// Under the sampling distribution.
    pub logprob: f64,
    /// Under softmax(logits/T), unfiltered.
    pub logprob_scaled: f64,
}

/// log softmax(x): x_i − log Σ_j exp(x_j), with −∞ entries (filtered tokens) staying −∞.
pub fn log_softmax(x: &[f64]) -> Vec<f64> {
    let max = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let lse = max + x.iter().map(|&v| (v - max).exp()).sum::<f64>().ln();
    x.iter().map(|&v| v - lse).collect()
}

/// Top-k filtering: sets to −∞ every logit below the `k`-th largest, so the tokens kept are
/// those with a logit ≥ it (ties at the boundary are all kept, as in HF). `k = 0` or
/// `k ≥ len` keeps everything.
pub fn top_k_filter(logits: &mut [f64], k: usize) {
    if k == 0 || k >= logits.len() {
        return;
    }
    let mut sorted = logits.to_vec();
    let (_, kth, _) = sorted.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    let threshold = *kth;
    for x in logits.iter_mut().filter(|x| **x < threshold) {
        *x = f64::NEG_INFINITY;
    }
}

/// Top-p (nucleus) filtering: with P = softmax(logits) and the tokens sorted by P descending
/// (ties by index), `t_1, t_2, …`, keeps `t_k` iff `Σ_{j<k} P(t_j) < p` — the smallest set of
/// most likely tokens whose mass is ≥ p — and sets the other logits to −∞. `p ≥ 1` keeps
/// everything; the most likely token is always kept.
pub fn top_p_filter(logits: &mut [f64], p: f64) {
    if p >= 1.0 {
        return;
    }
    let probs: Vec<f64> = log_softmax(logits).iter().map(|l| l.exp()).collect();
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
    let mut mass = 0.0;
    for &t in &order {
        if mass >= p {
            logits[t] = f64::NEG_INFINITY;
        }
        mass += probs[t];
    }
}

/// Index of the largest value (the first one on ties).
pub fn argmax(x: &[f64]) -> usize {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best
}

/// Draws one token from next-token `logits` under `cfg` (temperature, top-k, top-p).
///
/// With temperature `T > 0`: `logprob_scaled = log softmax(l/T)[token]` and `logprob` is the
/// log-probability under the filtered, renormalised distribution the token was drawn from.
/// With `T = 0` (greedy) the token is the argmax, `logprob` is 0 (the point mass) and
/// `logprob_scaled` is taken at T = 1, `log softmax(l)[token]`. Draws one uniform from `rng`
/// when `T > 0`, none when greedy.
pub fn sample_token(logits: &[f64], cfg: &SamplingConfig, rng: &mut Rng) -> Choice {
    if cfg.temperature == 0.0 {
        let token = argmax(logits);
        return Choice {
            token,
            logprob: 0.0,
            logprob_scaled: log_softmax(logits)[token],
        };
    }
    let mut scaled: Vec<f64> = logits.iter().map(|&l| l / cfg.temperature).collect();
    let lp_scaled = log_softmax(&scaled);
    top_k_filter(&mut scaled, cfg.top_k);
    top_p_filter(&mut scaled, cfg.top_p);
    let lp = log_softmax(&scaled);
    let token = draw(&lp, rng.uniform());
    Choice {
        token,
        logprob: lp[token],
        logprob_scaled: lp_scaled[token],
    }
}

/// Inverse-CDF draw from log-probabilities with a uniform `u` in [0, 1): the first token whose
/// cumulative probability exceeds `u` (the last possible one if rounding leaves it short).
fn draw(logprobs: &[f64], u: f64) -> usize {
    let mut cum = 0.0;
    let mut last = 0;
    for (t, &lp) in logprobs.iter().enumerate() {
        if lp == f64::NEG_INFINITY {
            continue;
        }
        cum += lp.exp();
        last = t;
        if cum > u {
            return t;
        }
    }
    last
}

/// Draws `num_samples` continuations of one `prompt`, decoded together as one batch over a KV
/// cache (the prompt is run once and its cache copied to every sample).
///
/// Each sample draws with its own generator, `Rng::new(cfg.seed).fork(i)` for sample `i`, so
/// the result is a function of the seed alone. A sample ends at its first stop token, after
/// `max_new_tokens`, or when prompt plus tokens fill the context; finished samples leave the
/// batch, and decoding ends when all have finished. Errors on an empty prompt, a prompt longer
/// than the context, a token id outside the vocabulary, `num_samples = 0`, or a bad `cfg`.
pub fn generate(
    model: &Gpt,
    prompt: &[usize],
    num_samples: usize,
    cfg: &SamplingConfig,
) -> Result<Vec<Sample>> {
    let n_pos = model.config.n_positions;
    if prompt.is_empty() {
        return Err(Error::Invalid("the prompt is empty".into()));
    }
    if num_samples == 0 {
        return Err(Error::Invalid("num_samples must be at least 1".into()));
    }
    model.check_ids(prompt, 1, prompt.len())?;
    cfg.validate(model.config.vocab_size)?;
    let budget = cfg.max_new_tokens.min(n_pos - prompt.len());
    let length_reason = if budget == cfg.max_new_tokens {
        FinishReason::MaxTokens
    } else {
        FinishReason::Context
    };
    let mut samples = vec![
        Sample {
            tokens: Vec::new(),
            logprobs: Vec::new(),
            logprobs_scaled: Vec::new(),
            finish: length_reason,
        };
        num_samples
    ];
    if budget == 0 {
        return Ok(samples);
    }
    let root = Rng::new(cfg.seed);
    let mut rngs: Vec<Rng> = (0..num_samples).map(|i| root.fork(i as u64)).collect();

    let mut cache = KvCache::new(model, 1);
    cache.reserve(prompt.len() + budget - 1);
    let first = model.forward_cached_last(prompt, 1, prompt.len(), &mut cache)?;
    let mut cache = cache.select_rows(&vec![0; num_samples])?;
    let mut logits = vec![first.to_vec_f64(); num_samples];
    let mut active: Vec<usize> = (0..num_samples).collect();
    loop {
        let mut still = Vec::with_capacity(active.len());
        for (row, &s) in active.iter().enumerate() {
            if step(&mut samples[s], &logits[row], cfg, &mut rngs[s], budget) {
                still.push(row);
            }
        }
        if still.is_empty() {
            return Ok(samples);
        }
        if still.len() < active.len() {
            cache = cache.select_rows(&still)?;
            active = still.iter().map(|&r| active[r]).collect();
        }
        let ids: Vec<usize> = active
            .iter()
            .map(|&s| *samples[s].tokens.last().expect("one token drawn"))
            .collect();
        let next = model.forward_cached_last(&ids, active.len(), 1, &mut cache)?;
        logits = next
            .to_vec_f64()
            .chunks(model.config.vocab_size)
            .map(<[f64]>::to_vec)
            .collect();
    }
}

/// Draws the next token of `sample` from `logits`; returns whether the sample goes on.
fn step(
    sample: &mut Sample,
    logits: &[f64],
    cfg: &SamplingConfig,
    rng: &mut Rng,
    budget: usize,
) -> bool {
    let c = sample_token(logits, cfg, rng);
    sample.tokens.push(c.token);
    sample.logprobs.push(c.logprob);
    sample.logprobs_scaled.push(c.logprob_scaled);
    if cfg.stop_tokens.contains(&c.token) {
        sample.finish = FinishReason::Stop;
        return false;
    }
    sample.tokens.len() < budget
}
