//! A language model used as a chat policy: sampling answers to prompts in the chat format,
//! and judging them with the labeler's rubric (held-out score, rude-word rate, win rate).

use engine::Rng;
use model::generate::{generate, SamplingConfig};
use model::tokenizer::Tokenizer;
use model::Gpt;

use crate::chat::{chat_prompt, parse_completion, Answer, SPECIAL_TOKENS};
use crate::labeler::{judge, Labeler};
use crate::world::{Kind, PromptRecord};

/// One sampled answer with what RL needs to learn from it.
#[derive(Clone, Debug)]
pub struct Sampled {
    /// The prompt's token ids (`chat_prompt(prompt)` encoded).
    pub prompt_ids: Vec<usize>,
    /// The answer's token ids, including the closing special token if one was drawn.
    pub response_ids: Vec<usize>,
    /// log π(token) under the temperature-scaled softmax, one per response token.
    pub logprobs: Vec<f64>,
    /// The decoded continuation (closing special token included).
    pub completion: String,
    /// The answer as the labeler reads it.
    pub answer: Answer,
}

/// Ids of the chat's special tokens: generation stops at any of them (the answer ended
/// properly only at `<|end|>`).
pub fn stop_ids(tok: &Tokenizer) -> Vec<usize> {
    SPECIAL_TOKENS
        .iter()
        .filter_map(|t| tok.token_to_id(t))
        .map(|id| id as usize)
        .collect()
}

/// Draws `k` answers to `prompt` together (one batch sharing the prompt's cache).
pub fn sample_answers(
    model: &Gpt,
    tok: &Tokenizer,
    prompt: &str,
    k: usize,
    temperature: f64,
    max_new_tokens: usize,
    seed: u64,
) -> model::Result<Vec<Sampled>> {
    let prompt_ids: Vec<usize> = tok
        .encode(&chat_prompt(prompt))
        .into_iter()
        .map(|t| t as usize)
        .collect();
    let cfg = SamplingConfig {
        temperature,
        top_k: 0,
        top_p: 1.0,
        max_new_tokens,
        stop_tokens: stop_ids(tok),
        seed,
    };
    generate(model, &prompt_ids, k, &cfg)?
        .into_iter()
        .map(|s| {
            let ids: Vec<u32> = s.tokens.iter().map(|&t| t as u32).collect();
            let completion = tok.decode(&ids)?;
            Ok(Sampled {
                prompt_ids: prompt_ids.clone(),
                answer: parse_completion(&completion),
                response_ids: s.tokens,
                logprobs: s.logprobs_scaled,
                completion,
            })
        })
        .collect()
}

/// How a policy does on a set of prompts, by the labeler's rubric.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PolicyEval {
    /// Answers judged (one per record given; a prompt may be given more than once).
    pub answers: usize,
    /// Mean rubric score in [0, 1].
    pub mean_score: f64,
    /// Fraction of answers that are correct.
    pub correct: f64,
    /// Fraction of answers with a rude word.
    pub rude: f64,
    /// Fraction of answers closed with `<|end|>`.
    pub ended: f64,
    /// Fraction following the requested format.
    pub format_ok: f64,
    /// Mean answer length in characters.
    pub mean_chars: f64,
    /// Mean score and fraction correct of each instruction kind (kinds with prompts only),
    /// in [`Kind::ALL`]'s order: where a policy is good and where it still fails.
    pub by_kind: Vec<KindEval>,
}

/// A policy's mean score and correctness on the prompts of one instruction kind.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct KindEval {
    /// The kind's name ([`Kind::name`]).
    pub kind: String,
    /// Answers judged.
    pub answers: usize,
    pub mean_score: f64,
    pub correct: f64,
}

/// The records of a held-out evaluation: every record `samples` times over (at least once).
/// Each copy is answered afresh, so the answers to one prompt come from different random
/// numbers; [`Estimate::over_prompts`] averages them before it counts prompts.
pub fn repeated(records: &[PromptRecord], samples: usize) -> Vec<PromptRecord> {
    (0..samples.max(1))
        .flat_map(|_| records.iter().cloned())
        .collect()
}

/// The world's ideal answer to each record, properly ended: what the best possible policy
/// would say (its win rate against a policy is the most any policy can expect).
pub fn ideal_answers(records: &[PromptRecord]) -> Vec<Answer> {
    records
        .iter()
        .map(|r| Answer::ended(r.ideal.clone()))
        .collect()
}

