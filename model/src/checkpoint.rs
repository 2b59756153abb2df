//! Checkpoints compatible with Hugging Face's `GPT2LMHeadModel`: a folder holding
//! `config.json` (an HF `GPT2Config`) and `model.safetensors` with HF tensor names
//! (`transformer.wte.weight`, `transformer.h.{i}.attn.c_attn.weight`, ...).
//!
//! What is written is what `save_pretrained(safe_serialization=True)` writes: every parameter
//! in f32 under its `transformer.` name, no `lm_head.weight` (it is tied to `wte`), and the
//! header metadata `{"format": "pt"}`. What is read is wider: names with or without the
//! `transformer.` prefix (the original `gpt2` hub files have none), f32/f16/bf16 (and f64)
//! tensors, converted to f32,
//! HF's attention-mask buffers (`attn.bias`, `attn.masked_bias`, skipped), and a tied
//! `lm_head.weight` of the same shape as `wte` (skipped).
//!
//! Every write is atomic ([`write_atomic`]): a killed or failed save keeps the previous file.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use engine::{DType, Tensor};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

use crate::gpt::param_shapes;
use crate::{format_err, io_err, Gpt, GptConfig, Result};

/// The config file of a checkpoint folder.
pub const CONFIG_FILE: &str = "config.json";
/// The weights file of a checkpoint folder.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// The prefix HF's `GPT2LMHeadModel` puts before the trunk's parameter names.
const PREFIX: &str = "transformer.";

/// Saves `model` into the folder `dir` (created if needed): `model.safetensors` first, then
/// `config.json`, each written atomically. Parameters are stored as f32, and a `dtype` /
/// `torch_dtype` key the config carries (a bf16 checkpoint's, say) is set to `"float32"` to
/// say so — HF loads weights in that dtype.
pub fn save(model: &Gpt, dir: impl AsRef<Path>) -> Result<()> {
    let dir = dir.as_ref();
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let tensors: Vec<(String, Tensor)> = model
        .named_params()
        .into_iter()
        .map(|(name, t)| (name, t.to_dtype(DType::F32)))
        .collect();
    save_tensors(dir.join(WEIGHTS_FILE), &tensors)?;
    save_config(&f32_config(&model.config), dir.join(CONFIG_FILE))
}

/// `config` with any stored-dtype key set to `"float32"`, the dtype [`save`] writes.
fn f32_config(config: &GptConfig) -> GptConfig {
    let mut config = config.clone();
    for key in ["dtype", "torch_dtype"] {
        if let Some(v) = config.extra.get_mut(key) {
            *v = "float32".into();
        }
    }
    config
}

/// Loads the model in the folder `dir` (see the module docs for what is accepted). Its
/// parameters are f32 leaves that require gradients.
pub fn load(dir: impl AsRef<Path>) -> Result<Gpt> {
    let dir = dir.as_ref();
    if !dir.is_dir() {
        let what = if dir.exists() {
            "not a directory"
        } else {
            "no such directory"
        };
        return Err(format_err(dir, format!("not a checkpoint folder ({what})")));
    }
    let config = load_config(dir.join(CONFIG_FILE))?;
    let path = dir.join(WEIGHTS_FILE);
    let bytes = fs::read(&path).map_err(io_err(&path))?;
    let file = parse_safetensors(&path, &bytes)?;
    let tensors = model_tensors(&path, &file, &config)?;
    Gpt::from_params(config, tensors)
}

/// Writes `config` as pretty-printed JSON to `path`, atomically.
pub fn save_config(config: &GptConfig, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let mut json = serde_json::to_string_pretty(config)
        .map_err(|e| format_err(path, format!("cannot encode the config: {e}")))?;
    json.push('\n');
    write_atomic(path, json.as_bytes())
}

/// Reads and validates an HF `GPT2Config` `config.json`.
pub fn load_config(path: impl AsRef<Path>) -> Result<GptConfig> {
    let path = path.as_ref();
    let text = fs::read_to_string(path).map_err(io_err(path))?;
    let config: GptConfig = serde_json::from_str(&text)
        .map_err(|e| format_err(path, format!("malformed GPT-2 config: {e}")))?;
    config
        .validate()
        .map_err(|msg| format_err(path, format!("invalid config: {msg}")))?;
    Ok(config)
}

