//! Optimisation: AdamW, global-norm gradient clipping, and the learning-rate schedule.

use crate::error::{invalid, shape_err};
use crate::{Gradients, Result, Storage, Tensor};
use kernels::cpu::adamw::{adamw, adamw_ref, AdamWStep};
use rayon::prelude::*;

/// AdamW hyper-parameters. Defaults are PyTorch's, except weight decay, which is GPT-2's 0.1.
#[derive(Clone, Copy, Debug)]
pub struct AdamWConfig {
    /// Decay of the first moment.
    pub beta1: f64,
    /// Decay of the second moment.
    pub beta2: f64,
    /// Added to the denominator, outside the square root.
    pub eps: f64,
    /// Decoupled weight decay λ.
    pub weight_decay: f64,
    /// Decay only parameters of rank ≥ 2 (weight matrices, embeddings), not biases or
    /// layernorm gains — the usual rule for transformers (nanoGPT, HF `Trainer`).
    pub decay_matrices_only: bool,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.1,
            decay_matrices_only: true,
        }
    }
}

impl AdamWConfig {
    /// The kernel's settings for one step (number `step`, from 1) of a parameter of rank
    /// `rank` at rate `lr`: the weight decay applies unless `decay_matrices_only` and the
    /// parameter is a vector. The one place of that rule, for the CPU and the GPU optimizer.
    pub fn step_for(&self, lr: f64, rank: usize, step: u64) -> AdamWStep {
        let decay = !self.decay_matrices_only || rank >= 2;
        AdamWStep {
            lr,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: if decay { self.weight_decay } else { 0.0 },
            step,
        }
    }
}

/// AdamW (Loshchilov & Hutter, 2019), computed as `torch.optim.AdamW` does; the update is
/// the `kernels::cpu::adamw` kernel. Its state (the moments m, v) is kept per parameter
/// position, so pass the parameters in the same order every step.
#[derive(Clone, Debug)]
pub struct AdamW {
    /// The hyper-parameters.
    pub config: AdamWConfig,
    /// Steps taken so far.
    pub step: u64,
    /// First and second moments, one pair per parameter.
    pub state: Vec<(Storage, Storage)>,
}

impl AdamW {
    /// A fresh optimizer (no steps taken).
    pub fn new(config: AdamWConfig) -> AdamW {
        AdamW {
            config,
            step: 0,
            state: Vec::new(),
        }
    }

    /// One update of every parameter that has a gradient in `grads`, at learning rate `lr`.
    /// Parameters without a gradient are left alone (their moments too), as in PyTorch.
    pub fn step(&mut self, params: &mut [&mut Tensor], grads: &Gradients, lr: f64) -> Result<()> {
        if self.state.is_empty() {
            self.state = params
                .iter()
                .map(|p| {
                    (
                        Storage::zeros(p.dtype(), p.numel()),
                        Storage::zeros(p.dtype(), p.numel()),
                    )
                })
                .collect();
        }
        if self.state.len() != params.len() {
            return invalid(
                "adamw",
                format!(
                    "optimizer holds state for {} parameters but {} were passed",
                    self.state.len(),
                    params.len()
                ),
            );
        }
        self.step += 1;
        let c = self.config;
        for (i, p) in params.iter_mut().enumerate() {
            let Some(g) = grads.get(p) else { continue };
            if g.shape() != p.shape()
                || g.dtype() != p.dtype()
                || self.state[i].0.len() != p.numel()
            {
                return shape_err(
                    "adamw",
                    format!(
                        "parameter {i} has shape {:?} but its gradient or state does not match",
                        p.shape()
                    ),
                );
            }
            let h = c.step_for(lr, p.rank(), self.step);
            let (m, v) = &mut self.state[i];
            p.update(|s| match (s, g.storage(), m, v) {
                (Storage::F32(p), Storage::F32(g), Storage::F32(m), Storage::F32(v)) => {
                    adamw(p, g, m, v, h)
                }
                (Storage::F64(p), Storage::F64(g), Storage::F64(m), Storage::F64(v)) => {
                    adamw_ref(p, g, m, v, h)
                }
                _ => {}
            })?;
        }
        Ok(())
    }
}

