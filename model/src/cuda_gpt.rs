//! GPT-2 training on one CUDA GPU, in the style of llm.c's `train_gpt2.cu`: the parameters,
//! their gradients and AdamW moments, and one set of activation buffers are allocated on the
//! device once; a training step is a fixed sequence of kernel launches (`kernels::cuda::Gpu`),
//! forward and backward written out layer by layer, each layer's backward beside its forward.
//!
//! **Status: compiled, never run on a GPU** (none has been lent to this project yet). The tests
//! in `model/tests/cuda_gpt.rs` compare everything with the CPU [`Gpt`] and skip themselves
//! without a GPU; `scripts/gpu-check.sh` runs them.
//!
//! The math is [`Gpt`]'s (pre-LN GPT-2, tanh GELU, learned positions, unembedding tied to the
//! token embedding), on `B·T` token rows of width `C`, `H` heads of `D = C/H`, vocabulary `V`:
//!
//! ```text
//! h₀ = wte[ids] + wpe[0..T]                                   embedding_fwd ×2, add
//! per block l, x = h_l:
//!   a   = ln₁(x)                                              layernorm_fwd
//!   qkv = a·W_attn + b_attn          [BT, 3C]                 gemm, add_bias
//!   q, k, v = heads(qkv)             [B·H, T, D] each         rows_to_heads ×3
//!   o   = softmax(q·kᵀ/√D + causal)·v, lse                    attention_fwd
//!   y   = rows(o)·W_proj + b_proj    [BT, C]                  heads_to_rows, gemm, add_bias
//!   r   = x + y;  m = ln₂(r)                                  layernorm_residual_fwd
//!   f   = m·W_fc + b_fc;  g = gelu(f)   [BT, 4C]              gemm, add_bias, gelu_fwd
//!   h_{l+1} = r + g·W_mproj + b_mproj                         gemm, add_bias, add
//! z = ln_f(h_L);  logits = z·wteᵀ    [BT, V]                  layernorm_fwd, gemm
//! loss = mean over counted rows of (lse_r − logits[r, t_r])   cross_entropy_fwd, sum
//! ```
//!
//! Backward (reverse order; `dh` is the residual stream's gradient, one buffer updated in
//! place from the top of the network down): for a linear layer `Y = X·W + b`,
//! `dW = Xᵀ·dY`, `db = Σ_rows dY`, `dX = dY·Wᵀ`; a layernorm's input gradient is *added* to
//! `dh` (the residual branch and the skip meet there); the tied `wte` gets the unembedding's
//! gradient `dlogitsᵀ·z` plus the embedding's scatter-sum of `dh₀`.
//!
//! Two precisions ([`Precision`]): `f32` everywhere, or mixed precision (`u16` = bf16 bits):
//! bf16 activations and bf16 copies of the weights that matmuls and embeddings read, f32
//! master weights, f32 gradients (the bf16 GEMM accumulates in f32 and writes dW in f32),
//! f32 layernorm statistics, attention lse and dq/dk/dv, f32 AdamW moments; AdamW rewrites
//! each bf16 copy from its updated master in the same pass (`adamw_with_bf16_copy`).

use std::sync::Arc;

use engine::ops::IGNORE_INDEX;
use engine::optim::AdamWConfig;
use engine::{DType, Storage, Tensor};
use kernels::cpu::adamw::AdamWStep;
use kernels::cuda::{
    Bf16Operand, CudaError, CudaSlice, DeviceFloat, EmbeddingGroups, Gpu, HeadsLayout, Strides,
    ATTENTION_BF16_HEAD_DIM, ATTENTION_MAX_HEAD_DIM,
};

use crate::gpt::param_shapes;
use crate::pretrain::TrainPrecision;
use crate::{Error, Gpt, GptConfig, Result};

// ----------------------------------------------------------------------------- precisions

/// The storage type of the activations: `f32`, or `u16` holding bf16 bits (mixed precision).
/// The two differ only in which GEMM and attention kernels run and in whether the weights the
/// matmuls read are the f32 masters or their bf16 copies.
pub trait Precision: DeviceFloat {
    /// Its name on the command line (`--precision f32|bf16`).
    const NAME: &'static str;
    /// Whether matmul and embedding weights are read from a bf16 copy of the f32 master.
    const WEIGHT_COPIES: bool;

    /// The buffer a matmul or an embedding lookup reads for weight `w`.
    fn read_weight(w: &Weight<Self>) -> Result<&CudaSlice<Self>>;

    /// `c = a·b` (overwritten) with activations in and out: a logically `[m, k]`, b `[k, n]`,
    /// each stored as its [`Bf16Operand`] says (`trans`: stored as the transpose), c
    /// row-major `[m, n]`.
    #[allow(clippy::too_many_arguments)]
    fn matmul(
        gpu: &Gpu,
        m: usize,
        k: usize,
        n: usize,
        a: &CudaSlice<Self>,
        oa: Bf16Operand,
        b: &CudaSlice<Self>,
        ob: Bf16Operand,
        c: &mut CudaSlice<Self>,
    ) -> Result<()>;

    /// `c = a·b + beta·c` into an f32 c (weight gradients), operands as [`Precision::matmul`].
    #[allow(clippy::too_many_arguments)]
    fn matmul_f32_out(
        gpu: &Gpu,
        m: usize,
        k: usize,
        n: usize,
        a: &CudaSlice<Self>,
        oa: Bf16Operand,
        b: &CudaSlice<Self>,
        ob: Bf16Operand,
        beta: f32,
        c: &mut CudaSlice<f32>,
    ) -> Result<()>;

    /// Causal attention forward on `[bh, t, d]` heads; lse `[bh, t]` is saved for backward.
    #[allow(clippy::too_many_arguments)]
    fn attention_fwd(
        gpu: &Gpu,
        q: &CudaSlice<Self>,
        k: &CudaSlice<Self>,
        v: &CudaSlice<Self>,
        bh: usize,
        t: usize,
        d: usize,
        out: &mut CudaSlice<Self>,
        lse: &mut CudaSlice<f32>,
    ) -> Result<()>;

    /// Causal attention backward: overwrites dq, dk, dv (f32 in both precisions: that is what
    /// the bf16 kernels write).
    #[allow(clippy::too_many_arguments)]
    fn attention_bwd(
        gpu: &Gpu,
        q_k_v: [&CudaSlice<Self>; 3],
        out: &CudaSlice<Self>,
        lse: &CudaSlice<f32>,
        dout: &CudaSlice<Self>,
        bh_t_d: (usize, usize, usize),
        dq: &mut CudaSlice<f32>,
        dk: &mut CudaSlice<f32>,
        dv: &mut CudaSlice<f32>,
    ) -> Result<()>;

    /// Whether the attention kernels of this precision take head dimension `d`.
    fn check_head_dim(d: usize) -> Result<()>;
}

/// An operand's [`Bf16Operand`] as the f32 GEMM's [`Strides`] (one matrix, no batch): stored
/// row-major with row length `ld`, or, `trans`, stored as its transpose.
fn f32_strides(o: Bf16Operand) -> Strides {
    if o.trans {
        Strides {
            batch: 0,
            row: 1,
            col: o.ld,
        }
    } else {
        Strides {
            batch: 0,
            row: o.ld,
            col: 1,
        }
    }
}

impl Precision for f32 {
    const NAME: &'static str = "f32";
    const WEIGHT_COPIES: bool = false;

    fn read_weight(w: &Weight<f32>) -> Result<&CudaSlice<f32>> {
        Ok(&w.value)
    }

    fn matmul(
        gpu: &Gpu,
        m: usize,
        k: usize,
        n: usize,
        a: &CudaSlice<f32>,
        oa: Bf16Operand,
        b: &CudaSlice<f32>,
        ob: Bf16Operand,
        c: &mut CudaSlice<f32>,
    ) -> Result<()> {
        Self::matmul_f32_out(gpu, m, k, n, a, oa, b, ob, 0.0, c)
    }

    fn matmul_f32_out(
        gpu: &Gpu,
        m: usize,
        k: usize,
        n: usize,
        a: &CudaSlice<f32>,
        oa: Bf16Operand,
        b: &CudaSlice<f32>,
        ob: Bf16Operand,
        beta: f32,
        c: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let sc = Strides {
            batch: 0,
            row: n,
            col: 1,
        };
        let (sa, sb) = (f32_strides(oa), f32_strides(ob));
        Ok(gpu.gemm_f32(1, m, k, n, 1.0, a, sa, b, sb, beta, c, sc)?)
    }

