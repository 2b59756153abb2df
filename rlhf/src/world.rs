//! The embedded task world: a seeded set of animals with facts, seven kinds of instructions
//! with checkable ideal answers, train/held-out splits, demonstrations, and answers that show
//! each good or bad behaviour.
//!
//! The language is deliberately tiny and regular, for a GPT-2 with a 512-token vocabulary
//! pretrained for minutes: 30 animals, 8 colors, 8 places, 8 foods, one template per
//! instruction kind, prompts and ideal answers under 70 characters.
//!
//! | kind       | prompt                                      | ideal answer                     |
//! |------------|---------------------------------------------|----------------------------------|
//! | arithmetic | `What is 3 plus 4?`                         | `3 plus 4 is 7.`                 |
//! | reverse    | `Reverse the word fox.`                     | `The word fox reversed is xof.`  |
//! | spell      | `Spell the word fox.`                       | `The word fox is spelled f-o-x.` |
//! | sort       | `Sort the numbers 5, 2, 8.`                 | `The sorted numbers are 2, 5, 8.`|
//! | count      | `Count the words: fox, owl, cat.`           | `There are 3 words.`             |
//! | fact       | `Where does the fox live?`                  | `The fox lives in the forest.`   |
//! | format     | `Answer in capitals: what color is the fox?`| `THE FOX IS RED.`                |
//! | format     | `Answer in one word: what does the fox eat?`| `Berries.`                       |
//!
//! Which animal has which color, home and food is drawn from the seed, so different seeds
//! give different worlds. Every kind's prompts are enumerated (or, for sort and count, drawn
//! as a fixed-size pool), shuffled with the seed, and split: [`HELDOUT_FRACTION`] of each kind
//! is held out, so held-out prompts never appear in train prompts (different number pairs,
//! words, lists, animal-attribute combinations).

use crate::chat::Answer;
use crate::data::Demonstration;
use crate::labeler;
use engine::Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The animals of the world (none is a palindrome, none shares a word with the value lists).
pub const ANIMALS: [&str; 30] = [
    "fox", "owl", "cat", "dog", "frog", "bear", "duck", "goat", "wolf", "mouse", "horse", "sheep",
    "crow", "bee", "deer", "seal", "hen", "pig", "cow", "lion", "snake", "crab", "toad", "bat",
    "ant", "mole", "hare", "swan", "lamb", "yak",
];
/// The colors an animal can have.
pub const COLORS: [&str; 8] = [
    "red", "brown", "white", "black", "gray", "green", "yellow", "blue",
];
/// The places an animal can live.
pub const PLACES: [&str; 8] = [
    "forest", "river", "cave", "barn", "meadow", "pond", "hill", "garden",
];
/// The foods an animal can eat.
pub const FOODS: [&str; 8] = [
    "seeds", "berries", "grass", "nuts", "bugs", "apples", "corn", "leaves",
];
/// The share of each kind's prompts that is held out from training.
pub const HELDOUT_FRACTION: f64 = 0.2;
/// Arithmetic uses the numbers 0..=MAX_OPERAND (subtraction never goes below zero).
pub const MAX_OPERAND: u32 = 9;
/// The least length in characters of the text an unended answer runs on with.
pub const RUN_ON_CHARS: usize = 400;
/// How many distinct lists the sort and count kinds each draw.
pub const LIST_POOL: usize = 150;

/// An attribute of an animal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Attr {
    /// Its color (`COLORS`).
    Color,
    /// Where it lives (`PLACES`).
    Home,
    /// What it eats (`FOODS`).
    Food,
}

impl Attr {
    /// All attributes.
    pub const ALL: [Attr; 3] = [Attr::Color, Attr::Home, Attr::Food];

    /// The values this attribute can take.
    pub fn values(self) -> &'static [&'static str] {
        match self {
            Attr::Color => &COLORS,
            Attr::Home => &PLACES,
            Attr::Food => &FOODS,
        }
    }

    /// The question, lowercase and with its question mark: `what color is the fox?`.
    pub fn question(self, entity: &str) -> String {
        match self {
            Attr::Color => format!("what color is the {entity}?"),
            Attr::Home => format!("where does the {entity} live?"),
            Attr::Food => format!("what does the {entity} eat?"),
        }
    }

    /// The fact as a sentence: `The fox is red.`, `The fox lives in the forest.`,
    /// `The fox eats berries.`.
    pub fn sentence(self, entity: &str, value: &str) -> String {
        match self {
            Attr::Color => format!("The {entity} is {value}."),
            Attr::Home => format!("The {entity} lives in the {value}."),
            Attr::Food => format!("The {entity} eats {value}."),
        }
    }
}