/// Writes named tensors to a safetensors file at `path`, atomically, each in its own dtype
/// (f32 or f64), with the header metadata `{"format": "pt"}` so PyTorch tools accept it.
pub fn save_tensors(path: impl AsRef<Path>, tensors: &[(String, Tensor)]) -> Result<()> {
    let path = path.as_ref();
    let bytes: Vec<(&str, Dtype, &[usize], Vec<u8>)> = tensors
        .iter()
        .map(|(name, t)| {
            let (dtype, data) = le_bytes(t);
            (name.as_str(), dtype, t.shape(), data)
        })
        .collect();
    let mut views = Vec::with_capacity(bytes.len());
    for (name, dtype, shape, data) in &bytes {
        let view = TensorView::new(*dtype, shape.to_vec(), data)
            .map_err(|e| format_err(path, format!("tensor `{name}`: {e}")))?;
        views.push((*name, view));
    }
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let encoded = safetensors::serialize(views, Some(metadata))
        .map_err(|e| format_err(path, format!("cannot encode safetensors: {e}")))?;
    write_atomic(path, &encoded)
}

/// Reads every tensor of a safetensors file, sorted by name: f32, f16 and bf16 become f32
/// tensors, f64 stays f64; any other dtype is an error naming the tensor.
pub fn load_tensors(path: impl AsRef<Path>) -> Result<Vec<(String, Tensor)>> {
    let path = path.as_ref();
    let bytes = fs::read(path).map_err(io_err(path))?;
    let file = parse_safetensors(path, &bytes)?;
    sorted_views(&file)
        .into_iter()
        .map(|(name, view)| Ok((name.to_string(), to_tensor(path, name, &view)?)))
        .collect()
}

/// The stored tensors, sorted by name (so errors and outputs do not depend on hash order).
fn sorted_views<'a>(file: &'a SafeTensors) -> Vec<(&'a str, TensorView<'a>)> {
    let mut views: Vec<_> = file.iter().collect();
    views.sort_by(|a, b| a.0.cmp(b.0));
    views
}

/// Writes `bytes` to `path` atomically: into a temporary file in the same folder, flushed to
/// disk, then renamed over `path`. On failure the temporary file is removed and `path` keeps
/// its old contents.
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    let path = path.as_ref();
    replace_file(path, bytes).map_err(io_err(path))
}

/// [`write_atomic`] with the plain I/O error, for callers with their own error type (the
/// tokenizer's files, rlhf's JSONL files).
pub fn replace_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = temp_path(path);
    let result = write_synced(&tmp, bytes).and_then(|()| fs::rename(&tmp, path));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
        return result;
    }
    sync_parent(path);
    Ok(())
}

/// `.{name}.{pid}.{n}.tmp` beside `path`, unique within this process.
fn temp_path(path: &Path) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

/// Creates `path` (which must not exist), writes `bytes` and flushes them to disk.
fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = File::options().write(true).create_new(true).open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Flushes the folder entry of a rename to disk where the platform allows it (best effort:
/// the rename itself already happened).
fn sync_parent(path: &Path) {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

/// Parses a safetensors buffer; a truncated or corrupt file is a format error.
fn parse_safetensors<'a>(path: &Path, bytes: &'a [u8]) -> Result<SafeTensors<'a>> {
    SafeTensors::deserialize(bytes).map_err(|e| {
        format_err(
            path,
            format!("not a valid safetensors file (truncated or corrupt?): {e}"),
        )
    })
}

/// A tensor's dtype tag and its values as little-endian bytes.
fn le_bytes(t: &Tensor) -> (Dtype, Vec<u8>) {
    match t.dtype() {
        DType::F32 => (
            Dtype::F32,
            t.to_vec_f32()
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
        ),
        DType::F64 => (
            Dtype::F64,
            t.to_vec_f64()
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
        ),
    }
}

