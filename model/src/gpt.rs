//! GPT-2, computed as Hugging Face's `GPT2LMHeadModel` computes it: learned token and position
//! embeddings, pre-LN blocks (attention then a 4× MLP with tanh-GELU, each added to the
//! residual stream), a final layernorm, and the unembedding tied to the token embedding.
//!
//! ```text
//! h₀ = wte[ids] + wpe[0..T]
//! hₗ' = hₗ₋₁ + proj(attn(ln₁(hₗ₋₁)))          causal self-attention, n_head heads
//! hₗ  = hₗ' + mlp(ln₂(hₗ'))                   mlp(x) = gelu(x·W_fc + b_fc)·W_proj + b_proj
//! logits = ln_f(h_L) · wteᵀ
//! ```

use engine::{ops, DType, Rng, Tensor};

use crate::{Error, GptConfig, Result};

/// The parameters of one transformer block (HF names in the comments; weights are
/// `[in, out]`, as HF's `Conv1D` stores them).
#[derive(Clone, Debug)]
pub struct Block {
    /// `ln_1.weight`, `ln_1.bias`
    pub ln_1_w: Tensor,
    pub ln_1_b: Tensor,
    /// `attn.c_attn.weight` `[C, 3C]` (q, k, v side by side), `attn.c_attn.bias`
    pub attn_w: Tensor,
    pub attn_b: Tensor,
    /// `attn.c_proj.weight` `[C, C]`, `attn.c_proj.bias`
    pub attn_proj_w: Tensor,
    pub attn_proj_b: Tensor,
    /// `ln_2.weight`, `ln_2.bias`
    pub ln_2_w: Tensor,
    pub ln_2_b: Tensor,
    /// `mlp.c_fc.weight` `[C, 4C]`, `mlp.c_fc.bias`
    pub fc_w: Tensor,
    pub fc_b: Tensor,
    /// `mlp.c_proj.weight` `[4C, C]`, `mlp.c_proj.bias`
    pub mlp_proj_w: Tensor,
    pub mlp_proj_b: Tensor,
}

/// A GPT-2 language model: its config and parameters.
#[derive(Clone, Debug)]
pub struct Gpt {
    pub config: GptConfig,
    /// `transformer.wte.weight` `[vocab, C]`, also the unembedding.
    pub wte: Tensor,
    /// `transformer.wpe.weight` `[n_positions, C]`
    pub wpe: Tensor,
    /// `transformer.h.{i}.*`
    pub blocks: Vec<Block>,
    /// `transformer.ln_f.weight`, `transformer.ln_f.bias`
    pub ln_f_w: Tensor,
    pub ln_f_b: Tensor,
}

/// Names of a block's parameters after `transformer.h.{i}.`, in [`Block`] field order.
pub const BLOCK_PARAM_NAMES: [&str; 12] = [
    "ln_1.weight",
    "ln_1.bias",
    "attn.c_attn.weight",
    "attn.c_attn.bias",
    "attn.c_proj.weight",
    "attn.c_proj.bias",
    "ln_2.weight",
    "ln_2.bias",
    "mlp.c_fc.weight",
    "mlp.c_fc.bias",
    "mlp.c_proj.weight",
    "mlp.c_proj.bias",
];

impl Block {
    fn params(&self) -> [&Tensor; 12] {
        [
            &self.ln_1_w,
            &self.ln_1_b,
            &self.attn_w,
            &self.attn_b,
            &self.attn_proj_w,
            &self.attn_proj_b,
            &self.ln_2_w,
            &self.ln_2_b,
            &self.fc_w,
            &self.fc_b,
            &self.mlp_proj_w,
            &self.mlp_proj_b,
        ]
    }

    fn params_mut(&mut self) -> [&mut Tensor; 12] {
        [
            &mut self.ln_1_w,
            &mut self.ln_1_b,
            &mut self.attn_w,
            &mut self.attn_b,
            &mut self.attn_proj_w,
            &mut self.attn_proj_b,
            &mut self.ln_2_w,
            &mut self.ln_2_b,
            &mut self.fc_w,
            &mut self.fc_b,
            &mut self.mlp_proj_w,
            &mut self.mlp_proj_b,
        ]
    }
}

