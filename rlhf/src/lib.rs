//! ferrochat's RLHF crate. So far: the embedded task world every stage trains and is judged on.
//!
//! - [`chat`]: the chat format (`<|user|>` prompt `<|assistant|>` answer `<|end|>`), in one place.
//! - [`world`]: a seeded world of animals and their facts, seven kinds of instructions with
//!   checkable ideal answers, train/held-out prompt splits, demonstrations, and answers that
//!   show each good or bad behaviour.
//! - [`corpus`](mod@corpus): the pretraining corpus (facts, stories, worked examples, chat transcripts with
//!   a documented mix of good and bad assistant behaviour).
//! - [`labeler`]: the simulated labeler: a written lexicographic rubric, a score for evaluation,
//!   and noisy K-way rankings calibrated to InstructGPT's inter-labeler agreement.
//! - [`sft`]: supervised fine-tuning on demonstrations, the prompt masked.
//! - [`data`]: the JSONL records (demonstrations, rankings, pairs), their readers and
//!   append-only writers.
//! - [`plot`]: line and bar charts as PNG, text in an embedded font (no system fonts needed).
//! - [`report`]: metrics JSONL into series, and the run's `report.md`.

pub mod chat;
pub mod corpus;
pub mod data;
pub mod labeler;
pub mod plot;
pub mod report;
pub mod sft;
pub mod world;

pub use chat::{chat_example, chat_prompt, parse_completion, Answer};
pub use corpus::corpus;
pub use data::{Demonstration, Pair, Ranking};
pub use labeler::{is_rude, rude_rate, score, Breakdown, Labeler};
pub use world::{Behaviour, Kind, PromptRecord, Split, Task, World};
