//! Times training steps (forward, backward, AdamW) of a GPT on random tokens:
//! `cargo run --release -p model --example train_step -- [demo|small|gpt2] [steps]`.

use std::time::Instant;

// The same allocator as the ferrochat binary (see src/main.rs).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` (see `keep_freed_memory` in src/main.rs: the same setting).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

use engine::optim::AdamWConfig;
use engine::Rng;
use model::train::{Batch, TrainConfig, Trainer};
use model::{Gpt, GptConfig};

fn main() {
    // Never return freed pages to the OS, as the ferrochat binary (src/main.rs).
    // SAFETY: setting an option is thread-safe and takes effect for later purges.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    // On a rayon worker, as the ferrochat binary runs its commands.
    kernels::cpu::on_worker_thread(bench);
}

fn bench() {
    let args: Vec<String> = std::env::args().collect();
    let preset = args.get(1).map(String::as_str).unwrap_or("demo");
    let steps: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5);
    // (vocab, ctx, width, layers, heads, T, B): the configs of the performance anchors.
    let (v, ctx, c, l, h, t, b) = match preset {
        "small" => (8192, 256, 384, 6, 6, 256, 8),
        "gpt2" => (50257, 1024, 768, 12, 12, 64, 4),
        _ => (512, 128, 128, 4, 4, 128, 16),
    };
    let mut cfg = GptConfig::new(v, ctx, c, l, h);
    cfg.resid_pdrop = 0.0;
    cfg.embd_pdrop = 0.0;
    let mut rng = Rng::new(0);
    let mut model = Gpt::new(cfg, &mut rng).unwrap();
    let mut trainer = Trainer::new(TrainConfig {
        steps: 1000,
        batch_size: b,
        seq_len: t,
        grad_accum: 1,
        max_lr: 1e-3,
        min_lr: 1e-4,
        warmup: 10,
        grad_clip: 1.0,
        adamw: AdamWConfig::default(),
        dropout: false,
    });
    let batch = Batch {
        ids: (0..b * t).map(|_| rng.below(v as u64) as usize).collect(),
        targets: (0..b * t).map(|_| rng.below(v as u64) as i64).collect(),
        batch: b,
        seq: t,
    };
    // Two warm-up steps, as the PyTorch side: the first ones fault in the memory the steps
    // reuse afterwards (hundreds of page faults per step at gpt2 size until it settles).
    for _ in 0..2 {
        trainer
            .step(&mut model, std::slice::from_ref(&batch), &mut rng)
            .unwrap();
    }
    let mut times = vec![];
    let cpu0 = kernels::cputime::process_seconds();
    for _ in 0..steps {
        let start = Instant::now();
        trainer
            .step(&mut model, std::slice::from_ref(&batch), &mut rng)
            .unwrap();
        times.push(start.elapsed().as_secs_f64());
    }
    let cpu_ms = (kernels::cputime::process_seconds() - cpu0) / steps as f64 * 1e3;
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "{preset}: {} params, B{b} T{t}: median step {:.1} ms, {:.0} tokens/s",
        model.config.num_params(),
        median * 1e3,
        (b * t) as f64 / median
    );
    // On-CPU time per timed step, all threads (on stderr: the line above is parsed by
    // benches/against_pytorch.sh). Other processes on a shared machine do not add to it.
    eprintln!("{preset}: cpu_ms_per_step={cpu_ms:.1}");
}
