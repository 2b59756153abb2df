//! Tests of the PPO step: rewards, GAE, whitening, the clipped losses and their gradients, the
//! KL controller, the value model, and an end-to-end toy where PPO raises a rule-based reward.

use engine::gradcheck::{gradcheck, GradcheckOptions};
use engine::{no_grad, DType, Rng, Tensor};
use model::{Gpt, GptConfig};
use rlhf::ppo::*;

fn t64(v: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), shape).unwrap()
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

#[test]
fn gae_on_a_three_token_toy_matches_hand_computation() {
    // γ = 1, λ = 0.95. δ2 = 1.0 + 0 − 0.2 = 0.8; δ1 = −0.2 + 0.2 − 0.3 = −0.3;
    // δ0 = 0.1 + 0.3 − 0.5 = −0.1. A2 = 0.8; A1 = −0.3 + 0.95·0.8 = 0.46;
    // A0 = −0.1 + 0.95·0.46 = 0.337. Returns = A + V = 0.837, 0.76, 1.0.
    let (adv, ret) = gae(&[0.1, -0.2, 1.0], &[0.5, 0.3, 0.2], 1.0, 0.95);
    for (a, e) in adv.iter().zip([0.337, 0.46, 0.8]) {
        assert!(close(*a, e, 1e-12), "{adv:?}");
    }
    for (r, e) in ret.iter().zip([0.837, 0.76, 1.0]) {
        assert!(close(*r, e, 1e-12), "{ret:?}");
    }
    // With λ = 1 and γ = 1 the return is the plain reward-to-go.
    let (_, ret) = gae(&[0.1, -0.2, 1.0], &[0.5, 0.3, 0.2], 1.0, 1.0);
    for (r, e) in ret.iter().zip([0.9, 0.8, 1.0]) {
        assert!(close(*r, e, 1e-12), "{ret:?}");
    }
}

#[test]
fn whitening_uses_only_masked_tokens() {
    let values = [1.0, 2.0, 1000.0, 4.0, 7.0, -500.0];
    let mask = [true, true, false, true, true, false];
    let w = masked_whiten(&values, &mask, true);
    let picked: Vec<f64> = w.iter().zip(&mask).filter(|p| *p.1).map(|p| *p.0).collect();
    let n = picked.len() as f64;
    let mean = picked.iter().sum::<f64>() / n;
    let var = picked.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    assert!(close(mean, 0.0, 1e-12), "mean {mean}");
    assert!(close(var.sqrt(), 1.0, 1e-6), "std {}", var.sqrt());
    assert_eq!((w[2], w[5]), (0.0, 0.0), "padding is zeroed");
    // Same as whitening the masked values alone: padding does not leak into the statistics.
    let alone = masked_whiten(&[1.0, 2.0, 4.0, 7.0], &[true; 4], true);
    for (a, b) in alone.iter().zip(&picked) {
        assert!(close(*a, *b, 1e-12));
    }
    // shift_mean = false keeps the mean (3.5) and scales the spread to 1.
    let kept = masked_whiten(&[1.0, 2.0, 4.0, 7.0], &[true; 4], false);
    assert!(
        close(kept.iter().sum::<f64>() / 4.0, 3.5, 1e-12),
        "{kept:?}"
    );
}

#[test]
fn rewards_put_kl_on_every_token_and_the_score_on_the_last() {
    let lp = [-1.0, -2.0, -0.5];
    let rf = [-1.5, -1.0, -0.5];
    let beta = 0.1;
    let (r, kl) = token_rewards(&lp, &rf, 2.0, beta, KlEstimator::LogRatio);
    assert_eq!(kl, vec![0.5, -1.0, 0.0]);
    assert!(
        close(r[0], -0.05, 1e-12) && close(r[1], 0.1, 1e-12),
        "{r:?}"
    );
    assert!(
        close(r[2], 2.0, 1e-12),
        "score only on the last token: {r:?}"
    );
    // The k3 estimator: (r − 1) − log r with r = π_ref/π, never negative.
    let (_, k3) = token_rewards(&lp, &rf, 0.0, beta, KlEstimator::K3);
    for ((&k, &a), &b) in k3.iter().zip(&lp).zip(&rf) {
        let log_r: f64 = b - a;
        assert!(close(k, log_r.exp() - 1.0 - log_r, 1e-12) && k >= 0.0);
    }
}

