//! Tests of completion log-probs (masking, truncation, gradients) and DPO (hand value,
//! gradient check, a toy preference learned).

use engine::gradcheck::{gradcheck, GradcheckOptions};
use engine::{no_grad, ops, DType, Rng, Tensor};
use model::tokenizer::Tokenizer;
use model::{Gpt, GptConfig};
use rlhf::chat::{END, SPECIAL_TOKENS};
use rlhf::data::Pair;
use rlhf::dpo::{dpo_loss, evaluate_dpo, pairs_of, train_dpo, DpoConfig};
use rlhf::logprobs::{sequence_logprobs, token_logprobs};
use rlhf::Ranking;

fn tiny_gpt(vocab: usize, ctx: usize, width: usize, seed: u64) -> Gpt {
    let mut cfg = GptConfig::new(vocab, ctx, width, 1, 2);
    cfg.resid_pdrop = 0.0;
    cfg.embd_pdrop = 0.0;
    cfg.attn_pdrop = 0.0;
    Gpt::new(cfg, &mut Rng::new(seed)).unwrap()
}

fn f64s(v: &[f64]) -> Tensor {
    Tensor::from_vec(v.to_vec(), &[v.len()]).unwrap()
}

fn to_engine(e: model::Error) -> engine::Error {
    engine::Error::Invalid {
        op: "dpo",
        msg: e.to_string(),
    }
}

/// log π(completion | prompt) the slow way: the whole sequence alone, full log-softmax, the
/// completion's targets summed.
fn brute_logprob(gpt: &Gpt, prompt: &[usize], completion: &[usize]) -> f64 {
    let mut ids = prompt.to_vec();
    ids.extend(completion);
    let t = ids.len();
    let logits = no_grad(|| gpt.forward(&ids, 1, t, None)).unwrap();
    let logp = ops::log_softmax(&logits, -1).unwrap().to_vec_f64();
    let v = gpt.config.vocab_size;
    (0..completion.len())
        .map(|j| {
            let pos = prompt.len() + j - 1;
            logp[pos * v + completion[j]]
        })
        .sum()
}

#[test]
fn sequence_logprobs_sum_completion_tokens_only() {
    let gpt = tiny_gpt(20, 16, 16, 1);
    let prompts = vec![vec![1, 2, 3], vec![4], vec![5, 6, 7, 8, 9]];
    let completions = vec![vec![10, 11], vec![12, 13, 14, 15], vec![]];
    let lp = no_grad(|| sequence_logprobs(&gpt, &prompts, &completions, None))
        .unwrap()
        .to_vec_f64();
    for i in 0..3 {
        let want = brute_logprob(&gpt, &prompts[i], &completions[i]);
        assert!((lp[i] - want).abs() < 1e-4, "{i}: {} vs {want}", lp[i]);
    }
    assert_eq!(lp[2], 0.0, "an empty completion scores 0");
    // Changing a prompt token changes the log-prob; it is context, not a scored token.
    let other =
        no_grad(|| sequence_logprobs(&gpt, &[vec![1, 2, 4]], &[completions[0].clone()], None))
            .unwrap()
            .to_vec_f64();
    assert!((other[0] - lp[0]).abs() > 1e-6);
}