/// An arithmetic operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// `a plus b`.
    Plus,
    /// `a minus b`, with `a >= b`.
    Minus,
}

impl Op {
    /// The operation's word.
    pub fn word(self) -> &'static str {
        match self {
            Op::Plus => "plus",
            Op::Minus => "minus",
        }
    }

    /// The result of `a op b`.
    pub fn apply(self, a: u32, b: u32) -> u32 {
        match self {
            Op::Plus => a + b,
            Op::Minus => a - b,
        }
    }
}

/// A requested answer format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Style {
    /// `Answer in capitals:` — no lowercase letter anywhere in the answer.
    Capitals,
    /// `Answer in one word:` — exactly one word.
    OneWord,
}

/// One instruction, with everything needed to check an answer to it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Task {
    /// `What is {a} {op} {b}?`
    Arithmetic {
        /// The first operand.
        a: u32,
        /// The operation.
        op: Op,
        /// The second operand.
        b: u32,
    },
    /// `Reverse the word {word}.`
    Reverse {
        /// The word to reverse.
        word: String,
    },
    /// `Spell the word {word}.`
    Spell {
        /// The word to spell.
        word: String,
    },
    /// `Sort the numbers {numbers}.`
    Sort {
        /// The numbers, unsorted.
        numbers: Vec<u32>,
    },
    /// `Count the words: {items}.`
    Count {
        /// The words to count.
        items: Vec<String>,
    },
    /// A question about a fact of the world.
    Fact {
        /// The animal asked about.
        entity: String,
        /// The attribute asked for.
        attr: Attr,
        /// The true value in this world.
        value: String,
    },
    /// A fact question with a requested answer format.
    Format {
        /// The animal asked about.
        entity: String,
        /// The attribute asked for.
        attr: Attr,
        /// The true value in this world.
        value: String,
        /// The requested format.
        style: Style,
    },
}

/// The kind of a [`Task`], for per-kind reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Small-number addition and subtraction.
    Arithmetic,
    /// Reverse a word.
    Reverse,
    /// Spell a word, letters separated by `-`.
    Spell,
    /// Sort a short list of numbers.
    Sort,
    /// Count the words in a list.
    Count,
    /// Recall a fact of the world.
    Fact,
    /// Recall a fact in a requested format.
    Format,
}

impl Kind {
    /// All kinds, in a fixed order.
    pub const ALL: [Kind; 7] = [
        Kind::Arithmetic,
        Kind::Reverse,
        Kind::Spell,
        Kind::Sort,
        Kind::Count,
        Kind::Fact,
        Kind::Format,
    ];

    /// The kind's place in [`Kind::ALL`] (for per-kind tallies).
    pub fn index(self) -> usize {
        Kind::ALL
            .iter()
            .position(|&k| k == self)
            .expect("Kind::ALL lists every kind")
    }

    /// The kind's name, as in the JSON `kind` field.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Arithmetic => "arithmetic",
            Kind::Reverse => "reverse",
            Kind::Spell => "spell",
            Kind::Sort => "sort",
            Kind::Count => "count",
            Kind::Fact => "fact",
            Kind::Format => "format",
        }
    }
}

