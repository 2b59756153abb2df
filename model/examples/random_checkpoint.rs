//! Writes a freshly initialised tiny GPT-2 as a ferrochat checkpoint folder, for checking that
//! other tools (Hugging Face `GPT2LMHeadModel.from_pretrained`) read what ferrochat writes:
//!
//! ```text
//! cargo run -p model --example random_checkpoint -- OUT_DIR [SEED]
//! ```
//!
//! The model is (vocab 97, n_positions 16, n_embd 24, n_layer 2, n_head 3), initialised as
//! `Gpt::new` does, with seed SEED (default 0). See tests/reference/check_hf_load.py.

use model::{checkpoint, Gpt, GptConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = args
        .next()
        .ok_or("usage: random_checkpoint OUT_DIR [SEED]")?;
    let seed = args.next().map(|s| s.parse()).transpose()?.unwrap_or(0);
    let config = GptConfig::new(97, 16, 24, 2, 3);
    let model = Gpt::new(config, &mut engine::Rng::new(seed))?;
    checkpoint::save(&model, &out)?;
    println!("wrote {out}");
    Ok(())
}