#[test]
fn missing_eos_penalty_applies_only_to_unended_responses() {
    assert_eq!(adjusted_score(0.7, true, 1.0), 0.7);
    assert_eq!(adjusted_score(0.7, false, 1.0), 0.7 - 1.0);
    assert_eq!(adjusted_score(0.7, false, 0.0), 0.7);
}

/// d(policy loss)/d(logprob) of a single-token batch.
fn policy_grad(ratio: f64, adv: f64) -> f64 {
    let lp = t64(&[ratio.ln() - 1.0], &[1, 1]).requires_grad();
    let old = t64(&[-1.0], &[1, 1]);
    let loss = policy_loss(&lp, &old, &t64(&[adv], &[1, 1]), &t64(&[1.0], &[1, 1]), 0.2).unwrap();
    loss.backward().unwrap().get(&lp).unwrap().item().unwrap()
}

#[test]
fn clipped_policy_loss_stops_the_gradient_past_the_clip_in_the_advantages_direction() {
    // Past 1 + ε with A > 0, or below 1 − ε with A < 0: the clipped term wins, gradient 0.
    assert_eq!(policy_grad(1.5, 2.0), 0.0);
    assert_eq!(policy_grad(0.5, -2.0), 0.0);
    // The other side stays unclipped (the pessimistic bound): d/dlogπ (−A·ratio) = −A·ratio.
    assert!(close(policy_grad(0.5, 2.0), -2.0 * 0.5, 1e-12));
    assert!(close(policy_grad(1.5, -2.0), 2.0 * 1.5, 1e-12));
    // Inside the clip region: −A·ratio.
    assert!(close(policy_grad(1.1, 2.0), -2.0 * 1.1, 1e-12));
}

#[test]
fn policy_loss_gradchecks_in_f64_away_from_the_kinks() {
    // Ratios inside (0.8, 1.2), or outside on the side where the unclipped term wins, one
    // padded token; none within 0.03 of a kink.
    let old = [-1.0, -2.0, -0.7, -1.3, -0.4, -3.0];
    let ratios = [0.9, 1.1, 0.5, 1.6, 1.0, 7.0];
    let adv = [0.7, -1.2, 1.5, -0.4, 2.0, 1.0];
    let mask = [1.0, 1.0, 1.0, 1.0, 1.0, 0.0];
    let lp: Vec<f64> = old
        .iter()
        .zip(ratios)
        .map(|(o, r)| o + f64::ln(r))
        .collect();
    let (old_t, mask_t) = (t64(&old, &[2, 3]), t64(&mask, &[2, 3]));
    let report = gradcheck(
        |xs| Ok(policy_loss(&xs[0], &old_t, &xs[1], &mask_t, 0.2).unwrap()),
        &[t64(&lp, &[2, 3]), t64(&adv, &[2, 3])],
        &GradcheckOptions::default(),
    )
    .unwrap();
    assert!(report.passed, "{report:?}");
    // The padded token gets no gradient.
    let lp_t = t64(&lp, &[2, 3]).requires_grad();
    let g = policy_loss(&lp_t, &old_t, &t64(&adv, &[2, 3]), &mask_t, 0.2)
        .unwrap()
        .backward()
        .unwrap();
    assert_eq!(g.get(&lp_t).unwrap().to_vec_f64()[5], 0.0);
}

#[test]
fn value_loss_gradchecks_in_f64_and_clips() {
    // V − V_old = 0.1 (inside), 0.5 (clipped, clipped term larger), −0.6 (clipped, unclipped
    // term larger), −0.05 (inside).
    let old = [0.0, 1.0, 2.0, -1.0];
    let v = [0.1, 1.5, 1.4, -1.05];
    let ret = [0.5, 3.0, 0.0, 0.3];
    let mask = t64(&[1.0; 4], &[2, 2]);
    let old_t = t64(&old, &[2, 2]);
    let report = gradcheck(
        |xs| Ok(value_loss(&xs[0], &old_t, &xs[1], &mask, 0.2).unwrap()),
        &[t64(&v, &[2, 2]), t64(&ret, &[2, 2])],
        &GradcheckOptions::default(),
    )
    .unwrap();
    assert!(report.passed, "{report:?}");
    // Hand value: 0.5·mean(max((V−R)², (V_clip−R)²)).
    let clipped = [0.1, 1.2, 1.8, -1.05];
    let want: f64 = (0..4)
        .map(|i| f64::max((v[i] - ret[i]).powi(2), (clipped[i] - ret[i]).powi(2)))
        .sum::<f64>()
        / 8.0;
    let got = value_loss(&t64(&v, &[2, 2]), &old_t, &t64(&ret, &[2, 2]), &mask, 0.2)
        .unwrap()
        .item()
        .unwrap();
    assert!(close(got, want, 1e-12), "{got} vs {want}");
    // Token 2 (V=1.5 → clip 1.2, R=3): the clipped term wins, so V gets no gradient there.
    let v_t = t64(&v, &[2, 2]).requires_grad();
    let g = value_loss(&v_t, &old_t, &t64(&ret, &[2, 2]), &mask, 0.2)
        .unwrap()
        .backward()
        .unwrap();
    assert_eq!(g.get(&v_t).unwrap().to_vec_f64()[1], 0.0);
}

