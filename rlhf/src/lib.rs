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
//! - [`pipeline`]: every stage of the recipe in order, on the embedded world, with the
//!   numbers that show each worked.
//! - [`policy`]: sampling answers from a model in the chat format, and judging a policy
//!   (held-out rubric score, rude-word rate, win rate).
//! - [`sft`]: supervised fine-tuning on demonstrations, the prompt masked.
//! - [`data`]: the JSONL records (demonstrations, rankings, pairs), their readers and
//!   append-only writers.
//! - [`ppo`]: PPO with a KL penalty to the SFT policy (InstructGPT step 3), its value model,
//!   KL controllers and PPO-ptx.
//! - [`cuda_ppo`] (feature `cuda`): the same PPO iteration with the policy and value updates on
//!   one GPU (the clipped surrogate as a weighted cross-entropy backward).
//! - [`logprobs`]: log-probabilities of completions under a policy (prompt masked), shared by
//!   DPO and PPO.
//! - [`reward`]: the reward model (scalar head at the last token), the InstructGPT eq. 1
//!   ranking loss, its training, held-out pairwise accuracy, and normalisation.
//! - [`dpo`]: Direct Preference Optimization, the comparison baseline.
//! - [`plot`]: line and bar charts as PNG, text in an embedded font (no system fonts needed).
//! - [`report`]: metrics JSONL into series, and the run's `report.md`.

pub mod chat;
pub mod corpus;
#[cfg(feature = "cuda")]
pub mod cuda_ppo;
pub mod data;
pub mod dpo;
pub mod labeler;
pub mod logprobs;
pub mod pipeline;
pub mod plot;
pub mod policy;
pub mod ppo;
pub mod report;
pub mod reward;
pub mod sft;
pub mod world;

pub use chat::{chat_example, chat_prompt, parse_completion, Answer};
pub use corpus::corpus;
pub use data::{Demonstration, Pair, Ranking};
pub use labeler::{is_rude, rude_rate, score, Breakdown, Labeler};
pub use world::{Behaviour, Kind, PromptRecord, Split, Task, World};
