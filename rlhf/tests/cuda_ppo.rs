//! The GPU PPO iteration (`rlhf::cuda_ppo`) against the CPU [`PpoTrainer::step`]: the same
//! initial policy and value model, the same rollouts (awkward lengths: a one-token response, a
//! one-token prompt, minibatches of 3 and 2), reference log-probs, scores, PPO-ptx batch and
//! minibatch order; two epochs, so four AdamW steps per network, with a temperature, a small
//! clip range (so policy and value tokens are clipped: checked on the CPU reference by
//! `reference_iteration_clips_tokens_and_uses_ptx`, which runs without a GPU) and gradient
//! clipping.
//!
//! The reference is the CPU step in f64 (the same f32 weights widened exactly). Compared: every
//! parameter of both networks after the iteration, normwise per tensor (f32 1e-4, bf16 1e-2),
//! and, since a parameter moves little in four steps, also each tensor's update θ_after − θ₀
//! normwise (f32 1e-2, bf16 0.1: AdamW normalises the gradient, so a gradient entry near zero
//! whose sign differs moves that entry by up to 2·lr; a wrong or missing gradient gives errors
//! of order 1); and the statistics (losses, KL, entropy, ratio, gradient norms: f32 1e-4,
//! bf16 2e-2 relative; clip fractions within one token's share).
//!
//! Without a GPU (no driver, or no device) every GPU test prints `skipped (no GPU): <name>`
//! and returns; a GPU that is present but cannot be set up fails the tests.
#![cfg(feature = "cuda")]

use std::sync::Arc;

use engine::ops::IGNORE_INDEX;
use engine::{DType, Rng, Tensor};
use kernels::cuda::Gpu;
use model::cuda_gpt::Precision;
use model::{Gpt, GptConfig};
use rlhf::cuda_ppo::CudaPpoTrainer;
use rlhf::ppo::{PpoConfig, PpoStats, PpoTrainer, PtxBatch, Rollout, ValueModel};

/// The shared GPU (kernels compiled once for all tests), or `None` after the skip line.
fn gpu(test: &str) -> Option<Arc<Gpu>> {
    kernels::cuda::shared_gpu_or_skip(test).cloned()
}

/// A model of `config` with every parameter random ([`Gpt::random_for_tests`]).
fn random_model(config: GptConfig, seed: u64) -> Gpt {
    Gpt::random_for_tests(config, seed).unwrap()
}

fn config(vocab: usize, c: usize, heads: usize) -> GptConfig {
    let mut cfg = GptConfig::new(vocab, 32, c, 2, heads);
    cfg.resid_pdrop = 0.0;
    cfg.embd_pdrop = 0.0;
    cfg.attn_pdrop = 0.0;
    cfg
}

/// Everything one iteration takes: models (f32), rollouts, reference log-probs, scores, ptx.
struct Scenario {
    policy: Gpt,
    value: ValueModel,
    rollouts: Vec<Rollout>,
    ref_logprobs: Vec<Vec<f64>>,
    scores: Vec<f64>,
    ptx: PtxBatch,
    config: PpoConfig,
}

