//! `ferrochat eval` and `ferrochat grads`, run as the built binary on the golden fixture
//! model `tiny_a` (tests/reference/fixtures/gpt2): the good case against the transformers
//! reference, and every kind of bad input (one `error:` line naming the file and line, a
//! non-zero exit, no panic, no output file).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use engine::Tensor;
use model::checkpoint;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/reference/fixtures/gpt2/tiny_a")
}

fn model_dir() -> PathBuf {
    fixture().join("model")
}

/// The fixture's tokens (row-major `[B, T]`), T, and the transformers loss.
struct Reference {
    tokens: Vec<usize>,
    seq: usize,
    loss: f64,
}

fn reference_json() -> Reference {
    let text = std::fs::read_to_string(fixture().join("reference.json")).unwrap();
    let j: serde_json::Value = serde_json::from_str(&text).unwrap();
    Reference {
        tokens: j["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_u64().unwrap() as usize)
            .collect(),
        seq: j["seq"].as_u64().unwrap() as usize,
        loss: j["loss"].as_f64().unwrap(),
    }
}

/// The fixture's batch as a token file, one row per line.
fn reference_token_text() -> String {
    let r = reference_json();
    r.tokens
        .chunks(r.seq)
        .map(|row| {
            row.iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(" ")
                + "\n"
        })
        .collect()
}

fn ferrochat(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferrochat"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout_loss(out: &Output) -> f64 {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("loss "))
        .expect("a loss line");
    line[5..].parse().unwrap()
}

fn eval(tokens: &Path) -> Output {
    ferrochat(&[
        "eval",
        "--model",
        model_dir().to_str().unwrap(),
        "--tokens",
        tokens.to_str().unwrap(),
    ])
}

fn grads(model: &Path, tokens: &Path, out: &Path) -> Output {
    ferrochat(&[
        "grads",
        "--model",
        model.to_str().unwrap(),
        "--tokens",
        tokens.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ])
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
    diff / b.iter().map(|y| y.abs()).fold(0.0, f64::max)
}

#[test]
fn eval_matches_the_transformers_loss() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.txt");
    std::fs::write(&tokens, reference_token_text()).unwrap();
    let out = eval(&tokens);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = reference_json().loss;
    let err = (stdout_loss(&out) - want).abs() / want;
    assert!(err < 1e-5, "loss rel err {err:e}");
}