/// Central finite difference of a scalar function of one coordinate of `x`, in f64.
fn finite_difference(f: impl Fn(&[f64]) -> f64, x: &[f64], i: usize, h: f64) -> f64 {
    let (mut up, mut down) = (x.to_vec(), x.to_vec());
    up[i] += h;
    down[i] -= h;
    (f(&up) - f(&down)) / (2.0 * h)
}

/// The host-side coefficients of the GPU step ([`policy_loss_grad`], [`value_loss_grad`]):
/// their loss is the tensor loss's value, their gradient the tensor loss's autograd gradient
/// (same kink conventions, including ratio exactly 1 and V exactly V_old) and a central finite
/// difference of the tensor loss in f64 wherever the loss is smooth.
#[test]
fn per_token_coefficients_match_the_cpu_losses_gradients() {
    // ratio = 1 exactly, inside, clipped on the losing side (0 gradient), clipped on the
    // winning side, a zero advantage; then padding (with an extreme value that must not leak).
    let old = [-1.0, -2.0, -0.7, -1.3, -0.4, -3.0, -0.2, -1.0];
    let ratios = [1.0, 1.1, 1.6, 0.5, 0.7, 1.0, 1.3, 9.0];
    let adv = [0.7, -1.2, 1.5, 2.0, 0.4, 0.0, -0.9, 5.0];
    let mask = [true, true, true, true, true, true, true, false];
    let lp: Vec<f64> = old
        .iter()
        .zip(ratios)
        .map(|(o, r)| o + f64::ln(r))
        .collect();
    let shape = [2, 4];
    let mask_t = t64(&mask.map(|m| m as i32 as f64), &shape);
    let tensor_loss = |lp: &[f64]| {
        policy_loss(
            &t64(lp, &shape),
            &t64(&old, &shape),
            &t64(&adv, &shape),
            &mask_t,
            0.2,
        )
        .unwrap()
        .item()
        .unwrap()
    };
    let (loss, g) = policy_loss_grad(&lp, &old, &adv, &mask, 0.2).unwrap();
    assert!(close(loss, tensor_loss(&lp), 1e-14), "{loss}");
    let lp_t = t64(&lp, &shape).requires_grad();
    let l = policy_loss(&lp_t, &t64(&old, &shape), &t64(&adv, &shape), &mask_t, 0.2).unwrap();
    let autograd = l.backward().unwrap().get(&lp_t).unwrap().to_vec_f64();
    for (t, (&a, &b)) in g.iter().zip(&autograd).enumerate() {
        assert!(close(a, b, 1e-14), "policy token {t}: {a} vs autograd {b}");
    }
    for (t, &gt) in g.iter().enumerate() {
        let fd = finite_difference(tensor_loss, &lp, t, 1e-6);
        assert!(close(gt, fd, 1e-8), "policy token {t}: {gt} vs fd {fd}");
    }
    // The clipped token on the losing side, and padding, get exactly 0; the rest −A·r/N.
    assert_eq!((g[2], g[7]), (0.0, 0.0));
    assert!(close(g[1], 1.2 * 1.1 / 7.0, 1e-14));

    // Values: V = V_old (both terms equal), inside, clipped with the clipped term larger
    // (0 gradient) twice, clipped with the unclipped term larger, V = V_old again; padding.
    let old_v = [0.0, 1.0, 1.0, 2.0, -1.0, 0.5, 0.3, 0.0];
    let v = [0.0, 1.1, 1.5, 1.4, -1.05, 0.9, 0.3, 4.0];
    let ret = [0.5, 0.2, 3.0, 0.0, 0.3, 0.2, -0.4, 1.0];
    let tensor_vloss = |v: &[f64]| {
        value_loss(
            &t64(v, &shape),
            &t64(&old_v, &shape),
            &t64(&ret, &shape),
            &mask_t,
            0.2,
        )
        .unwrap()
        .item()
        .unwrap()
    };
    let (vloss, gv) = value_loss_grad(&v, &old_v, &ret, &mask, 0.2).unwrap();
    assert!(close(vloss, tensor_vloss(&v), 1e-14), "{vloss}");
    let v_t = t64(&v, &shape).requires_grad();
    let l = value_loss(&v_t, &t64(&old_v, &shape), &t64(&ret, &shape), &mask_t, 0.2).unwrap();
    let autograd = l.backward().unwrap().get(&v_t).unwrap().to_vec_f64();
    for (t, (&a, &b)) in gv.iter().zip(&autograd).enumerate() {
        assert!(close(a, b, 1e-14), "value token {t}: {a} vs autograd {b}");
    }
    for (t, &gt) in gv.iter().enumerate() {
        let fd = finite_difference(tensor_vloss, &v, t, 1e-6);
        assert!(close(gt, fd, 1e-8), "value token {t}: {gt} vs fd {fd}");
    }
    assert_eq!((gv[2], gv[7]), (0.0, 0.0));
    // An empty mask is an error, as the tensor loss's.
    assert!(policy_loss_grad(&lp, &old, &adv, &[false; 8], 0.2).is_err());
    assert!(value_loss_grad(&v, &old_v, &ret, &[false; 8], 0.2).is_err());
}

