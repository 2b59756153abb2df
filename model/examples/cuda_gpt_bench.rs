//! Times GPT-2 124M training steps on the GPU (`model::cuda_gpt`): B = 4 sequences of
//! T = 64 and T = 1024 tokens, bf16 mixed precision (and f32 at T = 64), random tokens.
//! Each configuration: 2 warm-up steps, then the mean of 5 timed steps (forward, backward,
//! clipping, AdamW; each step ends waiting for the GPU). Prints a markdown table and
//! writes it to the file named by the first argument (default `target/cuda-gpt-bench.md`).
//! Used by `scripts/gpu-check.sh`; needs a GPU.
//!
//! `cargo run --release -p model --features cuda --example cuda_gpt_bench -- <out.md>`

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use engine::optim::AdamWConfig;
use engine::Rng;
use kernels::cuda::Gpu;
use model::cuda_gpt::{CudaGpt, Precision};
use model::{Gpt, GptConfig};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// Mean seconds per training step of `model` on `batch` × `seq` random tokens.
fn time_steps<T: Precision>(gpu: &Arc<Gpu>, model: &Gpt, batch: usize, seq: usize) -> Res<f64> {
    let mut g = CudaGpt::<T>::new(gpu.clone(), model)?;
    let mut rng = Rng::new(1);
    let v = model.config.vocab_size as u64;
    let ids: Vec<usize> = (0..batch * seq).map(|_| rng.below(v) as usize).collect();
    let targets: Vec<i64> = (0..batch * seq).map(|_| rng.below(v) as i64).collect();
    let opt = AdamWConfig::default();
    let mut step = || g.train_step(&ids, &targets, batch, seq, 1e-4, &opt, 1.0);
    for _ in 0..2 {
        step()?;
    }
    gpu.synchronize()?;
    let n = 5;
    let start = Instant::now();
    let mut last = 0.0;
    for _ in 0..n {
        last = step()?.loss;
    }
    gpu.synchronize()?;
    let secs = start.elapsed().as_secs_f64() / n as f64;
    if !last.is_finite() {
        return Err(format!("the loss is {last} after the timed steps").into());
    }
    Ok(secs)
}

fn run() -> Res<()> {
    let out_path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/cuda-gpt-bench.md".into());
    let gpu = Arc::new(Gpu::new(0)?);
    println!("GPU: {} ({})", gpu.name()?, gpu.arch());
    let mut config = GptConfig::new(50257, 1024, 768, 12, 12);
    config.resid_pdrop = 0.0;
    config.embd_pdrop = 0.0;
    let model = Gpt::new(config, &mut Rng::new(0))?;
    let mut table = String::new();
    writeln!(
        table,
        "| training step (GPT-2 124M) | batch x seq | ms / step | tokens/s |"
    )?;
    writeln!(table, "|---|---|---:|---:|")?;
    let mut failed = false;
    for (precision, batch, seq) in [("bf16", 4, 64), ("bf16", 4, 1024), ("f32", 4, 64)] {
        let secs = match precision {
            "bf16" => time_steps::<u16>(&gpu, &model, batch, seq),
            _ => time_steps::<f32>(&gpu, &model, batch, seq),
        };
        let row = match secs {
            Ok(s) => format!(
                "| {precision} | {batch} x {seq} | {:.1} | {:.0} |",
                s * 1e3,
                (batch * seq) as f64 / s
            ),
            Err(e) => {
                failed = true;
                format!("| {precision} | {batch} x {seq} | failed: {e} | |")
            }
        };
        println!("{row}");
        writeln!(table, "{row}")?;
    }
    std::fs::write(&out_path, &table)?;
    println!("\n{table}");
    if failed {
        return Err("a configuration failed (see the table)".into());
    }
    Ok(())
}