/// The shape each named parameter must have under `config` (HF name → shape), in order.
pub fn param_shapes(config: &GptConfig) -> Vec<(String, Vec<usize>)> {
    let c = config.n_embd;
    let mut v = vec![
        (
            "transformer.wte.weight".to_string(),
            vec![config.vocab_size, c],
        ),
        (
            "transformer.wpe.weight".to_string(),
            vec![config.n_positions, c],
        ),
    ];
    let block_shapes = [
        vec![c],
        vec![c],
        vec![c, 3 * c],
        vec![3 * c],
        vec![c, c],
        vec![c],
        vec![c],
        vec![c],
        vec![c, 4 * c],
        vec![4 * c],
        vec![4 * c, c],
        vec![c],
    ];
    for i in 0..config.n_layer {
        for (name, shape) in BLOCK_PARAM_NAMES.iter().zip(&block_shapes) {
            v.push((format!("transformer.h.{i}.{name}"), shape.clone()));
        }
    }
    v.push(("transformer.ln_f.weight".to_string(), vec![c]));
    v.push(("transformer.ln_f.bias".to_string(), vec![c]));
    v
}

/// Dropout state for a training forward pass: the generator for the masks.
pub type Dropout<'a> = Option<&'a mut Rng>;

impl Gpt {
    /// A freshly initialised model, as HF initialises GPT-2: weights N(0, 0.02²), the two
    /// projections into the residual stream N(0, (0.02/√(2·n_layer))²), biases 0, layernorm
    /// gains 1.
    pub fn new(config: GptConfig, rng: &mut Rng) -> Result<Gpt> {
        config.validate().map_err(Error::Invalid)?;
        let std = config.initializer_range;
        let proj_std = std / (2.0 * config.n_layer as f64).sqrt();
        let shapes = param_shapes(&config);
        let tensors = shapes
            .iter()
            .map(|(name, shape)| {
                let t = if name.ends_with(".bias") {
                    Tensor::zeros(shape, DType::F32)
                } else if name.contains("ln_") {
                    Tensor::ones(shape, DType::F32)
                } else if name.ends_with("c_proj.weight") {
                    rng.normal_tensor(shape, 0.0, proj_std, DType::F32)
                } else {
                    rng.normal_tensor(shape, 0.0, std, DType::F32)
                };
                t.requires_grad()
            })
            .collect();
        Gpt::from_params(config, tensors)
    }

    /// A model whose every parameter is random — matrices N(0, 0.1²), biases U(−0.1, 0.1),
    /// layer-norm gains U(0.5, 1.5) — for tests that compare two implementations: GPT-2's
    /// init (zero biases, unit gains) would hide a bias or a gain that one of them never reads.
    pub fn random_for_tests(config: GptConfig, seed: u64) -> Result<Gpt> {
        let mut rng = Rng::new(seed);
        let tensors = param_shapes(&config)
            .iter()
            .map(|(name, shape)| {
                let t = if name.contains("ln_") && name.ends_with(".weight") {
                    rng.uniform_tensor(shape, 0.5, 1.5, DType::F32)
                } else if name.ends_with(".bias") {
                    rng.uniform_tensor(shape, -0.1, 0.1, DType::F32)
                } else {
                    rng.normal_tensor(shape, 0.0, 0.1, DType::F32)
                };
                t.requires_grad()
            })
            .collect();
        Gpt::from_params(config, tensors)
    }

    /// Assembles a model from tensors in [`param_shapes`] order (shapes are checked).
    pub fn from_params(config: GptConfig, tensors: Vec<Tensor>) -> Result<Gpt> {
        config.validate().map_err(Error::Invalid)?;
        let shapes = param_shapes(&config);
        if tensors.len() != shapes.len() {
            return Err(Error::Invalid(format!(
                "expected {} parameters, got {}",
                shapes.len(),
                tensors.len()
            )));
        }
        for ((name, shape), t) in shapes.iter().zip(&tensors) {
            if t.shape() != shape.as_slice() {
                return Err(Error::Invalid(format!(
                    "{name}: expected shape {shape:?}, got {:?}",
                    t.shape()
                )));
            }
        }
        let mut it = tensors.into_iter();
        let mut next = || it.next().expect("count checked above");
        let wte = next();
        let wpe = next();
        let blocks = (0..config.n_layer)
            .map(|_| Block {
                ln_1_w: next(),
                ln_1_b: next(),
                attn_w: next(),
                attn_b: next(),
                attn_proj_w: next(),
                attn_proj_b: next(),
                ln_2_w: next(),
                ln_2_b: next(),
                fc_w: next(),
                fc_b: next(),
                mlp_proj_w: next(),
                mlp_proj_b: next(),
            })
            .collect();
        let ln_f_w = next();
        let ln_f_b = next();
        Ok(Gpt {
            config,
            wte,
            wpe,
            blocks,
            ln_f_w,
            ln_f_b,
        })
    }

