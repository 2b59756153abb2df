//! `ferrochat`: the command line. Each subcommand lives in `src/cmd/`.

mod cmd;

// mimalloc keeps freed memory for reuse: with the system allocator, every training step's
// large activation buffers went back to the kernel and were faulted in again, which cost
// more than half of a demo-sized step (measured: 187 ms → 70 ms per step).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc's `mi_option_t` (v3 header, 0-based).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Tells mimalloc never to return freed pages to the OS. With its default delay, the large
/// activation buffers freed at the end of each training step were decommitted and faulted in
/// again by the next (measured on the demo train step: 16.6k page faults → 294 over 11 steps,
/// CPU time −35%). The process keeps its peak footprint, which a training run reaches anyway.
fn keep_freed_memory() {
    // SAFETY: setting an option is thread-safe and takes effect for later purges.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

use clap::{Parser, Subcommand};

/// ChatGPT's training recipe (InstructGPT), from scratch in Rust, down to the kernels.
#[derive(Parser)]
#[command(name = "ferrochat", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check every op's gradient against finite differences (f64) and print a table.
    Gradcheck(cmd::gradcheck::Args),
    /// Mean next-token cross-entropy of a checkpoint on a file of token ids (one sequence a line).
    Eval(cmd::eval::Args),
    /// The eval loss, its logits and every parameter's gradient, written to a safetensors file.
    Grads(cmd::grads::Args),
    /// Continue a prompt with a checkpoint: KV cache, temperature, top-k, top-p, stop tokens.
    Sample(cmd::sample::Args),
    /// Supervised fine-tuning on demonstrations (JSONL prompt/completion; the prompt is masked).
    Sft(cmd::sft::Args),
    /// Sample K answers per prompt and have the simulated labeler rank them (JSONL rankings).
    Collect(cmd::collect::Args),
    /// Train a reward model on rankings or pairs (InstructGPT eq. 1).
    Rm(cmd::rm::Args),
    /// PPO against a reward model with a KL penalty to the SFT policy (InstructGPT eq. 2).
    Ppo(Box<cmd::ppo::Args>),
    /// Direct Preference Optimization on rankings or pairs (the comparison baseline).
    Dpo(cmd::dpo::Args),
    /// Ask a model questions in the terminal, one a line (or piped in).
    ///
    /// Single-turn: each question is answered on its own, without the earlier ones (the
    /// model's context is small). An empty line, /quit or the end of input stops.
    Chat(cmd::chat::Args),
    /// Rank K sampled answers to each prompt yourself; each ranking is appended to a JSONL file.
    ///
    /// Type the answer numbers best to worst (`3 1 4 2` or `3142`); `s` skips a prompt, `q`
    /// quits. Every ranking is written the moment it is given, so quitting loses nothing.
    Label(cmd::label::Args),
    /// Judge a model's answers to held-out prompts with the simulated labeler's rubric.
    Judge(cmd::judge::Args),
    /// The whole InstructGPT recipe on the embedded world: pretrain, SFT, rankings, reward
    /// model, PPO (+ β = 0 and DPO for comparison), judged on held-out prompts.
    Pipeline(cmd::pipeline::Args),
    /// Write the embedded task world of a seed: pretraining corpus and demonstrations.
    World(cmd::world::Args),
    /// Pretrain a GPT-2 on a text file (presets tiny and small), with exact --resume.
    Pretrain(Box<cmd::pretrain::Args>),
    /// Train a byte-level BPE tokenizer, or encode text with one.
    #[command(subcommand)]
    Tokenizer(cmd::tokenizer::Args),
    /// Time each CPU kernel, fast vs reference (and matmul vs the matrixmultiply crate).
    Kernels(cmd::kernels::Args),
}

fn main() {
    keep_freed_memory();
    let cli = Cli::parse();
    // Worker threads get the main thread's usual 8 MiB of stack, since the command runs on one.
    // Building the pool fails only if it already exists, and then that one serves.
    let _ = rayon::ThreadPoolBuilder::new()
        .stack_size(8 << 20)
        .build_global();
    let result = kernels::cpu::on_worker_thread(|| run(cli.command));
    if let Err(e) = result {
        // One line, the whole chain of causes, and a non-zero exit.
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// Runs one command (on a rayon worker thread, see `kernels::cpu::on_worker_thread`).
fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Gradcheck(args) => cmd::gradcheck::run(args),
        Command::Kernels(args) => cmd::kernels::run(args),
        Command::Eval(args) => cmd::eval::run(args),
        Command::Grads(args) => cmd::grads::run(args),
        Command::Pretrain(args) => cmd::pretrain::run(*args),
        Command::World(args) => cmd::world::run(args),
        Command::Pipeline(args) => cmd::pipeline::run(args),
        Command::Sft(args) => cmd::sft::run(args),
        Command::Judge(args) => cmd::judge::run(args),
        Command::Collect(args) => cmd::collect::run(args),
        Command::Rm(args) => cmd::rm::run(args),
        Command::Ppo(args) => cmd::ppo::run(*args),
        Command::Dpo(args) => cmd::dpo::run(args),
        Command::Chat(args) => cmd::chat::run(args),
        Command::Label(args) => cmd::label::run(args),
        Command::Sample(args) => cmd::sample::run(args),
        Command::Tokenizer(args) => cmd::tokenizer::run(args),
    }
}
