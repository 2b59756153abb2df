//! One PPO iteration with the policy and value updates on one CUDA GPU (feature `cuda`): the
//! same computation as the CPU [`PpoTrainer::step`](crate::ppo::PpoTrainer::step), with every
//! forward, backward, gradient clip and AdamW step of the two networks on the device
//! ([`model::cuda_gpt::CudaGpt`]), and the O(tokens) bookkeeping on the host.
//!
//! **Status: compiled, never run on a GPU** (none has been lent to this project yet). The
//! tests in `rlhf/tests/cuda_ppo.rs` compare it with the CPU trainer and skip themselves
//! without a GPU; `scripts/gpu-check.sh` runs them.
//!
//! # The key idea: the clipped surrogate is a weighted cross-entropy
//!
//! The policy loss of a minibatch (Schulman et al. 2017, eq. 7, as a loss; [`policy_loss`])
//! depends on the network only through the log-probs of the sampled tokens,
//! logπ_t = log softmax(logits_t / T)[a_t] = −CE_t, the cross-entropy of token a_t under the
//! temperature-scaled logits. So by the chain rule
//!
//! ```text
//! ∂L/∂logits_t = (∂L/∂logπ_t)·∂logπ_t/∂logits_t = c_t·(1/T)·(softmax(logits_t/T) − onehot(a_t))
//! with c_t = −∂L/∂logπ_t = A_t·r_t / N   where the term is not clipped (r_t = π/π_old),
//!      c_t = 0                          where it is (the max is then a constant),
//! ```
//!
//! which is exactly the backward of the loss Σ_t c_t·CE_t: a cross-entropy backward with a
//! per-token weight. The c_t are O(tokens) numbers computed on the host from the log-probs the
//! forward pass downloads ([`policy_loss_grad`]); the device runs the fused cross-entropy
//! kernel with per-row logit scale 1/T (`cross_entropy_scaled_fwd/bwd`; logπ_t = −loss_t) and
//! the rows' weights as its upstream gradient ([`CudaGpt::forward_rows`] /
//! [`CudaGpt::backward_rows`]). PPO-ptx is one more cross-entropy in the same pass: the
//! pretraining sequences ride in extra rows of the same batch with scale 1 and weight
//! γ_ptx/(counted targets), so one backward gives ∇(L_pg + γ_ptx·CE_ptx), as the CPU's single
//! `loss.backward()` does. PpoConfig has no entropy bonus (the CPU step only reports the
//! entropy), so there is none here either; the entropy of the sampling distribution comes out
//! of the same kernel as a diagnostic.
//!
//! # The value model
//!
//! V = ln_f(h)·w + b at every position ([`ValueModel`]): the trunk is a [`CudaGpt`] run up to
//! its final layer norm ([`CudaGpt::forward_hidden`]), the head two small GEMMs (N = 1 for V,
//! K = 1 for ∂L/∂z = ∂L/∂V·wᵀ) with V and ∂L/∂w in f32; the clipped value loss's gradient
//! ∂L/∂V_t is computed per token on the host ([`value_loss_grad`], times `vf_coef`) and the
//! trunk takes ∂L/∂z back ([`CudaGpt::backward_hidden`]). Its gradient norm is clipped over
//! trunk and head together, as the CPU clips `ValueModel::params`.
//!
//! # What stays on the host
//!
//! Sampling the rollouts (the caller does it, as for the CPU step; `sample_rollouts` or
//! `model::generate` on a CPU copy of the policy), the reward-model scores and the reference
//! log-probs (inputs), and everything O(tokens): rewards, GAE, whitening, the per-token
//! coefficients, the statistics, the minibatch order (the same `rng` draws as the CPU step,
//! so both visit the same minibatches).
//!
//! # Layout
//!
//! Every pass uses one fixed shape, so the device buffers are allocated once per iteration
//! shape: the policy sees `[mb + ptx_batch, S]` rows (the minibatch's rollouts right-padded to
//! S = the longest prompt + response of the batch, or the ptx length if longer; rows past the
//! minibatch are padding with ignored targets; then the ptx rows), the value model
//! `[mb, S_rollouts]`. Right padding is exact (causal attention, positions from 0 per row), so
//! this computes what the CPU computes on its per-minibatch padding.

use std::sync::Arc;

use engine::ops::IGNORE_INDEX;
use engine::optim::AdamWConfig;
use engine::{Rng, Tensor};
use kernels::cuda::{Bf16Operand, CudaSlice, Gpu};
use model::cuda_gpt::{upload_f32, CudaGpt, Precision, Weight};
use model::Gpt;

