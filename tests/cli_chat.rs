//! `ferrochat chat`, `label` and `judge` as the built binary (chat and label driven through
//! piped stdin), on a tiny checkpoint pretrained here for a few steps (its answers are noise;
//! the commands' behaviour is what is tested) and, for `judge`, the demo's pretrained model.

mod common;

use common::{ok, one_error_line};

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rlhf::data::{read_rankings, Ranking};
use rlhf::world::{Split, World};

fn ferrochat(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferrochat"));
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs the binary with `input` on stdin.
fn run(args: &[&str], input: &str) -> Output {
    let mut child = ferrochat(args).spawn().expect("the binary runs");
    // A command that fails early closes its stdin: a broken pipe here is expected then.
    let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
    child.wait_with_output().unwrap()
}

/// A checkpoint with its tokenizer, pretrained once for all the tests of this file.
fn model() -> &'static str {
    static MODEL: OnceLock<PathBuf> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli_chat");
            let _ = std::fs::remove_dir_all(&root);
            let (world, run_dir) = (root.join("world"), root.join("run"));
            let w = world.to_str().unwrap();
            ok(&run(&["world", "--out", w, "--corpus-bytes", "40000"], ""));
            let corpus = world.join("corpus.txt");
            #[rustfmt::skip]
            ok(&run(&[
                "pretrain", "--data", corpus.to_str().unwrap(), "--out", run_dir.to_str().unwrap(),
                "--steps", "4", "--batch-size", "2", "--seq-len", "32", "--vocab-size", "300",
                "--eval-every", "0", "--sample-every", "0", "--checkpoint-every", "0",
            ], ""));
            run_dir
        })
        .to_str()
        .unwrap()
}

/// A fresh path for a rankings file.
fn out_file(dir: &tempfile::TempDir) -> (PathBuf, String) {
    let p = dir.path().join("rankings.jsonl");
    let s = p.to_str().unwrap().to_string();
    (p, s)
}

fn train_prompt(i: usize) -> String {
    World::new(0).prompts(Split::Train)[i].prompt.clone()
}

#[test]
fn chat_answers_piped_questions_until_quit() {
    let m = model();
    let one = ok(&run(&["chat", "--model", m], "What is 3 plus 4?\n"));
    assert!(!one.trim().is_empty(), "no answer printed");
    // The same seed answers the same; `/quit` and an empty line end the session.
    assert_eq!(
        one,
        ok(&run(&["chat", "--model", m], "What is 3 plus 4?\n"))
    );
    let quit = "What is 3 plus 4?\n/quit\nWhat is 5 plus 1?\n";
    assert_eq!(one, ok(&run(&["chat", "--model", m], quit)));
    let blank = "What is 3 plus 4?\n\nWhat is 5 plus 1?\n";
    assert_eq!(one, ok(&run(&["chat", "--model", m], blank)));
    // Two questions get two answers, the first as when asked alone.
    let two = ok(&run(
        &["chat", "--model", m],
        "What is 3 plus 4?\nSay hi.\n",
    ));
    assert!(two.starts_with(&one) && two.len() > one.len(), "{two}");
    // An answer cut off before <|end|> says so.
    let cut = ok(&run(
        &["chat", "--model", m, "--max-new-tokens", "0"],
        "What is 3 plus 4?\n",
    ));
    assert_eq!(cut, "(empty) (no end token)\n");
    // No input, no output.
    assert_eq!(ok(&run(&["chat", "--model", m], "")), "");
}

#[test]
fn label_writes_exactly_the_rankings_given() {
    let tmp = tempfile::tempdir().unwrap();
    let (path, out) = out_file(&tmp);
    let args = ["label", "--model", model(), "--out", &out, "--prompts", "2"];
    let stdout = ok(&run(&args, "2 1 3 4\n3142\n"));
    assert!(stdout.contains("2 rankings appended"), "{stdout}");
    let got = read_rankings(&path).unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].prompt, train_prompt(0));
    assert_eq!(got[0].ranking, vec![1, 0, 2, 3]);
    assert_eq!(got[1].prompt, train_prompt(1));
    assert_eq!(got[1].ranking, vec![2, 0, 3, 1]);
    for r in &got {
        assert_eq!(r.responses.len(), 4);
        assert!(r.ties.is_empty());
        // Every response is shown, numbered.
        for n in 1..=4 {
            assert!(stdout.contains(&format!("  {n}. ")), "{stdout}");
        }
    }
    // A second session appends; the first session's lines are kept.
    ok(&run(&args, "4 3 2 1\nq\n"));
    let again = read_rankings(&path).unwrap();
    assert_eq!(again.len(), 3);
    assert_eq!(again[..2], got[..]);
    assert_eq!(again[2].ranking, vec![3, 2, 1, 0]);
    assert!(
        ok(&run(&args, "q\n")).starts_with(&format!("3 rankings already in {out}\n")),
        "the count of earlier rankings is shown"
    );
}

