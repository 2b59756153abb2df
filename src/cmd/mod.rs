//! The subcommands.

pub mod eval;
pub mod gradcheck;
pub mod grads;
pub mod kernels;
pub mod pretrain;
pub mod sample;
pub mod tokenizer;
pub mod world;
pub mod judge;
pub mod sft;