use crate::ppo::{
    check_step_inputs, minibatch_diagnostics, policy_loss_grad, prepare_batch, run_epochs,
    value_loss_grad, KlController, Minibatch, Padded, PpoConfig, PpoError, PpoStats, PtxBatch,
    Result, Rollout, ValueModel,
};

fn invalid<T>(msg: impl Into<String>) -> Result<T> {
    Err(PpoError::Invalid(msg.into()))
}

/// Stored row-major with rows of `ld` elements (one matrix).
fn plain(ld: usize) -> Bf16Operand {
    Bf16Operand {
        trans: false,
        ld,
        batch_stride: 0,
    }
}

// ------------------------------------------------------------------------------ value model

/// The value model on the GPU: a [`CudaGpt`] trunk (its tied unembedding unused) and the
/// scalar head V = z·w + b, with the head's f32 gradients and AdamW moments.
pub struct CudaValueModel<T: Precision> {
    trunk: CudaGpt<T>,
    /// w `[C]` (with a bf16 copy in mixed precision: the head GEMMs read it) and b `[1]`.
    head_w: Weight<T>,
    head_b: Weight<T>,
    grad_w: CudaSlice<f32>,
    grad_b: CudaSlice<f32>,
    /// AdamW moments of w and b.
    m_w: CudaSlice<f32>,
    v_w: CudaSlice<f32>,
    m_b: CudaSlice<f32>,
    v_b: CudaSlice<f32>,
    /// The head's activations for the last batch shape (none before the first forward).
    acts: Option<HeadActs<T>>,
}

/// V `[BT]` (f32), ∂L/∂V `[BT]` and ∂L/∂z `[BT, C]` (activation type).
struct HeadActs<T> {
    values: CudaSlice<f32>,
    dvalues: CudaSlice<T>,
    dz: CudaSlice<T>,
}

fn no_forward() -> PpoError {
    PpoError::Invalid("the GPU value model has no forward pass to work from".into())
}

impl<T: Precision> CudaValueModel<T> {
    /// Uploads `vm` (trunk and head) to `gpu`; AdamW state starts at zero.
    pub fn new(gpu: Arc<Gpu>, vm: &ValueModel) -> Result<CudaValueModel<T>> {
        let trunk = CudaGpt::<T>::new(gpu.clone(), &vm.trunk)?;
        let c = trunk.config().n_embd;
        if vm.head_w.shape() != [c] || vm.head_b.shape() != [1] {
            return invalid(format!(
                "value head must be [{c}] and [1], got {:?} and {:?}",
                vm.head_w.shape(),
                vm.head_b.shape()
            ));
        }
        let gpu = &*gpu;
        let zf = |n: usize| gpu.zeros::<f32>(n).map_err(model::Error::from);
        Ok(CudaValueModel {
            head_w: Weight::upload(gpu, &vm.head_w.to_vec_f32(), true)?,
            head_b: Weight::upload(gpu, &vm.head_b.to_vec_f32(), false)?,
            grad_w: zf(c)?,
            grad_b: zf(1)?,
            m_w: zf(c)?,
            v_w: zf(c)?,
            m_b: zf(1)?,
            v_b: zf(1)?,
            acts: None,
            trunk,
        })
    }

    /// V at every position of `ids` (`[batch, seq]`), f32 `[batch·seq]`: the trunk to ln_f,
    /// then z·w + b.
    pub fn values(&mut self, ids: &[usize], batch: usize, seq: usize) -> Result<Vec<f32>> {
        let gpu = self.trunk.gpu().clone();
        let c = self.trunk.config().n_embd;
        let bt = batch * seq;
        if self.acts.as_ref().is_none_or(|a| a.values.len() != bt) {
            self.acts = None; // free the old set before allocating the new one
            self.acts = Some(HeadActs {
                values: gpu.zeros::<f32>(bt).map_err(model::Error::from)?,
                dvalues: gpu.zeros::<T>(bt).map_err(model::Error::from)?,
                dz: gpu.zeros::<T>(bt * c).map_err(model::Error::from)?,
            });
        }
        let acts = self.acts.as_mut().ok_or_else(no_forward)?;
        let z = self.trunk.forward_hidden(ids, batch, seq)?;
        // V = z·w [BT, C]·[C, 1] (f32 out), + b.
        let w = T::read_weight(&self.head_w)?;
        T::matmul_f32_out(
            &gpu,
            bt,
            c,
            1,
            z,
            plain(c),
            w,
            plain(1),
            0.0,
            &mut acts.values,
        )?;
        gpu.add_bias_assign(&mut acts.values, &self.head_b.value, bt, 1)
            .map_err(model::Error::from)?;
        Ok(gpu.download(&acts.values).map_err(model::Error::from)?)
    }

