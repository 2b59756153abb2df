//! The subcommands.

pub mod chat;
pub mod collect;
pub mod dpo;
pub mod eval;
pub mod gradcheck;
pub mod grads;
pub mod judge;
pub mod kernels;
pub mod label;
pub mod pipeline;
pub mod ppo;
pub mod pretrain;
pub mod rm;
pub mod sample;
pub mod sft;
pub mod tokenizer;
pub mod world;

/// Prints a line above a progress bar, or to stdout when the bar is hidden (output is not a
/// terminal: a pipe, a log file, CI), where indicatif would drop it. Stderr stays for errors.
pub fn say(bar: &indicatif::ProgressBar, line: impl AsRef<str>) {
    if bar.is_hidden() {
        println!("{}", line.as_ref());
    } else {
        bar.println(line.as_ref());
    }
}