    fn attention_fwd(
        gpu: &Gpu,
        q: &CudaSlice<f32>,
        k: &CudaSlice<f32>,
        v: &CudaSlice<f32>,
        bh: usize,
        t: usize,
        d: usize,
        out: &mut CudaSlice<f32>,
        lse: &mut CudaSlice<f32>,
    ) -> Result<()> {
        Ok(gpu.attention_fwd(q, k, v, bh, t, d, out, lse)?)
    }

    fn attention_bwd(
        gpu: &Gpu,
        [q, k, v]: [&CudaSlice<f32>; 3],
        out: &CudaSlice<f32>,
        lse: &CudaSlice<f32>,
        dout: &CudaSlice<f32>,
        (bh, t, d): (usize, usize, usize),
        dq: &mut CudaSlice<f32>,
        dk: &mut CudaSlice<f32>,
        dv: &mut CudaSlice<f32>,
    ) -> Result<()> {
        Ok(gpu.attention_bwd(q, k, v, out, lse, dout, bh, t, d, dq, dk, dv)?)
    }

    fn check_head_dim(d: usize) -> Result<()> {
        if d == 0 || d > ATTENTION_MAX_HEAD_DIM {
            return Err(Error::Invalid(format!(
                "the f32 GPU attention takes head dimensions 1..={ATTENTION_MAX_HEAD_DIM}, the model has {d}"
            )));
        }
        Ok(())
    }
}

impl Precision for u16 {
    const NAME: &'static str = "bf16";
    const WEIGHT_COPIES: bool = true;

    fn read_weight(w: &Weight<u16>) -> Result<&CudaSlice<u16>> {
        w.copy
            .as_ref()
            .ok_or_else(|| Error::Invalid("a weight read by a bf16 matmul has no bf16 copy".into()))
    }

    fn matmul(
        gpu: &Gpu,
        m: usize,
        k: usize,
        n: usize,
        a: &CudaSlice<u16>,
        oa: Bf16Operand,
        b: &CudaSlice<u16>,
        ob: Bf16Operand,
        c: &mut CudaSlice<u16>,
    ) -> Result<()> {
        Ok(gpu.gemm_bf16_to_bf16(1, m, k, n, 1.0, a, oa, b, ob, 0.0, c, n, 0)?)
    }

    fn matmul_f32_out(
        gpu: &Gpu,
        m: usize,
        k: usize,
        n: usize,
        a: &CudaSlice<u16>,
        oa: Bf16Operand,
        b: &CudaSlice<u16>,
        ob: Bf16Operand,
        beta: f32,
        c: &mut CudaSlice<f32>,
    ) -> Result<()> {
        Ok(gpu.gemm_bf16(1, m, k, n, 1.0, a, oa, b, ob, beta, c, n, 0)?)
    }

    fn attention_fwd(
        gpu: &Gpu,
        q: &CudaSlice<u16>,
        k: &CudaSlice<u16>,
        v: &CudaSlice<u16>,
        bh: usize,
        t: usize,
        d: usize,
        out: &mut CudaSlice<u16>,
        lse: &mut CudaSlice<f32>,
    ) -> Result<()> {
        Ok(gpu.attention_fwd_bf16(q, k, v, bh, t, d, out, lse)?)
    }

    fn attention_bwd(
        gpu: &Gpu,
        [q, k, v]: [&CudaSlice<u16>; 3],
        out: &CudaSlice<u16>,
        lse: &CudaSlice<f32>,
        dout: &CudaSlice<u16>,
        (bh, t, d): (usize, usize, usize),
        dq: &mut CudaSlice<f32>,
        dk: &mut CudaSlice<f32>,
        dv: &mut CudaSlice<f32>,
    ) -> Result<()> {
        Ok(gpu.attention_bwd_bf16(q, k, v, out, lse, dout, bh, t, d, dq, dk, dv)?)
    }

    fn check_head_dim(d: usize) -> Result<()> {
        if d != ATTENTION_BF16_HEAD_DIM {
            return Err(Error::Invalid(format!(
                "the bf16 GPU attention takes head dimension {ATTENTION_BF16_HEAD_DIM} only (every \
                 GPT-2 size), the model has {d}; use --precision f32"
            )));
        }
        Ok(())
    }
}

/// Stored row-major with rows of `ld` elements.
fn plain(ld: usize) -> Bf16Operand {
    Bf16Operand {
        trans: false,
        ld,
        batch_stride: 0,
    }
}

/// Stored as the transpose of the logical operand, rows of `ld` elements (e.g. a weight
/// `[in, out]` read as `Wᵀ`, or activations `[rows, in]` read as `Xᵀ`).
fn transposed(ld: usize) -> Bf16Operand {
    Bf16Operand {
        trans: true,
        ld,
        batch_stride: 0,
    }
}

// ----------------------------------------------------------------------------- parameters

/// One parameter on the GPU: its f32 master value and, in mixed precision, for the weights
/// matmuls and embeddings read, the bf16 copy they read.
pub struct Weight<T> {
    /// The f32 master (what AdamW updates and layernorms and biases read).
    pub value: CudaSlice<f32>,
    /// The bf16 copy (`Some` only for `T = u16` matrices and embeddings).
    pub copy: Option<CudaSlice<T>>,
}

impl<T: Precision> Weight<T> {
    /// Uploads `values` as an f32 master and, when `with_copy` and `T` keeps weight copies
    /// (bf16), makes its bf16 copy.
    pub fn upload(gpu: &Gpu, values: &[f32], with_copy: bool) -> Result<Weight<T>> {
        let value = gpu.upload(values)?;
        let copy = if T::WEIGHT_COPIES && with_copy {
            let mut copy = gpu.zeros::<T>(values.len())?;
            // The f32 → bf16 conversion kernel writes u16 bits: only meaningful for T = u16,
            // which is the only precision with WEIGHT_COPIES.
            to_bf16_copy(gpu, &value, &mut copy)?;
            Some(copy)
        } else {
            None
        };
        Ok(Weight { value, copy })
    }

    /// One AdamW step on the master with gradient `grad` and moments `m`, `v` (step `h`),
    /// rewriting the bf16 copy, if any, in the same pass.
    pub fn adamw(
        &mut self,
        gpu: &Gpu,
        grad: &CudaSlice<f32>,
        m: &mut CudaSlice<f32>,
        v: &mut CudaSlice<f32>,
        h: AdamWStep,
    ) -> Result<()> {
        match &mut self.copy {
            Some(copy) => adamw_with_copy(gpu, &mut self.value, grad, m, v, copy, h),
            None => Ok(gpu.adamw(&mut self.value, grad, m, v, h)?),
        }
    }
}

/// The twelve tensors of one block, named as in [`crate::gpt::Block`] (HF order).
pub struct BlockTensors<X> {
    pub ln_1_w: X,
    pub ln_1_b: X,
    pub attn_w: X,
    pub attn_b: X,
    pub attn_proj_w: X,
    pub attn_proj_b: X,
    pub ln_2_w: X,
    pub ln_2_b: X,
    pub fc_w: X,
    pub fc_b: X,
    pub mlp_proj_w: X,
    pub mlp_proj_b: X,
}

/// One value per parameter of the model, named as in [`Gpt`]: the weights, their gradients
/// and the two AdamW moments each use this shape.
pub struct GptTensors<X> {
    pub wte: X,
    pub wpe: X,
    pub blocks: Vec<BlockTensors<X>>,
    pub ln_f_w: X,
    pub ln_f_b: X,
}

impl<X> GptTensors<X> {
    /// Builds one value per parameter, in [`param_shapes`] order (`make(index, name, shape)`).
    fn build(
        config: &GptConfig,
        mut make: impl FnMut(usize, &str, &[usize]) -> Result<X>,
    ) -> Result<GptTensors<X>> {
        let shapes = param_shapes(config);
        let mut it = shapes.iter().enumerate();
        let mut next = || -> Result<X> {
            let (i, (name, shape)) = it
                .next()
                .ok_or_else(|| Error::Invalid("parameter list shorter than the model".into()))?;
            make(i, name, shape)
        };
        let wte = next()?;
        let wpe = next()?;
        let mut blocks = Vec::with_capacity(config.n_layer);
        for _ in 0..config.n_layer {
            blocks.push(BlockTensors {
                ln_1_w: next()?,
                ln_1_b: next()?,
                attn_w: next()?,
                attn_b: next()?,
                attn_proj_w: next()?,
                attn_proj_b: next()?,
                ln_2_w: next()?,
                ln_2_b: next()?,
                fc_w: next()?,
                fc_b: next()?,
                mlp_proj_w: next()?,
                mlp_proj_b: next()?,
            });
        }
        let ln_f_w = next()?;
        let ln_f_b = next()?;
        Ok(GptTensors {
            wte,
            wpe,
            blocks,
            ln_f_w,
            ln_f_b,
        })
    }