#[test]
fn adaptive_kl_controller_raises_beta_above_target_and_lowers_it_below() {
    let mut hi = KlController::adaptive(0.1, 6.0, 10_000.0);
    hi.update(12.0, 100);
    // err = clip(12/6 − 1, ±0.2) = 0.2: β·(1 + 0.2·100/10000).
    assert!(close(hi.beta, 0.1 * 1.002, 1e-15), "{}", hi.beta);
    let mut lo = KlController::adaptive(0.1, 6.0, 10_000.0);
    lo.update(5.4, 100); // err = −0.1
    assert!(close(lo.beta, 0.1 * (1.0 - 0.001), 1e-15), "{}", lo.beta);
    let mut fixed = KlController::fixed(0.02);
    fixed.update(100.0, 100);
    assert_eq!(fixed.beta, 0.02);
    assert_eq!(PpoConfig::default().kl.beta, 0.02);
}

fn tiny_config() -> GptConfig {
    let mut c = GptConfig::new(8, 16, 16, 1, 2);
    c.resid_pdrop = 0.0;
    c.embd_pdrop = 0.0;
    c.attn_pdrop = 0.0;
    c
}

#[test]
fn value_model_reads_a_scalar_head_at_every_position() {
    let mut rng = Rng::new(1);
    let trunk = Gpt::new(tiny_config(), &mut rng).unwrap();
    let w = rng.normal_tensor(&[16], 0.0, 1.0, DType::F32);
    let b = Tensor::from_vec(vec![0.25f32], &[1]).unwrap();
    let vm = ValueModel::new(&trunk, &w, &b).unwrap();
    let ids = [1, 2, 3, 4, 5, 6];
    let v = vm.values(&ids, 2, 3).unwrap();
    assert_eq!(v.shape(), &[2, 3]);
    let h = trunk.hidden(&ids, 2, 3, None).unwrap().to_vec_f64();
    let (wv, got) = (w.to_vec_f64(), v.to_vec_f64());
    for p in 0..6 {
        let want: f64 = 0.25 + (0..16).map(|k| h[p * 16 + k] * wv[k]).sum::<f64>();
        assert!(close(got[p], want, 1e-4), "{p}: {} vs {want}", got[p]);
    }
    // Fresh parameter ids: gradients of a policy sharing the trunk never mix with these.
    assert!(vm
        .params()
        .iter()
        .zip(trunk.params())
        .all(|(a, b)| a.id() != b.id()));
    assert!(
        ValueModel::new(&trunk, &b, &b).is_err(),
        "wrong head shape is refused"
    );
}

