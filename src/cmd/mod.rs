//! The subcommands.

pub mod gradcheck;
pub mod kernels;