    /// Every value in [`param_shapes`] order.
    pub fn iter(&self) -> Vec<&X> {
        let mut v = vec![&self.wte, &self.wpe];
        for b in &self.blocks {
            v.extend([
                &b.ln_1_w,
                &b.ln_1_b,
                &b.attn_w,
                &b.attn_b,
                &b.attn_proj_w,
                &b.attn_proj_b,
                &b.ln_2_w,
                &b.ln_2_b,
                &b.fc_w,
                &b.fc_b,
                &b.mlp_proj_w,
                &b.mlp_proj_b,
            ]);
        }
        v.push(&self.ln_f_w);
        v.push(&self.ln_f_b);
        v
    }

    /// Every value, mutable, in [`param_shapes`] order.
    pub fn iter_mut(&mut self) -> Vec<&mut X> {
        let mut v = vec![&mut self.wte, &mut self.wpe];
        for b in &mut self.blocks {
            v.extend([
                &mut b.ln_1_w,
                &mut b.ln_1_b,
                &mut b.attn_w,
                &mut b.attn_b,
                &mut b.attn_proj_w,
                &mut b.attn_proj_b,
                &mut b.ln_2_w,
                &mut b.ln_2_b,
                &mut b.fc_w,
                &mut b.fc_b,
                &mut b.mlp_proj_w,
                &mut b.mlp_proj_b,
            ]);
        }
        v.push(&mut self.ln_f_w);
        v.push(&mut self.ln_f_b);
        v
    }
}

/// Whether a parameter gets a bf16 copy in mixed precision: the embeddings and the four
/// weight matrices of each block (what matmuls and lookups read). Layernorm gains and all
/// biases are read in f32 by their kernels.
fn reads_bf16_copy(name: &str) -> bool {
    name.ends_with("wte.weight")
        || name.ends_with("wpe.weight")
        || name.ends_with("c_attn.weight")
        || name.ends_with("c_proj.weight")
        || name.ends_with("c_fc.weight")
}

// ---------------------------------------------------------------------------- activations

/// What one block saves in its forward for its backward (`T` = activation storage).
struct LayerActs<T> {
    /// ln₁(x) `[BT, C]` and its per-row mean and 1/σ `[BT]`.
    ln1: CudaSlice<T>,
    ln1_mean: CudaSlice<f32>,
    ln1_rstd: CudaSlice<f32>,
    /// The heads `[B·H, T, D]` of the fused projection.
    q: CudaSlice<T>,
    k: CudaSlice<T>,
    v: CudaSlice<T>,
    /// Attention output `[B·H, T, D]` and its log-sum-exp `[B·H, T]`.
    att: CudaSlice<T>,
    att_lse: CudaSlice<f32>,
    /// The attention output with the heads merged back into rows `[BT, C]` (c_proj's input).
    att_rows: CudaSlice<T>,
    /// r = x + attention branch `[BT, C]` (the residual stream between the two halves).
    res_mid: CudaSlice<T>,
    /// ln₂(r) `[BT, C]`, its mean and 1/σ.
    ln2: CudaSlice<T>,
    ln2_mean: CudaSlice<f32>,
    ln2_rstd: CudaSlice<f32>,
    /// c_fc's output before and after the GELU `[BT, 4C]`.
    fc: CudaSlice<T>,
    fc_gelu: CudaSlice<T>,
}

/// Every device buffer of a forward and backward pass for `batch` sequences of `seq` tokens,
/// allocated together (and again only when the shape changes).
struct Activations<T> {
    batch: usize,
    seq: usize,
    /// Token ids `[BT]`, their position ids `[BT]` (0..T per sequence), the targets `[BT]`.
    tokens: CudaSlice<i32>,
    positions: CudaSlice<i32>,
    targets: CudaSlice<i64>,
    /// The rows of each token and of each position, for the embeddings' backward.
    token_groups: Option<EmbeddingGroups>,
    position_groups: EmbeddingGroups,
    /// The residual stream: `residual[0] = h₀`, `residual[l + 1]` = block l's output.
    residual: Vec<CudaSlice<T>>,
    layers: Vec<LayerActs<T>>,
    /// ln_f(h_L) `[BT, C]`, its mean and 1/σ.
    lnf: CudaSlice<T>,
    lnf_mean: CudaSlice<f32>,
    lnf_rstd: CudaSlice<f32>,
    /// `[BT, V]` logits, per-row losses and log-sum-exp `[BT]`.
    logits: CudaSlice<T>,
    losses: CudaSlice<f32>,
    ce_lse: CudaSlice<f32>,
    /// The scaled cross-entropy's per-row logit factors and entropies `[BT]`
    /// ([`CudaGpt::forward_rows`]).
    row_scale: CudaSlice<f32>,
    entropy: CudaSlice<f32>,
    /// What the last forward computed on top of the trunk (what a backward starts from).
    head: Head,
    /// Rows whose target counts (not [`IGNORE_INDEX`]) in the last forward.
    counted: usize,
    scratch: Scratch<T>,
}

/// What the last forward pass computed above z = ln_f(h_L).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Head {
    /// Nothing yet (or a forward that failed part way).
    None,
    /// Only z ([`CudaGpt::forward_hidden`]).
    Hidden,
    /// Logits and the plain cross-entropy ([`CudaGpt::forward`]).
    CrossEntropy,
    /// Logits and the row-scaled cross-entropy ([`CudaGpt::forward_rows`]).
    ScaledCrossEntropy,
}

/// Per-row results of [`CudaGpt::forward_rows`], `[BT]` each.
#[derive(Clone, Debug)]
pub struct RowLosses {
    /// −log softmax(s_r·logits_r)[t_r], 0 on ignored rows.
    pub losses: Vec<f32>,
    /// The entropy of softmax(s_r·logits_r) (nats), when asked for.
    pub entropy: Option<Vec<f32>>,
}

/// Buffers used within one layer at a time (forward temporaries and backward gradients),
/// shared by all layers.
struct Scratch<T> {
    /// wpe rows of each token `[BT, C]` (forward, before adding to the token rows).
    pos_emb: CudaSlice<T>,
    /// Fused q, k, v projection `[BT, 3C]`.
    qkv: CudaSlice<T>,
    /// A branch's output before its residual add `[BT, C]`.
    branch: CudaSlice<T>,
    /// 1/counted on every row `[BT]`: the mean's gradient into each row's loss.
    dlosses: CudaSlice<f32>,
    dlogits: CudaSlice<T>,
    /// The residual stream's gradient `[BT, C]`, updated in place from the top down.
    dres: CudaSlice<T>,
    /// Gradient of a layernorm's output `[BT, C]`, and of its input (before it is added to
    /// `dres`).
    dln: CudaSlice<T>,
    dln_in: CudaSlice<T>,
    /// Gradient of the merged attention output `[BT, C]` and of its heads `[B·H, T, D]`.
    datt_rows: CudaSlice<T>,
    datt: CudaSlice<T>,
    /// dq, dk, dv `[B·H, T, D]` (f32 in both precisions) and their rows `[BT, 3C]`.
    dq: CudaSlice<f32>,
    dk: CudaSlice<f32>,
    dv: CudaSlice<f32>,
    dqkv: CudaSlice<T>,
    /// Gradients after and before the GELU `[BT, 4C]`.
    dfc_gelu: CudaSlice<T>,
    dfc: CudaSlice<T>,
}