    /// The backward of the last [`CudaValueModel::values`] given ∂L/∂V at every position
    /// (`[batch·seq]`): ∂L/∂w = zᵀ·∂L/∂V, ∂L/∂b = Σ ∂L/∂V (on the host), ∂L/∂z = ∂L/∂V·wᵀ,
    /// then the trunk. Overwrites every gradient.
    pub fn backward(&mut self, dvalues: &[f32]) -> Result<()> {
        let gpu = self.trunk.gpu().clone();
        let c = self.trunk.config().n_embd;
        let acts = self.acts.as_mut().ok_or_else(no_forward)?;
        let bt = acts.values.len();
        if dvalues.len() != bt {
            return invalid(format!(
                "{} value gradients for the {bt} values of the last forward",
                dvalues.len()
            ));
        }
        upload_f32(&gpu, dvalues, &mut acts.dvalues)?;
        let z = self.trunk.hidden()?;
        // ∂L/∂w [C, 1] = zᵀ [C, BT] · ∂L/∂V [BT, 1]  (z stored [BT, C]: transposed, ld C)
        let zt = Bf16Operand {
            trans: true,
            ld: c,
            batch_stride: 0,
        };
        T::matmul_f32_out(
            &gpu,
            c,
            bt,
            1,
            z,
            zt,
            &acts.dvalues,
            plain(1),
            0.0,
            &mut self.grad_w,
        )?;
        let db: f64 = dvalues.iter().map(|&d| d as f64).sum();
        gpu.upload_into(&[db as f32], &mut self.grad_b)
            .map_err(model::Error::from)?;
        // ∂L/∂z [BT, C] = ∂L/∂V [BT, 1] · wᵀ [1, C]
        let w = T::read_weight(&self.head_w)?;
        T::matmul(
            &gpu,
            bt,
            1,
            c,
            &acts.dvalues,
            plain(1),
            w,
            plain(c),
            &mut acts.dz,
        )?;
        self.trunk.backward_hidden(&acts.dz)?;
        Ok(())
    }

    /// Global-norm clipping over the trunk's and the head's gradients together (to
    /// `max_norm`), then one AdamW step at `lr` on all of them. Returns the norm before
    /// clipping.
    pub fn clip_and_update(&mut self, lr: f64, opt: &AdamWConfig, max_norm: f64) -> Result<f64> {
        let gpu = self.trunk.gpu().clone();
        let mut grads = self.trunk.grads_mut();
        grads.push(&mut self.grad_w);
        grads.push(&mut self.grad_b);
        let norm = gpu
            .clip_grad_norm(&mut grads, max_norm)
            .map_err(model::Error::from)?;
        self.trunk.update(lr, opt)?;
        // The head's tensors are both rank 1 (no decay when decay_matrices_only).
        let h = opt.step_for(lr, 1, self.trunk.adamw_step());
        let (gw, gb) = (&self.grad_w, &self.grad_b);
        self.head_w
            .adamw(&gpu, gw, &mut self.m_w, &mut self.v_w, h)?;
        self.head_b
            .adamw(&gpu, gb, &mut self.m_b, &mut self.v_b, h)?;
        Ok(norm)
    }

    /// The current f32 parameters as a CPU [`ValueModel`].
    pub fn to_cpu(&self) -> Result<ValueModel> {
        let gpu = self.trunk.gpu();
        let trunk = self.trunk.to_cpu()?;
        let dl = |x: &CudaSlice<f32>| gpu.download(x).map_err(model::Error::from);
        let c = trunk.config.n_embd;
        let w = Tensor::from_vec(dl(&self.head_w.value)?, &[c])?;
        let b = Tensor::from_vec(dl(&self.head_b.value)?, &[1])?;
        ValueModel::new(&trunk, &w, &b)
    }
}

// --------------------------------------------------------------------------------- layouts

/// One policy pass's rows, `[batch, seq]` flat: ids, next-token targets (ignored except where
/// a response token is predicted, or a ptx target), and each row's logit scale (1/T on
/// rollout rows, 1 elsewhere).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PolicyRows {
    pub(crate) ids: Vec<usize>,
    pub(crate) targets: Vec<i64>,
    pub(crate) row_scale: Vec<f32>,
    pub(crate) batch: usize,
    pub(crate) seq: usize,
}

/// The shape of every pass of one iteration: rollout rows per pass (`mb`), ptx rows after
/// them, and the row lengths of the policy's and of the value model's passes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Shape {
    pub(crate) mb: usize,
    pub(crate) ptx_rows: usize,
    pub(crate) policy_seq: usize,
    pub(crate) value_seq: usize,
}

impl Shape {
    /// Token row of response token j of rollout row b in a pass of row length `seq`.
    fn row(p: &Padded, b: usize, j: usize, seq: usize) -> usize {
        b * seq + p.positions[b * p.width + j]
    }
}

