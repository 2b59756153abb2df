//! Every op's autograd gradient against central finite differences in f64, on random shapes
//! (size-1 dims and broadcasting included) and random values; failures shrink to the
//! smallest dims. Plus: each op's f32 forward agrees with its f64 forward.

use engine::gradcheck::{cases, forward_f32_vs_f64, gradcheck, GradcheckOptions};
use engine::Rng;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

fn dims() -> impl Strategy<Value = ([usize; 3], u64)> {
    ([1usize..=5, 1usize..=5, 1usize..=5], any::<u64>())
}

#[test]
fn every_op_matches_finite_differences() {
    let opts = GradcheckOptions::default();
    for &name in cases::CASES {
        let mut runner = TestRunner::new(Config {
            cases: 24,
            failure_persistence: None,
            ..Config::default()
        });
        let result = runner.run(&dims(), |(d, seed)| {
            let (inputs, f) = cases::case(name, d, &mut Rng::new(seed)).expect("known case");
            let report =
                gradcheck(&f, &inputs, &opts).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(report.checked > 0, "{name}: nothing was checked");
            prop_assert!(report.passed, "{name} dims {d:?}: {report:?}");
            Ok(())
        });
        if let Err(e) = result {
            panic!("gradcheck failed for {name}: {e}");
        }
    }
}

#[test]
fn every_op_f32_forward_agrees_with_f64() {
    for &name in cases::CASES {
        let mut runner = TestRunner::new(Config {
            cases: 8,
            failure_persistence: None,
            ..Config::default()
        });
        let result = runner.run(&dims(), |(d, seed)| {
            let (inputs, f) = cases::case(name, d, &mut Rng::new(seed)).expect("known case");
            let diff =
                forward_f32_vs_f64(&f, &inputs).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(
                diff < 1e-5,
                "{name} dims {d:?}: f32 differs from f64 by {diff:e}"
            );
            Ok(())
        });
        if let Err(e) = result {
            panic!("f32 forward check failed for {name}: {e}");
        }
    }
}

/// The check itself must be able to fail: a deliberately wrong backward is caught.
#[test]
fn gradcheck_catches_a_wrong_gradient() {
    use engine::{ops, DType, Tensor};
    let x = Rng::new(1).normal_tensor(&[3, 4], 0.0, 1.0, DType::F64);
    // x·detach(x): autograd sees only one factor, so it reports x where the truth is 2x.
    let wrong = |xs: &[Tensor]| ops::mul(&xs[0], &xs[0].detach());
    let report = gradcheck(wrong, &[x], &GradcheckOptions::default()).unwrap();
    assert!(!report.passed, "a wrong gradient passed: {report:?}");
    assert!(report.max_rel_error > 0.1);
}
