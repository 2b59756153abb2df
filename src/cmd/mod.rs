//! The subcommands.

pub mod chat;
pub mod eval;
pub mod gradcheck;
pub mod grads;
pub mod judge;
pub mod kernels;
pub mod label;
pub mod pretrain;
pub mod sample;
pub mod sft;
pub mod tokenizer;
pub mod world;