#[test]
fn label_checks_the_file_it_appends_to_before_asking_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let (path, out) = out_file(&tmp);
    let good = r#"{"prompt":"Say hi.","responses":["hi","no"],"ranking":[0,1]}"#;
    let before = format!("{good}\n{{\"prompt\": 3}}\n");
    std::fs::write(&path, &before).unwrap();
    let args = ["label", "--model", model(), "--out", &out, "--prompts", "1"];
    let e = one_error_line(&run(&args, "1234\n"));
    assert!(
        e.contains(&format!("{out}:2")) && e.contains("mend or move"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        before,
        "the file was changed"
    );
}

#[test]
fn label_rejects_a_bad_ranking_then_accepts_a_good_one() {
    let tmp = tempfile::tempdir().unwrap();
    let (path, out) = out_file(&tmp);
    let args = [
        "label",
        "--model",
        model(),
        "--out",
        &out,
        "--prompts",
        "1",
        "--k",
        "5",
    ];
    let stdout = ok(&run(
        &args,
        "1 1 2 3 4\n1 2 3 4\n6 1 2 3 4\nyes\n5 4 3 2 1\n",
    ));
    assert_eq!(stdout.matches("Not a ranking").count(), 4, "{stdout}");
    assert!(stdout.contains("twice"), "{stdout}");
    let got = read_rankings(&path).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].ranking, vec![4, 3, 2, 1, 0]);
    assert_eq!(got[0].responses.len(), 5);
}

#[test]
fn label_skips_and_quits_keeping_what_was_written() {
    let tmp = tempfile::tempdir().unwrap();
    let (path, out) = out_file(&tmp);
    let args = ["label", "--model", model(), "--out", &out, "--prompts", "4"];
    let stdout = ok(&run(&args, "s\n1234\nq\n"));
    assert!(stdout.contains("1 rankings appended"), "{stdout}");
    assert!(stdout.contains("(1 skipped)"), "{stdout}");
    let got = read_rankings(&path).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].prompt, train_prompt(1));
    // The end of input quits like `q`.
    ok(&run(&args, "4321\n"));
    assert_eq!(read_rankings(&path).unwrap().len(), 2);
}

#[test]
fn label_writes_each_ranking_before_the_next_prompt() {
    let tmp = tempfile::tempdir().unwrap();
    let (path, out) = out_file(&tmp);
    let mut child = ferrochat(&["label", "--model", model(), "--out", &out])
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"2 1 4 3\n").unwrap();
    stdin.flush().unwrap();
    // The line is on disk while the program waits for the second ranking; then it is killed.
    let start = Instant::now();
    let lines = loop {
        let n = std::fs::File::open(&path)
            .map(|f| std::io::BufReader::new(f).lines().count())
            .unwrap_or(0);
        if n > 0 || start.elapsed() > Duration::from_secs(120) {
            break n;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(lines, 1);
    let got: Vec<Ranking> = read_rankings(&path).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].ranking, vec![1, 0, 3, 2]);
}

#[test]
fn label_reads_prompts_from_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (path, out) = out_file(&tmp);
    let prompts = tmp.path().join("prompts.txt");
    std::fs::write(&prompts, "Say hi.\n\n  Name a color.  \n").unwrap();
    let p = prompts.to_str().unwrap();
    let args = [
        "label",
        "--model",
        model(),
        "--out",
        &out,
        "--prompt-file",
        p,
    ];
    let stdout = ok(&run(&args, "1234\n4321\n"));
    assert!(stdout.contains("[2/2] Name a color."), "{stdout}");
    let got = read_rankings(&path).unwrap();
    let asked: Vec<&str> = got.iter().map(|r| r.prompt.as_str()).collect();
    assert_eq!(asked, ["Say hi.", "Name a color."]);
}