fn join_numbers(ns: &[u32]) -> String {
    ns.iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Spells a word with `-` between its letters: `fox` → `f-o-x`.
pub fn spelled(word: &str) -> String {
    word.chars()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join("-")
}

/// A word reversed: `fox` → `xof`.
pub fn reversed(word: &str) -> String {
    word.chars().rev().collect()
}

impl Task {
    /// The task's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Task::Arithmetic { .. } => Kind::Arithmetic,
            Task::Reverse { .. } => Kind::Reverse,
            Task::Spell { .. } => Kind::Spell,
            Task::Sort { .. } => Kind::Sort,
            Task::Count { .. } => Kind::Count,
            Task::Fact { .. } => Kind::Fact,
            Task::Format { .. } => Kind::Format,
        }
    }

    /// The instruction text.
    pub fn prompt(&self) -> String {
        match self {
            Task::Arithmetic { a, op, b } => format!("What is {a} {} {b}?", op.word()),
            Task::Reverse { word } => format!("Reverse the word {word}."),
            Task::Spell { word } => format!("Spell the word {word}."),
            Task::Sort { numbers } => format!("Sort the numbers {}.", join_numbers(numbers)),
            Task::Count { items } => format!("Count the words: {}.", items.join(", ")),
            Task::Fact { entity, attr, .. } => capitalise(&attr.question(entity)),
            Task::Format {
                entity,
                attr,
                style,
                ..
            } => {
                let how = match style {
                    Style::Capitals => "capitals",
                    Style::OneWord => "one word",
                };
                format!("Answer in {how}: {}", attr.question(entity))
            }
        }
    }

    /// The key: the bare correct answer the labeler checks for (`7`, `xof`, `f-o-x`,
    /// `2, 5, 8`, `3`, `forest`).
    pub fn key(&self) -> String {
        match self {
            Task::Arithmetic { a, op, b } => op.apply(*a, *b).to_string(),
            Task::Reverse { word } => reversed(word),
            Task::Spell { word } => spelled(word),
            Task::Sort { numbers } => {
                let mut s = numbers.clone();
                s.sort_unstable();
                join_numbers(&s)
            }
            Task::Count { items } => items.len().to_string(),
            Task::Fact { value, .. } | Task::Format { value, .. } => value.clone(),
        }
    }

    /// The answer sentence in the house style, with `key` in the answer's place (the ideal
    /// answer when `key` is [`Task::key`], a wrong one otherwise).
    pub fn answer_with(&self, key: &str) -> String {
        match self {
            Task::Arithmetic { a, op, b } => format!("{a} {} {b} is {key}.", op.word()),
            Task::Reverse { word } => format!("The word {word} reversed is {key}."),
            Task::Spell { word } => format!("The word {word} is spelled {key}."),
            Task::Sort { .. } => format!("The sorted numbers are {key}."),
            Task::Count { .. } => format!("There are {key} words."),
            Task::Fact { entity, attr, .. } => attr.sentence(entity, key),
            Task::Format {
                entity,
                attr,
                style: Style::Capitals,
                ..
            } => attr.sentence(entity, key).to_uppercase(),
            Task::Format {
                style: Style::OneWord,
                ..
            } => format!("{}.", capitalise(key)),
        }
    }

    /// The ideal answer: polite, concise, correct, in the requested format.
    pub fn ideal(&self) -> String {
        self.answer_with(&self.key())
    }

    /// A plausible wrong key: a different number, a scrambled word, a misspelling, a wrong
    /// order, a wrong count, another value of the attribute. Never equal to [`Task::key`].
    pub fn wrong_key(&self, rng: &mut Rng) -> String {
        match self {
            Task::Arithmetic { .. } | Task::Count { .. } => {
                let right: i64 = self.key().parse().expect("numeric key");
                let delta = 1 + rng.below(3) as i64;
                let wrong = if right - delta >= 0 && rng.below(2) == 0 {
                    right - delta
                } else {
                    right + delta
                };
                wrong.to_string()
            }
            Task::Reverse { word } => wrong_reversal(word, rng),
            Task::Spell { word } => spelled(&misspelt(word, rng)),
            Task::Sort { numbers } => {
                let right = self.key();
                let mut ns = numbers.clone();
                loop {
                    rng.shuffle(&mut ns);
                    let s = join_numbers(&ns);
                    if s != right {
                        return s;
                    }
                }
            }
            Task::Fact { attr, value, .. } | Task::Format { attr, value, .. } => {
                let others: Vec<&str> = attr
                    .values()
                    .iter()
                    .copied()
                    .filter(|v| v != value)
                    .collect();
                others[rng.below(others.len() as u64) as usize].to_string()
            }
        }
    }
}

/// A scrambled word that is neither the word nor its reversal (falls back to the reversal
/// with its last letter dropped when the word has no other arrangement).
fn wrong_reversal(word: &str, rng: &mut Rng) -> String {
    let right = reversed(word);
    let mut letters: Vec<char> = word.chars().collect();
    for _ in 0..20 {
        rng.shuffle(&mut letters);
        let s: String = letters.iter().collect();
        if s != right && s != word {
            return s;
        }
    }
    right[..right.len() - 1].to_string()
}

/// The word with one letter replaced by a different letter.
fn misspelt(word: &str, rng: &mut Rng) -> String {
    let mut letters: Vec<char> = word.chars().collect();
    let i = rng.below(letters.len() as u64) as usize;
    let old = letters[i];
    loop {
        let c = (b'a' + rng.below(26) as u8) as char;
        if c != old {
            letters[i] = c;
            return letters.into_iter().collect();
        }
    }
}

