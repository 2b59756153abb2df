//! Checkpoint save/load: round trips, the dtypes and names accepted, every kind of bad file
//! (each a one-line error naming the file and the tensor), and atomic writes.

use std::collections::HashMap;
use std::path::Path;

use engine::{DType, Rng, Tensor};
use model::checkpoint::{self, CONFIG_FILE, WEIGHTS_FILE};
use model::{Error, Gpt, GptConfig};
use safetensors::tensor::{Dtype, TensorView};

fn tiny_config() -> GptConfig {
    GptConfig::new(11, 6, 8, 2, 2)
}

fn tiny_model() -> Gpt {
    Gpt::new(tiny_config(), &mut Rng::new(7)).unwrap()
}

/// A saved tiny checkpoint in a fresh temporary folder.
fn saved() -> (tempfile::TempDir, Gpt) {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model();
    checkpoint::save(&model, dir.path()).unwrap();
    (dir, model)
}

/// The named f32 parameters of `model`, as raw stored tensors (dtype, shape, bytes).
fn raw_params(model: &Gpt) -> Vec<(String, Dtype, Vec<usize>, Vec<u8>)> {
    model
        .named_params()
        .into_iter()
        .map(|(n, t)| {
            let bytes = t
                .to_vec_f32()
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect();
            (n, Dtype::F32, t.shape().to_vec(), bytes)
        })
        .collect()
}

