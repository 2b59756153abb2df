//! The GPU GPT (`model::cuda_gpt`) against the CPU [`Gpt`]: logits, loss and every parameter's
//! gradient, in f32 and in mixed precision (bf16), on small random models with awkward shapes
//! (T not a multiple of any tile, odd vocabularies, ignored targets, one- and three-layer
//! models); a few AdamW steps tracking the CPU trainer's losses; the parameters and optimizer
//! state round-tripping to the host.
//!
//! The reference is the CPU model in f64 (`Gpt::to_dtype(F64)`, the same f32 weights widened
//! exactly), so the comparison measures the GPU's error alone, not the CPU's f32 rounding too.
//!
//! Tolerances.
//! - f32: a GPU value g passes against the reference w when |g − w| ≤ 1e-5·(|w| + mean|w|),
//!   mean over the tensor: relative to the element, or to the tensor's typical magnitude where
//!   the element is a sum that cancels to near zero (a gradient entry of 1e-9 among entries of
//!   1e-3 is not expected to carry 5 correct digits; f32 sums of a few hundred terms lose
//!   about that much to rounding order). The same criterion the kernel tests use.
//! - bf16: per tensor, ‖g − w‖₂ ≤ 1e-2·‖w‖₂. Activations and weight copies are rounded to
//!   8 significant bits (relative error 2⁻⁹ ≈ 2e-3 per rounding, a dozen roundings deep), so
//!   single elements are expected off by more than any element-wise bound that still means
//!   something; the norm-wise relative error is what mixed-precision training depends on.
//!
//! Without a GPU (no driver, or no device) every GPU test prints `skipped (no GPU): <name>`
//! and returns; a GPU that is present but cannot be set up fails the tests.
#![cfg(feature = "cuda")]

use std::sync::Arc;

use engine::ops::IGNORE_INDEX;
use engine::optim::AdamWConfig;
use engine::{DType, Device, Rng, Tensor};
use kernels::cuda::{CudaError, Gpu};
use model::cuda_gpt::{CudaGpt, Precision};
use model::train::{Batch, TrainConfig, Trainer};
use model::{Gpt, GptConfig};

/// The shared GPU (kernels compiled once for all tests), or `None` after the skip line.
fn gpu(test: &str) -> Option<Arc<Gpu>> {
    kernels::cuda::shared_gpu_or_skip(test).cloned()
}

/// A model of `config` with every parameter random ([`Gpt::random_for_tests`]).
fn random_model(config: GptConfig, seed: u64) -> Gpt {
    Gpt::random_for_tests(config, seed).unwrap()
}

fn config(vocab: usize, ctx: usize, c: usize, layers: usize, heads: usize) -> GptConfig {
    let mut cfg = GptConfig::new(vocab, ctx, c, layers, heads);
    cfg.resid_pdrop = 0.0;
    cfg.embd_pdrop = 0.0;
    cfg.attn_pdrop = 0.0;
    cfg
}

/// Random ids and next-token targets, every `ignore_every`-th target ignored (0: none).
fn random_batch(vocab: usize, batch: usize, seq: usize, ignore_every: usize, seed: u64) -> Batch {
    let mut rng = Rng::new(seed);
    let ids: Vec<usize> = (0..batch * seq)
        .map(|_| rng.below(vocab as u64) as usize)
        .collect();
    let targets = (0..batch * seq)
        .map(|i| {
            if ignore_every > 0 && i % ignore_every == 0 {
                IGNORE_INDEX
            } else {
                rng.below(vocab as u64) as i64
            }
        })
        .collect();
    Batch {
        ids,
        targets,
        batch,
        seq,
    }
}