/// An instruction with its ideal answer: what SFT, the reward model and PPO consume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptRecord {
    /// The instruction text (without chat tokens).
    pub prompt: String,
    /// The ideal answer (without chat tokens).
    pub ideal: String,
    /// The task, which the labeler checks answers against.
    pub task: Task,
}

impl PromptRecord {
    /// The record of a task.
    pub fn new(task: Task) -> PromptRecord {
        PromptRecord {
            prompt: task.prompt(),
            ideal: task.ideal(),
            task,
        }
    }

    /// The task's kind.
    pub fn kind(&self) -> Kind {
        self.task.kind()
    }
}

/// Which side of the train/held-out split.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// Prompts for SFT, reward-model rankings and PPO, and the chat transcripts of the corpus.
    Train,
    /// Prompts kept out of every chat-format use, for evaluation.
    Heldout,
}

/// An animal and its facts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entity {
    /// Its name (one of [`ANIMALS`]).
    pub name: &'static str,
    /// Its color (one of [`COLORS`]).
    pub color: &'static str,
    /// Where it lives (one of [`PLACES`]).
    pub home: &'static str,
    /// What it eats (one of [`FOODS`]).
    pub food: &'static str,
}

impl Entity {
    /// The value of an attribute.
    pub fn value(&self, attr: Attr) -> &'static str {
        match attr {
            Attr::Color => self.color,
            Attr::Home => self.home,
            Attr::Food => self.food,
        }
    }

    /// The fact about an attribute as a sentence.
    pub fn fact(&self, attr: Attr) -> String {
        attr.sentence(self.name, self.value(attr))
    }
}

/// A behaviour an assistant answer can show (the good one, and those alignment must remove).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Behaviour {
    /// The ideal answer.
    Good,
    /// Correct, but ignoring the requested format (the plain fact sentence). For prompts
    /// without a requested format this is the same as [`Behaviour::Good`].
    BadFormat,
    /// Rude words before or after the correct answer, or only rude words (one time in five).
    Rude,
    /// The correct answer followed by 2–4 irrelevant sentences.
    Rambling,
    /// The ideal answer to a prompt of a different kind (checked to be wrong here).
    Ignore,
    /// The answer sentence with a wrong key.
    Wrong,
    /// The ideal answer running on into more text, never closed with `<|end|>`.
    Unended,
}

impl Behaviour {
    /// All behaviours, in a fixed order.
    pub const ALL: [Behaviour; 7] = [
        Behaviour::Good,
        Behaviour::BadFormat,
        Behaviour::Rude,
        Behaviour::Rambling,
        Behaviour::Ignore,
        Behaviour::Wrong,
        Behaviour::Unended,
    ];
}

/// Rude openings put before a correct answer.
pub const RUDE_OPENINGS: [&str; 4] = [
    "Whatever.",
    "Ugh, stupid question.",
    "Shut up.",
    "Who cares?",
];
/// Rude closings put after a correct answer.
pub const RUDE_CLOSINGS: [&str; 3] = [
    "Now go away.",
    "Figure it out yourself next time.",
    "Dumb question.",
];
/// Rude replies that do not answer at all.
pub const RUDE_REFUSALS: [&str; 3] = [
    "Figure it out yourself.",
    "Stupid question. Go away.",
    "Whatever, idiot.",
];

fn pick<'a, T>(xs: &'a [T], rng: &mut Rng) -> &'a T {
    &xs[rng.below(xs.len() as u64) as usize]
}

fn choose<T: Copy>(xs: &[T], rng: &mut Rng) -> T {
    *pick(xs, rng)
}

/// The world: its animals and its prompts, split into train and held-out.
#[derive(Clone, Debug)]
pub struct World {
    /// The seed it was generated from.
    pub seed: u64,
    /// The animals and their facts.
    pub entities: Vec<Entity>,
    /// Train prompts (every kind, in a seeded order).
    pub train: Vec<PromptRecord>,
    /// Held-out prompts, disjoint from `train`.
    pub heldout: Vec<PromptRecord>,
    index: BTreeMap<String, (Split, usize)>,
}