/// Decodes one stored tensor: f32/f16/bf16 to f32, f64 to f64.
fn to_tensor(path: &Path, name: &str, view: &TensorView) -> Result<Tensor> {
    let data = view.data();
    let t = match view.dtype() {
        Dtype::F32 => Tensor::from_vec(decode(data, f32::from_le_bytes), view.shape()),
        Dtype::F16 => Tensor::from_vec(
            decode(data, |b| half::f16::from_le_bytes(b).to_f32()),
            view.shape(),
        ),
        Dtype::BF16 => Tensor::from_vec(
            decode(data, |b| half::bf16::from_le_bytes(b).to_f32()),
            view.shape(),
        ),
        Dtype::F64 => Tensor::from_vec(decode(data, f64::from_le_bytes), view.shape()),
        other => {
            return Err(format_err(
                path,
                format!(
                "tensor `{name}` has unsupported dtype {other} (expected F32, F16, BF16 or F64)"
            ),
            ))
        }
    };
    t.map_err(|e| format_err(path, format!("tensor `{name}`: {e}")))
}

/// Little-endian elements of `N` bytes each, decoded by `f`.
fn decode<const N: usize, T>(data: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
    data.chunks_exact(N)
        .map(|c| f(c.try_into().expect("chunks_exact gives N bytes")))
        .collect()
}

/// What a stored name means for GPT-2.
enum Entry {
    /// A parameter, under its canonical (`transformer.`-prefixed) name.
    Param(String),
    /// HF's causal-mask buffers, which are not parameters.
    Buffer,
    /// The unembedding, tied to `wte`.
    LmHead,
}

/// Classifies a stored tensor name.
fn classify(name: &str) -> Entry {
    if name == "lm_head.weight" {
        return Entry::LmHead;
    }
    let bare = name.strip_prefix(PREFIX).unwrap_or(name);
    if bare.ends_with(".attn.bias") || bare.ends_with(".attn.masked_bias") {
        return Entry::Buffer;
    }
    Entry::Param(format!("{PREFIX}{bare}"))
}

/// The model's parameters from a weights file, in [`param_shapes`] order, checked against
/// `config`: every parameter present once, with its shape, in a float dtype, nothing else.
fn model_tensors(path: &Path, file: &SafeTensors, config: &GptConfig) -> Result<Vec<Tensor>> {
    let shapes = param_shapes(config);
    let expected: HashMap<&str, &[usize]> = shapes
        .iter()
        .map(|(n, s)| (n.as_str(), s.as_slice()))
        .collect();
    let mut found: HashMap<String, TensorView> = HashMap::new();
    for (stored, view) in sorted_views(file) {
        match classify(stored) {
            Entry::Buffer => {}
            Entry::LmHead => check_lm_head(path, view.shape(), config)?,
            Entry::Param(name) => {
                if !expected.contains_key(name.as_str()) {
                    return Err(format_err(
                        path,
                        format!("unexpected tensor `{stored}` (config.json says n_layer {}; does the config match the weights?)", config.n_layer),
                    ));
                }
                if found.insert(name, view).is_some() {
                    return Err(format_err(
                        path,
                        format!("tensor `{stored}` is stored twice (with and without the `transformer.` prefix)"),
                    ));
                }
            }
        }
    }
    shapes
        .iter()
        .map(|(name, shape)| {
            let view = found
                .get(name)
                .ok_or_else(|| format_err(path, format!("missing tensor `{name}`")))?;
            if view.shape() != shape.as_slice() {
                return Err(format_err(
                    path,
                    format!(
                        "tensor `{name}` has shape {:?} but config.json implies {shape:?}",
                        view.shape()
                    ),
                ));
            }
            let t = to_tensor(path, name, view)?.to_dtype(DType::F32);
            Ok(t.requires_grad())
        })
        .collect()
}

/// A stored `lm_head.weight` is accepted only as the tied copy of `wte`: `[vocab, n_embd]`.
fn check_lm_head(path: &Path, shape: &[usize], config: &GptConfig) -> Result<()> {
    let want = [config.vocab_size, config.n_embd];
    if shape != want {
        return Err(format_err(
            path,
            format!("tensor `lm_head.weight` has shape {shape:?}; only a head tied to wte {want:?} is supported"),
        ));
    }
    Ok(())
}