/// The CPU reference in f64: logits, loss and the gradient of every parameter (param order).
fn cpu_reference(model: &Gpt, b: &Batch) -> (Vec<f64>, f64, Vec<Vec<f64>>) {
    let m64 = model.to_dtype(DType::F64).unwrap();
    let logits = m64
        .forward(&b.ids, b.batch, b.seq, None)
        .unwrap()
        .to_vec_f64();
    let loss = m64.loss(&b.ids, &b.targets, b.batch, b.seq, None).unwrap();
    let grads = loss.backward().unwrap();
    let g = m64
        .params()
        .iter()
        .map(|p| match grads.get(p) {
            Some(g) => g.to_vec_f64(),
            None => vec![0.0; p.numel()],
        })
        .collect();
    (logits, loss.item().unwrap(), g)
}

fn assert_close_f32(what: &str, got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mean = want.iter().map(|w| w.abs()).sum::<f64>() / want.len().max(1) as f64;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        assert!(
            err <= 1e-5 * (w.abs() + mean),
            "{what}[{i}]: gpu {g}, reference {w} (|err| {err:e}, mean |ref| {mean:e})"
        );
    }
}

fn assert_close_norm(what: &str, got: &[f32], want: &[f64], rtol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let diff: f64 = got
        .iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w).powi(2))
        .sum::<f64>()
        .sqrt();
    let norm = want.iter().map(|w| w * w).sum::<f64>().sqrt();
    assert!(
        got.iter().all(|g| g.is_finite()),
        "{what}: non-finite values"
    );
    assert!(
        diff <= rtol * norm,
        "{what}: ‖gpu − ref‖ = {diff:e} > {rtol}·‖ref‖ = {:e}",
        rtol * norm
    );
}

/// GPU forward + backward on `b` against the f64 CPU reference.
fn check_forward_backward<T: Precision>(test: &str, gpu: Arc<Gpu>, cfg: GptConfig, b: &Batch) {
    let model = random_model(cfg, 7);
    let names: Vec<String> = model::gpt::param_shapes(&model.config)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let (want_logits, want_loss, want_grads) = cpu_reference(&model, b);
    let mut g = CudaGpt::<T>::new(gpu, &model).unwrap();
    let loss = g.forward(&b.ids, &b.targets, b.batch, b.seq).unwrap();
    g.backward().unwrap();
    let logits = g.logits().unwrap();
    let grads = g.grads().unwrap();
    assert_eq!(grads.len(), want_grads.len());
    let f32_mode = T::NAME == "f32";
    let tag = |what: &str| format!("{test} ({}) {what}", T::NAME);
    if f32_mode {
        assert!(
            (loss - want_loss).abs() <= 1e-5 * want_loss.abs(),
            "{}: gpu {loss}, reference {want_loss}",
            tag("loss")
        );
        assert_close_f32(&tag("logits"), &logits, &want_logits);
        for ((name, got), want) in names.iter().zip(&grads).zip(&want_grads) {
            assert_close_f32(&tag(&format!("d {name}")), got, want);
        }
    } else {
        assert!(
            (loss - want_loss).abs() <= 1e-2 * want_loss.abs(),
            "{}: gpu {loss}, reference {want_loss}",
            tag("loss")
        );
        assert_close_norm(&tag("logits"), &logits, &want_logits, 1e-2);
        for ((name, got), want) in names.iter().zip(&grads).zip(&want_grads) {
            assert_close_norm(&tag(&format!("d {name}")), got, want, 1e-2);
        }
    }
}

#[test]
fn f32_forward_and_gradients_match_cpu() {
    let Some(gpu) = gpu("f32_forward_and_gradients_match_cpu") else {
        return;
    };
    // (vocab, context, C, layers, heads, batch, seq, ignore every n-th target)
    let cases = [
        (67, 40, 48, 2, 3, 2, 37, 5), // D = 16, T = 37 (no tile multiple), odd vocab
        (101, 17, 64, 1, 2, 3, 17, 0), // D = 32, T = the whole context
        (31, 70, 40, 3, 5, 1, 65, 3), // D = 8, one sequence just past 64
        (5, 3, 8, 1, 1, 2, 1, 0),     // T = 1, a vocabulary of 5, one head of 8
    ];
    for (v, ctx, c, l, h, b, t, ig) in cases {
        let batch = random_batch(v, b, t, ig, (v * t) as u64);
        check_forward_backward::<f32>(
            &format!("V{v} C{c} L{l} H{h} B{b} T{t}"),
            gpu.clone(),
            config(v, ctx, c, l, h),
            &batch,
        );
    }
}