#[test]
fn token_logprobs_are_aligned_to_completion_tokens() {
    let gpt = tiny_gpt(20, 16, 16, 2);
    let t = no_grad(|| {
        token_logprobs(
            &gpt,
            &[vec![1, 2], vec![3]],
            &[vec![4], vec![5, 6, 7]],
            1.0,
            None,
        )
    })
    .unwrap();
    assert_eq!(t.logprobs.shape(), &[2, 3]);
    assert_eq!(t.lengths, vec![1, 3]);
    assert_eq!(t.mask.to_vec_f64(), vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
    let lp = t.logprobs.to_vec_f64();
    assert_eq!(&lp[1..3], &[0.0, 0.0]);
    let first_two = brute_logprob(&gpt, &[3], &[5, 6]);
    assert!((lp[3] + lp[4] - first_two).abs() < 1e-4);
    // Temperature 2: the logits are halved before the softmax.
    let hot = no_grad(|| token_logprobs(&gpt, &[vec![1, 2]], &[vec![4]], 2.0, None)).unwrap();
    let logits = no_grad(|| gpt.forward(&[1, 2], 1, 2, None)).unwrap();
    let halved = ops::log_softmax(&ops::mul_scalar(&logits, 0.5).unwrap(), -1).unwrap();
    let want = halved.to_vec_f64()[20 + 4];
    assert!((hot.logprobs.to_vec_f64()[0] - want).abs() < 1e-5);
    assert!((hot.logprobs.to_vec_f64()[0] - lp[0]).abs() > 1e-4);
}

#[test]
fn long_prompts_are_cut_from_the_left() {
    let gpt = tiny_gpt(20, 6, 16, 3);
    let prompt: Vec<usize> = (1..=8).collect();
    let completion = vec![9, 10];
    let lp = no_grad(|| {
        sequence_logprobs(
            &gpt,
            &[prompt.clone(), prompt[4..].to_vec()],
            &[completion.clone(), completion.clone()],
            None,
        )
    })
    .unwrap()
    .to_vec_f64();
    assert_eq!(
        lp[0], lp[1],
        "only the last 4 prompt tokens fit beside the completion"
    );
    let too_long = sequence_logprobs(&gpt, &[vec![1]], &[vec![2; 6]], None);
    assert!(too_long.is_err());
}

#[test]
fn sequence_logprobs_gradcheck_through_the_model() {
    let gpt = tiny_gpt(10, 8, 8, 4).to_dtype(DType::F64).unwrap();
    let prompts = vec![vec![1, 2], vec![3, 4, 5]];
    let completions = vec![vec![6, 7, 8], vec![9]];
    let inputs = [gpt.wte.clone(), gpt.ln_f_b.clone()];
    let report = gradcheck(
        |xs| {
            let mut g = gpt.clone();
            g.wte = xs[0].clone();
            g.ln_f_b = xs[1].clone();
            sequence_logprobs(&g, &prompts, &completions, None).map_err(to_engine)
        },
        &inputs,
        &GradcheckOptions::default(),
    )
    .unwrap();
    eprintln!(
        "gradcheck: max rel error {:.2e} over {} elements",
        report.max_rel_error, report.checked
    );
    assert!(report.passed, "{report:?}");
}

#[test]
fn dpo_loss_equals_hand_value() {
    // π_w = −1, π_l = −2, ref_w = ref_l = −1.5, β = 0.1: logits 0.1·(0.5 − (−0.5)) = 0.1,
    // loss = −log σ(0.1) = log(1 + e^−0.1).
    let loss = dpo_loss(
        &f64s(&[-1.0]),
        &f64s(&[-2.0]),
        &f64s(&[-1.5]),
        &f64s(&[-1.5]),
        0.1,
    )
    .unwrap()
    .item()
    .unwrap();
    let hand = (1.0 + (-0.1f64).exp()).ln();
    assert!((hand - 0.644_396_660_073_571).abs() < 1e-14, "{hand}");
    assert!((loss - hand).abs() < 1e-12, "{loss}");
    // Policy = reference: every logit is 0 and the loss is log 2.
    let same = dpo_loss(
        &f64s(&[-3.0, -1.0]),
        &f64s(&[-2.0, -5.0]),
        &f64s(&[-3.0, -1.0]),
        &f64s(&[-2.0, -5.0]),
        0.1,
    )
    .unwrap()
    .item()
    .unwrap();
    assert!((same - 2f64.ln()).abs() < 1e-12);
}

#[test]
fn dpo_loss_gradcheck() {
    let mut rng = Rng::new(8);
    let inputs: Vec<Tensor> = (0..4)
        .map(|_| rng.normal_tensor(&[5], -3.0, 2.0, DType::F64))
        .collect();
    for beta in [0.1, 1.0] {
        let report = gradcheck(
            |xs| dpo_loss(&xs[0], &xs[1], &xs[2], &xs[3], beta).map_err(to_engine),
            &inputs,
            &GradcheckOptions::default(),
        )
        .unwrap();
        eprintln!(
            "gradcheck beta {beta}: max rel error {:.2e}",
            report.max_rel_error
        );
        assert!(report.passed, "beta {beta}: {report:?}");
        assert_eq!(report.checked, 20);
    }
}

/// A toy preference: the chosen answer ends with `<|end|>`, the rejected one runs on.
fn toy_pairs(n: usize, seed: u64) -> Vec<Pair> {
    let words = ["cat", "dog", "owl", "fox", "sun", "red"];
    let mut rng = Rng::new(seed);
    let word = |rng: &mut Rng| words[rng.below(words.len() as u64) as usize];
    let rankings: Vec<Ranking> = (0..n)
        .map(|_| {
            let prompt = format!("say {}", word(&mut rng));
            let a = word(&mut rng);
            let b = word(&mut rng);
            Ranking {
                prompt,
                responses: vec![format!("{a}{END}"), format!("{a} {b}")],
                ranking: vec![0, 1],
                ties: vec![],
            }
        })
        .collect();
    pairs_of(&rankings)
}

#[test]
fn dpo_on_a_toy_preference_increases_the_chosen_margin() {
    let text = "say cat dog owl fox sun red ".repeat(4);
    let tok = Tokenizer::train(&text, 290, &SPECIAL_TOKENS).unwrap();
    let reference = tiny_gpt(tok.vocab_size(), 32, 16, 5);
    let mut policy = reference.clone();
    let train = toy_pairs(96, 1);
    let heldout = toy_pairs(32, 2);
    let before = evaluate_dpo(&policy, &reference, &heldout, &tok, 0.1).unwrap();
    assert!(
        before.margins.abs() < 1e-6,
        "policy = reference: {before:?}"
    );
    let config = DpoConfig {
        batch_size: 8,
        epochs: 3,
        lr: 3e-3,
        ..DpoConfig::default()
    };
    let stats = train_dpo(&mut policy, &reference, &train, &tok, &config, |_| {}).unwrap();
    assert_eq!(stats.len(), 36);
    let after = evaluate_dpo(&policy, &reference, &heldout, &tok, 0.1).unwrap();
    eprintln!(
        "toy DPO: held-out margin {:.4} -> {:.4}, accuracy {:.3} -> {:.3}, loss {:.4} -> {:.4}",
        before.margins, after.margins, before.accuracies, after.accuracies, before.loss, after.loss
    );
    assert!(after.margins > 0.1, "{after:?}");
    assert!(after.accuracies > 0.9, "{after:?}");
    assert!(after.loss < before.loss);
    assert!((after.margins - (after.rewards_chosen - after.rewards_rejected)).abs() < 1e-9);
}
