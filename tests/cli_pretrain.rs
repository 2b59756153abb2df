//! `ferrochat world`, `ferrochat tokenizer` and `ferrochat pretrain` as the built binary: a
//! short run learns, an interrupted and resumed run gives the same losses bit for bit as an
//! uninterrupted one, and bad input is one error line with a non-zero exit.

mod common;

use common::{ok, one_error_line};

use std::path::Path;
use std::process::{Command, Output};

fn ferrochat(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferrochat"))
        .args(args)
        .output()
        .expect("the binary runs")
}

/// The training losses of a run folder's metrics.jsonl, as bits, by step.
fn losses(dir: &Path) -> Vec<(u64, u64)> {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("loss").is_some())
        .map(|v| {
            (
                v["step"].as_u64().unwrap(),
                v["loss"].as_f64().unwrap().to_bits(),
            )
        })
        .collect()
}

const SMALL_RUN: [&str; 16] = [
    "--steps",
    "12",
    "--batch-size",
    "4",
    "--seq-len",
    "32",
    "--eval-every",
    "6",
    "--eval-batches",
    "2",
    "--sample-every",
    "0",
    "--checkpoint-every",
    "6",
    "--vocab-size",
    "300",
];

#[test]
fn an_interrupted_run_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let world = tmp.path().join("world");
    let w = world.to_str().unwrap();
    ok(&ferrochat(&[
        "world",
        "--out",
        w,
        "--corpus-bytes",
        "60000",
    ]));
    let data = world.join("corpus.txt");
    let data = data.to_str().unwrap();

    let whole = tmp.path().join("whole");
    let mut args = vec![
        "pretrain",
        "--data",
        data,
        "--out",
        whole.to_str().unwrap(),
        "--dropout",
        "0.1",
    ];
    args.extend(SMALL_RUN);
    ok(&ferrochat(&args));

    let parts = tmp.path().join("parts");
    let p = parts.to_str().unwrap();
    let mut first = vec![
        "pretrain",
        "--data",
        data,
        "--out",
        p,
        "--dropout",
        "0.1",
        "--stop-after",
        "6",
    ];
    first.extend(SMALL_RUN);
    ok(&ferrochat(&first));
    assert_eq!(losses(&parts).len(), 6);
    let mut second = vec![
        "pretrain",
        "--data",
        data,
        "--out",
        p,
        "--dropout",
        "0.1",
        "--resume",
        p,
    ];
    second.extend(SMALL_RUN);
    ok(&ferrochat(&second));

    let (a, b) = (losses(&whole), losses(&parts));
    assert_eq!(a.len(), 12);
    assert_eq!(a, b, "resumed losses differ from the uninterrupted run");
    assert!(
        f64::from_bits(a[11].1) < f64::from_bits(a[0].1),
        "the loss goes down: {a:?}"
    );
    // The checkpoint is a loadable model with its tokenizer beside it...
    let model = model::checkpoint::load(&whole).unwrap();
    let tok = model::tokenizer::Tokenizer::load(&whole).unwrap();
    assert!(tok.vocab_size() <= model.config.vocab_size);

    // ...that `ferrochat sample` continues, the same way for the same seed.
    let w = whole.to_str().unwrap();
    let sample = |seed: &str| {
        ok(&ferrochat(&[
            "sample",
            "--model",
            w,
            "--prompt",
            "<|user|>What is 3 plus 4?<|assistant|>",
            "--num-samples",
            "2",
            "--max-new-tokens",
            "8",
            "--seed",
            seed,
            "--stop",
            "<|end|>",
        ]))
    };
    let (a, b) = (sample("1"), sample("1"));
    assert_eq!(a, b);
    assert_eq!(a.matches("--- sample").count(), 2, "{a}");
    assert!(a.contains("<|user|>What is 3 plus 4?<|assistant|>"), "{a}");

    // Bad input to `sample`: a prompt longer than the context, a stop text of several tokens.
    let long = "word ".repeat(400);
    let e = one_error_line(&ferrochat(&["sample", "--model", w, "--prompt", &long]));
    assert!(e.contains("context"), "{e}");
    let e = one_error_line(&ferrochat(&[
        "sample",
        "--model",
        w,
        "--prompt",
        "hi",
        "--stop",
        "several words here",
    ]));
    assert!(e.contains("several words here"), "{e}");
}

#[test]
fn sampling_from_a_folder_without_a_tokenizer_is_an_error() {
    let fixture = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/reference/fixtures/gpt2/tiny_a/model");
    let e = one_error_line(&ferrochat(&[
        "sample",
        "--model",
        fixture.to_str().unwrap(),
        "--prompt",
        "hi",
    ]));
    assert!(e.contains("tokenizer") && e.contains("tiny_a"), "{e}");
}