impl<T: Precision> Activations<T> {
    fn new(gpu: &Gpu, config: &GptConfig, batch: usize, seq: usize) -> Result<Self> {
        let (c, v, l) = (config.n_embd, config.vocab_size, config.n_layer);
        let bt = batch * seq;
        let z = |n: usize| gpu.zeros::<T>(n);
        let zf = |n: usize| gpu.zeros::<f32>(n);
        let mut layers = Vec::with_capacity(l);
        for _ in 0..l {
            layers.push(LayerActs {
                ln1: z(bt * c)?,
                ln1_mean: zf(bt)?,
                ln1_rstd: zf(bt)?,
                q: z(bt * c)?,
                k: z(bt * c)?,
                v: z(bt * c)?,
                att: z(bt * c)?,
                att_lse: zf(bt * config.n_head)?,
                att_rows: z(bt * c)?,
                res_mid: z(bt * c)?,
                ln2: z(bt * c)?,
                ln2_mean: zf(bt)?,
                ln2_rstd: zf(bt)?,
                fc: z(bt * 4 * c)?,
                fc_gelu: z(bt * 4 * c)?,
            });
        }
        let positions: Vec<i32> = (0..bt).map(|i| (i % seq) as i32).collect();
        Ok(Activations {
            batch,
            seq,
            tokens: gpu.zeros(bt)?,
            positions: gpu.upload(&positions)?,
            targets: gpu.zeros(bt)?,
            token_groups: None,
            position_groups: EmbeddingGroups::new(gpu, &positions, config.n_positions)?,
            residual: (0..=l)
                .map(|_| z(bt * c))
                .collect::<std::result::Result<_, _>>()?,
            layers,
            lnf: z(bt * c)?,
            lnf_mean: zf(bt)?,
            lnf_rstd: zf(bt)?,
            logits: z(bt * v)?,
            losses: zf(bt)?,
            ce_lse: zf(bt)?,
            row_scale: zf(bt)?,
            entropy: zf(bt)?,
            head: Head::None,
            counted: 0,
            scratch: Scratch {
                pos_emb: z(bt * c)?,
                qkv: z(bt * 3 * c)?,
                branch: z(bt * c)?,
                dlosses: zf(bt)?,
                dlogits: z(bt * v)?,
                dres: z(bt * c)?,
                dln: z(bt * c)?,
                dln_in: z(bt * c)?,
                datt_rows: z(bt * c)?,
                datt: z(bt * c)?,
                dq: zf(bt * c)?,
                dk: zf(bt * c)?,
                dv: zf(bt * c)?,
                dqkv: z(bt * 3 * c)?,
                dfc_gelu: z(bt * 4 * c)?,
                dfc: z(bt * 4 * c)?,
            },
        })
    }
}

// ---------------------------------------------------------------------------------- model

/// The sizes one pass works with.
#[derive(Clone, Copy, Debug)]
struct Dims {
    /// Batch, sequence length, B·T token rows.
    b: usize,
    t: usize,
    bt: usize,
    /// Width, heads, head dimension, vocabulary.
    c: usize,
    h: usize,
    d: usize,
    v: usize,
    eps: f32,
}

impl Dims {
    /// Where the heads of a `[BT, row_len]` matrix sit, from column `offset`.
    fn heads(&self, row_len: usize, offset: usize) -> HeadsLayout {
        HeadsLayout {
            batch: self.b,
            heads: self.h,
            seq: self.t,
            head_dim: self.d,
            row_len,
            offset,
        }
    }
}

/// What [`CudaGpt::train_step`] did.
#[derive(Clone, Copy, Debug)]
pub struct GpuStepStats {
    /// Mean cross-entropy of the batch (before the update).
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
}

/// A GPT-2 on one GPU: f32 master parameters (+ bf16 copies for `T = u16`), f32 gradients and
/// AdamW moments, and the activations of one batch shape. See the module documentation.
pub struct CudaGpt<T: Precision> {
    gpu: Arc<Gpu>,
    config: GptConfig,
    weights: GptTensors<Weight<T>>,
    grads: GptTensors<CudaSlice<f32>>,
    adam_m: GptTensors<CudaSlice<f32>>,
    adam_v: GptTensors<CudaSlice<f32>>,
    /// Rank of each parameter in [`param_shapes`] order (AdamW decays rank ≥ 2 only).
    ranks: Vec<usize>,
    /// AdamW steps taken (the bias corrections' t).
    adamw_step: u64,
    acts: Option<Activations<T>>,
}

impl<T: Precision> CudaGpt<T> {
    /// Uploads `model`'s parameters to `gpu` (and, in mixed precision, makes their bf16
    /// copies); gradients and AdamW moments start at zero, the step count at 0.
    pub fn new(gpu: Arc<Gpu>, model: &Gpt) -> Result<CudaGpt<T>> {
        let config = model.config.clone();
        config.validate().map_err(Error::Invalid)?;
        T::check_head_dim(config.head_dim())?;
        let params = model.params();
        let weights = GptTensors::build(&config, |i, name, _| {
            Weight::upload(&gpu, &params[i].to_vec_f32(), reads_bf16_copy(name))
        })?;
        let zeros =
            |_: usize, _: &str, shape: &[usize]| Ok(gpu.zeros::<f32>(shape.iter().product())?);
        let grads = GptTensors::build(&config, zeros)?;
        let adam_m = GptTensors::build(&config, zeros)?;
        let adam_v = GptTensors::build(&config, zeros)?;
        let ranks = param_shapes(&config).iter().map(|(_, s)| s.len()).collect();
        Ok(CudaGpt {
            gpu,
            config,
            weights,
            grads,
            adam_m,
            adam_v,
            ranks,
            adamw_step: 0,
            acts: None,
        })
    }

    /// The model's config.
    pub fn config(&self) -> &GptConfig {
        &self.config
    }

    /// The GPU it runs on.
    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    /// AdamW steps taken so far.
    pub fn adamw_step(&self) -> u64 {
        self.adamw_step
    }

    /// Checks a batch on the host before anything is launched: `batch × seq` ids inside the
    /// vocabulary, `seq` within the context, one target per id, each in the vocabulary or
    /// [`IGNORE_INDEX`].
    fn check_batch(&self, ids: &[usize], targets: &[i64], batch: usize, seq: usize) -> Result<()> {
        let (v, ctx) = (self.config.vocab_size, self.config.n_positions);
        if ids.len() != batch * seq || seq == 0 || batch == 0 {
            return Err(Error::Invalid(format!(
                "{} token ids do not form a batch of {batch} x {seq}",
                ids.len()
            )));
        }
        if seq > ctx {
            return Err(Error::Invalid(format!(
                "sequence of {seq} tokens is longer than the context of {ctx} positions"
            )));
        }
        if targets.len() != ids.len() {
            return Err(Error::Invalid(format!(
                "{} targets for {} token ids",
                targets.len(),
                ids.len()
            )));
        }
        if let Some((pos, id)) = ids.iter().enumerate().find(|(_, &id)| id >= v) {
            return Err(Error::Invalid(format!(
                "token id {id} at position {pos} is out of range for a vocabulary of {v}"
            )));
        }
        if let Some((pos, t)) = targets
            .iter()
            .enumerate()
            .find(|(_, &t)| t != IGNORE_INDEX && (t < 0 || t as usize >= v))
        {
            return Err(Error::Invalid(format!(
                "target {t} at position {pos} is out of range for a vocabulary of {v}"
            )));
        }
        Ok(())
    }

    /// The trunk's forward on `ids` (row-major `[batch, seq]`), with next-token `targets`
    /// uploaded for the loss that may follow: (re)allocates the activations for this shape,
    /// then h₀, the blocks and z = ln_f(h_L) (`acts.lnf`). Nothing past ln_f runs.
    fn forward_trunk(
        &mut self,
        ids: &[usize],
        targets: &[i64],
        batch: usize,
        seq: usize,
    ) -> Result<()> {
        self.check_batch(ids, targets, batch, seq)?;
        let gpu = &*self.gpu;
        if self
            .acts
            .as_ref()
            .is_none_or(|a| a.batch != batch || a.seq != seq)
        {
            self.acts = None; // free the old set before allocating the new one
            self.acts = Some(Activations::new(gpu, &self.config, batch, seq)?);
        }
        let acts = self.acts.as_mut().ok_or_else(no_acts)?;
        let d = dims(&self.config, batch, seq);
        let w = &self.weights;
        acts.head = Head::None;

        // Inputs.
        let ids32: Vec<i32> = ids.iter().map(|&i| i as i32).collect();
        gpu.upload_into(&ids32, &mut acts.tokens)?;
        gpu.upload_into(targets, &mut acts.targets)?;
        acts.token_groups = Some(EmbeddingGroups::new(gpu, &ids32, d.v)?);
        acts.counted = targets.iter().filter(|&&t| t != IGNORE_INDEX).count();

        // h₀ = wte[ids] + wpe[0..T]
        let s = &mut acts.scratch;
        let h0 = &mut acts.residual[0];
        gpu.embedding_fwd(&acts.tokens, T::read_weight(&w.wte)?, d.v, d.c, h0)?;
        let ctx = self.config.n_positions;
        let wpe = T::read_weight(&w.wpe)?;
        gpu.embedding_fwd(&acts.positions, wpe, ctx, d.c, &mut s.pos_emb)?;
        gpu.add_assign(h0, &s.pos_emb)?;

        // The blocks: residual[l] → residual[l + 1].
        for (l, (bw, la)) in w.blocks.iter().zip(&mut acts.layers).enumerate() {
            let (before, after) = acts.residual.split_at_mut(l + 1);
            block_forward(gpu, &d, bw, &before[l], la, s, &mut after[0])?;
        }

        // z = ln_f(h_L)
        let h_last = &acts.residual[self.config.n_layer];
        gpu.layernorm_fwd(
            h_last,
            &w.ln_f_w.value,
            &w.ln_f_b.value,
            d.bt,
            d.c,
            d.eps,
            &mut acts.lnf,
            &mut acts.lnf_mean,
            &mut acts.lnf_rstd,
        )
        .map_err(Error::from)
    }

