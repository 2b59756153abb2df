//! The subcommands.

pub mod eval;
pub mod gradcheck;
pub mod grads;
pub mod judge;
pub mod kernels;
pub mod pipeline;
pub mod pretrain;
pub mod sample;
pub mod sft;
pub mod tokenizer;
pub mod world;