#[test]
fn bf16_forward_and_gradients_match_cpu() {
    let Some(gpu) = gpu("bf16_forward_and_gradients_match_cpu") else {
        return;
    };
    // The bf16 attention takes D = 64 only (every GPT-2 size): C = 64·H.
    let cases = [
        (95, 64, 128, 2, 2, 2, 45, 7),   // T = 45, odd vocab
        (257, 130, 64, 1, 1, 1, 130, 0), // T one past two 64-key tiles
        (33, 20, 192, 2, 3, 3, 9, 4),
    ];
    for (v, ctx, c, l, h, b, t, ig) in cases {
        let batch = random_batch(v, b, t, ig, (v + t) as u64);
        check_forward_backward::<u16>(
            &format!("V{v} C{c} L{l} H{h} B{b} T{t}"),
            gpu.clone(),
            config(v, ctx, c, l, h),
            &batch,
        );
    }
}

/// A few AdamW steps (warm-up, clipping active) on the GPU and on the CPU trainer from the same
/// model and batches: the losses and gradient norms must track each other.
fn check_training<T: Precision>(gpu: Arc<Gpu>, cfg: GptConfig, loss_rtol: f64) {
    let mut cpu_model = random_model(cfg, 11);
    let train = TrainConfig {
        steps: 20,
        batch_size: 2,
        seq_len: 29,
        grad_accum: 1,
        max_lr: 3e-3,
        min_lr: 3e-4,
        warmup: 2,
        grad_clip: 1.0,
        adamw: AdamWConfig {
            beta2: 0.95,
            ..AdamWConfig::default()
        },
        dropout: false,
    };
    let mut trainer = Trainer::new(train.clone());
    let mut g = CudaGpt::<T>::new(gpu, &cpu_model).unwrap();
    let mut rng = Rng::new(0);
    let v = cpu_model.config.vocab_size;
    let mut losses = Vec::new();
    for step in 0..6u64 {
        // Two batches, alternating: the loss must fall on data seen again.
        let b = random_batch(v, train.batch_size, train.seq_len, 0, step % 2);
        let lr = trainer.lr();
        let got = g
            .train_step(
                &b.ids,
                &b.targets,
                b.batch,
                b.seq,
                lr,
                &train.adamw,
                train.grad_clip,
            )
            .unwrap();
        let want = trainer
            .step(&mut cpu_model, std::slice::from_ref(&b), &mut rng)
            .unwrap();
        assert!(
            (got.loss - want.loss).abs() <= loss_rtol * want.loss,
            "{} step {step}: gpu loss {}, cpu {}",
            T::NAME,
            got.loss,
            want.loss
        );
        assert!(
            (got.grad_norm - want.grad_norm).abs() <= 10.0 * loss_rtol * want.grad_norm,
            "{} step {step}: gpu grad norm {}, cpu {}",
            T::NAME,
            got.grad_norm,
            want.grad_norm
        );
        losses.push(got.loss);
    }
    assert!(
        losses[4] < losses[0] && losses[5] < losses[1],
        "{}: the GPU losses did not fall: {losses:?}",
        T::NAME
    );
    assert_eq!(g.adamw_step(), trainer.opt.step);
    // The parameters after the steps: the GPU's master weights beside the CPU's.
    let tol = if T::NAME == "f32" { 1e-3 } else { 3e-2 };
    let after = g.to_cpu().unwrap();
    for ((name, p), q) in after.named_params().into_iter().zip(cpu_model.params()) {
        let want: Vec<f64> = q.to_vec_f64();
        assert_close_norm(
            &format!("{} {name} after training", T::NAME),
            &p.to_vec_f32(),
            &want,
            tol,
        );
    }
}