/// Lays out the rollouts of `p` (row b of the pass = row b of `p`, right-padded to
/// `shape.policy_seq`) and, when given, the ptx batch in rows `shape.mb..`. Only the positions
/// that predict a response token (and the ptx targets) keep a target; padding rows are all
/// token 0 with no target.
pub(crate) fn policy_rows(
    p: &Padded,
    ptx: Option<&PtxBatch>,
    shape: Shape,
    temperature: f64,
) -> PolicyRows {
    let (batch, seq) = (shape.mb + shape.ptx_rows, shape.policy_seq);
    let mut ids = vec![0; batch * seq];
    let mut targets = vec![IGNORE_INDEX; batch * seq];
    let mut row_scale = vec![1.0f32; batch * seq];
    for b in 0..p.batch {
        ids[b * seq..b * seq + p.seq].copy_from_slice(&p.ids[b * p.seq..(b + 1) * p.seq]);
        row_scale[b * seq..(b + 1) * seq].fill((1.0 / temperature) as f32);
        for j in 0..p.width {
            let pos = p.positions[b * p.width + j];
            targets[b * seq + pos] = p.targets[b * p.seq + pos] as i64;
        }
    }
    if let Some(x) = ptx {
        for r in 0..x.batch {
            let (dst, src) = ((shape.mb + r) * seq, r * x.seq);
            ids[dst..dst + x.seq].copy_from_slice(&x.ids[src..src + x.seq]);
            targets[dst..dst + x.seq].copy_from_slice(&x.targets[src..src + x.seq]);
        }
    }
    PolicyRows {
        ids,
        targets,
        row_scale,
        batch,
        seq,
    }
}

/// The rollouts of `p` right-padded to `[shape.mb, shape.value_seq]` for the value model.
pub(crate) fn value_ids(p: &Padded, shape: Shape) -> Vec<usize> {
    let seq = shape.value_seq;
    let mut ids = vec![0; shape.mb * seq];
    for b in 0..p.batch {
        ids[b * seq..b * seq + p.seq].copy_from_slice(&p.ids[b * p.seq..(b + 1) * p.seq]);
    }
    ids
}

/// Reads a per-row quantity (`[B·seq]`) at each (rollout b, response token j) of `p`: flat
/// `[p.batch, p.width]` (padding entries read the last token's row, as the CPU's `pick`).
pub(crate) fn pick(p: &Padded, rows: &[f32], seq: usize, sign: f64) -> Vec<f64> {
    (0..p.batch)
        .flat_map(|b| (0..p.width).map(move |j| (b, j)))
        .map(|(b, j)| sign * rows[Shape::row(p, b, j, seq)] as f64)
        .collect()
}

/// The policy rows' weights `[B·seq]`: c_t = −∂L_pg/∂logπ_t on each real response token's row
/// (`dlogp` flat `[p.batch, p.width]`), `ptx_weight` on each counted ptx row, 0 elsewhere.
pub(crate) fn policy_weights(
    p: &Padded,
    mask: &[bool],
    dlogp: &[f64],
    rows: &PolicyRows,
    shape: Shape,
    ptx_weight: f64,
) -> Vec<f32> {
    let mut w = vec![0.0f32; rows.batch * rows.seq];
    for b in 0..p.batch {
        for j in 0..p.width {
            if mask[b * p.width + j] {
                w[Shape::row(p, b, j, rows.seq)] = -dlogp[b * p.width + j] as f32;
            }
        }
    }
    let ptx_start = shape.mb * rows.seq;
    for (w, &t) in w[ptx_start..].iter_mut().zip(&rows.targets[ptx_start..]) {
        if t != IGNORE_INDEX {
            *w = ptx_weight as f32;
        }
    }
    w
}

/// The value rows' upstream gradient `[mb·value_seq]`: `scale`·∂L_v/∂V_t on each real
/// response token's row, 0 elsewhere.
pub(crate) fn value_weights(
    p: &Padded,
    mask: &[bool],
    dv: &[f64],
    shape: Shape,
    scale: f64,
) -> Vec<f32> {
    let mut w = vec![0.0f32; shape.mb * shape.value_seq];
    for b in 0..p.batch {
        for j in 0..p.width {
            if mask[b * p.width + j] {
                w[Shape::row(p, b, j, shape.value_seq)] = (scale * dv[b * p.width + j]) as f32;
            }
        }
    }
    w
}

/// Checks a ptx batch's sizes (its ids and targets are checked by the model).
fn check_ptx(x: &PtxBatch) -> Result<()> {
    if x.batch == 0 || x.seq == 0 {
        return invalid("ptx batch is empty");
    }
    if x.ids.len() != x.batch * x.seq || x.targets.len() != x.ids.len() {
        return invalid(format!(
            "ptx batch of {} x {} with {} ids and {} targets",
            x.batch,
            x.seq,
            x.ids.len(),
            x.targets.len()
        ));
    }
    Ok(())
}

