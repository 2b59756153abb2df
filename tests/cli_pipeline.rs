//! `ferrochat pipeline`'s options are checked before any work starts: a bad value is an error
//! naming the option, a non-zero exit, and no run folder.

mod common;

use std::process::{Command, Output};

use common::one_error_line;

/// `ferrochat pipeline --preset tiny ARGS` (the tiny preset: were a bad value let through, the
/// run that starts is short).
fn pipeline(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferrochat"))
        .args(["pipeline", "--preset", "tiny"])
        .args(args)
        .output()
        .expect("the binary runs")
}

#[test]
fn bad_pipeline_options_are_refused_before_the_run_starts() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let out_arg = out.to_str().unwrap();

    // `--demonstrations` takes a count of at least 1 or `all` (clap's own error: exit 2).
    for bad in ["0", "-3", "many"] {
        let o = pipeline(&["--out", out_arg, &format!("--demonstrations={bad}")]);
        assert_eq!(o.status.code(), Some(2), "--demonstrations {bad}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("--demonstrations") && err.contains("`all`"),
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }

    for bad in ["-1", "NaN", "inf"] {
        let e = one_error_line(&pipeline(&["--out", out_arg, &format!("--beta={bad}")]));
        assert!(e.contains("--beta"), "{e}");
    }
    assert!(!out.exists(), "a refused run created {}", out.display());
}
