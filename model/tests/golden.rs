//! Golden tests: ferrochat's GPT-2 against PyTorch + Hugging Face transformers on the tiny
//! random models of `tests/reference/fixtures/gpt2/` (made by `tests/reference/make_golden.py`).
//!
//! Error measures: a scalar (loss) is compared by relative error |a − b| / |b|; a tensor
//! (logits, a gradient) by its max abs difference over the reference's max abs value,
//! max|a − b| / max|b|.

use std::collections::HashMap;
use std::path::PathBuf;

use engine::optim::{AdamW, AdamWConfig};
use engine::{ops, Tensor};
use model::{checkpoint, Gpt};

const MODELS: [&str; 3] = ["tiny_a", "tiny_b", "tiny_c"];

/// What `reference.json` holds.
struct Reference {
    batch: usize,
    seq: usize,
    tokens: Vec<usize>,
    loss: f64,
    step_losses: Vec<f64>,
    lr: f64,
    tensors: HashMap<String, Tensor>,
}

fn fixture_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/reference/fixtures/gpt2")
        .join(name)
}

fn reference(name: &str) -> Reference {
    let dir = fixture_dir(name);
    let text = std::fs::read_to_string(dir.join("reference.json")).unwrap();
    let j: serde_json::Value = serde_json::from_str(&text).unwrap();
    let floats = |v: &serde_json::Value| -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    Reference {
        batch: j["batch"].as_u64().unwrap() as usize,
        seq: j["seq"].as_u64().unwrap() as usize,
        tokens: j["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect(),
        loss: j["loss"].as_f64().unwrap(),
        step_losses: floats(&j["step_losses"]),
        lr: j["adamw"]["lr"].as_f64().unwrap(),
        tensors: checkpoint::load_tensors(dir.join("reference.safetensors"))
            .unwrap()
            .into_iter()
            .collect(),
    }
}

/// HF's `labels=ids` targets: each position predicts the next token; the last is ignored.
fn shifted_targets(tokens: &[usize], batch: usize, seq: usize) -> Vec<i64> {
    (0..batch * seq)
        .map(|i| {
            if i % seq == seq - 1 {
                ops::IGNORE_INDEX
            } else {
                tokens[i + 1] as i64
            }
        })
        .collect()
}

/// max|a − b| / max|b|.
fn tensor_error(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.shape(), b.shape());
    let (a, b) = (a.to_vec_f64(), b.to_vec_f64());
    let diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    let scale = b.iter().map(|y| y.abs()).fold(0.0, f64::max);
    assert!(scale > 0.0, "reference tensor is all zeros");
    diff / scale
}

fn rel_error(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs()
}

fn loss(model: &Gpt, r: &Reference) -> Tensor {
    let targets = shifted_targets(&r.tokens, r.batch, r.seq);
    model
        .loss(&r.tokens, &targets, r.batch, r.seq, None)
        .unwrap()
}

#[test]
fn logits_and_loss_match_transformers() {
    for name in MODELS {
        let r = reference(name);
        let model = checkpoint::load(fixture_dir(name).join("model")).unwrap();
        let logits = model.forward(&r.tokens, r.batch, r.seq, None).unwrap();
        let logits_err = tensor_error(&logits, &r.tensors["logits"]);
        let loss_err = rel_error(loss(&model, &r).item().unwrap(), r.loss);
        println!(
            "{name}: logits max err {logits_err:.3e} (of max |logit|), loss rel err {loss_err:.3e}"
        );
        assert!(logits_err < 1e-5, "{name}: logits error {logits_err:e}");
        assert!(loss_err < 1e-5, "{name}: loss error {loss_err:e}");
    }
}

#[test]
fn every_gradient_matches_transformers() {
    for name in MODELS {
        let r = reference(name);
        let model = checkpoint::load(fixture_dir(name).join("model")).unwrap();
        let grads = loss(&model, &r).backward().unwrap();
        let mut worst = (0.0f64, String::new());
        for (pname, p) in model.named_params() {
            let g = grads
                .get(p)
                .unwrap_or_else(|| panic!("{name}: no gradient for {pname}"));
            let err = tensor_error(g, &r.tensors[&pname]);
            assert!(err < 1e-4, "{name}: {pname}: gradient error {err:e}");
            if err > worst.0 {
                worst = (err, pname);
            }
        }
        println!("{name}: worst gradient error {:.3e} ({})", worst.0, worst.1);
    }
}

#[test]
fn ten_adamw_steps_match_torch() {
    for name in MODELS {
        let r = reference(name);
        let mut model = checkpoint::load(fixture_dir(name).join("model")).unwrap();
        let mut opt = AdamW::new(AdamWConfig::default());
        let mut worst = 0.0f64;
        for (step, &want) in r.step_losses.iter().enumerate() {
            let l = loss(&model, &r);
            let err = rel_error(l.item().unwrap(), want);
            assert!(err < 1e-4, "{name}: step {step}: loss error {err:e}");
            worst = worst.max(err);
            let grads = l.backward().unwrap();
            opt.step(&mut model.params_mut(), &grads, r.lr).unwrap();
        }
        println!(
            "{name}: {} AdamW step losses, max rel err {worst:.3e}",
            r.step_losses.len()
        );
    }
}

#[test]
fn hub_style_names_and_buffers_load_to_the_same_weights() {
    for name in MODELS {
        let hf = checkpoint::load(fixture_dir(name).join("model")).unwrap();
        let hub = checkpoint::load(fixture_dir(name).join("model_hubstyle")).unwrap();
        for ((n, a), (_, b)) in hf.named_params().into_iter().zip(hub.named_params()) {
            assert_eq!(a.to_vec_f32(), b.to_vec_f32(), "{name}: {n}");
        }
    }
}

#[test]
fn bf16_checkpoint_loads_as_the_rounded_weights() {
    for name in MODELS {
        let f32_model = checkpoint::load(fixture_dir(name).join("model")).unwrap();
        let bf16_model = checkpoint::load(fixture_dir(name).join("model_bf16")).unwrap();
        for ((n, a), (_, b)) in f32_model
            .named_params()
            .into_iter()
            .zip(bf16_model.named_params())
        {
            let rounded: Vec<f32> = a
                .to_vec_f32()
                .iter()
                .map(|&x| half::bf16::from_f32(x).to_f32())
                .collect();
            assert_eq!(rounded, b.to_vec_f32(), "{name}: {n}");
        }
    }
}

#[test]
fn ferrochat_written_checkpoint_loads_back_bit_identical() {
    let dir =
        std::env::temp_dir().join(format!("ferrochat-golden-roundtrip-{}", std::process::id()));
    for name in MODELS {
        let model = checkpoint::load(fixture_dir(name).join("model")).unwrap();
        checkpoint::save(&model, &dir).unwrap();
        let back = checkpoint::load(&dir).unwrap();
        assert_eq!(back.config, model.config, "{name}: config");
        for ((n, a), (_, b)) in model.named_params().into_iter().zip(back.named_params()) {
            let bits = |t: &Tensor| {
                t.to_vec_f32()
                    .iter()
                    .map(|x| x.to_bits())
                    .collect::<Vec<_>>()
            };
            assert_eq!(bits(a), bits(b), "{name}: {n}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
