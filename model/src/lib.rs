//! ferrochat's model crate.
//!
//! It holds what turns text into a GPT-2 model's inputs and back: for now the byte-level
//! BPE [`tokenizer`] (train, save/load in GPT-2's `vocab.json` + `merges.txt` format,
//! encode/decode). The GPT-2 architecture, KV-cache inference and checkpoints will build on
//! the `engine` crate here.

pub mod tokenizer;