    /// logits = z·wteᵀ `[BT, V]` from the last [`CudaGpt::forward_trunk`].
    fn unembed(&mut self) -> Result<()> {
        let acts = self.acts.as_mut().ok_or_else(no_acts)?;
        let d = dims(&self.config, acts.batch, acts.seq);
        let wte = T::read_weight(&self.weights.wte)?;
        T::matmul(
            &self.gpu,
            d.bt,
            d.c,
            d.v,
            &acts.lnf,
            plain(d.c),
            wte,
            transposed(d.c),
            &mut acts.logits,
        )
    }

    /// The forward pass on `ids` (row-major `[batch, seq]`) with next-token `targets`
    /// ([`IGNORE_INDEX`] rows do not count): fills every activation buffer and returns the
    /// mean cross-entropy over the counted rows (0 when none counts, as the CPU op).
    pub fn forward(
        &mut self,
        ids: &[usize],
        targets: &[i64],
        batch: usize,
        seq: usize,
    ) -> Result<f64> {
        self.forward_trunk(ids, targets, batch, seq)?;
        self.unembed()?;
        let gpu = &*self.gpu;
        let acts = self.acts.as_mut().ok_or_else(no_acts)?;
        let (bt, v) = (acts.batch * acts.seq, self.config.vocab_size);

        // loss = Σ_r loss_r / counted
        gpu.cross_entropy_fwd(
            &acts.logits,
            &acts.targets,
            bt,
            v,
            IGNORE_INDEX,
            &mut acts.losses,
            &mut acts.ce_lse,
        )?;
        acts.head = Head::CrossEntropy;
        if acts.counted == 0 {
            return Ok(0.0);
        }
        Ok(gpu.sum(&acts.losses)? as f64 / acts.counted as f64)
    }

    /// The forward pass with one cross-entropy per row of logits scaled row by row:
    /// `loss_r = −log softmax(s_r·logits_r)[t_r]` (0 where `targets[r]` is [`IGNORE_INDEX`]),
    /// with `s_r = row_scale[r]` (1/temperature for PPO's log-probs: logπ(t_r) = −loss_r).
    /// Returns every row's loss and, when `entropy`, every row's entropy of softmax(s_r·logits_r)
    /// (downloaded). [`CudaGpt::backward_rows`] then gives the gradient of Σ_r c_r·loss_r.
    pub fn forward_rows(
        &mut self,
        ids: &[usize],
        targets: &[i64],
        row_scale: &[f32],
        batch: usize,
        seq: usize,
        entropy: bool,
    ) -> Result<RowLosses> {
        if row_scale.len() != batch * seq {
            return Err(Error::Invalid(format!(
                "{} row scales for a batch of {batch} x {seq}",
                row_scale.len()
            )));
        }
        self.forward_trunk(ids, targets, batch, seq)?;
        self.unembed()?;
        let gpu = &*self.gpu;
        let acts = self.acts.as_mut().ok_or_else(no_acts)?;
        let (bt, v) = (acts.batch * acts.seq, self.config.vocab_size);
        gpu.upload_into(row_scale, &mut acts.row_scale)?;
        gpu.cross_entropy_scaled_fwd(
            &acts.logits,
            &acts.targets,
            Some(&acts.row_scale),
            bt,
            v,
            IGNORE_INDEX,
            &mut acts.losses,
            &mut acts.ce_lse,
            entropy.then_some(&mut acts.entropy),
        )?;
        acts.head = Head::ScaledCrossEntropy;
        Ok(RowLosses {
            losses: gpu.download(&acts.losses)?,
            entropy: match entropy {
                true => Some(gpu.download(&acts.entropy)?),
                false => None,
            },
        })
    }

    /// The trunk alone on `ids` (`[batch, seq]`): returns z = ln_f(h_L), `[BT, C]` in the
    /// activation type, the input of a head other than the tied unembedding (a value or
    /// reward head). [`CudaGpt::backward_hidden`] takes that head's gradient back.
    pub fn forward_hidden(
        &mut self,
        ids: &[usize],
        batch: usize,
        seq: usize,
    ) -> Result<&CudaSlice<T>> {
        let no_targets = vec![IGNORE_INDEX; ids.len()];
        self.forward_trunk(ids, &no_targets, batch, seq)?;
        let acts = self.acts.as_mut().ok_or_else(no_acts)?;
        acts.head = Head::Hidden;
        Ok(&acts.lnf)
    }

    /// z = ln_f(h_L) `[BT, C]` of the last [`CudaGpt::forward_hidden`].
    pub fn hidden(&self) -> Result<&CudaSlice<T>> {
        match &self.acts {
            Some(acts) if acts.head == Head::Hidden => Ok(&acts.lnf),
            _ => Err(Error::Invalid(
                "no hidden states: call forward_hidden first".into(),
            )),
        }
    }

    /// The backward pass of the last [`CudaGpt::forward`]: overwrites every parameter's
    /// gradient with d(mean loss)/dθ.
    pub fn backward(&mut self) -> Result<()> {
        let acts = self.acts.as_ref().ok_or_else(no_acts)?;
        // d loss / d loss_r = 1/counted on every row (the kernel zeroes ignored rows).
        let per_row = if acts.counted == 0 {
            0.0
        } else {
            1.0 / acts.counted as f32
        };
        let bt = acts.batch * acts.seq;
        self.backward_rows(&vec![per_row; bt])
    }

    /// The backward pass of the last [`CudaGpt::forward`] or [`CudaGpt::forward_rows`] for the
    /// loss Σ_r c_r·loss_r, `row_weights[r]` = c_r (a weighted cross-entropy; the policy
    /// gradient of PPO's clipped surrogate is one): overwrites every parameter's gradient.
    pub fn backward_rows(&mut self, row_weights: &[f32]) -> Result<()> {
        let gpu = &*self.gpu;
        let acts = self.acts.as_mut().ok_or_else(no_acts)?;
        let d = dims(&self.config, acts.batch, acts.seq);
        if row_weights.len() != d.bt {
            return Err(Error::Invalid(format!(
                "{} row weights for {} rows",
                row_weights.len(),
                d.bt
            )));
        }
        let s = &mut acts.scratch;
        gpu.upload_into(row_weights, &mut s.dlosses)?;
        let row_scale = match acts.head {
            Head::CrossEntropy => None,
            Head::ScaledCrossEntropy => Some(&acts.row_scale),
            Head::None | Head::Hidden => {
                return Err(Error::Invalid(
                    "the last GPU forward computed no loss to take the gradient of".into(),
                ))
            }
        };
        gpu.cross_entropy_scaled_bwd(
            &acts.logits,
            &acts.targets,
            row_scale,
            &acts.ce_lse,
            &s.dlosses,
            d.bt,
            d.v,
            IGNORE_INDEX,
            &mut s.dlogits,
        )?;

        // logits = z·wteᵀ: dwte = dlogitsᵀ·z (the embedding's part is added at the end),
        // dz = dlogits·wte.
        let (w, g) = (&self.weights, &mut self.grads);
        T::matmul_f32_out(
            gpu,
            d.v,
            d.bt,
            d.c,
            &s.dlogits,
            transposed(d.v),
            &acts.lnf,
            plain(d.c),
            0.0,
            &mut g.wte,
        )?;
        let wte = T::read_weight(&w.wte)?;
        T::matmul(
            gpu,
            d.bt,
            d.v,
            d.c,
            &s.dlogits,
            plain(d.v),
            wte,
            plain(d.c),
            &mut s.dln,
        )?;
        self.backward_trunk(true)
    }