/// The seeds of a run's held-out evaluation, from the run's seed: `(sampling, judging)`. Every
/// stage answers with the same sampling seed, and every head-to-head is judged with the same
/// labeler seed. `ferrochat judge` derives its seeds the same way, so given a run's seed and
/// evaluation settings it reproduces the numbers of that run's report from its checkpoints.
pub fn eval_seeds(run_seed: u64) -> (u64, u64) {
    (run_seed ^ 77, run_seed ^ 99)
}

/// One answer per prompt (temperature `temperature`; 0 = greedy), judged by the rubric.
/// Returns the summary and the answers (for win rates).
pub fn evaluate_policy(
    model: &Gpt,
    tok: &Tokenizer,
    records: &[PromptRecord],
    temperature: f64,
    max_new_tokens: usize,
    seed: u64,
) -> model::Result<(PolicyEval, Vec<Answer>)> {
    let mut answers = Vec::with_capacity(records.len());
    let mut e = PolicyEval {
        answers: records.len(),
        ..PolicyEval::default()
    };
    let mut by_kind: Vec<KindEval> = Kind::ALL
        .iter()
        .map(|k| KindEval {
            kind: k.name().into(),
            ..KindEval::default()
        })
        .collect();
    for (i, r) in records.iter().enumerate() {
        let s = sample_answers(
            model,
            tok,
            &r.prompt,
            1,
            temperature,
            max_new_tokens,
            seed.wrapping_add(i as u64),
        )?;
        let a = s
            .into_iter()
            .next()
            .map(|s| s.answer)
            .unwrap_or_else(|| Answer::unended(""));
        let b = judge(r, &a.text, a.ended);
        e.mean_score += b.total;
        e.correct += b.correct as u8 as f64;
        e.rude += (!b.polite) as u8 as f64;
        e.ended += a.ended as u8 as f64;
        e.format_ok += b.format_ok as u8 as f64;
        e.mean_chars += a.text.chars().count() as f64;
        let k = &mut by_kind[r.kind().index()];
        k.answers += 1;
        k.mean_score += b.total;
        k.correct += b.correct as u8 as f64;
        answers.push(a);
    }
    let n = records.len().max(1) as f64;
    for v in [
        &mut e.mean_score,
        &mut e.correct,
        &mut e.rude,
        &mut e.ended,
        &mut e.format_ok,
        &mut e.mean_chars,
    ] {
        *v /= n;
    }
    for k in &mut by_kind {
        let n = k.answers.max(1) as f64;
        k.mean_score /= n;
        k.correct /= n;
    }
    e.by_kind = by_kind.into_iter().filter(|k| k.answers > 0).collect();
    Ok((e, answers))
}

/// A mean over prompts with its 95% confidence interval, the prompt as the unit: the values of
/// one prompt (its repeated answers) are averaged first, since answers to the same prompt are
/// not independent draws; then `mean ± 1.96 · sd / √n` over the `n` prompt means (the normal
/// approximation, as in InstructGPT's 95% intervals; `sd` with `n − 1`). With fewer than two
/// prompts the interval is unknown: `low` and `high` are NaN (`null` in JSON).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Estimate {
    pub mean: f64,
    pub low: f64,
    pub high: f64,
}

impl Estimate {
    /// `values[i]` belongs to `records[i]` (same length); prompts are told apart by their text.
    pub fn over_prompts(records: &[PromptRecord], values: &[f64]) -> Estimate {
        assert_eq!(records.len(), values.len(), "one value per record");
        let mut per_prompt: std::collections::BTreeMap<&str, (f64, usize)> = Default::default();
        for (r, &v) in records.iter().zip(values) {
            let e = per_prompt.entry(r.prompt.as_str()).or_default();
            e.0 += v;
            e.1 += 1;
        }
        let means: Vec<f64> = per_prompt.values().map(|&(s, c)| s / c as f64).collect();
        let n = means.len() as f64;
        let mean = if means.is_empty() {
            f64::NAN
        } else {
            means.iter().sum::<f64>() / n
        };
        if means.len() < 2 {
            return Estimate {
                mean,
                low: f64::NAN,
                high: f64::NAN,
            };
        }
        let var = means.iter().map(|m| (m - mean).powi(2)).sum::<f64>() / (n - 1.0);
        let half = 1.96 * (var / n).sqrt();
        Estimate {
            mean,
            low: mean - half,
            high: mean + half,
        }
    }

