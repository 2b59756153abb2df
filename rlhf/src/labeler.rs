//! The simulated labeler: a written rubric, a score used only for evaluation, and noisy
//! rankings of K answers for the reward model.
//!
//! # The rubric
//!
//! An answer is judged on five points, in this order of importance. The order is
//! *lexicographic*: a point outweighs every point below it put together.
//!
//! 1. **Correct** — the answer's first claimed answer equals the task's key:
//!    - *arithmetic* (`What is 3 plus 4?`, key `7`): the numbers in the answer are read in
//!      order (digits, or the words `zero`..`twenty`); an echo of the question (`3 plus 4`,
//!      `3 + 4`) at the start is skipped; the next number is the answer.
//!    - *count* (`Count the words: fox, owl, cat.`, key `3`): the first number in the answer.
//!    - *sort* (`Sort the numbers 5, 2, 8.`, key `2, 5, 8`): the first run of numbers
//!      separated only by commas, spaces or `and` that is not the question's own list.
//!    - *reverse* (`Reverse the word fox.`, key `xof`): the first word made of the same
//!      letters as the word but not the word itself (case ignored).
//!    - *spell* (`Spell the word fox.`, key `f-o-x`): the first run of two or more single
//!      letters separated by `-` or spaces (case ignored).
//!    - *fact* and *format* (`Where does the fox live?`, key `forest`): the first word that is
//!      one of the attribute's possible values (a color, a place, a food; case ignored).
//!
//!    Anything after the first claimed answer does not count: listing many answers does not
//!    make an answer correct. No claimed answer at all is wrong.
//! 2. **Follows the requested format** — only *format* prompts request one:
//!    `Answer in capitals:` means at least one letter and no lowercase letter;
//!    `Answer in one word:` means exactly one word. Other prompts always pass.
//! 3. **Polite** — no rude word or phrase from [`RUDE_WORDS`] (whole words, case ignored;
//!    see [`is_rude`]).
//! 4. **Concise and properly ended** — worth at most one point together:
//!    half a point for closing the answer with `<|end|>`, and half a point times
//!    `concise = min(1, (ideal + CONCISE_SLACK) / length)` (lengths in characters of the
//!    trimmed answer and of the ideal answer): up to [`CONCISE_SLACK`] characters beyond the
//!    ideal are free, longer answers lose in proportion.
//!
//! The score is `(8·correct + 4·format + 2·polite + 0.5·ended + 0.5·concise) / 15`, in
//! [0, 1]; the ideal answer scores exactly 1. Because 8 > 4 + 2 + 1, 4 > 2 + 1 and 2 > 1, a
//! correct rude rambling answer still beats a polite wrong one, and so on down the list.
//! The score is for *evaluation only*: training sees rankings, never scores.
//!
//! # Rankings and disagreement
//!
//! [`Labeler::rank`] orders K answers best to worst. Noiselessly, that is the order of their
//! scores. Real labelers disagree (InstructGPT: training labelers agree on 72.6 ± 1.5% of
//! pairs), so the simulated labeler ranks by `position + σ·N(0, 1)`, where `position` is the
//! answer's place in the true order (0 = best; answers with equal scores share their mean
//! place, so exact ties come out in random order). σ is chosen per K (closed form, see
//! [`expected_agreement`]) so that two independent labelers agree on the requested fraction of
//! pairs of answers with different scores, whatever K is. Ties are broken at random and are
//! not flagged in the ranking; the reward-model code can drop pairs of identical response
//! texts itself.

use crate::chat::{parse_completion, Answer};
use crate::data::Ranking;
use crate::world::{Attr, Op, PromptRecord, Style, Task};
use engine::Rng;

/// Weight of point 1 (correct).
pub const W_CORRECT: f64 = 8.0;
/// Weight of point 2 (format).
pub const W_FORMAT: f64 = 4.0;
/// Weight of point 3 (polite).
pub const W_POLITE: f64 = 2.0;
/// Weight of `<|end|>` in point 4.
pub const W_ENDED: f64 = 0.5;
/// Weight of conciseness in point 4.
pub const W_CONCISE: f64 = 0.5;
/// The sum of all weights (the ideal answer's raw score).
pub const W_TOTAL: f64 = W_CORRECT + W_FORMAT + W_POLITE + W_ENDED + W_CONCISE;
/// Characters an answer may exceed the ideal answer's length by without losing conciseness.
pub const CONCISE_SLACK: usize = 10;
/// InstructGPT's inter-labeler agreement on training comparisons (72.6 ± 1.5%, section 5.1).
pub const INSTRUCTGPT_AGREEMENT: f64 = 0.73;