#[test]
fn tokenizer_commands_train_and_encode() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("text.txt");
    std::fs::write(&data, "the cat sat on the mat. the cat ate. ".repeat(200)).unwrap();
    let out = tmp.path().join("tok");
    ok(&ferrochat(&[
        "tokenizer",
        "train",
        "--data",
        data.to_str().unwrap(),
        "--vocab-size",
        "280",
        "--out",
        out.to_str().unwrap(),
    ]));
    let encoded = Command::new(env!("CARGO_BIN_EXE_ferrochat"))
        .args(["tokenizer", "encode", "--tokenizer", out.to_str().unwrap()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(b"the cat\n<|endoftext|>\n")?;
            child.wait_with_output()
        })
        .unwrap();
    let text = ok(&encoded);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2);
    let tok = model::tokenizer::Tokenizer::load(&out).unwrap();
    let expect: Vec<String> = tok.encode("the cat").iter().map(u32::to_string).collect();
    assert_eq!(lines[0], expect.join(" "));
    assert_eq!(lines[1].split(' ').count(), 1, "a special token is one id");
}

#[test]
fn bad_input_is_one_error_line() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let out = tmp.path().join("run");
    let o = out.to_str().unwrap();

    let e = one_error_line(&ferrochat(&[
        "pretrain",
        "--data",
        empty.to_str().unwrap(),
        "--out",
        o,
    ]));
    assert!(e.contains("empty.txt") && e.contains("empty"), "{e}");

    let missing = tmp.path().join("nope.txt");
    let e = one_error_line(&ferrochat(&[
        "pretrain",
        "--data",
        missing.to_str().unwrap(),
        "--out",
        o,
    ]));
    assert!(e.contains("nope.txt"), "{e}");

    let tiny = tmp.path().join("tiny.txt");
    std::fs::write(&tiny, "a few words only").unwrap();
    let e = one_error_line(&ferrochat(&[
        "pretrain",
        "--data",
        tiny.to_str().unwrap(),
        "--out",
        o,
        "--vocab-size",
        "300",
    ]));
    assert!(e.contains("tiny.txt") && e.contains("too few"), "{e}");

    let text = tmp.path().join("text.txt");
    std::fs::write(&text, "hello world ".repeat(2000)).unwrap();
    let t = text.to_str().unwrap();
    let nowhere = tmp.path().join("no-such-run");
    let e = one_error_line(&ferrochat(&[
        "pretrain",
        "--data",
        t,
        "--out",
        o,
        "--resume",
        nowhere.to_str().unwrap(),
    ]));
    assert!(e.contains("no-such-run"), "{e}");

    let e = one_error_line(&ferrochat(&[
        "pretrain",
        "--data",
        t,
        "--out",
        o,
        "--seq-len",
        "500",
    ]));
    assert!(e.contains("500") && e.contains("context"), "{e}");

    let e = one_error_line(&ferrochat(&[
        "pretrain", "--data", t, "--out", o, "--preset", "huge",
    ]));
    assert!(e.contains("huge"), "{e}");

    let e = one_error_line(&ferrochat(&[
        "tokenizer",
        "encode",
        "--tokenizer",
        nowhere.to_str().unwrap(),
    ]));
    assert!(e.contains("no-such-run"), "{e}");
}

/// `--device cuda` on a machine or build without a GPU: one clear error line, a non-zero exit,
/// before any data is read. A default build says to rebuild with the feature; a `cuda` build on
/// a machine without a GPU says there is no driver or no GPU.
#[test]
fn pretrain_on_a_missing_gpu_is_one_error_line() {
    if engine::Device::cuda(0).is_ok() {
        println!("skipped: a GPU is present");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    for device in ["cuda", "cuda:1"] {
        let e = one_error_line(&ferrochat(&[
            "pretrain",
            "--data",
            "no-such-file.txt",
            "--out",
            out.to_str().unwrap(),
            "--device",
            device,
            "--precision",
            "bf16",
        ]));
        if cfg!(feature = "cuda") {
            assert!(
                e.contains("no CUDA driver") || e.contains("no usable CUDA GPU"),
                "{e}"
            );
        } else {
            assert!(e.contains("rebuild with --features cuda"), "{e}");
        }
    }
    let e = one_error_line(&ferrochat(&[
        "pretrain",
        "--data",
        "no-such-file.txt",
        "--out",
        out.to_str().unwrap(),
        "--precision",
        "bf16",
    ]));
    assert!(e.contains("needs a GPU"), "{e}");
}
