//! The subcommands.

pub mod eval;
pub mod gradcheck;
pub mod grads;
pub mod kernels;