/// Rude words and phrases (matched as whole lowercase words).
pub const RUDE_WORDS: [&str; 9] = [
    "whatever",
    "stupid",
    "dumb",
    "idiot",
    "ugh",
    "shut up",
    "go away",
    "who cares",
    "figure it out yourself",
];

/// The judgement of one answer on each point of the rubric.
#[derive(Clone, Debug, PartialEq)]
pub struct Breakdown {
    /// Point 1: the first claimed answer is the key.
    pub correct: bool,
    /// Point 2: the requested format (if any) is followed.
    pub format_ok: bool,
    /// Point 3: no rude word.
    pub polite: bool,
    /// Point 4a: conciseness in [0, 1] (1 = at most the ideal length plus the slack).
    pub concise: f64,
    /// Point 4b: closed with `<|end|>`.
    pub ended: bool,
    /// The weighted score in [0, 1].
    pub total: f64,
}

/// Judges `text` (the answer without chat tokens; `ended` = it closed with `<|end|>`) as an
/// answer to `record`, point by point.
pub fn judge(record: &PromptRecord, text: &str, ended: bool) -> Breakdown {
    let correct = extract(&record.task, text).is_some_and(|a| a == record.task.key());
    let format_ok = follows_format(&record.task, text);
    let polite = !is_rude(text);
    let len = text.trim().chars().count();
    let budget = record.ideal.chars().count() + CONCISE_SLACK;
    let concise = if len <= budget {
        1.0
    } else {
        budget as f64 / len as f64
    };
    let raw = W_CORRECT * f(correct)
        + W_FORMAT * f(format_ok)
        + W_POLITE * f(polite)
        + W_ENDED * f(ended)
        + W_CONCISE * concise;
    Breakdown {
        correct,
        format_ok,
        polite,
        concise,
        ended,
        total: raw / W_TOTAL,
    }
}

fn f(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

/// The rubric score of an answer, in [0, 1] (for evaluation only). See the module doc.
pub fn score(record: &PromptRecord, text: &str, ended: bool) -> f64 {
    judge(record, text, ended).total
}

/// True when `text` contains a rude word or phrase of [`RUDE_WORDS`] as whole words.
pub fn is_rude(text: &str) -> bool {
    let words: Vec<String> = tokens(text)
        .iter()
        .map(|&(s, e)| text[s..e].to_ascii_lowercase())
        .collect();
    RUDE_WORDS.iter().any(|phrase| {
        let p: Vec<&str> = phrase.split(' ').collect();
        words
            .windows(p.len())
            .any(|w| w.iter().zip(&p).all(|(a, b)| a == b))
    })
}

/// The fraction of answers that are rude ([`is_rude`]); 0 for no answers.
pub fn rude_rate<S: AsRef<str>>(answers: &[S]) -> f64 {
    if answers.is_empty() {
        return 0.0;
    }
    let rude = answers.iter().filter(|a| is_rude(a.as_ref())).count();
    rude as f64 / answers.len() as f64
}

/// Byte ranges of the ASCII alphanumeric runs of `text` (its words and numbers).
fn tokens(text: &str) -> Vec<(usize, usize)> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_alphanumeric() {
            let s = i;
            while i < b.len() && b[i].is_ascii_alphanumeric() {
                i += 1;
            }
            out.push((s, i));
        } else {
            i += 1;
        }
    }
    out
}

const NUMBER_WORDS: [&str; 21] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
];

/// A number in the text: its byte range and value.
#[derive(Clone, Copy, Debug)]
struct Num {
    start: usize,
    end: usize,
    value: u64,
}

/// The numbers of `text`, in order: digit runs (too long ones read as `u64::MAX`) and the
/// number words `zero`..`twenty`.
fn numbers(text: &str) -> Vec<Num> {
    tokens(text)
        .into_iter()
        .filter_map(|(start, end)| {
            let t = &text[start..end];
            let value = if t.bytes().all(|c| c.is_ascii_digit()) {
                t.parse().unwrap_or(u64::MAX)
            } else {
                let lower = t.to_ascii_lowercase();
                NUMBER_WORDS.iter().position(|w| *w == lower)? as u64
            };
            Some(Num { start, end, value })
        })
        .collect()
}

/// Runs of numbers separated only by commas, spaces or `and`.
fn number_runs(text: &str) -> Vec<Vec<u64>> {
    let mut runs: Vec<Vec<u64>> = Vec::new();
    let mut prev: Option<Num> = None;
    for n in numbers(text) {
        let joined = prev.is_some_and(|p| {
            let gap = text[p.end..n.start].replace(',', " ");
            let gap = gap.trim();
            gap.is_empty() || gap.eq_ignore_ascii_case("and")
        });
        match runs.last_mut() {
            Some(run) if joined => run.push(n.value),
            _ => runs.push(vec![n.value]),
        }
        prev = Some(n);
    }
    runs
}