    /// Every parameter in [`param_shapes`] order.
    pub fn params(&self) -> Vec<&Tensor> {
        let mut v = vec![&self.wte, &self.wpe];
        for b in &self.blocks {
            v.extend(b.params());
        }
        v.push(&self.ln_f_w);
        v.push(&self.ln_f_b);
        v
    }

    /// Every parameter, mutable (for the optimizer), in [`param_shapes`] order.
    pub fn params_mut(&mut self) -> Vec<&mut Tensor> {
        let mut v = vec![&mut self.wte, &mut self.wpe];
        for b in &mut self.blocks {
            v.extend(b.params_mut());
        }
        v.push(&mut self.ln_f_w);
        v.push(&mut self.ln_f_b);
        v
    }

    /// Every parameter with its HF name.
    pub fn named_params(&self) -> Vec<(String, &Tensor)> {
        param_shapes(&self.config)
            .into_iter()
            .map(|(n, _)| n)
            .zip(self.params())
            .collect()
    }

    /// Checks a batch of token ids: `batch × seq` of them, `seq` within the context, every id
    /// inside the vocabulary. The message names the first bad id and its position.
    pub fn check_ids(&self, ids: &[usize], batch: usize, seq: usize) -> Result<()> {
        if ids.len() != batch * seq || seq == 0 {
            return Err(Error::Invalid(format!(
                "{} token ids do not form a batch of {batch} x {seq}",
                ids.len()
            )));
        }
        if seq > self.config.n_positions {
            return Err(Error::Invalid(format!(
                "sequence of {seq} tokens is longer than the context of {} positions",
                self.config.n_positions
            )));
        }
        if let Some((pos, &id)) = ids
            .iter()
            .enumerate()
            .find(|(_, &id)| id >= self.config.vocab_size)
        {
            return Err(Error::Invalid(format!(
                "token id {id} at position {pos} is out of range for a vocabulary of {}",
                self.config.vocab_size
            )));
        }
        Ok(())
    }

    /// The final hidden states `ln_f(h_L)`, `[batch, seq, C]`, for `ids` (row-major
    /// `[batch, seq]`). With `dropout` set, the embedding and residual dropouts are applied
    /// (training); without, none (eval).
    pub fn hidden(
        &self,
        ids: &[usize],
        batch: usize,
        seq: usize,
        mut dropout: Dropout,
    ) -> Result<Tensor> {
        self.check_ids(ids, batch, seq)?;
        let c = &self.config;
        let tok = ops::embedding(&self.wte, ids, &[batch, seq])?;
        let pos = ops::slice(&self.wpe, 0, 0, seq)?;
        let mut h = ops::add(&tok, &pos)?;
        h = drop(&h, c.embd_pdrop, &mut dropout)?;
        let eps = c.layer_norm_epsilon;
        let Some(first) = self.blocks.first() else {
            return Ok(ops::layer_norm(&h, &self.ln_f_w, &self.ln_f_b, eps)?);
        };
        // Each block: h + attn(ln₁(h)), then + mlp(ln₂(·)). Every residual add is fused with
        // the layer norm that reads its sum next (`ops::add_layer_norm`): ln₂ of the same
        // block, then ln₁ of the next block (ln_f after the last).
        let mut normed = ops::layer_norm(&h, &first.ln_1_w, &first.ln_1_b, eps)?;
        for (i, b) in self.blocks.iter().enumerate() {
            let a = drop(&self.attention(b, &normed)?, c.resid_pdrop, &mut dropout)?;
            let (mid, m) = ops::add_layer_norm(&h, &a, &b.ln_2_w, &b.ln_2_b, eps)?;
            let m = drop(&self.mlp_normed(b, &m)?, c.resid_pdrop, &mut dropout)?;
            let (w, bias) = match self.blocks.get(i + 1) {
                Some(next) => (&next.ln_1_w, &next.ln_1_b),
                None => (&self.ln_f_w, &self.ln_f_b),
            };
            (h, normed) = ops::add_layer_norm(&mid, &m, w, bias, eps)?;
        }
        Ok(normed)
    }

    /// The next-token logits `[batch, seq, vocab]`: hidden states times the tied embedding.
    pub fn forward(
        &self,
        ids: &[usize],
        batch: usize,
        seq: usize,
        dropout: Dropout,
    ) -> Result<Tensor> {
        let h = self.hidden(ids, batch, seq, dropout)?;
        self.unembed(&h)
    }

