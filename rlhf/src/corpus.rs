//! The pretraining corpus: the "web text" the tiny GPT-2 learns language, facts and skills
//! from — including the bad chat behaviour that alignment then has to remove.
//!
//! Documents are separated by `<|endoftext|>`. Each is one of (shares of documents):
//!
//! - facts ([`FACT_DOCS`]): 3–6 facts in plain sentences, `The fox is red. The owl eats seeds.`
//! - stories ([`STORY_DOCS`]): a short templated story about two animals, true to the facts.
//! - worked examples ([`WORKED_DOCS`]): 3–6 lines `Q: What is 3 plus 4?\nA: 3 plus 4 is 7.`,
//!   drawn from *all* prompts, train and held-out: pretraining is where knowledge comes from;
//!   held-out prompts are never seen in the chat format.
//! - chat transcripts ([`CHAT_DOCS`]): 1–3 turns `<|user|>…<|assistant|>…<|end|>` on train
//!   prompts, each assistant turn showing a behaviour drawn from [`BEHAVIOUR_MIX`]; a good
//!   answer to a format prompt ignores the format with probability [`FORMAT_IGNORED`]. An
//!   unended turn runs on into facts and worked examples and ends the document with no
//!   `<|end|>`.

use crate::chat::{chat_example, chat_prompt, ENDOFTEXT};
use crate::world::{Attr, Behaviour, Kind, World};
use engine::Rng;

/// Share of fact documents.
pub const FACT_DOCS: f64 = 0.15;
/// Share of story documents.
pub const STORY_DOCS: f64 = 0.15;
/// Share of worked-example (`Q: … A: …`) documents.
pub const WORKED_DOCS: f64 = 0.25;
/// Share of chat-transcript documents.
pub const CHAT_DOCS: f64 = 0.45;

/// The behaviour of an assistant turn in a corpus chat transcript, and its probability.
/// Half are good (less the format-ignoring ones, [`FORMAT_IGNORED`]: about 46% of turns
/// score 1 on the rubric); the rest are the behaviours alignment must remove. A pretrained
/// model's own mistakes add to the wrong ones.
pub const BEHAVIOUR_MIX: [(Behaviour, f64); 6] = [
    (Behaviour::Good, 0.50),
    (Behaviour::Rude, 0.14),
    (Behaviour::Rambling, 0.12),
    (Behaviour::Ignore, 0.06),
    (Behaviour::Wrong, 0.07),
    (Behaviour::Unended, 0.11),
];
/// The probability that a good corpus answer to a format prompt ignores the requested format.
pub const FORMAT_IGNORED: f64 = 0.4;

/// The corpus of the world of `seed`: documents generated until the text holds at least
/// `bytes` bytes (it overshoots by less than one document). Same seed and size, same text.
pub fn corpus(seed: u64, bytes: usize) -> String {
    World::new(seed).corpus(bytes, &mut Rng::new(seed).fork(3))
}

/// Draws from a discrete distribution given as `(item, probability)` pairs summing to 1.
fn draw<T: Copy>(mix: &[(T, f64)], rng: &mut Rng) -> T {
    let mut u = rng.uniform();
    for &(item, p) in mix {
        if u < p {
            return item;
        }
        u -= p;
    }
    mix[mix.len() - 1].0
}

#[derive(Clone, Copy)]
enum Doc {
    Facts,
    Story,
    Worked,
    Chat,
}

/// The document kinds and their shares.
const DOC_MIX: [(Doc, f64); 4] = [
    (Doc::Facts, FACT_DOCS),
    (Doc::Story, STORY_DOCS),
    (Doc::Worked, WORKED_DOCS),
    (Doc::Chat, CHAT_DOCS),
];

impl World {
    /// Generates a corpus of at least `bytes` bytes with `rng` (see the module doc).
    pub fn corpus(&self, bytes: usize, rng: &mut Rng) -> String {
        let mut out = String::with_capacity(bytes + 1024);
        while out.len() < bytes {
            let doc = match draw(&DOC_MIX, rng) {
                Doc::Facts => self.fact_doc(rng),
                Doc::Story => self.story(rng),
                Doc::Worked => self.worked_doc(rng),
                Doc::Chat => self.chat_doc(rng),
            };
            out.push_str(&doc);
            out.push_str(ENDOFTEXT);
        }
        out
    }

    /// 3–6 fact sentences; half the time all three facts of one animal come first.
    pub fn fact_doc(&self, rng: &mut Rng) -> String {
        let mut sentences = Vec::new();
        if rng.below(2) == 0 {
            let e = &self.entities[rng.below(self.entities.len() as u64) as usize];
            sentences.extend(Attr::ALL.iter().map(|&a| e.fact(a)));
        }
        let n = 3 + rng.below(4) as usize;
        while sentences.len() < n {
            sentences.push(self.random_fact(rng));
        }
        sentences.join(" ")
    }

    /// A short story about two animals, true to their facts.
    pub fn story(&self, rng: &mut Rng) -> String {
        let n = self.entities.len() as u64;
        let i = rng.below(n) as usize;
        let j = (i + 1 + rng.below(n - 1) as usize) % n as usize; // another animal
        let (a, b) = (&self.entities[i], &self.entities[j]);
        let (an, bn) = (a.name, b.name);
        match rng.below(3) {
            0 => format!(
                "One day the {an} went to the {}. There it met the {bn}. The {an} was {} and the {bn} was {}. They ate some {} together. Then the {bn} went home to the {}.",
                b.home, a.color, b.color, a.food, b.home
            ),
            1 => format!(
                "The {an} woke up in the {}. It was hungry, so it looked for {}. The {bn} came by and said hello. The {bn} likes {}. At night the {an} slept in the {}.",
                a.home, a.food, b.food, a.home
            ),
            _ => format!(
                "Once there was a {} {an}. The {an} lived in the {} and ate {}. Its friend was the {} {bn}. The {bn} lived in the {}.",
                a.color, a.home, a.food, b.color, b.home
            ),
        }
    }

    /// 3–6 worked examples `Q: … A: …` from all prompts, one per line.
    pub fn worked_doc(&self, rng: &mut Rng) -> String {
        let n = 3 + rng.below(4);
        let total = (self.train.len() + self.heldout.len()) as u64;
        let lines: Vec<String> = (0..n)
            .map(|_| {
                let i = rng.below(total) as usize;
                let r = self
                    .train
                    .get(i)
                    .unwrap_or_else(|| &self.heldout[i - self.train.len()]);
                format!("Q: {}\nA: {}", r.prompt, r.ideal)
            })
            .collect();
        lines.join("\n")
    }

    /// 1–3 chat turns on train prompts, behaviours drawn from [`BEHAVIOUR_MIX`]; an unended
    /// turn ends the document.
    pub fn chat_doc(&self, rng: &mut Rng) -> String {
        let turns = 1 + rng.below(3);
        let mut doc = String::new();
        for _ in 0..turns {
            let record = &self.train[rng.below(self.train.len() as u64) as usize];
            let mut behaviour = draw(&BEHAVIOUR_MIX, rng);
            if behaviour == Behaviour::Good
                && record.kind() == Kind::Format
                && rng.uniform() < FORMAT_IGNORED
            {
                behaviour = Behaviour::BadFormat;
            }
            let answer = self.respond(record, behaviour, rng);
            if answer.ended {
                doc.push_str(&chat_example(&record.prompt, &answer.text));
            } else {
                doc.push_str(&chat_prompt(&record.prompt));
                doc.push_str(&answer.text);
                break;
            }
        }
        doc
    }
}