// -------------------------------------------------------------------------------- trainer

/// The GPU counterpart of [`crate::ppo::PpoTrainer`]: the configuration and KL controller, and
/// the policy and value model resident on the device with their AdamW states (the CPU trainer
/// is handed the models at each step; here they stay on the GPU between iterations and are
/// copied back with [`CudaPpoTrainer::policy_to_cpu`] / [`CudaPpoTrainer::value_to_cpu`]).
pub struct CudaPpoTrainer<T: Precision> {
    pub config: PpoConfig,
    /// The KL coefficient now (starts as `config.kl`).
    pub kl: KlController,
    policy: CudaGpt<T>,
    value: CudaValueModel<T>,
}

impl<T: Precision> CudaPpoTrainer<T> {
    /// Uploads `policy` and `value_model` to `gpu`; both optimizers start with no step taken.
    pub fn new(
        gpu: Arc<Gpu>,
        config: PpoConfig,
        policy: &Gpt,
        value_model: &ValueModel,
    ) -> Result<CudaPpoTrainer<T>> {
        config.validate()?;
        Ok(CudaPpoTrainer {
            kl: config.kl,
            policy: CudaGpt::new(gpu.clone(), policy)?,
            value: CudaValueModel::new(gpu, value_model)?,
            config,
        })
    }

    /// The policy's current f32 parameters as a CPU [`Gpt`] (for sampling the next rollouts).
    pub fn policy_to_cpu(&self) -> Result<Gpt> {
        Ok(self.policy.to_cpu()?)
    }

    /// The value model's current f32 parameters as a CPU [`ValueModel`].
    pub fn value_to_cpu(&self) -> Result<ValueModel> {
        self.value.to_cpu()
    }

    /// AdamW steps taken by the policy and by the value model.
    pub fn adamw_steps(&self) -> (u64, u64) {
        (self.policy.adamw_step(), self.value.trunk.adamw_step())
    }

    /// One PPO iteration, as [`crate::ppo::PpoTrainer::step`] with the same arguments less the
    /// models (resident on the GPU): `ref_logprobs` the reference policy's log-prob of every
    /// response token, `scores` the reward model's score of each rollout, `ptx` a pretraining
    /// batch used when `ptx_coef` > 0. Same hyper-parameters, minibatch order (`rng`) and
    /// statistics as the CPU step.
    pub fn step(
        &mut self,
        rollouts: &[Rollout],
        ref_logprobs: &[Vec<f64>],
        scores: &[f64],
        ptx: Option<&PtxBatch>,
        rng: &mut Rng,
    ) -> Result<PpoStats> {
        let refs = check_step_inputs(
            &self.config,
            self.policy.config(),
            rollouts,
            ref_logprobs,
            scores,
        )?;
        let c = self.config.clone();
        let ptx = ptx.filter(|_| c.ptx_coef > 0.0);
        if let Some(x) = ptx {
            check_ptx(x)?;
        }
        let width = refs.iter().map(|r| r.response.len()).max().unwrap_or(0);
        let value_seq = refs
            .iter()
            .map(|r| r.prompt.len() + r.response.len())
            .max()
            .unwrap_or(1);
        let shape = Shape {
            mb: c.minibatch_size.clamp(1, refs.len()),
            ptx_rows: ptx.map_or(0, |x| x.batch),
            policy_seq: value_seq.max(ptx.map_or(0, |x| x.seq)),
            value_seq,
        };
        let mut stats = PpoStats {
            beta: self.kl.beta,
            ..PpoStats::default()
        };

        // The log-probs, values and entropy before the update (no gradient), in chunks of a
        // minibatch, as the CPU step.
        let (mut old_lp, mut old_v, mut ent, mut ent_n) = (vec![], vec![], 0.0, 0.0);
        for chunk in refs.chunks(shape.mb) {
            let p = Padded::new(chunk, width);
            let rows = policy_rows(&p, None, shape, c.temperature);
            let out = self.policy.forward_rows(
                &rows.ids,
                &rows.targets,
                &rows.row_scale,
                rows.batch,
                rows.seq,
                true,
            )?;
            old_lp.extend(pick(&p, &out.losses, rows.seq, -1.0));
            let entropy = out
                .entropy
                .ok_or_else(|| PpoError::Invalid("the GPU returned no entropy".into()))?;
            for (e, &m) in pick(&p, &entropy, rows.seq, 1.0).iter().zip(&p.mask) {
                if m {
                    (ent, ent_n) = (ent + e, ent_n + 1.0);
                }
            }
            let values = self
                .value
                .values(&value_ids(&p, shape), shape.mb, shape.value_seq)?;
            old_v.extend(pick(&p, &values, shape.value_seq, 1.0));
        }
        let prepared = prepare_batch(
            &c,
            self.kl.beta,
            &refs,
            ref_logprobs,
            scores,
            (old_lp, old_v, ent / ent_n),
            &mut stats,
        );
        run_epochs(&c, &prepared, &refs, width, rng, &mut stats, |mb, stats| {
            self.train_minibatch(mb, ptx, shape, stats)
        })?;
        self.kl.update(stats.kl, refs.len());
        Ok(stats)
    }