fn join(ns: &[u64]) -> String {
    ns.iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The first claimed answer of `text` to `task`, normalised like [`Task::key`]
/// (rubric point 1 describes the rule for each kind); `None` when there is none.
pub fn extract(task: &Task, text: &str) -> Option<String> {
    match task {
        Task::Arithmetic { a, op, b } => {
            let ns = numbers(text);
            let echo = ns.len() >= 2 && ns[0].value == *a as u64 && ns[1].value == *b as u64 && {
                let gap = text[ns[0].end..ns[1].start].trim().to_ascii_lowercase();
                let symbol = match op {
                    Op::Plus => "+",
                    Op::Minus => "-",
                };
                gap == op.word() || gap == symbol
            };
            let skip = if echo { 2 } else { 0 };
            ns.get(skip).map(|n| n.value.to_string())
        }
        Task::Count { .. } => numbers(text).first().map(|n| n.value.to_string()),
        Task::Sort { numbers: asked } => {
            let asked: Vec<u64> = asked.iter().map(|&n| n as u64).collect();
            number_runs(text)
                .into_iter()
                .find(|r| *r != asked)
                .map(|r| join(&r))
        }
        Task::Reverse { word } => {
            let mut letters: Vec<u8> = word.bytes().collect();
            letters.sort_unstable();
            tokens(text)
                .into_iter()
                .map(|(s, e)| text[s..e].to_ascii_lowercase())
                .find(|t| {
                    let mut l: Vec<u8> = t.bytes().collect();
                    l.sort_unstable();
                    t != word && l == letters
                })
        }
        Task::Spell { .. } => spelled_run(text),
        Task::Fact { attr, .. } | Task::Format { attr, .. } => first_value(*attr, text),
    }
}

/// The first run of two or more single letters separated only by `-` or spaces, as `f-o-x`.
fn spelled_run(text: &str) -> Option<String> {
    let mut run: Vec<(usize, usize)> = Vec::new();
    for (s, e) in tokens(text) {
        let single = e - s == 1 && text.as_bytes()[s].is_ascii_alphabetic();
        let joined = run
            .last()
            .is_some_and(|&(_, pe)| text[pe..s].chars().all(|c| c == '-' || c == ' '));
        if single && (run.is_empty() || joined) {
            run.push((s, e));
            continue;
        }
        if run.len() >= 2 {
            break;
        }
        run.clear();
        if single {
            run.push((s, e));
        }
    }
    (run.len() >= 2).then(|| {
        run.iter()
            .map(|&(s, e)| text[s..e].to_ascii_lowercase())
            .collect::<Vec<_>>()
            .join("-")
    })
}

/// The first word of `text` that is one of the attribute's values.
fn first_value(attr: Attr, text: &str) -> Option<String> {
    tokens(text)
        .into_iter()
        .map(|(s, e)| text[s..e].to_ascii_lowercase())
        .find(|t| attr.values().contains(&t.as_str()))
}

/// Rubric point 2: whether `text` follows the format the task requests (always true when it
/// requests none).
pub fn follows_format(task: &Task, text: &str) -> bool {
    match task {
        Task::Format {
            style: Style::Capitals,
            ..
        } => text.chars().any(|c| c.is_alphabetic()) && !text.chars().any(|c| c.is_lowercase()),
        Task::Format {
            style: Style::OneWord,
            ..
        } => tokens(text).len() == 1,
        _ => true,
    }
}

/// A wrong agreement target for a [`Labeler`].
#[derive(Debug, thiserror::Error)]
#[error("labeler agreement must be in (0.5, 1], got {0}")]
pub struct AgreementError(pub f64);

/// A simulated labeler that ranks answers by the rubric, with disagreement noise.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Labeler {
    /// The fraction of pairs (with different scores) on which two independent labelers of
    /// this kind agree; 1 = noiseless.
    pub agreement: f64,
}

impl Labeler {
    /// A labeler whose noise gives pairwise agreement `agreement` in (0.5, 1] between two
    /// independent labelers.
    pub fn new(agreement: f64) -> Result<Labeler, AgreementError> {
        if agreement > 0.5 && agreement <= 1.0 {
            Ok(Labeler { agreement })
        } else {
            Err(AgreementError(agreement))
        }
    }

    /// A labeler that always ranks by the rubric score (exact ties in random order).
    pub fn noiseless() -> Labeler {
        Labeler { agreement: 1.0 }
    }

    /// A labeler as noisy as InstructGPT's ([`INSTRUCTGPT_AGREEMENT`]).
    pub fn instructgpt() -> Labeler {
        Labeler {
            agreement: INSTRUCTGPT_AGREEMENT,
        }
    }