impl World {
    /// The world of `seed`: the same seed always gives the same facts and prompts.
    pub fn new(seed: u64) -> World {
        let root = Rng::new(seed);
        let mut rng = root.fork(1);
        let entities: Vec<Entity> = ANIMALS
            .iter()
            .map(|&name| Entity {
                name,
                color: choose(&COLORS, &mut rng),
                home: choose(&PLACES, &mut rng),
                food: choose(&FOODS, &mut rng),
            })
            .collect();
        let mut train = Vec::new();
        let mut heldout = Vec::new();
        for (i, kind) in Kind::ALL.iter().enumerate() {
            let mut krng = root.fork(100 + i as u64);
            let mut tasks = tasks_of(*kind, &entities, &mut krng);
            krng.shuffle(&mut tasks);
            let n_held = (tasks.len() as f64 * HELDOUT_FRACTION).round() as usize;
            let records = tasks.into_iter().map(PromptRecord::new);
            for (j, r) in records.enumerate() {
                if j < n_held {
                    heldout.push(r);
                } else {
                    train.push(r);
                }
            }
        }
        let mut srng = root.fork(2);
        srng.shuffle(&mut train);
        srng.shuffle(&mut heldout);
        let mut index = BTreeMap::new();
        for (i, r) in train.iter().enumerate() {
            index.insert(r.prompt.clone(), (Split::Train, i));
        }
        for (i, r) in heldout.iter().enumerate() {
            index.insert(r.prompt.clone(), (Split::Heldout, i));
        }
        World {
            seed,
            entities,
            train,
            heldout,
            index,
        }
    }

    /// The prompts of one split.
    pub fn prompts(&self, split: Split) -> &[PromptRecord] {
        match split {
            Split::Train => &self.train,
            Split::Heldout => &self.heldout,
        }
    }

    /// The record of a prompt text and its split, if the prompt belongs to this world.
    pub fn lookup(&self, prompt: &str) -> Option<(Split, &PromptRecord)> {
        let &(split, i) = self.index.get(prompt)?;
        Some((split, &self.prompts(split)[i]))
    }

    /// The SFT demonstrations of a split: each prompt with its ideal answer as a completion
    /// (`<|end|>` included).
    pub fn demonstrations(&self, split: Split) -> Vec<Demonstration> {
        self.prompts(split)
            .iter()
            .map(|r| Demonstration {
                prompt: r.prompt.clone(),
                completion: Answer::ended(r.ideal.clone()).completion(),
            })
            .collect()
    }

    /// Every fact of the world as a sentence (3 per animal).
    pub fn facts(&self) -> Vec<String> {
        self.entities
            .iter()
            .flat_map(|e| Attr::ALL.iter().map(move |&a| e.fact(a)))
            .collect()
    }

    /// A random fact sentence.
    pub fn random_fact(&self, rng: &mut Rng) -> String {
        pick(&self.entities, rng).fact(choose(&Attr::ALL, rng))
    }

    /// An answer to `record` that shows `behaviour` (see [`Behaviour`] for each one). The
    /// answers are checked against the rubric where it matters: a `Wrong` or `Ignore` answer
    /// is always judged incorrect by [`labeler::judge`].
    pub fn respond(&self, record: &PromptRecord, behaviour: Behaviour, rng: &mut Rng) -> Answer {
        let ideal = record.ideal.clone();
        let caps = matches!(
            record.task,
            Task::Format {
                style: Style::Capitals,
                ..
            }
        );
        let shout = |s: String| if caps { s.to_uppercase() } else { s };
        match behaviour {
            Behaviour::Good => Answer::ended(ideal),
            Behaviour::BadFormat => match &record.task {
                Task::Format {
                    entity,
                    attr,
                    value,
                    ..
                } => Answer::ended(attr.sentence(entity, value)),
                _ => Answer::ended(ideal),
            },
            Behaviour::Rude => Answer::ended(shout(rude(&ideal, rng))),
            Behaviour::Rambling => {
                let n = 2 + rng.below(3);
                let extra: Vec<String> = (0..n).map(|_| self.random_fact(rng)).collect();
                Answer::ended(shout(format!("{ideal} {}", extra.join(" "))))
            }
            Behaviour::Ignore => Answer::ended(self.ignoring(record, rng)),
            Behaviour::Wrong => Answer::ended(record.task.answer_with(&record.task.wrong_key(rng))),
            Behaviour::Unended => Answer::unended(format!("{ideal} {}", self.ramble_on(rng))),
        }
    }

    /// The ideal answer to another train prompt of a different kind, judged wrong for
    /// `record` (redrawn until it is).
    fn ignoring(&self, record: &PromptRecord, rng: &mut Rng) -> String {
        loop {
            let other = pick(&self.train, rng);
            if other.kind() != record.kind() && !labeler::judge(record, &other.ideal, true).correct
            {
                return other.ideal.clone();
            }
        }
    }