#[test]
fn recomputed_logprobs_match_the_samplers_at_the_same_temperature() {
    let mut rng = Rng::new(2);
    let policy = Gpt::new(tiny_config(), &mut rng).unwrap();
    let prompts = vec![vec![0], vec![1, 2, 0], vec![4, 0]]; // different lengths: padding
    let rollouts = sample_rollouts(&policy, &prompts, 6, 7, 0.7, &mut rng).unwrap();
    let lp = response_logprobs(&policy, &rollouts, 0.7).unwrap();
    let mut worst = 0.0f64;
    for (r, l) in rollouts.iter().zip(&lp) {
        assert_eq!(r.logprobs.len(), l.len());
        for (a, b) in r.logprobs.iter().zip(l) {
            worst = worst.max((a - b).abs());
        }
    }
    assert!(worst < 1e-5, "max |Δ logprob| = {worst}");
    // Right padding is exact: each rollout alone gives the same numbers as in the batch.
    for (r, l) in rollouts.iter().zip(&lp) {
        let alone = response_logprobs(&policy, std::slice::from_ref(r), 0.7).unwrap();
        for (a, b) in alone[0].iter().zip(l) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }
    // A different temperature gives different numbers: the temperature is applied.
    let lp1 = response_logprobs(&policy, &rollouts, 1.0).unwrap();
    assert!((lp1[0][0] - lp[0][0]).abs() > 1e-4);
}

/// "Token 3 is good": the fraction of response tokens (end token aside) that are 3.
fn rule_score(r: &Rollout) -> f64 {
    let body: Vec<usize> = r.response.iter().copied().filter(|&t| t != 7).collect();
    if body.is_empty() {
        return 0.0;
    }
    body.iter().filter(|&&t| t == 3).count() as f64 / body.len() as f64
}

/// PPO on a tiny policy (vocab 8, width 16, one layer) with the rule reward: 20 iterations of
/// 32 rollouts of up to 5 tokens, minibatches of 16, 4 epochs. Returns each iteration's stats.
fn run_toy(seed: u64, beta: f64) -> Vec<PpoStats> {
    let mut rng = Rng::new(seed);
    let mut policy = Gpt::new(tiny_config(), &mut rng).unwrap();
    let reference = policy.clone();
    let mut value = ValueModel::zero_head(&policy).unwrap();
    let config = PpoConfig {
        kl: KlController::fixed(beta),
        minibatch_size: 16,
        policy_lr: 3e-3,
        value_lr: 3e-3,
        missing_eos_penalty: 0.0,
        ..PpoConfig::default()
    };
    let mut trainer = PpoTrainer::new(config);
    let prompts: Vec<Vec<usize>> = (0..32).map(|i| vec![i % 3, 0]).collect();
    (0..20)
        .map(|_| {
            let rollouts = sample_rollouts(&policy, &prompts, 5, 7, 1.0, &mut rng).unwrap();
            let ref_lp = response_logprobs(&reference, &rollouts, 1.0).unwrap();
            let scores: Vec<f64> = rollouts.iter().map(rule_score).collect();
            trainer
                .step(
                    &mut policy,
                    &mut value,
                    &rollouts,
                    &ref_lp,
                    &scores,
                    None,
                    &mut rng,
                )
                .unwrap()
        })
        .collect()
}

#[test]
fn ppo_raises_a_rule_based_reward_on_a_tiny_policy() {
    // PPO_SEED tries another seed (measured: seeds 3 and 10..17 all pass).
    let seed = std::env::var("PPO_SEED").map_or(3, |s| s.parse().unwrap());
    let stats = run_toy(seed, 0.02);
    let scores: Vec<f64> = stats.iter().map(|s| s.score).collect();
    let first = (scores[0] + scores[1]) / 2.0;
    let end = (scores[18] + scores[19]) / 2.0;
    let last = &stats[19];
    eprintln!("mean score per iteration: {scores:.3?}");
    eprintln!("last stats: {last:?}");
    assert!(end > first + 0.3, "score {first:.3} -> {end:.3}");
    assert!(last.kl > 0.0, "the policy moved away from the reference");
    assert!(
        stats.iter().all(|s| s.logprob_mismatch < 1e-4),
        "sampler and update disagree"
    );
}

#[test]
fn a_larger_kl_coefficient_keeps_the_policy_closer_to_the_reference() {
    let kl_end = |beta: f64| {
        let stats = run_toy(3, beta);
        stats[17..].iter().map(|s| s.kl).sum::<f64>() / 3.0
    };
    let (small, large) = (kl_end(0.02), kl_end(1.0));
    eprintln!("KL over the last 3 iterations: beta 0.02 -> {small:.3}, beta 1 -> {large:.3}");
    assert!(large < small, "beta 1: {large:.3}, beta 0.02: {small:.3}");
}