    /// One gradient step on a minibatch: the policy's forward (log-probs, and the ptx rows'
    /// cross-entropy), the value model's forward, the per-token coefficients on the host, both
    /// backwards, each network's clip and AdamW step.
    fn train_minibatch(
        &mut self,
        mb: &Minibatch,
        ptx: Option<&PtxBatch>,
        shape: Shape,
        stats: &mut PpoStats,
    ) -> Result<()> {
        let c = &self.config;
        let p = &mb.padded;

        let rows = policy_rows(p, ptx, shape, c.temperature);
        let out = self.policy.forward_rows(
            &rows.ids,
            &rows.targets,
            &rows.row_scale,
            rows.batch,
            rows.seq,
            false,
        )?;
        let new_lp = pick(p, &out.losses, rows.seq, -1.0);
        let values = self
            .value
            .values(&value_ids(p, shape), shape.mb, shape.value_seq)?;
        let new_v = pick(p, &values, shape.value_seq, 1.0);

        let (pg, dlogp) = policy_loss_grad(&new_lp, &mb.old_lp, &mb.adv, &mb.mask, c.cliprange)?;
        let (vf, dv) = value_loss_grad(&new_v, &mb.old_v, &mb.ret, &mb.mask, c.cliprange_value)?;
        // PPO-ptx: + γ_ptx·(mean cross-entropy over the ptx batch's counted targets).
        let ptx_start = shape.mb * rows.seq;
        let counted = rows.targets[ptx_start..]
            .iter()
            .filter(|&&t| t != IGNORE_INDEX)
            .count();
        let ptx_weight = match (ptx, counted) {
            (Some(_), n) if n > 0 => {
                let ce: f64 = out.losses[ptx_start..].iter().map(|&l| l as f64).sum();
                stats.ptx_loss += ce / n as f64;
                c.ptx_coef / n as f64
            }
            _ => 0.0,
        };

        let w = policy_weights(p, &mb.mask, &dlogp, &rows, shape, ptx_weight);
        self.policy.backward_rows(&w)?;
        stats.policy_grad_norm +=
            self.policy
                .clip_and_update(c.policy_lr, &c.adam, c.max_grad_norm)?;
        self.value
            .backward(&value_weights(p, &mb.mask, &dv, shape, c.vf_coef))?;
        stats.value_grad_norm +=
            self.value
                .clip_and_update(c.value_lr, &c.adam, c.max_grad_norm)?;

        let [clip, akl, ratio, vclip] = minibatch_diagnostics(mb, &new_lp, &new_v, c);
        stats.policy_loss += pg;
        stats.value_loss += vf;
        stats.clip_frac += clip;
        stats.approx_kl += akl;
        stats.ratio += ratio;
        stats.value_clip_frac += vclip;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! The host side of the GPU step, checked on the CPU: the rows, targets, scales and
    //! weights it hands the device, pushed through the CPU model as the device would use them
    //! (a row-scaled cross-entropy weighted by c_t, and V·∂L/∂V), must give the CPU PPO loss's
    //! gradients. This is the key idea of the module, checked without a GPU.
    use super::*;
    use crate::ppo::{policy_loss, token_logprobs, value_loss};
    use engine::{ops, DType};
    use model::GptConfig;

    fn rollout(prompt: &[usize], response: &[usize]) -> Rollout {
        Rollout {
            prompt: prompt.to_vec(),
            response: response.to_vec(),
            ended: false,
            logprobs: vec![],
        }
    }

    /// The gradient of every parameter in `params` (0 where none).
    fn grads_of(loss: &Tensor, params: &[&Tensor]) -> Vec<Vec<f64>> {
        let g = loss.backward().unwrap();
        params
            .iter()
            .map(|p| match g.get(p) {
                Some(g) => g.to_vec_f64(),
                None => vec![0.0; p.numel()],
            })
            .collect()
    }

    fn assert_grads_close(what: &str, got: &[Vec<f64>], want: &[Vec<f64>], rtol: f64) {
        assert_eq!(got.len(), want.len());
        let mut nonzero = 0;
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            let mean = w.iter().map(|x| x.abs()).sum::<f64>() / w.len() as f64;
            for (k, (&a, &b)) in g.iter().zip(w).enumerate() {
                let tol = rtol * (b.abs() + mean) + 1e-300;
                assert!((a - b).abs() <= tol, "{what}: param {i}[{k}]: {a} vs {b}");
                nonzero += (b != 0.0) as usize;
            }
        }
        assert!(
            nonzero > 0,
            "{what}: every gradient is zero (the test would not see a bug)"
        );
    }

