//! The held-out statistics of `rlhf::policy`: means over prompts with 95% intervals, win rates
//! judged by the noisy labeler and by the rubric alone, paired score differences.

use rlhf::chat::Answer;
use rlhf::policy::{compare, repeated, score_gain, win_rate, Estimate};
use rlhf::world::{PromptRecord, Split, World};

fn heldout() -> Vec<PromptRecord> {
    World::new(0).prompts(Split::Heldout).to_vec()
}

#[test]
fn an_estimate_is_the_mean_of_prompt_means_with_a_normal_interval() {
    let r = heldout();
    // Two prompts scoring 1 and 0: mean 0.5, sd √0.5, half-width 1.96·√(0.5/2) = 0.98.
    let e = Estimate::over_prompts(&r[..2], &[1.0, 0.0]);
    assert_eq!(e.mean, 0.5);
    assert!((e.high - e.mean - 0.98).abs() < 1e-12, "{e:?}");
    assert!((e.mean - e.low - 0.98).abs() < 1e-12, "{e:?}");

    // Three prompts 0.2, 0.4, 0.9: mean 0.5, sample variance (0.09 + 0.01 + 0.16) / 2 = 0.13.
    let e = Estimate::over_prompts(&r[..3], &[0.2, 0.4, 0.9]);
    let half = 1.96 * (0.13f64 / 3.0).sqrt();
    assert!(
        (e.mean - 0.5).abs() < 1e-12 && (e.high - 0.5 - half).abs() < 1e-12,
        "{e:?}"
    );
    // As text: a rate in percent, a difference's interval signed.
    assert_eq!(e.percent(), "50.0% (95% interval 9.2–90.8%)");
    assert_eq!(e.signed_interval(), "+0.092 to +0.908");
}

#[test]
fn answers_to_the_same_prompt_count_as_one_unit() {
    let r = heldout();
    let (a, b) = (r[0].clone(), r[1].clone());
    // Four answers to two prompts: as wide as two values, not four independent ones.
    let clustered = Estimate::over_prompts(
        &[a.clone(), a.clone(), b.clone(), b.clone()],
        &[1.0, 1.0, 0.0, 0.0],
    );
    let two = Estimate::over_prompts(&[a.clone(), b.clone()], &[1.0, 0.0]);
    assert_eq!(clustered, two);
    // Unequal repeats: each prompt weighs the same, whatever its number of answers.
    let e = Estimate::over_prompts(&[a.clone(), a.clone(), a, b], &[1.0, 1.0, 1.0, 0.0]);
    assert_eq!(e.mean, 0.5);
}

#[test]
fn with_fewer_than_two_prompts_the_interval_is_unknown() {
    let r = heldout();
    let one = Estimate::over_prompts(&[r[0].clone(), r[0].clone()], &[1.0, 0.0]);
    assert_eq!(one.mean, 0.5);
    assert!(one.low.is_nan() && one.high.is_nan(), "{one:?}");
    assert_eq!(one.percent(), "50.0% (interval unknown)");
    assert_eq!(one.signed_interval(), "unknown");
    let json = serde_json::to_string(&one).unwrap();
    assert_eq!(json, r#"{"mean":0.5,"low":null,"high":null}"#);
    assert!(Estimate::over_prompts(&[], &[]).mean.is_nan());
}

#[test]
fn the_ideal_answer_beats_a_wrong_one_about_as_often_as_the_labeler_is_right() {
    let records = heldout();
    let ideal: Vec<Answer> = records.iter().map(|r| Answer::ended(&*r.ideal)).collect();
    let wrong: Vec<Answer> = records
        .iter()
        .map(|_| Answer::ended("I do not know."))
        .collect();
    // Two labelers agreeing on 73% of pairs are each right on about 84% of them.
    let w = win_rate(&records, &ideal, &wrong, 1);
    assert!(w.mean > 0.77 && w.mean < 0.91, "{w:?}");
    assert!(w.low < 0.84 && 0.84 < w.high, "{w:?}");
    // The mirror image: the wrong answers win the rest.
    let l = win_rate(&records, &wrong, &ideal, 1);
    assert!(l.mean < 0.23, "{l:?}");
    // Equal answers tie: exactly one half, and nothing varies.
    let t = win_rate(&records, &ideal, &ideal, 1);
    assert_eq!((t.mean, t.low, t.high), (0.5, 0.5, 0.5));
}

#[test]
fn a_score_gain_is_the_paired_difference_of_rubric_scores() {
    let records = heldout();
    let ideal: Vec<Answer> = records.iter().map(|r| Answer::ended(&*r.ideal)).collect();
    let unended: Vec<Answer> = records.iter().map(|r| Answer::unended(&*r.ideal)).collect();
    // The same answers left without <|end|> lose only the 0.5 point for ending (of 15).
    let g = score_gain(&records, &ideal, &unended);
    assert!((g.mean - 0.5 / 15.0).abs() < 1e-12, "{g:?}");
    assert!(
        (g.high - g.low).abs() < 1e-12,
        "every pair differs alike: {g:?}"
    );
    let back = score_gain(&records, &unended, &ideal);
    assert!((back.mean + g.mean).abs() < 1e-12);
}

#[test]
fn the_rubric_counts_better_tied_and_worse_and_the_noise_pulls_the_win_rate_to_half() {
    let records = repeated(&heldout(), 20);
    let n = records.len();
    // A third of the pairs ideal against wrong, a third wrong against ideal, a third equal.
    let ideal = |r: &PromptRecord| Answer::ended(&*r.ideal);
    let wrong = || Answer::ended("I do not know.");
    let mut a = Vec::new();
    let mut b = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let (x, y) = match i % 3 {
            0 => (ideal(r), wrong()),
            1 => (wrong(), ideal(r)),
            _ => (ideal(r), ideal(r)),
        };
        a.push(x);
        b.push(y);
    }
    let c = compare(&records, &a, &b);
    let third = |k: usize| (0..n).filter(|i| i % 3 == k).count() as f64 / n as f64;
    assert_eq!((c.better, c.worse, c.tied), (third(0), third(1), third(2)));
    assert_eq!(c.noiseless_win_rate(), third(0) + third(2) / 2.0);
    // Skew it: the second third ties too (better 1/3, tied 2/3). A labeler right on about 84%
    // of pairs it can tell apart gives 0.5 + 0.34 · (better − worse) ≈ 0.613, below the
    // noiseless 0.667.
    for (i, r) in records.iter().enumerate() {
        if i % 3 == 1 {
            a[i] = ideal(r);
        }
    }
    let c = compare(&records, &a, &b);
    assert_eq!((c.better, c.worse), (third(0), 0.0));
    let w = win_rate(&records, &a, &b, 3);
    let expected = 0.5 + 0.339 * c.better;
    assert!((w.mean - expected).abs() < 0.02, "{w:?} against {expected}");
    assert!(w.mean < c.noiseless_win_rate() - 0.03, "{w:?} {c:?}");
}