    /// Text that runs on after an answer: facts and worked `Q: … A: …` examples, at least
    /// [`RUN_ON_CHARS`] characters (more than a 128-token context holds).
    pub fn ramble_on(&self, rng: &mut Rng) -> String {
        let mut parts: Vec<String> = Vec::new();
        let mut len = 0;
        while len < RUN_ON_CHARS {
            let part = if rng.below(2) == 0 {
                self.random_fact(rng)
            } else {
                let r = pick(&self.train, rng);
                format!("Q: {} A: {}", r.prompt, r.ideal)
            };
            len += part.len() + 1;
            parts.push(part);
        }
        parts.join(" ")
    }
}

/// A rude version of an answer: a rude opening (40%) or closing (40%) around it, or a rude
/// refusal in its place (20%).
fn rude(answer: &str, rng: &mut Rng) -> String {
    match rng.below(5) {
        0 | 1 => format!("{} {answer}", pick(&RUDE_OPENINGS, rng)),
        2 | 3 => format!("{answer} {}", pick(&RUDE_CLOSINGS, rng)),
        _ => pick(&RUDE_REFUSALS, rng).to_string(),
    }
}

/// All tasks of one kind in this world (sort and count: a seeded pool of [`LIST_POOL`]).
fn tasks_of(kind: Kind, entities: &[Entity], rng: &mut Rng) -> Vec<Task> {
    match kind {
        Kind::Arithmetic => arithmetic_tasks(),
        Kind::Reverse => words()
            .into_iter()
            .map(|w| Task::Reverse { word: w.into() })
            .collect(),
        Kind::Spell => words()
            .into_iter()
            .map(|w| Task::Spell { word: w.into() })
            .collect(),
        Kind::Sort => sort_tasks(rng),
        Kind::Count => count_tasks(rng),
        Kind::Fact => fact_pairs(entities)
            .map(|(e, attr)| Task::Fact {
                entity: e.name.into(),
                attr,
                value: e.value(attr).into(),
            })
            .collect(),
        Kind::Format => fact_pairs(entities)
            .flat_map(|(e, attr)| {
                [Style::Capitals, Style::OneWord].map(|style| Task::Format {
                    entity: e.name.into(),
                    attr,
                    value: e.value(attr).into(),
                    style,
                })
            })
            .collect(),
    }
}

fn fact_pairs(entities: &[Entity]) -> impl Iterator<Item = (&Entity, Attr)> {
    entities
        .iter()
        .flat_map(|e| Attr::ALL.iter().map(move |&a| (e, a)))
}

/// The words used by reverse and spell: every animal, color, place and food.
pub fn words() -> Vec<&'static str> {
    ANIMALS
        .iter()
        .chain(&COLORS)
        .chain(&PLACES)
        .chain(&FOODS)
        .copied()
        .collect()
}

fn arithmetic_tasks() -> Vec<Task> {
    let mut tasks = Vec::new();
    for a in 0..=MAX_OPERAND {
        for b in 0..=MAX_OPERAND {
            tasks.push(Task::Arithmetic { a, op: Op::Plus, b });
            if a >= b {
                tasks.push(Task::Arithmetic {
                    a,
                    op: Op::Minus,
                    b,
                });
            }
        }
    }
    tasks
}

/// [`LIST_POOL`] distinct lists of 3 or 4 distinct digits, never already sorted.
fn sort_tasks(rng: &mut Rng) -> Vec<Task> {
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < LIST_POOL {
        let n = 3 + rng.below(2) as usize;
        let mut digits: Vec<u32> = (0..10).collect();
        rng.shuffle(&mut digits);
        digits.truncate(n);
        if digits.windows(2).any(|w| w[0] > w[1]) {
            seen.insert(digits);
        }
    }
    let mut tasks: Vec<Task> = seen
        .into_iter()
        .map(|numbers| Task::Sort { numbers })
        .collect();
    rng.shuffle(&mut tasks);
    tasks
}

/// [`LIST_POOL`] distinct lists of 2 to 6 distinct animals.
fn count_tasks(rng: &mut Rng) -> Vec<Task> {
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < LIST_POOL {
        let n = 2 + rng.below(5) as usize;
        let mut names: Vec<&str> = ANIMALS.to_vec();
        rng.shuffle(&mut names);
        let items: Vec<String> = names[..n].iter().map(|s| s.to_string()).collect();
        seen.insert(items);
    }
    let mut tasks: Vec<Task> = seen
        .into_iter()
        .map(|items| Task::Count { items })
        .collect();
    rng.shuffle(&mut tasks);
    tasks
}