fn scenario(cfg: GptConfig) -> Scenario {
    let v = cfg.vocab_size;
    let c = cfg.n_embd;
    let policy = random_model(cfg.clone(), 21);
    let trunk = random_model(cfg, 22);
    let mut rng = Rng::new(23);
    let head_w = rng.normal_tensor(&[c], 0.0, 0.3, DType::F32);
    let head_b = Tensor::from_vec(vec![0.1f32], &[1]).unwrap();
    let value = ValueModel::new(&trunk, &head_w, &head_b).unwrap();
    let mut tokens =
        |n: usize| -> Vec<usize> { (0..n).map(|_| rng.below(v as u64) as usize).collect() };
    // (prompt, response) lengths: a one-token response, a one-token prompt, the longest.
    let rollouts: Vec<Rollout> = [(3, 1), (1, 5), (4, 3), (6, 11), (2, 7)]
        .iter()
        .enumerate()
        .map(|(i, &(p, r))| Rollout {
            prompt: tokens(p),
            response: tokens(r),
            ended: i % 2 == 0,
            logprobs: vec![],
        })
        .collect();
    let ref_logprobs = rollouts
        .iter()
        .map(|r| {
            (0..r.response.len())
                .map(|j| -2.0 - 0.1 * j as f64)
                .collect()
        })
        .collect();
    let ptx_ids = tokens(2 * 13);
    let ptx_targets = (0..2 * 13)
        .map(|i| {
            if i % 6 == 5 {
                IGNORE_INDEX
            } else {
                ptx_ids[(i + 1) % (2 * 13)] as i64
            }
        })
        .collect();
    Scenario {
        policy,
        value,
        rollouts,
        ref_logprobs,
        scores: vec![1.0, -0.5, 2.0, 0.3, -1.2],
        ptx: PtxBatch {
            ids: ptx_ids,
            targets: ptx_targets,
            batch: 2,
            seq: 13,
        },
        config: PpoConfig {
            temperature: 0.8,
            ppo_epochs: 2,
            minibatch_size: 3,
            // Small enough that the ratios stay near the clip range (mean ratio ≈ 1), large
            // enough that some tokens pass it (Adam moves every weight by about lr per step,
            // so the wider model takes a smaller one).
            policy_lr: if c >= 128 { 3e-5 } else { 3e-4 },
            value_lr: 1e-2,
            cliprange: 0.05,
            cliprange_value: 0.05,
            vf_coef: 0.5,
            ptx_coef: 0.7,
            max_grad_norm: 1.0,
            ..PpoConfig::default()
        },
    }
}

/// The CPU step in f64 on the scenario: the stats and the models after it.
fn cpu_reference(s: &Scenario) -> (PpoStats, Gpt, ValueModel) {
    let mut policy = s.policy.to_dtype(DType::F64).unwrap();
    let trunk = s.value.trunk.to_dtype(DType::F64).unwrap();
    let mut value = ValueModel::new(
        &trunk,
        &s.value.head_w.to_dtype(DType::F64),
        &s.value.head_b.to_dtype(DType::F64),
    )
    .unwrap();
    let mut trainer = PpoTrainer::new(s.config.clone());
    let stats = trainer
        .step(
            &mut policy,
            &mut value,
            &s.rollouts,
            &s.ref_logprobs,
            &s.scores,
            Some(&s.ptx),
            &mut Rng::new(99),
        )
        .unwrap();
    (stats, policy, value)
}

fn norm(x: impl Iterator<Item = f64>) -> f64 {
    x.map(|v| v * v).sum::<f64>().sqrt()
}

/// Per tensor: ‖after − want‖ ≤ rtol·‖want‖, and ‖(after − before) − (want − before)‖ ≤
/// update_rtol·‖want − before‖.
fn assert_params_close(
    what: &str,
    before: &[&Tensor],
    after: &[&Tensor],
    want: &[&Tensor],
    (rtol, update_rtol): (f64, f64),
) {
    assert_eq!(after.len(), want.len(), "{what}: parameter count");
    for (i, ((b, a), w)) in before.iter().zip(after).zip(want).enumerate() {
        let (b, a, w) = (b.to_vec_f64(), a.to_vec_f64(), w.to_vec_f64());
        assert!(a.iter().all(|x| x.is_finite()), "{what} {i}: non-finite");
        let diff = norm(a.iter().zip(&w).map(|(x, y)| x - y));
        let size = norm(w.iter().copied());
        assert!(
            diff <= rtol * size,
            "{what} {i}: ‖gpu − cpu‖ = {diff:e} > {rtol}·{size:e}"
        );
        let step = norm(w.iter().zip(&b).map(|(x, y)| x - y));
        assert!(step > 0.0, "{what} {i}: the CPU step did not move it");
        assert!(
            diff <= update_rtol * step,
            "{what} {i}: update error {diff:e} > {update_rtol}·‖cpu update‖ = {:e}",
            update_rtol * step
        );
    }
}