#[test]
fn bad_arguments_are_one_error_line() {
    let tmp = tempfile::tempdir().unwrap();
    let (path, out) = out_file(&tmp);
    let m = model();
    for k in ["3", "10"] {
        let e = one_error_line(&run(
            &["label", "--model", m, "--out", &out, "--k", k],
            "1234\n",
        ));
        assert!(e.contains("--k") && e.contains(k), "{e}");
    }
    assert!(!path.exists(), "nothing is written on a bad --k");

    let e = one_error_line(&run(&["chat", "--model", m, "--temperature=-1"], "hi\n"));
    assert!(e.contains("--temperature"), "{e}");

    let missing = tmp.path().join("no_such_model");
    let missing = missing.to_str().unwrap();
    let e = one_error_line(&run(&["chat", "--model", missing], "hi\n"));
    assert!(e.contains("no_such_model"), "{e}");
    let e = one_error_line(&run(
        &["label", "--model", missing, "--out", &out],
        "1234\n",
    ));
    assert!(e.contains("no_such_model"), "{e}");
    let e = one_error_line(&run(
        &[
            "label",
            "--model",
            m,
            "--out",
            &out,
            "--prompt-file",
            missing,
        ],
        "",
    ));
    assert!(e.contains("no_such_model"), "{e}");
}

/// The demo's pretrained model, committed (it answers most held-out prompts correctly).
fn demo_pretrained() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("rlhf/tests/fixtures/demo_pretrained")
        .to_str()
        .unwrap()
        .to_string()
}

/// The numbers after `label` in `judge`'s head-to-head lines (below its answers), in order,
/// without a trailing `,`, `%` or `)`: e.g. the model's win rate and then the ideal answers'
/// for `"win rate "`.
fn judged(out: &str, label: &str) -> Vec<f64> {
    let values: Vec<f64> = out
        .lines()
        .skip_while(|l| !l.contains("held-out prompts ×"))
        .filter_map(|l| l.split_once(label))
        .map(|(_, rest)| {
            let value = rest.split_whitespace().next().unwrap();
            value.trim_end_matches([',', '%', ')']).parse().unwrap()
        })
        .collect();
    assert!(!values.is_empty(), "no {label:?} in:\n{out}");
    values
}

#[test]
fn judge_pits_two_models_against_each_other() {
    let (noise, demo) = (model(), demo_pretrained());
    let few = ["--prompts", "24", "--samples", "2"];
    let head_to_head = |a: &str, b: &str| {
        let mut args = vec!["judge", "--model", a, "--against", b];
        args.extend(few);
        ok(&run(&args, ""))
    };
    // A model that answers most prompts right beats one that answers noise, and the ideal
    // answers beat it more often still.
    let out = head_to_head(&demo, noise);
    assert!(
        out.contains("48 answers (24 held-out prompts × 2)"),
        "{out}"
    );
    let win = judged(&out, "win rate ");
    assert!(win[0] > 60.0 && win[1] > win[0], "{out}");
    assert!(judged(&out, "labeler score")[0] > 0.2, "{out}");
    // The rubric's better/tied/worse add up, and a noiseless labeler counts only them:
    // better + tied / 2.
    let noiseless = judged(&out, "noiseless labeler's win rate:");
    for ((better, tied), (worse, noiseless)) in judged(&out, "better")
        .into_iter()
        .zip(judged(&out, "tied"))
        .zip(judged(&out, "worse").into_iter().zip(noiseless))
    {
        assert!((better + tied + worse - 100.0).abs() < 0.15, "{out}");
        assert!((better + tied / 2.0 - noiseless).abs() < 0.15, "{out}");
    }
    // Against itself, with the same seeds, every answer is the same: each pair ties.
    let out = head_to_head(noise, noise);
    assert!(
        out.contains("the model       win rate 50.0% (95% interval 50.0–50.0%)"),
        "{out}"
    );
    assert!(
        out.contains("better 0.0%, tied 100.0%, worse 0.0%"),
        "{out}"
    );
    assert!(out.contains("labeler score +0.000"), "{out}");
    // Without --against, only the model's own table.
    let mut args = vec!["judge", "--model", noise];
    args.extend(few);
    let out = ok(&run(&args, ""));
    assert!(out.contains("48 answers to held-out prompts"), "{out}");
    assert!(!out.contains("win rate"), "{out}");
}

#[test]
fn judge_refuses_bad_arguments_before_answering() {
    let m = model();
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no_such_model");
    let missing = missing.to_str().unwrap();
    for args in [
        vec!["judge", "--model", m, "--against", missing],
        vec!["judge", "--model", missing, "--against", m],
    ] {
        let o = run(&args, "");
        let e = one_error_line(&o);
        assert!(e.contains("no_such_model"), "{e}");
        assert!(o.stdout.is_empty(), "answered before failing");
    }
    let e = one_error_line(&run(&["judge", "--model", m, "--temperature=-1"], ""));
    assert!(e.contains("--temperature"), "{e}");
}