    /// The noise σ (in rank places) used for rankings of `k` answers: the σ at which
    /// [`expected_agreement`]`(σ, k)` equals `self.agreement` (bisection).
    pub fn noise_std(&self, k: usize) -> f64 {
        if self.agreement >= 1.0 || k < 2 {
            return 0.0;
        }
        let (mut lo, mut hi) = (0.0, 1000.0);
        for _ in 0..100 {
            let mid = 0.5 * (lo + hi);
            if expected_agreement(mid, k) > self.agreement {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        0.5 * (lo + hi)
    }

    /// Ranks `answers` to `record`: indices into `answers`, best first (see the module doc).
    pub fn rank(&self, record: &PromptRecord, answers: &[Answer], rng: &mut Rng) -> Vec<usize> {
        let scores: Vec<f64> = answers
            .iter()
            .map(|a| score(record, &a.text, a.ended))
            .collect();
        let places = mean_places(&scores);
        let sigma = self.noise_std(answers.len());
        let mut keyed: Vec<(f64, f64, usize)> = places
            .iter()
            .enumerate()
            .map(|(i, &p)| (p + sigma * rng.normal(), rng.uniform(), i))
            .collect();
        keyed.sort_by(|x, y| x.0.total_cmp(&y.0).then(x.1.total_cmp(&y.1)));
        keyed.into_iter().map(|(_, _, i)| i).collect()
    }

    /// Ranks completions of `chat_prompt(record.prompt)` (each parsed with
    /// [`parse_completion`]) into a [`Ranking`] record; pairs with exactly equal rubric scores
    /// are listed in its `ties`.
    pub fn ranking(
        &self,
        record: &PromptRecord,
        completions: Vec<String>,
        rng: &mut Rng,
    ) -> Ranking {
        let answers: Vec<Answer> = completions.iter().map(|c| parse_completion(c)).collect();
        let scores: Vec<f64> = answers
            .iter()
            .map(|a| score(record, &a.text, a.ended))
            .collect();
        let mut ties = Vec::new();
        for i in 0..scores.len() {
            for j in i + 1..scores.len() {
                if scores[i] == scores[j] {
                    ties.push([i, j]);
                }
            }
        }
        Ranking {
            prompt: record.prompt.clone(),
            ranking: self.rank(record, &answers, rng),
            responses: completions,
            ties,
        }
    }
}

/// Each score's place in the best-first order (0 = best); equal scores share their mean place.
fn mean_places(scores: &[f64]) -> Vec<f64> {
    scores
        .iter()
        .map(|&s| {
            let better = scores.iter().filter(|&&t| t > s).count();
            let equal = scores.iter().filter(|&&t| t == s).count();
            better as f64 + (equal as f64 - 1.0) / 2.0
        })
        .collect()
}

/// Standard normal CDF (Abramowitz & Stegun 7.1.26 erf, error < 1.5e-7).
fn normal_cdf(x: f64) -> f64 {
    let z = x.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * z);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-z * z).exp();
    if x >= 0.0 {
        0.5 * (1.0 + erf)
    } else {
        0.5 * (1.0 - erf)
    }
}

/// The expected fraction of pairs on which two independent labelers with noise `sigma` agree
/// when ranking `k` answers with distinct scores. A pair `d` places apart is flipped by one
/// labeler with probability `p = Φ(−d / (σ√2))`; two labelers agree on it with probability
/// `p² + (1−p)²`; `k − d` pairs are `d` apart.
pub fn expected_agreement(sigma: f64, k: usize) -> f64 {
    if sigma == 0.0 {
        return 1.0;
    }
    let (mut num, mut den) = (0.0, 0.0);
    for d in 1..k {
        let p = normal_cdf(-(d as f64) / (sigma * std::f64::consts::SQRT_2));
        let w = (k - d) as f64;
        num += w * (p * p + (1.0 - p) * (1.0 - p));
        den += w;
    }
    num / den
}

/// The fraction of pairs `(i, j)` that two best-first rankings of the same answers order the
/// same way (1 for fewer than two answers).
pub fn pairwise_agreement(a: &[usize], b: &[usize]) -> f64 {
    let pos = |r: &[usize]| {
        let mut p = vec![0; r.len()];
        for (place, &i) in r.iter().enumerate() {
            p[i] = place;
        }
        p
    };
    let (pa, pb) = (pos(a), pos(b));
    let (mut same, mut total) = (0, 0);
    for i in 0..pa.len() {
        for j in i + 1..pa.len() {
            total += 1;
            if (pa[i] < pa[j]) == (pb[i] < pb[j]) {
                same += 1;
            }
        }
    }
    if total == 0 {
        1.0
    } else {
        same as f64 / total as f64
    }
}