fn check_iteration<T: Precision>(gpu: Arc<Gpu>, cfg: GptConfig) {
    let s = scenario(cfg);
    let (want, want_policy, want_value) = cpu_reference(&s);
    let mut trainer = CudaPpoTrainer::<T>::new(gpu, s.config.clone(), &s.policy, &s.value).unwrap();
    let got = trainer
        .step(
            &s.rollouts,
            &s.ref_logprobs,
            &s.scores,
            Some(&s.ptx),
            &mut Rng::new(99),
        )
        .unwrap();
    let f32_mode = T::NAME == "f32";
    let (tol, update_tol, stat_tol) = if f32_mode {
        (1e-4, 1e-2, 1e-4)
    } else {
        (1e-2, 0.1, 2e-2)
    };
    let tag = |what: &str| format!("{} {what}", T::NAME);

    let close = |a: f64, b: f64| (a - b).abs() <= stat_tol * (b.abs() + 1e-3);
    for (name, g, w) in [
        ("policy_loss", got.policy_loss, want.policy_loss),
        ("value_loss", got.value_loss, want.value_loss),
        ("ptx_loss", got.ptx_loss, want.ptx_loss),
        ("approx_kl", got.approx_kl, want.approx_kl),
        ("ratio", got.ratio, want.ratio),
        ("kl", got.kl, want.kl),
        ("entropy", got.entropy, want.entropy),
        ("score", got.score, want.score),
        ("rlhf_reward", got.rlhf_reward, want.rlhf_reward),
        (
            "explained_variance",
            got.explained_variance,
            want.explained_variance,
        ),
        (
            "policy_grad_norm",
            got.policy_grad_norm,
            want.policy_grad_norm,
        ),
        ("value_grad_norm", got.value_grad_norm, want.value_grad_norm),
    ] {
        assert!(close(g, w), "{}: gpu {g}, cpu {w}", tag(name));
    }
    // Clip fractions are means over minibatches of token counts: within one token's share.
    let tokens: usize = s.rollouts.iter().map(|r| r.response.len()).sum();
    let share = 1.0 / (tokens as f64 / 2.0);
    for (name, g, w) in [
        ("clip_frac", got.clip_frac, want.clip_frac),
        ("value_clip_frac", got.value_clip_frac, want.value_clip_frac),
    ] {
        assert!((g - w).abs() <= share, "{}: gpu {g}, cpu {w}", tag(name));
    }

    assert_eq!(trainer.adamw_steps(), (4, 4), "{}", tag("AdamW steps"));
    let policy = trainer.policy_to_cpu().unwrap();
    assert_params_close(
        &tag("policy"),
        &s.policy.params(),
        &policy.params(),
        &want_policy.params(),
        (tol, update_tol),
    );
    let value = trainer.value_to_cpu().unwrap();
    assert_params_close(
        &tag("value model"),
        &s.value.params(),
        &value.params(),
        &want_value.params(),
        (tol, update_tol),
    );
}

#[test]
fn f32_ppo_iteration_matches_cpu() {
    let Some(gpu) = gpu("f32_ppo_iteration_matches_cpu") else {
        return;
    };
    // Odd vocabulary, head dimension 12.
    check_iteration::<f32>(gpu, config(37, 24, 2));
}

#[test]
fn bf16_ppo_iteration_matches_cpu() {
    let Some(gpu) = gpu("bf16_ppo_iteration_matches_cpu") else {
        return;
    };
    // The bf16 attention takes head dimension 64 only.
    check_iteration::<u16>(gpu, config(37, 128, 2));
}

/// Runs without a GPU: the scenario the GPU tests use really clips policy and value tokens
/// and has a ptx term, so those paths are compared there.
#[test]
fn reference_iteration_clips_tokens_and_uses_ptx() {
    for cfg in [config(37, 24, 2), config(37, 128, 2)] {
        let (stats, _, _) = cpu_reference(&scenario(cfg));
        assert!(stats.clip_frac > 0.0, "{stats:?}");
        assert!(stats.value_clip_frac > 0.0, "{stats:?}");
        assert!(stats.ptx_loss > 0.0, "{stats:?}");
    }
}