    /// A rate as text: `52.6% (95% interval 50.6–54.6%)`, or `52.6% (interval unknown)`.
    pub fn percent(&self) -> String {
        if self.low.is_finite() {
            format!(
                "{:.1}% (95% interval {:.1}–{:.1}%)",
                100.0 * self.mean,
                100.0 * self.low,
                100.0 * self.high
            )
        } else {
            format!("{:.1}% (interval unknown)", 100.0 * self.mean)
        }
    }

    /// A difference's interval as text: `+0.022 to +0.066`, or `unknown`.
    pub fn signed_interval(&self) -> String {
        if self.low.is_finite() {
            format!("{:+.3} to {:+.3}", self.low, self.high)
        } else {
            "unknown".into()
        }
    }
}

/// How often answers `a` beat answers `b` (same prompts, same order) in the labeler's
/// judgement: each pair is ranked by a labeler with InstructGPT-like disagreement noise; a
/// pair the rubric scores equal counts half. With its 95% interval over prompts
/// ([`Estimate::over_prompts`]).
pub fn win_rate(records: &[PromptRecord], a: &[Answer], b: &[Answer], seed: u64) -> Estimate {
    let labeler = Labeler::instructgpt();
    let mut rng = Rng::new(seed);
    let outcomes: Vec<f64> = records
        .iter()
        .zip(a)
        .zip(b)
        .map(|((r, x), y)| {
            let (sx, sy) = (
                judge(r, &x.text, x.ended).total,
                judge(r, &y.text, y.ended).total,
            );
            if sx == sy {
                0.5
            } else if labeler.rank(r, &[x.clone(), y.clone()], &mut rng)[0] == 0 {
                1.0
            } else {
                0.0
            }
        })
        .collect();
    Estimate::over_prompts(&records[..outcomes.len()], &outcomes)
}

/// How answers `a` compare with answers `b` (same prompts, same order) by the rubric alone,
/// before any labeler noise: the fractions of pairs in which `a` scores higher, the same, and
/// lower. The noisy labeler of [`win_rate`] picks the higher-scored answer of a pair with
/// probability 1 − q (q ≈ 0.16 at 73% agreement between two labelers), so its win rate is
/// about `better · (1 − q) + worse · q + tied / 2 = 0.5 + (1 − 2q)/2 · (better − worse)`: the
/// noise pulls every win rate toward 50%.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Comparison {
    pub better: f64,
    pub tied: f64,
    pub worse: f64,
}

impl Comparison {
    /// The win rate a noiseless labeler would give (a tie counts half).
    pub fn noiseless_win_rate(&self) -> f64 {
        self.better + 0.5 * self.tied
    }

    /// As text: `better 15.1%, tied 78.3%, worse 6.6%`.
    pub fn percent(&self) -> String {
        format!(
            "better {:.1}%, tied {:.1}%, worse {:.1}%",
            100.0 * self.better,
            100.0 * self.tied,
            100.0 * self.worse
        )
    }
}

/// [`Comparison`] of answers `a` with answers `b` on the same prompts, by the rubric.
pub fn compare(records: &[PromptRecord], a: &[Answer], b: &[Answer]) -> Comparison {
    let (mut better, mut tied, mut worse) = (0usize, 0usize, 0usize);
    for ((r, x), y) in records.iter().zip(a).zip(b) {
        let (sx, sy) = (
            judge(r, &x.text, x.ended).total,
            judge(r, &y.text, y.ended).total,
        );
        if sx == sy {
            tied += 1;
        } else if sx > sy {
            better += 1;
        } else {
            worse += 1;
        }
    }
    let n = (better + tied + worse).max(1) as f64;
    Comparison {
        better: better as f64 / n,
        tied: tied as f64 / n,
        worse: worse as f64 / n,
    }
}

/// How much higher answers `a` score than answers `b` on the same prompts (same order), by the
/// rubric: the mean paired difference with its 95% interval over prompts.
pub fn score_gain(records: &[PromptRecord], a: &[Answer], b: &[Answer]) -> Estimate {
    let diffs: Vec<f64> = records
        .iter()
        .zip(a)
        .zip(b)
        .map(|((r, x), y)| judge(r, &x.text, x.ended).total - judge(r, &y.text, y.ended).total)
        .collect();
    Estimate::over_prompts(&records[..diffs.len()], &diffs)
}