#[test]
fn f32_training_steps_track_the_cpu_trainer() {
    let Some(gpu) = gpu("f32_training_steps_track_the_cpu_trainer") else {
        return;
    };
    check_training::<f32>(gpu, config(53, 32, 48, 2, 4), 1e-4);
}

#[test]
fn bf16_training_steps_track_the_cpu_trainer() {
    let Some(gpu) = gpu("bf16_training_steps_track_the_cpu_trainer") else {
        return;
    };
    check_training::<u16>(gpu, config(53, 32, 128, 2, 2), 2e-2);
}

#[test]
fn parameters_and_optimizer_state_round_trip() {
    let Some(gpu) = gpu("parameters_and_optimizer_state_round_trip") else {
        return;
    };
    let model = random_model(config(19, 12, 64, 1, 1), 3);
    let mut g = CudaGpt::<u16>::new(gpu, &model).unwrap();
    let back = g.to_cpu().unwrap();
    for (p, q) in model.params().iter().zip(back.params()) {
        assert_eq!(
            p.to_vec_f32(),
            q.to_vec_f32(),
            "f32 masters come back exactly"
        );
    }
    let (step, state) = g.adamw_state().unwrap();
    assert_eq!(step, 0);
    assert!(state.iter().all(|(m, v)| m
        .to_vec_f64()
        .iter()
        .chain(&v.to_vec_f64())
        .all(|&x| x == 0.0)));
    let b = random_batch(19, 2, 12, 0, 1);
    g.train_step(
        &b.ids,
        &b.targets,
        2,
        12,
        1e-3,
        &AdamWConfig::default(),
        1.0,
    )
    .unwrap();
    let (step, state) = g.adamw_state().unwrap();
    assert_eq!(step, 1);
    let mut h = CudaGpt::<u16>::new(g.gpu().clone(), &g.to_cpu().unwrap()).unwrap();
    h.set_adamw_state(step, &state).unwrap();
    assert_eq!(h.adamw_state().unwrap().1.len(), state.len());
    for ((m1, v1), (m2, v2)) in h.adamw_state().unwrap().1.iter().zip(&state) {
        assert_eq!(m1.to_vec_f64(), m2.to_vec_f64());
        assert_eq!(v1.to_vec_f64(), v2.to_vec_f64());
    }
    // Bad input is an error, not a launch: an id outside the vocabulary, a wrong target count.
    assert!(g.forward(&[19, 0], &[0, 0], 1, 2).is_err());
    assert!(g.forward(&[1, 0], &[0], 1, 2).is_err());
    assert!(
        g.forward(&[1; 13], &[0; 13], 1, 13).is_err(),
        "longer than the context"
    );
}

#[test]
fn bf16_needs_head_dim_64() {
    let Some(gpu) = gpu("bf16_needs_head_dim_64") else {
        return;
    };
    let model = random_model(config(11, 8, 32, 1, 1), 1);
    let e = CudaGpt::<u16>::new(gpu, &model).err().unwrap().to_string();
    assert!(e.contains("head dimension 64"), "{e}");
}

/// Runs on every machine: without a GPU, asking for one is a clear error (never a panic),
/// from the engine's device and from the kernels' GPU alike.
#[test]
fn no_gpu_is_a_clear_error() {
    if kernels::cuda::probe_device(0).is_ok() {
        assert_eq!(Device::cuda(0).unwrap().to_string(), "cuda:0");
        return;
    }
    let e = Device::cuda(0).unwrap_err().to_string();
    assert!(
        e.contains("no CUDA driver") || e.contains("no usable CUDA GPU"),
        "{e}"
    );
    assert!(matches!(
        Gpu::new(0),
        Err(CudaError::NoDriver | CudaError::NoDevice(_))
    ));
    // Tensors stay on the CPU even in a cuda build.
    let t = Tensor::zeros(&[2], DType::F32);
    assert!(t.to_device(Device::Cpu).is_ok());
}