/// Scales the gradients of `params` so that their global L2 norm is at most `max_norm`, as
/// `torch.nn.utils.clip_grad_norm_` does (factor max_norm / (norm + 1e-6) when norm exceeds
/// it). Returns the norm before clipping (accumulated in f64: per gradient in fixed chunks,
/// then in parameter order).
pub fn clip_grad_norm(grads: &mut Gradients, params: &[&Tensor], max_norm: f64) -> Result<f64> {
    // Each gradient's sum of squares in f64 ([`sum_sq`]: fixed-size chunks summed on all
    // threads, added in order), then added up in parameter order: the same bits whatever the
    // thread count.
    let sums: Vec<f64> = params
        .iter()
        .map(|p| match grads.get(p).map(|g| g.storage()) {
            Some(Storage::F32(v)) => sum_sq(v, |x| x as f64),
            Some(Storage::F64(v)) => sum_sq(v, |x| x),
            None => 0.0,
        })
        .collect();
    let mut sq = 0.0f64;
    for (p, s) in params.iter().zip(sums) {
        if grads.get(p).is_some() {
            sq += s;
        }
    }
    let norm = sq.sqrt();
    let factor = max_norm / (norm + 1e-6);
    if factor < 1.0 {
        for p in params {
            if let Some(g) = grads.remove(p) {
                // g·factor, element by element (as `mul_scalar`), on all threads.
                let scaled = match g.storage() {
                    Storage::F32(v) => {
                        let c = factor as f32;
                        Storage::F32(v.par_iter().map(|&a| a * c).collect())
                    }
                    Storage::F64(v) => Storage::F64(v.par_iter().map(|&a| a * factor).collect()),
                };
                grads.insert(p, Tensor::leaf(scaled, g.shape().to_vec()));
            }
        }
    }
    Ok(norm)
}

/// Σ x² in f64 over `v`: chunks of 16K elements, each summed with 8 independent
/// accumulators (no chain of dependent adds, so it vectorises), on rayon; the chunk sums are
/// added in order. The result depends only on `v`, not on the thread count.
fn sum_sq<T: Copy + Sync>(v: &[T], f64_of: impl Fn(T) -> f64 + Sync) -> f64 {
    const CHUNK: usize = 16 * 1024;
    let chunk_sum = |c: &[T]| {
        let mut acc = [0.0f64; 8];
        let mut it = c.chunks_exact(8);
        for e in &mut it {
            for (a, &x) in acc.iter_mut().zip(e) {
                let x = f64_of(x);
                *a += x * x;
            }
        }
        let mut s: f64 = acc.iter().sum();
        for &x in it.remainder() {
            let x = f64_of(x);
            s += x * x;
        }
        s
    };
    let sums: Vec<f64> = if v.len() >= 4 * CHUNK {
        v.par_chunks(CHUNK).map(chunk_sum).collect()
    } else {
        v.chunks(CHUNK).map(chunk_sum).collect()
    };
    sums.iter().sum()
}

/// Linear warm-up from 0 to `max_lr` over `warmup` steps, then cosine decay to `min_lr` at
/// `total` steps, constant after (the GPT-3 / nanoGPT schedule).
#[derive(Clone, Copy, Debug)]
pub struct LrSchedule {
    /// The rate at the end of warm-up.
    pub max_lr: f64,
    /// The floor the cosine decays to.
    pub min_lr: f64,
    /// Steps of linear warm-up.
    pub warmup: u64,
    /// The step at which the cosine reaches the floor.
    pub total: u64,
}

impl LrSchedule {
    /// The learning rate for step `step` (counting from 0).
    pub fn lr(&self, step: u64) -> f64 {
        if step < self.warmup {
            return self.max_lr * (step + 1) as f64 / self.warmup as f64;
        }
        if step >= self.total {
            return self.min_lr;
        }
        let progress = (step - self.warmup) as f64 / (self.total - self.warmup).max(1) as f64;
        let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        self.min_lr + cosine * (self.max_lr - self.min_lr)
    }
}