    #[test]
    fn weighted_cross_entropy_rows_reproduce_the_cpu_minibatch_gradients() {
        let mut rng = Rng::new(5);
        let mut cfg = GptConfig::new(13, 24, 8, 2, 2);
        (cfg.resid_pdrop, cfg.embd_pdrop, cfg.attn_pdrop) = (0.0, 0.0, 0.0);
        let policy = Gpt::new(cfg.clone(), &mut rng)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap();
        let trunk = Gpt::new(cfg, &mut rng)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap();
        let head_w = rng.normal_tensor(&[8], 0.0, 0.5, DType::F64);
        let head_b = Tensor::from_vec(vec![0.3f64], &[1]).unwrap();
        let vm = ValueModel::new(&trunk, &head_w, &head_b).unwrap();
        // Awkward lengths: a one-token response, a one-token prompt, the longest last.
        let rollouts = [
            rollout(&[1, 2, 3], &[4]),
            rollout(&[5], &[6, 7, 8, 9]),
            rollout(&[2, 3], &[10, 11, 12]),
            rollout(&[3, 1, 4, 1, 5], &[9, 2, 6, 5, 3, 5]),
        ];
        let refs: Vec<&Rollout> = rollouts.iter().collect();
        let width = 6;
        let config = PpoConfig {
            temperature: 0.7,
            ptx_coef: 0.8,
            vf_coef: 0.3,
            cliprange: 0.1,
            cliprange_value: 0.05,
            ..PpoConfig::default()
        };
        // "Old" log-probs and values: the current ones moved by ±0.15, so that some ratios and
        // some values fall outside their clip ranges.
        let all = Padded::new(&refs, width);
        let (lp, _) = token_logprobs(&policy, &all, config.temperature).unwrap();
        let wiggle = |i: usize| [0.15, -0.15, 0.02, 0.0][i % 4];
        let old_lp: Vec<f64> = lp
            .to_vec_f64()
            .iter()
            .enumerate()
            .map(|(i, x)| x + wiggle(i))
            .collect();
        let v = all
            .pick(&vm.values(&all.ids, all.batch, all.seq).unwrap())
            .unwrap();
        let old_v: Vec<f64> = v
            .to_vec_f64()
            .iter()
            .enumerate()
            .map(|(i, x)| x - wiggle(i + 1))
            .collect();
        let ref_lp: Vec<Vec<f64>> = refs.iter().map(|r| vec![-2.0; r.response.len()]).collect();
        let mut stats = PpoStats::default();
        let prepared = prepare_batch(
            &config,
            0.02,
            &refs,
            &ref_lp,
            &[0.5, -1.0, 2.0, 0.1],
            (old_lp, old_v, 0.0),
            &mut stats,
        );
        let mb = Minibatch::new(&prepared, &refs, &[3, 0], width);
        let p = &mb.padded;
        let ptx = PtxBatch {
            ids: vec![
                1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11,
            ],
            targets: (0..24)
                .map(|i| {
                    if i % 5 == 2 {
                        IGNORE_INDEX
                    } else {
                        (i * 7 % 13) as i64
                    }
                })
                .collect(),
            batch: 2,
            seq: 12,
        };
        let mask_t = Tensor::from_vec(
            mb.mask.iter().map(|&m| m as i32 as f64).collect::<Vec<_>>(),
            &[p.batch, width],
        )
        .unwrap();
        let t = |x: &[f64]| Tensor::from_vec(x.to_vec(), &[p.batch, width]).unwrap();

        // The CPU step's losses (train_minibatch) and their gradients.
        let (new_lp, _) = token_logprobs(&policy, p, config.temperature).unwrap();
        let pg = policy_loss(
            &new_lp,
            &t(&mb.old_lp),
            &t(&mb.adv),
            &mask_t,
            config.cliprange,
        )
        .unwrap();
        let ce = policy
            .loss(&ptx.ids, &ptx.targets, ptx.batch, ptx.seq, None)
            .unwrap();
        let cpu_loss = ops::add(&pg, &ops::mul_scalar(&ce, config.ptx_coef).unwrap()).unwrap();
        let want_policy = grads_of(&cpu_loss, &policy.params());
        let new_v = p.pick(&vm.values(&p.ids, p.batch, p.seq).unwrap()).unwrap();
        let vf = value_loss(
            &new_v,
            &t(&mb.old_v),
            &t(&mb.ret),
            &mask_t,
            config.cliprange_value,
        )
        .unwrap();
        let want_value = grads_of(&ops::mul_scalar(&vf, config.vf_coef).unwrap(), &vm.params());

        // What the GPU step does, on the CPU model: one more rollout row than the minibatch
        // has (padding), the ptx rows after, rows longer than any sequence.
        let shape = Shape {
            mb: 3,
            ptx_rows: 2,
            policy_seq: 13,
            value_seq: 11,
        };
        let rows = policy_rows(p, Some(&ptx), shape, config.temperature);
        let (b, s) = (rows.batch, rows.seq);
        let logits = policy.forward(&rows.ids, b, s, None).unwrap();
        let scale = Tensor::from_vec(
            rows.row_scale.iter().map(|&x| x as f64).collect::<Vec<_>>(),
            &[b, s, 1],
        )
        .unwrap();
        let logp = ops::log_softmax(&ops::mul(&logits, &scale).unwrap(), -1).unwrap();
        let picked: Vec<usize> = rows.targets.iter().map(|&t| t.max(0) as usize).collect();
        let row_lp = ops::reshape(
            &ops::gather(&logp, 2, &picked, &[b, s, 1]).unwrap(),
            &[b * s],
        )
        .unwrap();
        let losses: Vec<f32> = row_lp.to_vec_f64().iter().map(|&x| -x as f32).collect();
        let gpu_lp = pick(p, &losses, s, -1.0);
        for (a, w) in gpu_lp.iter().zip(new_lp.to_vec_f64()) {
            assert!(
                (a - w).abs() <= 1e-6 * (1.0 + w.abs()),
                "log-prob {a} vs {w}"
            );
        }
        let (pg2, dlogp) =
            policy_loss_grad(&gpu_lp, &mb.old_lp, &mb.adv, &mb.mask, config.cliprange).unwrap();
        assert!((pg2 - pg.item().unwrap()).abs() <= 1e-6, "policy loss");
        // Some real tokens are clipped (c_t = 0), some are not.
        let real = || dlogp.iter().zip(&mb.mask).filter(|(_, &m)| m);
        assert!(real().any(|(&g, _)| g == 0.0) && real().any(|(&g, _)| g != 0.0));
        let counted = rows.targets[shape.mb * s..]
            .iter()
            .filter(|&&t| t != IGNORE_INDEX)
            .count();
        let w = policy_weights(
            p,
            &mb.mask,
            &dlogp,
            &rows,
            shape,
            config.ptx_coef / counted as f64,
        );
        // Weights only where there is a target.
        for (wr, &tr) in w.iter().zip(&rows.targets) {
            assert!(tr != IGNORE_INDEX || *wr == 0.0);
        }
        let wt =
            Tensor::from_vec(w.iter().map(|&x| x as f64).collect::<Vec<_>>(), &[b * s]).unwrap();
        // Σ_r w_r·loss_r = −Σ_r w_r·logπ_r
        let emulated = ops::neg(&ops::sum_all(&ops::mul(&row_lp, &wt).unwrap()).unwrap()).unwrap();
        let got_policy = grads_of(&emulated, &policy.params());
        assert_grads_close("policy", &got_policy, &want_policy, 1e-5);

        let ids = value_ids(p, shape);
        let values = vm.values(&ids, shape.mb, shape.value_seq).unwrap();
        let values_f32: Vec<f32> = values.to_vec_f64().iter().map(|&x| x as f32).collect();
        let gpu_v = pick(p, &values_f32, shape.value_seq, 1.0);
        let (vf2, dv) =
            value_loss_grad(&gpu_v, &mb.old_v, &mb.ret, &mb.mask, config.cliprange_value).unwrap();
        assert!((vf2 - vf.item().unwrap()).abs() <= 1e-6, "value loss");
        assert!(
            dv.iter().zip(&mb.mask).any(|(&g, &m)| m && g == 0.0),
            "no value clipped"
        );
        let dw = value_weights(p, &mb.mask, &dv, shape, config.vf_coef);
        let dwt = Tensor::from_vec(
            dw.iter().map(|&x| x as f64).collect::<Vec<_>>(),
            &[shape.mb, shape.value_seq],
        )
        .unwrap();
        let emulated = ops::sum_all(&ops::mul(&values, &dwt).unwrap()).unwrap();
        let got_value = grads_of(&emulated, &vm.params());
        assert_grads_close("value", &got_value, &want_value, 1e-5);
    }
}