/// Writes raw stored tensors as a safetensors file.
fn write_raw(path: &Path, tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(&str, TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.as_str(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

/// The load error of `dir`, as its one-line message (asserting it is a format error).
fn load_error(dir: &Path) -> String {
    let err = checkpoint::load(dir).unwrap_err();
    assert!(matches!(err, Error::Format { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(!msg.contains('\n'), "{msg}");
    msg
}

fn params_equal(a: &Gpt, b: &Gpt) -> bool {
    a.params()
        .iter()
        .zip(b.params())
        .all(|(x, y)| x.to_vec_f32() == y.to_vec_f32())
}

#[test]
fn save_then_load_is_identical_and_trainable() {
    let (dir, model) = saved();
    let back = checkpoint::load(dir.path()).unwrap();
    assert_eq!(back.config, model.config);
    assert!(params_equal(&back, &model));
    assert!(back.params().iter().all(|p| p.requires_grad_flag()));
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut names = names;
    names.sort();
    assert_eq!(
        names,
        [CONFIG_FILE, WEIGHTS_FILE],
        "no temporary file is left behind"
    );
}

#[test]
fn the_weights_file_holds_hf_names_f32_and_no_lm_head() {
    let (dir, model) = saved();
    let tensors = checkpoint::load_tensors(dir.path().join(WEIGHTS_FILE)).unwrap();
    let mut names: Vec<&str> = tensors.iter().map(|(n, _)| n.as_str()).collect();
    names.sort();
    let mut want: Vec<String> = model.named_params().into_iter().map(|(n, _)| n).collect();
    want.sort();
    assert_eq!(names, want);
    assert!(names.contains(&"transformer.h.1.attn.c_attn.weight"));
    assert!(tensors.iter().all(|(_, t)| t.dtype() == DType::F32));
    let bytes = std::fs::read(dir.path().join(WEIGHTS_FILE)).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let format = meta.metadata().as_ref().and_then(|m| m.get("format"));
    assert_eq!(format.map(String::as_str), Some("pt"));
}

#[test]
fn an_f64_model_is_saved_as_f32() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model();
    checkpoint::save(&model.to_dtype(DType::F64).unwrap(), dir.path()).unwrap();
    assert!(params_equal(&checkpoint::load(dir.path()).unwrap(), &model));
}

#[test]
fn save_and_load_tensors_keep_f32_f64_and_scalars() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.safetensors");
    let tensors = vec![
        (
            "a".to_string(),
            Tensor::from_vec(vec![1.5f32, -2.0, 3.25], &[3]).unwrap(),
        ),
        (
            "b".to_string(),
            Tensor::from_vec(vec![0.1f64, 0.2, 0.3, 0.4], &[2, 2]).unwrap(),
        ),
        ("loss".to_string(), Tensor::scalar(4.5f32)),
    ];
    checkpoint::save_tensors(&path, &tensors).unwrap();
    let back: HashMap<String, Tensor> = checkpoint::load_tensors(&path)
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(back.len(), 3);
    for (name, t) in &tensors {
        assert_eq!(back[name].shape(), t.shape(), "{name}");
        assert_eq!(back[name].dtype(), t.dtype(), "{name}");
        assert_eq!(back[name].to_vec_f64(), t.to_vec_f64(), "{name}");
    }
}

#[test]
fn f16_weights_and_a_tied_lm_head_load() {
    let (dir, model) = saved();
    let mut raw: Vec<_> = raw_params(&model)
        .into_iter()
        .map(|(n, _, s, b)| {
            let halves = b
                .chunks_exact(4)
                .flat_map(|c| {
                    let x = f32::from_le_bytes(c.try_into().unwrap());
                    half::f16::from_f32(x).to_le_bytes()
                })
                .collect();
            (n, Dtype::F16, s, halves)
        })
        .collect();
    let wte = raw[0].clone();
    raw.push(("lm_head.weight".into(), wte.1, wte.2, wte.3));
    write_raw(&dir.path().join(WEIGHTS_FILE), &raw);
    let back = checkpoint::load(dir.path()).unwrap();
    for (a, b) in model.params().iter().zip(back.params()) {
        let want: Vec<f32> = a
            .to_vec_f32()
            .iter()
            .map(|&x| half::f16::from_f32(x).to_f32())
            .collect();
        assert_eq!(b.to_vec_f32(), want);
    }
}

#[test]
fn a_missing_folder_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let msg = load_error(&missing);
    assert!(msg.contains("nope"), "{msg}");
}

#[test]
fn a_truncated_weights_file_is_an_error() {
    let (dir, _) = saved();
    let path = dir.path().join(WEIGHTS_FILE);
    let bytes = std::fs::read(&path).unwrap();
    for keep in [4, 100, bytes.len() - 10] {
        std::fs::write(&path, &bytes[..keep]).unwrap();
        let msg = load_error(dir.path());
        assert!(
            msg.contains(WEIGHTS_FILE) && msg.contains("truncated or corrupt"),
            "{msg}"
        );
    }
}

#[test]
fn a_corrupt_header_is_an_error() {
    let (dir, _) = saved();
    let path = dir.path().join(WEIGHTS_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[8..20].copy_from_slice(b"not json at ");
    std::fs::write(&path, &bytes).unwrap();
    let msg = load_error(dir.path());
    assert!(
        msg.contains(WEIGHTS_FILE) && msg.contains("corrupt"),
        "{msg}"
    );
}

#[test]
fn a_missing_tensor_is_named() {
    let (dir, model) = saved();
    let raw: Vec<_> = raw_params(&model)
        .into_iter()
        .filter(|(n, ..)| n != "transformer.h.1.mlp.c_fc.bias")
        .collect();
    write_raw(&dir.path().join(WEIGHTS_FILE), &raw);
    let msg = load_error(dir.path());
    assert!(
        msg.contains("missing tensor `transformer.h.1.mlp.c_fc.bias`"),
        "{msg}"
    );
}

#[test]
fn a_misshapen_tensor_is_named_with_both_shapes() {
    let (dir, model) = saved();
    let mut raw = raw_params(&model);
    let wpe = raw
        .iter_mut()
        .find(|(n, ..)| n == "transformer.wpe.weight")
        .unwrap();
    wpe.2 = vec![8, 6]; // 48 elements, as [6, 8]
    write_raw(&dir.path().join(WEIGHTS_FILE), &raw);
    let msg = load_error(dir.path());
    assert!(
        msg.contains("`transformer.wpe.weight` has shape [8, 6]") && msg.contains("[6, 8]"),
        "{msg}"
    );
}

#[test]
fn an_unsupported_dtype_is_named() {
    let (dir, model) = saved();
    let mut raw = raw_params(&model);
    let b = raw
        .iter_mut()
        .find(|(n, ..)| n == "transformer.ln_f.bias")
        .unwrap();
    b.1 = Dtype::I32;
    write_raw(&dir.path().join(WEIGHTS_FILE), &raw);
    let msg = load_error(dir.path());
    assert!(
        msg.contains("`transformer.ln_f.bias` has unsupported dtype I32"),
        "{msg}"
    );
}

#[test]
fn a_config_with_fewer_layers_than_the_weights_is_an_error() {
    let (dir, _) = saved();
    let mut config = tiny_config();
    config.n_layer = 1;
    checkpoint::save_config(&config, dir.path().join(CONFIG_FILE)).unwrap();
    let msg = load_error(dir.path());
    assert!(
        msg.contains("unexpected tensor `transformer.h.1.") && msg.contains("n_layer 1"),
        "{msg}"
    );
}

#[test]
fn a_config_of_another_width_is_an_error() {
    let (dir, _) = saved();
    let mut config = tiny_config();
    config.vocab_size = 12;
    checkpoint::save_config(&config, dir.path().join(CONFIG_FILE)).unwrap();
    let msg = load_error(dir.path());
    assert!(
        msg.contains("`transformer.wte.weight` has shape [11, 8] but config.json implies [12, 8]"),
        "{msg}"
    );
}

#[test]
fn an_untied_lm_head_is_rejected() {
    let (dir, model) = saved();
    let mut raw = raw_params(&model);
    raw.push(("lm_head.weight".into(), Dtype::F32, vec![1, 4], vec![0; 16]));
    write_raw(&dir.path().join(WEIGHTS_FILE), &raw);
    let msg = load_error(dir.path());
    assert!(msg.contains("`lm_head.weight` has shape [1, 4]"), "{msg}");
}

#[test]
fn a_missing_config_is_an_io_error_naming_it() {
    let (dir, _) = saved();
    std::fs::remove_file(dir.path().join(CONFIG_FILE)).unwrap();
    let err = checkpoint::load(dir.path()).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(err.to_string().contains(CONFIG_FILE), "{err}");
}

#[test]
fn a_malformed_config_is_an_error() {
    let (dir, _) = saved();
    for text in [
        "{",
        "{\"vocab_size\": 11}",
        "[1, 2]",
        "{\"vocab_size\": \"x\", \"n_positions\": 6}",
    ] {
        std::fs::write(dir.path().join(CONFIG_FILE), text).unwrap();
        let msg = load_error(dir.path());
        assert!(
            msg.contains(CONFIG_FILE) && msg.contains("malformed GPT-2 config"),
            "{text}: {msg}"
        );
    }
}

#[test]
fn an_invalid_config_is_an_error() {
    let (dir, _) = saved();
    let mut config = tiny_config();
    config.n_head = 3; // 8 is not divisible by 3
    let json = serde_json::to_string(&config).unwrap();
    std::fs::write(dir.path().join(CONFIG_FILE), json).unwrap();
    let msg = load_error(dir.path());
    assert!(
        msg.contains("invalid config") && msg.contains("not divisible"),
        "{msg}"
    );
}

#[test]
fn a_failed_atomic_write_keeps_the_old_file_and_leaves_no_temp() {
    let (dir, model) = saved();
    // A folder where the weights file should be: the final rename fails.
    let target = dir.path().join("blocked.safetensors");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("keep"), b"old").unwrap();
    let tensors = vec![("x".to_string(), Tensor::scalar(1.0f32))];
    assert!(checkpoint::save_tensors(&target, &tensors).is_err());
    assert_eq!(std::fs::read(target.join("keep")).unwrap(), b"old");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // The checkpoint beside it is untouched.
    assert!(params_equal(&checkpoint::load(dir.path()).unwrap(), &model));
}

#[test]
fn saving_over_an_existing_checkpoint_replaces_it() {
    let (dir, _) = saved();
    let other = Gpt::new(tiny_config(), &mut Rng::new(8)).unwrap();
    checkpoint::save(&other, dir.path()).unwrap();
    assert!(params_equal(&checkpoint::load(dir.path()).unwrap(), &other));
}

#[test]
fn saving_into_a_file_path_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let err = checkpoint::save(&tiny_model(), &file).unwrap_err();
    assert!(err.to_string().contains("file"), "{err}");
    let msg = load_error(&file);
    assert!(msg.contains("not a directory"), "{msg}");
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
}

#[test]
fn a_bf16_configs_dtype_is_rewritten_to_the_f32_it_is_saved_as() {
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/reference/fixtures/gpt2/tiny_a/model_bf16");
    let model = checkpoint::load(&src).unwrap();
    assert_eq!(model.config.extra["dtype"], "bfloat16");
    checkpoint::save(&model, dir.path()).unwrap();
    let back = checkpoint::load(dir.path()).unwrap();
    assert_eq!(back.config.extra["dtype"], "float32");
    assert_eq!(back.config.n_layer, model.config.n_layer);
    assert!(params_equal(&back, &model));
    let tensors = checkpoint::load_tensors(dir.path().join(WEIGHTS_FILE)).unwrap();
    assert!(tensors.iter().all(|(_, t)| t.dtype() == DType::F32));
}