#[test]
fn step_applies_the_missing_eos_penalty_and_reports_shapes_of_the_batch() {
    let mut rng = Rng::new(4);
    let mut policy = Gpt::new(tiny_config(), &mut rng).unwrap();
    let mut value = ValueModel::zero_head(&policy).unwrap();
    let rollouts = vec![
        Rollout {
            prompt: vec![0, 1],
            response: vec![3, 3, 7],
            ended: true,
            logprobs: vec![],
        },
        Rollout {
            prompt: vec![2],
            response: vec![3, 4, 5, 6],
            ended: false,
            logprobs: vec![],
        },
    ];
    let ref_lp = response_logprobs(&policy, &rollouts, 1.0).unwrap();
    let mut trainer = PpoTrainer::new(PpoConfig {
        missing_eos_penalty: 1.0,
        ppo_epochs: 1,
        ..PpoConfig::default()
    });
    let s = trainer
        .step(
            &mut policy,
            &mut value,
            &rollouts,
            &ref_lp,
            &[1.0, 1.0],
            None,
            &mut rng,
        )
        .unwrap();
    assert!(close(s.score, (1.0 + 0.0) / 2.0, 1e-12), "{s:?}");
    assert!(close(s.frac_ended, 0.5, 1e-12) && close(s.response_length, 3.5, 1e-12));
    assert!(
        close(s.kl, 0.0, 1e-5),
        "policy = reference before the update: {}",
        s.kl
    );
    // An adaptive controller sees the batch's KL: far above a tiny target, β rises.
    let mut adaptive = PpoTrainer::new(PpoConfig {
        kl: KlController::adaptive(0.1, 1e-9, 10.0),
        ppo_epochs: 1,
        ..PpoConfig::default()
    });
    let shifted: Vec<Vec<f64>> = ref_lp
        .iter()
        .map(|r| r.iter().map(|l| l - 1.0).collect())
        .collect();
    let s = adaptive
        .step(
            &mut policy,
            &mut value,
            &rollouts,
            &shifted,
            &[1.0, 1.0],
            None,
            &mut rng,
        )
        .unwrap();
    assert!(s.kl > 3.0 && s.beta == 0.1, "{s:?}");
    assert!(
        close(adaptive.kl.beta, 0.1 * (1.0 + 0.2 * 2.0 / 10.0), 1e-12),
        "{}",
        adaptive.kl.beta
    );
    // A reference row of the wrong length is refused with a message naming the rollout.
    let bad = vec![ref_lp[0].clone(), vec![0.0]];
    let err = trainer
        .step(
            &mut policy,
            &mut value,
            &rollouts,
            &bad,
            &[1.0, 1.0],
            None,
            &mut rng,
        )
        .unwrap_err();
    assert!(err.to_string().contains("rollout 1"), "{err}");
    let zero_t = PpoTrainer::new(PpoConfig {
        temperature: 0.0,
        ..PpoConfig::default()
    })
    .step(
        &mut policy,
        &mut value,
        &rollouts,
        &ref_lp,
        &[1.0, 1.0],
        None,
        &mut rng,
    );
    assert!(zero_t.unwrap_err().to_string().contains("temperature"));
}

#[test]
fn ptx_term_pulls_the_policy_towards_the_pretraining_batch() {
    let mut rng = Rng::new(5);
    let mut policy = Gpt::new(tiny_config(), &mut rng).unwrap();
    let mut value = ValueModel::zero_head(&policy).unwrap();
    let ptx = PtxBatch {
        ids: vec![5; 8],
        targets: vec![5; 8],
        batch: 1,
        seq: 8,
    };
    let ce = |p: &Gpt| {
        no_grad(|| {
            p.loss(&ptx.ids, &ptx.targets, 1, 8, None)
                .unwrap()
                .item()
                .unwrap()
        })
    };
    let before = ce(&policy);
    let mut trainer = PpoTrainer::new(PpoConfig {
        ptx_coef: 1.0,
        policy_lr: 1e-2,
        ..PpoConfig::default()
    });
    let prompts = vec![vec![0]; 4];
    for _ in 0..3 {
        let rollouts = sample_rollouts(&policy, &prompts, 3, 7, 1.0, &mut rng).unwrap();
        let ref_lp = response_logprobs(&policy, &rollouts, 1.0).unwrap();
        let s = trainer
            .step(
                &mut policy,
                &mut value,
                &rollouts,
                &ref_lp,
                &[0.0; 4],
                Some(&ptx),
                &mut rng,
            )
            .unwrap();
        assert!(s.ptx_loss > 0.0);
    }
    let after = ce(&policy);
    assert!(
        after < before - 0.5,
        "pretraining CE {before:.3} -> {after:.3}"
    );
}