#[test]
fn grads_match_the_transformers_reference() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, out_path) = (
        dir.path().join("tokens.txt"),
        dir.path().join("g.safetensors"),
    );
    std::fs::write(&tokens, reference_token_text()).unwrap();
    let out = grads(&model_dir(), &tokens, &out_path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: HashMap<String, Tensor> = checkpoint::load_tensors(&out_path)
        .unwrap()
        .into_iter()
        .collect();
    let want: HashMap<String, Tensor> =
        checkpoint::load_tensors(fixture().join("reference.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    assert_eq!(got.len(), want.len() + 1, "loss + logits + every gradient");
    let loss = got["loss"].item().unwrap();
    assert!((loss - reference_json().loss).abs() / reference_json().loss < 1e-5);
    assert_eq!(got["loss"].shape(), &[] as &[usize]);
    assert!((loss - stdout_loss(&out)).abs() < 1e-6);
    for (name, w) in &want {
        let tol = if name == "logits" { 1e-5 } else { 1e-4 };
        let err = tensor_error(&got[name], w);
        assert!(err < tol, "{name}: error {err:e}");
    }
}

#[test]
fn lines_of_different_lengths_average_over_every_prediction() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let long = "53 31 21 0 16 45 65 32 16 84 1 7";
    let short = "43 73 4 50 5";
    let l_long = stdout_loss(&eval(&write("long.txt", long)));
    let l_short = stdout_loss(&eval(&write("short.txt", short)));
    // A blank line between them is skipped.
    let both = write("both.txt", &format!("{long}\n\n{short}\n"));
    let l_both = stdout_loss(&eval(&both));
    let want = (11.0 * l_long + 4.0 * l_short) / 15.0;
    assert!((l_both - want).abs() < 1e-5 * want, "{l_both} vs {want}");
    let out_path = dir.path().join("g.safetensors");
    let out = grads(&model_dir(), &both, &out_path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!((stdout_loss(&out) - want).abs() < 1e-5 * want);
    let got: HashMap<String, Tensor> = checkpoint::load_tensors(&out_path)
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(got["logits"].shape(), &[2, 12, 97]);
}

/// Runs `eval` and `grads` on a bad token file (or model) and checks the failure: exit code
/// ≠ 0, one `error:` line containing every `needles`, no panic, no output file left behind.
fn assert_fails(model: &Path, tokens_text: Option<&str>, needles: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.txt");
    if let Some(text) = tokens_text {
        std::fs::write(&tokens, text).unwrap();
    }
    let out_path = dir.path().join("g.safetensors");
    let runs = [
        ferrochat(&[
            "eval",
            "--model",
            model.to_str().unwrap(),
            "--tokens",
            tokens.to_str().unwrap(),
        ]),
        grads(model, &tokens, &out_path),
    ];
    for out in runs {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.starts_with("error: "), "{stderr}");
        for n in needles {
            assert!(stderr.contains(n), "{stderr:?} lacks {n:?}");
        }
        assert!(
            out.stdout.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "tokens.txt")
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn a_token_id_outside_the_vocabulary_names_the_line_and_the_id() {
    assert_fails(
        &model_dir(),
        Some("1 2 3\n4 5 97 6\n"),
        &["tokens.txt:2:", "token id 97", "vocabulary of 97"],
    );
}

#[test]
fn a_line_with_one_token_is_an_error() {
    assert_fails(
        &model_dir(),
        Some("1 2 3\n\n7\n"),
        &["tokens.txt:3:", "at least 2 tokens"],
    );
}

#[test]
fn an_empty_file_is_an_error() {
    assert_fails(&model_dir(), Some(""), &["tokens.txt", "empty"]);
    assert_fails(&model_dir(), Some("\n  \n"), &["tokens.txt", "empty"]);
}

#[test]
fn a_non_number_is_an_error() {
    assert_fails(
        &model_dir(),
        Some("1 2 x3 4\n"),
        &["tokens.txt:1:", "\"x3\" is not a token id"],
    );
    assert_fails(&model_dir(), Some("1 -2\n"), &["tokens.txt:1:", "\"-2\""]);
}

#[test]
fn a_line_longer_than_the_context_is_an_error() {
    let line: Vec<String> = (0..17).map(|i| i.to_string()).collect();
    let text = format!("1 2\n{}\n", line.join(" "));
    assert_fails(
        &model_dir(),
        Some(&text),
        &["tokens.txt:2:", "17 tokens", "context of 16"],
    );
}

#[test]
fn a_missing_model_folder_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-model");
    assert_fails(
        &missing,
        Some("1 2 3\n"),
        &["no-model", "not a checkpoint folder"],
    );
}

#[test]
fn a_missing_token_file_is_an_error() {
    assert_fails(&model_dir(), None, &["tokens.txt", "No such file"]);
}

#[test]
fn a_corrupt_model_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m");
    std::fs::create_dir(&model).unwrap();
    std::fs::copy(model_dir().join("config.json"), model.join("config.json")).unwrap();
    let bytes = std::fs::read(model_dir().join("model.safetensors")).unwrap();
    std::fs::write(model.join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    assert_fails(
        &model,
        Some("1 2 3\n"),
        &["model.safetensors", "truncated or corrupt"],
    );
}

/// A copy of the fixture model whose tensors are rewritten by `edit` (name, tensor) list.
fn edited_model(dir: &Path, edit: impl FnOnce(&mut Vec<(String, Tensor)>)) -> PathBuf {
    let model = dir.join("m");
    std::fs::create_dir(&model).unwrap();
    std::fs::copy(model_dir().join("config.json"), model.join("config.json")).unwrap();
    let mut tensors = checkpoint::load_tensors(model_dir().join("model.safetensors")).unwrap();
    edit(&mut tensors);
    checkpoint::save_tensors(model.join("model.safetensors"), &tensors).unwrap();
    model
}

#[test]
fn a_missing_tensor_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let model = edited_model(dir.path(), |t| {
        t.retain(|(n, _)| !n.ends_with("h.1.mlp.c_fc.weight"))
    });
    assert_fails(
        &model,
        Some("1 2 3\n"),
        &["model.safetensors", "h.1.mlp.c_fc.weight"],
    );
}

#[test]
fn a_misshapen_tensor_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let model = edited_model(dir.path(), |t| {
        let entry = t
            .iter_mut()
            .find(|(n, _)| n.ends_with("ln_f.weight"))
            .unwrap();
        entry.1 = Tensor::zeros(&[3], engine::DType::F32);
    });
    assert_fails(
        &model,
        Some("1 2 3\n"),
        &["model.safetensors", "ln_f.weight"],
    );
}

#[test]
fn a_config_that_disagrees_with_the_tensors_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let model = edited_model(dir.path(), |_| {});
    let path = model.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config["n_layer"] = (config["n_layer"].as_u64().unwrap() + 1).into();
    std::fs::write(&path, config.to_string()).unwrap();
    assert_fails(&model, Some("1 2 3\n"), &["model.safetensors"]);
}