    /// The backward pass of the last [`CudaGpt::forward_hidden`] given `dz` = d loss/dz
    /// (`[BT, C]`, from the head on top): overwrites every parameter's gradient (wte's is the
    /// embedding's alone, as the tied unembedding was not used).
    pub fn backward_hidden(&mut self, dz: &CudaSlice<T>) -> Result<()> {
        let acts = self.acts.as_mut().ok_or_else(no_acts)?;
        if acts.head != Head::Hidden {
            return Err(Error::Invalid(
                "backward_hidden needs a forward_hidden just before".into(),
            ));
        }
        let s = &mut acts.scratch;
        if dz.len() != s.dln.len() {
            return Err(Error::Invalid(format!(
                "hidden-state gradient of {} values for {} ([BT, C])",
                dz.len(),
                s.dln.len()
            )));
        }
        self.gpu
            .stream()
            .memcpy_dtod(dz, &mut s.dln)
            .map_err(CudaError::from)?;
        self.backward_trunk(false)
    }

    /// From `scratch.dln` = d loss/dz down: ln_f, the blocks, the embeddings. `wte_has_grad`:
    /// the unembedding already wrote wte's gradient (the embedding's scatter-sum is added to
    /// it); otherwise the scatter-sum overwrites it.
    fn backward_trunk(&mut self, wte_has_grad: bool) -> Result<()> {
        let gpu = &*self.gpu;
        let acts = self.acts.as_mut().ok_or_else(no_acts)?;
        let d = dims(&self.config, acts.batch, acts.seq);
        let (w, g) = (&self.weights, &mut self.grads);
        let s = &mut acts.scratch;

        // z = ln_f(h_L): the residual stream's gradient starts here (overwritten).
        let h_last = &acts.residual[self.config.n_layer];
        gpu.layernorm_bwd(
            &s.dln,
            h_last,
            &w.ln_f_w.value,
            &acts.lnf_mean,
            &acts.lnf_rstd,
            d.bt,
            d.c,
            &mut s.dres,
            &mut g.ln_f_w,
            &mut g.ln_f_b,
        )?;

        // The blocks, last first: dres goes from d h_{l+1} to d h_l.
        for l in (0..self.config.n_layer).rev() {
            let x = &acts.residual[l];
            block_backward(
                gpu,
                &d,
                &w.blocks[l],
                x,
                &acts.layers[l],
                s,
                &mut g.blocks[l],
            )?;
        }

        // h₀ = wte[ids] + wpe[pos]: scatter-sum dres into both tables (wte adds to the
        // unembedding's gradient when there is one; wpe is overwritten).
        let groups = acts.token_groups.as_ref().ok_or_else(no_acts)?;
        gpu.embedding_bwd(&s.dres, groups, d.v, d.c, wte_has_grad, &mut g.wte)?;
        let ctx = self.config.n_positions;
        gpu.embedding_bwd(&s.dres, &acts.position_groups, ctx, d.c, false, &mut g.wpe)?;
        Ok(())
    }

    /// Global-norm clipping of the gradients (to `max_norm`; `f64::INFINITY` for none), then
    /// one AdamW step at learning rate `lr` on every parameter (weight decay on rank ≥ 2 only
    /// when `opt.decay_matrices_only`, as the CPU `AdamW`); in mixed precision the bf16 copies
    /// are rewritten in the same pass. Returns the norm before clipping.
    pub fn clip_and_update(&mut self, lr: f64, opt: &AdamWConfig, max_norm: f64) -> Result<f64> {
        let norm = self
            .gpu
            .clip_grad_norm(&mut self.grads.iter_mut(), max_norm)?;
        self.update(lr, opt)?;
        Ok(norm)
    }

    /// Every parameter's gradient buffer, in [`param_shapes`] order: for a global-norm clip
    /// shared with parameters that live outside the model (a value head), before
    /// [`CudaGpt::update`].
    pub fn grads_mut(&mut self) -> Vec<&mut CudaSlice<f32>> {
        self.grads.iter_mut()
    }

    /// One AdamW step at learning rate `lr` on every parameter with the current gradients, no
    /// clipping ([`CudaGpt::clip_and_update`] is clipping, then this).
    pub fn update(&mut self, lr: f64, opt: &AdamWConfig) -> Result<()> {
        let gpu = &*self.gpu;
        self.adamw_step += 1;
        let grads = self.grads.iter();
        let params = self.weights.iter_mut();
        let moments = self
            .adam_m
            .iter_mut()
            .into_iter()
            .zip(self.adam_v.iter_mut());
        for (((p, g), (m, v)), &rank) in params.into_iter().zip(grads).zip(moments).zip(&self.ranks)
        {
            p.adamw(gpu, g, m, v, opt.step_for(lr, rank, self.adamw_step))?;
        }
        Ok(())
    }

    /// One training step on one batch: forward, backward, clip to `max_norm` (≤ 0: no
    /// clipping), AdamW at `lr`.
    #[allow(clippy::too_many_arguments)]
    pub fn train_step(
        &mut self,
        ids: &[usize],
        targets: &[i64],
        batch: usize,
        seq: usize,
        lr: f64,
        opt: &AdamWConfig,
        max_norm: f64,
    ) -> Result<GpuStepStats> {
        let loss = self.forward(ids, targets, batch, seq)?;
        self.backward()?;
        let max_norm = if max_norm > 0.0 {
            max_norm
        } else {
            f64::INFINITY
        };
        let grad_norm = self.clip_and_update(lr, opt, max_norm)?;
        Ok(GpuStepStats { loss, grad_norm })
    }

    /// The logits `[batch·seq, vocab]` of the last forward, as f32 (bf16 widened exactly).
    pub fn logits(&self) -> Result<Vec<f32>> {
        let acts = self.acts.as_ref().ok_or_else(no_acts)?;
        download_f32(&self.gpu, &acts.logits)
    }

    /// Every parameter's gradient from the last backward, in [`param_shapes`] order.
    pub fn grads(&self) -> Result<Vec<Vec<f32>>> {
        self.grads
            .iter()
            .into_iter()
            .map(|g| Ok(self.gpu.download(g)?))
            .collect()
    }

    /// The current f32 master parameters as a CPU [`Gpt`] (leaves that require grad).
    pub fn to_cpu(&self) -> Result<Gpt> {
        let shapes = param_shapes(&self.config);
        let tensors = self
            .weights
            .iter()
            .into_iter()
            .zip(&shapes)
            .map(|(w, (_, shape))| {
                let values = self.gpu.download(&w.value)?;
                Ok(Tensor::from_vec(values, shape)?.requires_grad())
            })
            .collect::<Result<Vec<_>>>()?;
        Gpt::from_params(self.config.clone(), tensors)
    }