    /// Mean next-token cross-entropy of `ids` against `targets` (one per position; positions
    /// with [`ops::IGNORE_INDEX`] are left out).
    pub fn loss(
        &self,
        ids: &[usize],
        targets: &[i64],
        batch: usize,
        seq: usize,
        dropout: Dropout,
    ) -> Result<Tensor> {
        let logits = self.forward(ids, batch, seq, dropout)?;
        Ok(ops::cross_entropy(&logits, targets, ops::IGNORE_INDEX)?)
    }

    /// The MLP branch of a block, before the residual add: mlp(ln₂(x)).
    pub(crate) fn mlp(&self, b: &Block, x: &Tensor) -> Result<Tensor> {
        let m = ops::layer_norm(x, &b.ln_2_w, &b.ln_2_b, self.config.layer_norm_epsilon)?;
        self.mlp_normed(b, &m)
    }

    /// The MLP of a block on its already normalised input: gelu(m·W_fc + b_fc)·W_proj + b_proj.
    fn mlp_normed(&self, b: &Block, m: &Tensor) -> Result<Tensor> {
        let m = ops::gelu(&ops::linear(m, &b.fc_w, &b.fc_b)?)?;
        Ok(ops::linear(&m, &b.mlp_proj_w, &b.mlp_proj_b)?)
    }

    /// The logits `[batch, seq, vocab]` of final hidden states `h` (`[batch, seq, C]`): the
    /// tied unembedding h·wteᵀ.
    pub fn unembed(&self, h: &Tensor) -> Result<Tensor> {
        Ok(ops::matmul_ex(h, &self.wte, false, true)?)
    }

    /// Multi-head causal self-attention of `x` (`[B, T, C]`), projected back to `[B, T, C]`:
    /// the fused QKV projection, the heads split, attended and merged in one op, the output
    /// projection. (The KV-cache sampler goes through [`Gpt::qkv`] and
    /// [`Gpt::attention_out`] instead, which compute the same with the heads explicit.)
    fn attention(&self, b: &Block, x: &Tensor) -> Result<Tensor> {
        let qkv = ops::linear(x, &b.attn_w, &b.attn_b)?; // [B, T, 3C]
        let y = ops::causal_self_attention(&qkv, self.config.n_head)?; // [B, T, C]
        Ok(ops::linear(&y, &b.attn_proj_w, &b.attn_proj_b)?)
    }

    /// The query, key and value heads of `x` (`[B, T, C]`), each `[B, H, T, D]`.
    pub(crate) fn qkv(&self, b: &Block, x: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let (bsz, t, c) = (x.shape()[0], x.shape()[1], self.config.n_embd);
        let (h, d) = (self.config.n_head, self.config.head_dim());
        let qkv = ops::linear(x, &b.attn_w, &b.attn_b)?; // [B, T, 3C]
        let head = |i: usize| -> Result<Tensor> {
            let part = ops::slice(&qkv, -1, i * c, (i + 1) * c)?;
            Ok(ops::transpose(
                &ops::reshape(&part, &[bsz, t, h, d])?,
                1,
                2,
            )?)
        };
        Ok((head(0)?, head(1)?, head(2)?))
    }

    /// Merges the heads `y` (`[B, H, T, D]`) back to `[B, T, C]` and applies the output
    /// projection.
    pub(crate) fn attention_out(&self, b: &Block, y: &Tensor) -> Result<Tensor> {
        let (bsz, t) = (y.shape()[0], y.shape()[2]);
        let y = ops::reshape(&ops::transpose(y, 1, 2)?, &[bsz, t, self.config.n_embd])?;
        Ok(ops::linear(&y, &b.attn_proj_w, &b.attn_proj_b)?)
    }

    /// The model's parameters converted to `dtype` (f64 for gradient checks), as new leaves.
    pub fn to_dtype(&self, dtype: DType) -> Result<Gpt> {
        let tensors = self
            .params()
            .into_iter()
            .map(|t| t.to_dtype(dtype).detach().requires_grad())
            .collect();
        Gpt::from_params(self.config.clone(), tensors)
    }
}

/// Dropout with probability `p` when a generator is given (training), identity otherwise.
fn drop(x: &Tensor, p: f64, dropout: &mut Dropout) -> Result<Tensor> {
    match dropout {
        Some(rng) if p > 0.0 => Ok(ops::dropout(x, p, true, rng)?),
        _ => Ok(x.clone()),
    }
}