    /// The AdamW state: the step count and each parameter's (m, v), in [`param_shapes`] order
    /// (the layout of the CPU `AdamW::state`).
    pub fn adamw_state(&self) -> Result<(u64, Vec<(Storage, Storage)>)> {
        let state = self
            .adam_m
            .iter()
            .into_iter()
            .zip(self.adam_v.iter())
            .map(|(m, v)| {
                Ok((
                    Storage::F32(self.gpu.download(m)?),
                    Storage::F32(self.gpu.download(v)?),
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((self.adamw_step, state))
    }

    /// Loads an AdamW state saved by [`CudaGpt::adamw_state`] or the CPU `AdamW` (an empty
    /// `state` means zero moments).
    pub fn set_adamw_state(&mut self, step: u64, state: &[(Storage, Storage)]) -> Result<()> {
        if state.is_empty() {
            for buf in self
                .adam_m
                .iter_mut()
                .into_iter()
                .chain(self.adam_v.iter_mut())
            {
                self.gpu
                    .stream()
                    .memset_zeros(buf)
                    .map_err(CudaError::from)?;
            }
        } else {
            let m = self.adam_m.iter_mut();
            if state.len() != m.len() {
                return Err(Error::Invalid(format!(
                    "AdamW state for {} parameters, the model has {}",
                    state.len(),
                    m.len()
                )));
            }
            let pairs = m.into_iter().zip(self.adam_v.iter_mut());
            for ((m, v), (sm, sv)) in pairs.zip(state) {
                let to_f32 = |s: &Storage| match s.to_dtype(DType::F32) {
                    Storage::F32(x) => x,
                    Storage::F64(x) => x.iter().map(|&a| a as f32).collect(),
                };
                self.gpu.upload_into(&to_f32(sm), m)?;
                self.gpu.upload_into(&to_f32(sv), v)?;
            }
        }
        self.adamw_step = step;
        Ok(())
    }
}

/// The f32 → bf16 copy of a master weight (only called for `T = u16`).
fn to_bf16_copy<T: Precision>(
    gpu: &Gpu,
    value: &CudaSlice<f32>,
    copy: &mut CudaSlice<T>,
) -> Result<()> {
    match as_bf16(copy) {
        Some(bits) => Ok(gpu.to_bf16(value, bits)?),
        None => Err(Error::Invalid(format!(
            "a bf16 weight copy was asked for with {} activations",
            T::NAME
        ))),
    }
}

/// AdamW that also refreshes the bf16 copy (only meaningful for `T = u16`).
fn adamw_with_copy<T: Precision>(
    gpu: &Gpu,
    value: &mut CudaSlice<f32>,
    grad: &CudaSlice<f32>,
    m: &mut CudaSlice<f32>,
    v: &mut CudaSlice<f32>,
    copy: &mut CudaSlice<T>,
    h: AdamWStep,
) -> Result<()> {
    match as_bf16(copy) {
        Some(bits) => Ok(gpu.adamw_with_bf16_copy(value, grad, m, v, bits, h)?),
        None => Err(Error::Invalid(format!(
            "a bf16 weight copy was updated with {} activations",
            T::NAME
        ))),
    }
}

/// `Some` when `T` is `u16` (bf16 bits): the same buffer, typed as such.
fn as_bf16<T: Precision>(x: &mut CudaSlice<T>) -> Option<&mut CudaSlice<u16>> {
    (x as &mut dyn std::any::Any).downcast_mut::<CudaSlice<u16>>()
}

/// A device buffer of `T` as f32 values on the host (bf16 widened exactly).
pub fn download_f32<T: Precision>(gpu: &Gpu, x: &CudaSlice<T>) -> Result<Vec<f32>> {
    if let Some(x) = (x as &dyn std::any::Any).downcast_ref::<CudaSlice<f32>>() {
        return Ok(gpu.download(x)?);
    }
    if let Some(x) = (x as &dyn std::any::Any).downcast_ref::<CudaSlice<u16>>() {
        let bits = gpu.download(x)?;
        return Ok(bits
            .into_iter()
            .map(kernels::cuda::bf16_bits_to_f32)
            .collect());
    }
    Err(Error::Invalid(format!(
        "no download for {} buffers",
        T::NAME
    )))
}

/// Host f32 values into a device buffer of `T` (rounded to bf16, to nearest even, for
/// `T = u16`).
pub fn upload_f32<T: Precision>(gpu: &Gpu, host: &[f32], dst: &mut CudaSlice<T>) -> Result<()> {
    if let Some(dst) = (dst as &mut dyn std::any::Any).downcast_mut::<CudaSlice<f32>>() {
        return Ok(gpu.upload_into(host, dst)?);
    }
    if let Some(dst) = (dst as &mut dyn std::any::Any).downcast_mut::<CudaSlice<u16>>() {
        let bits: Vec<u16> = host
            .iter()
            .map(|&x| kernels::cuda::f32_to_bf16_bits(x))
            .collect();
        return Ok(gpu.upload_into(&bits, dst)?);
    }
    Err(Error::Invalid(format!("no upload for {} buffers", T::NAME)))
}

fn no_acts() -> Error {
    Error::Invalid("the GPU GPT has no forward pass to work from: call forward first".into())
}

fn dims(config: &GptConfig, b: usize, t: usize) -> Dims {
    Dims {
        b,
        t,
        bt: b * t,
        c: config.n_embd,
        h: config.n_head,
        d: config.head_dim(),
        v: config.vocab_size,
        eps: config.layer_norm_epsilon as f32,
    }
}

/// `y = x·W + b` for x `[rows, n_in]`, W `[n_in, n_out]` (HF's Conv1D layout), y
/// `[rows, n_out]`.
#[allow(clippy::too_many_arguments)]
fn linear_fwd<T: Precision>(
    gpu: &Gpu,
    x: &CudaSlice<T>,
    w: &Weight<T>,
    b: &Weight<T>,
    rows: usize,
    n_in: usize,
    n_out: usize,
    y: &mut CudaSlice<T>,
) -> Result<()> {
    let wt = T::read_weight(w)?;
    T::matmul(gpu, rows, n_in, n_out, x, plain(n_in), wt, plain(n_out), y)?;
    Ok(gpu.add_bias_assign(y, &b.value, rows, n_out)?)
}

/// Backward of [`linear_fwd`] given dy: `dW = xᵀ·dy`, `db = Σ_rows dy` (both overwritten),
/// `dx = dy·Wᵀ`.
#[allow(clippy::too_many_arguments)]
fn linear_bwd<T: Precision>(
    gpu: &Gpu,
    x: &CudaSlice<T>,
    w: &Weight<T>,
    dy: &CudaSlice<T>,
    (rows, n_in, n_out): (usize, usize, usize),
    dw: &mut CudaSlice<f32>,
    db: &mut CudaSlice<f32>,
    dx: &mut CudaSlice<T>,
) -> Result<()> {
    T::matmul_f32_out(
        gpu,
        n_in,
        rows,
        n_out,
        x,
        transposed(n_in),
        dy,
        plain(n_out),
        0.0,
        dw,
    )?;
    gpu.sum_rows(dy, rows, n_out, db)?;
    let wt = T::read_weight(w)?;
    T::matmul(
        gpu,
        rows,
        n_out,
        n_in,
        dy,
        plain(n_out),
        wt,
        transposed(n_out),
        dx,
    )
}

/// One block forward, `x` (= h_l) → `out` (= h_{l+1}), saving what its backward needs in `la`.
fn block_forward<T: Precision>(
    gpu: &Gpu,
    d: &Dims,
    w: &BlockTensors<Weight<T>>,
    x: &CudaSlice<T>,
    la: &mut LayerActs<T>,
    s: &mut Scratch<T>,
    out: &mut CudaSlice<T>,
) -> Result<()> {
    let (bt, c) = (d.bt, d.c);
    // a = ln₁(x)
    gpu.layernorm_fwd(
        x,
        &w.ln_1_w.value,
        &w.ln_1_b.value,
        bt,
        c,
        d.eps,
        &mut la.ln1,
        &mut la.ln1_mean,
        &mut la.ln1_rstd,
    )?;
    // qkv = a·W_attn + b_attn, split into heads
    linear_fwd(gpu, &la.ln1, &w.attn_w, &w.attn_b, bt, c, 3 * c, &mut s.qkv)?;
    gpu.rows_to_heads(&s.qkv, d.heads(3 * c, 0), &mut la.q)?;
    gpu.rows_to_heads(&s.qkv, d.heads(3 * c, c), &mut la.k)?;
    gpu.rows_to_heads(&s.qkv, d.heads(3 * c, 2 * c), &mut la.v)?;
    // o = causal attention, heads merged back into rows, projected
    T::attention_fwd(
        gpu,
        &la.q,
        &la.k,
        &la.v,
        d.b * d.h,
        d.t,
        d.d,
        &mut la.att,
        &mut la.att_lse,
    )?;
    gpu.heads_to_rows(&la.att, d.heads(c, 0), &mut la.att_rows)?;
    let (proj_w, proj_b) = (&w.attn_proj_w, &w.attn_proj_b);
    linear_fwd(gpu, &la.att_rows, proj_w, proj_b, bt, c, c, &mut s.branch)?;
    // r = x + branch; m = ln₂(r)
    gpu.layernorm_residual_fwd(
        x,
        &s.branch,
        &w.ln_2_w.value,
        &w.ln_2_b.value,
        bt,
        c,
        d.eps,
        &mut la.res_mid,
        &mut la.ln2,
        &mut la.ln2_mean,
        &mut la.ln2_rstd,
    )?;
    // MLP: gelu(m·W_fc + b_fc)·W_mproj + b_mproj, added to r
    linear_fwd(gpu, &la.ln2, &w.fc_w, &w.fc_b, bt, c, 4 * c, &mut la.fc)?;
    gpu.gelu_fwd(&la.fc, &mut la.fc_gelu)?;
    let (mproj_w, mproj_b) = (&w.mlp_proj_w, &w.mlp_proj_b);
    linear_fwd(
        gpu,
        &la.fc_gelu,
        mproj_w,
        mproj_b,
        bt,
        4 * c,
        c,
        &mut s.branch,
    )?;
    Ok(gpu.add(&la.res_mid, &s.branch, out)?)
}

/// One block backward: on entry `s.dres` is d loss/d h_{l+1}, on return d loss/d h_l; the
/// block's twelve gradients are overwritten in `g`. The steps are [`block_forward`]'s in
/// reverse.
fn block_backward<T: Precision>(
    gpu: &Gpu,
    d: &Dims,
    w: &BlockTensors<Weight<T>>,
    x: &CudaSlice<T>,
    la: &LayerActs<T>,
    s: &mut Scratch<T>,
    g: &mut BlockTensors<CudaSlice<f32>>,
) -> Result<()> {
    let (bt, c) = (d.bt, d.c);
    // h_{l+1} = r + mlp: d mlp-branch output = dres; through c_proj, the GELU and c_fc.
    linear_bwd(
        gpu,
        &la.fc_gelu,
        &w.mlp_proj_w,
        &s.dres,
        (bt, 4 * c, c),
        &mut g.mlp_proj_w,
        &mut g.mlp_proj_b,
        &mut s.dfc_gelu,
    )?;
    gpu.gelu_bwd(&la.fc, &s.dfc_gelu, &mut s.dfc)?;
    linear_bwd(
        gpu,
        &la.ln2,
        &w.fc_w,
        &s.dfc,
        (bt, c, 4 * c),
        &mut g.fc_w,
        &mut g.fc_b,
        &mut s.dln,
    )?;
    // m = ln₂(r): dres += its input gradient (dres is now d loss/d r).
    gpu.layernorm_bwd(
        &s.dln,
        &la.res_mid,
        &w.ln_2_w.value,
        &la.ln2_mean,
        &la.ln2_rstd,
        bt,
        c,
        &mut s.dln_in,
        &mut g.ln_2_w,
        &mut g.ln_2_b,
    )?;
    gpu.add_assign(&mut s.dres, &s.dln_in)?;
    // r = x + proj(rows(o)): d branch output = dres; through c_proj and the head merge.
    linear_bwd(
        gpu,
        &la.att_rows,
        &w.attn_proj_w,
        &s.dres,
        (bt, c, c),
        &mut g.attn_proj_w,
        &mut g.attn_proj_b,
        &mut s.datt_rows,
    )?;
    gpu.rows_to_heads(&s.datt_rows, d.heads(c, 0), &mut s.datt)?;
    T::attention_bwd(
        gpu,
        [&la.q, &la.k, &la.v],
        &la.att,
        &la.att_lse,
        &s.datt,
        (d.b * d.h, d.t, d.d),
        &mut s.dq,
        &mut s.dk,
        &mut s.dv,
    )?;
    // dq, dk, dv back into the fused projection's rows, then through c_attn.
    gpu.heads_to_rows(&s.dq, d.heads(3 * c, 0), &mut s.dqkv)?;
    gpu.heads_to_rows(&s.dk, d.heads(3 * c, c), &mut s.dqkv)?;
    gpu.heads_to_rows(&s.dv, d.heads(3 * c, 2 * c), &mut s.dqkv)?;
    linear_bwd(
        gpu,
        &la.ln1,
        &w.attn_w,
        &s.dqkv,
        (bt, c, 3 * c),
        &mut g.attn_w,
        &mut g.attn_b,
        &mut s.dln,
    )?;
    // a = ln₁(x): dres += its input gradient (dres is now d loss/d x).
    gpu.layernorm_bwd(
        &s.dln,
        x,
        &w.ln_1_w.value,
        &la.ln1_mean,
        &la.ln1_rstd,
        bt,
        c,
        &mut s.dln_in,
        &mut g.ln_1_w,
        &mut g.ln_1_b,
    )?;
    Ok(gpu.add_assign(&mut s.dres, &s.dln_in)?)
}

// --------------------------------------------------------------------- runtime precision

/// A [`CudaGpt`] of either precision behind one object-safe interface, for callers that pick
/// the precision at run time (`ferrochat pretrain --precision`).
pub trait GpuModel {
    /// [`CudaGpt::train_step`].
    #[allow(clippy::too_many_arguments)]
    fn train_step(
        &mut self,
        ids: &[usize],
        targets: &[i64],
        batch: usize,
        seq: usize,
        lr: f64,
        opt: &AdamWConfig,
        max_norm: f64,
    ) -> Result<GpuStepStats>;
    /// [`CudaGpt::forward`] (the mean loss; no gradients are computed).
    fn loss(&mut self, ids: &[usize], targets: &[i64], batch: usize, seq: usize) -> Result<f64>;
    /// [`CudaGpt::to_cpu`].
    fn to_cpu(&self) -> Result<Gpt>;
    /// [`CudaGpt::adamw_state`].
    fn adamw_state(&self) -> Result<(u64, Vec<(Storage, Storage)>)>;
    /// [`CudaGpt::set_adamw_state`].
    fn set_adamw_state(&mut self, step: u64, state: &[(Storage, Storage)]) -> Result<()>;
    /// The GPU's name and the precision, e.g. "NVIDIA H100 80GB HBM3, bf16".
    fn describe(&self) -> String;
}

impl<T: Precision> GpuModel for CudaGpt<T> {
    fn train_step(
        &mut self,
        ids: &[usize],
        targets: &[i64],
        batch: usize,
        seq: usize,
        lr: f64,
        opt: &AdamWConfig,
        max_norm: f64,
    ) -> Result<GpuStepStats> {
        CudaGpt::train_step(self, ids, targets, batch, seq, lr, opt, max_norm)
    }
    fn loss(&mut self, ids: &[usize], targets: &[i64], batch: usize, seq: usize) -> Result<f64> {
        self.forward(ids, targets, batch, seq)
    }
    fn to_cpu(&self) -> Result<Gpt> {
        CudaGpt::to_cpu(self)
    }
    fn adamw_state(&self) -> Result<(u64, Vec<(Storage, Storage)>)> {
        CudaGpt::adamw_state(self)
    }
    fn set_adamw_state(&mut self, step: u64, state: &[(Storage, Storage)]) -> Result<()> {
        CudaGpt::set_adamw_state(self, step, state)
    }
    fn describe(&self) -> String {
        let name = self.gpu.name().unwrap_or_else(|_| "GPU".into());
        format!("{name} ({}), {}", self.gpu.arch(), T::NAME)
    }
}

/// Opens GPU `ordinal` (compiling the kernels) and uploads `model` in `precision`.
pub fn open(ordinal: usize, precision: TrainPrecision, model: &Gpt) -> Result<Box<dyn GpuModel>> {
    let gpu = Arc::new(Gpu::new(ordinal)?);
    Ok(match precision {
        TrainPrecision::F32 => Box::new(CudaGpt::<f32>::new(gpu, model)?),
        TrainPrecision::Bf16 => Box::new(CudaGpt::<u16>::new(gpu, model)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_names_agree() {
        assert_eq!(<u16 as Precision>::NAME, TrainPrecision::Bf16.to_string());
        assert_eq!(<f32 as Precision>::NAME, TrainPrecision::F32.to_string());
    }

    #[test]
    fn bf16_copies_are_the_matmul_and_embedding_weights() {
        let config = GptConfig::new(11, 8, 8, 2, 2);
        let copied: Vec<String> = param_shapes(&config)
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| reads_bf16_copy(n))
            .collect();
        // wte, wpe, and per block c_attn, attn.c_proj, c_fc, mlp.c_proj weights.
        assert_eq!(copied.len(), 2 + 4 * 2, "{copied:?}");
        assert!(copied
            .iter()
            .all(|n| n.ends_with(".weight") && !n.contains("ln_")));
    }

    #[test]
    fn operands_map_to_f32_strides() {
        // A weight W [in = 3, out = 5] read as Wᵀ (logical [5, 3]): element (i, p) of Wᵀ is
        // W[p, i] = w[p·5 + i], so the row stride is 1 and the column stride 5.
        let s = f32_strides(transposed(5));
        assert_eq!((s.row, s.col), (1, 5));
        let s = f32_strides(plain(5));
        assert_eq!((s.row, s.col), (5, 1));
    }
}
