//! Numerical gradient checking: autograd against central finite differences, in f64.
//!
//! Anyone writing an op can call [`gradcheck`] on a function of tensors:
//!
//! ```
//! use engine::{gradcheck::{gradcheck, GradcheckOptions}, ops, Rng, DType};
//! let x = Rng::new(0).normal_tensor(&[3, 4], 0.0, 1.0, DType::F64);
//! let report = gradcheck(|xs| ops::tanh(&xs[0]), &[x], &GradcheckOptions::default()).unwrap();
//! assert!(report.passed, "{report:?}");
//! ```

use crate::{no_grad, ops, DType, Result, Rng, Tensor};

/// Step size and tolerance of a check.
#[derive(Clone, Copy, Debug)]
pub struct GradcheckOptions {
    /// Finite-difference step h of the fourth-order central difference
    /// ∂f/∂x ≈ [8(f(x+h) − f(x−h)) − (f(x+2h) − f(x−2h))] / 12h. Its truncation error is
    /// ∝ h⁴ and its rounding error ∝ ε/h; h = 1e-4 keeps both far below the tolerance.
    pub step: f64,
    /// Largest accepted relative error |analytic − numeric| / max(|analytic|, |numeric|, floor).
    pub rel_tol: f64,
    /// The absolute floor in the denominator, so that gradients near zero are compared
    /// absolutely rather than relatively.
    pub abs_floor: f64,
    /// Seed of the random weights that reduce a non-scalar output to a scalar.
    pub seed: u64,
}

impl Default for GradcheckOptions {
    fn default() -> Self {
        GradcheckOptions {
            step: 1e-4,
            rel_tol: 1e-6,
            abs_floor: 1e-3,
            seed: 0x5eed,
        }
    }
}

/// The outcome of a check.
#[derive(Clone, Debug, Default)]
pub struct GradcheckReport {
    /// Largest relative error over all checked elements.
    pub max_rel_error: f64,
    /// Largest absolute error over all checked elements.
    pub max_abs_error: f64,
    /// Where the largest relative error is: (input, flat index, analytic, numeric).
    pub worst: Option<(usize, usize, f64, f64)>,
    /// Number of gradient elements compared.
    pub checked: usize,
    /// Whether `max_rel_error <= rel_tol`.
    pub passed: bool,
}

/// Compares autograd's gradient of `f` with central differences, for every element of every
/// input. Inputs are converted to f64. A non-scalar output y is reduced to Σ w∘y with fixed
/// random weights w, which checks the whole Jacobian (every output's contribution) at once.
pub fn gradcheck(
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
    inputs: &[Tensor],
    opts: &GradcheckOptions,
) -> Result<GradcheckReport> {
    let inputs: Vec<Tensor> = inputs
        .iter()
        .map(|x| x.detach().to_dtype(DType::F64).detach().requires_grad())
        .collect();
    let probe = no_grad(|| f(&inputs))?;
    let weights = Rng::new(opts.seed).normal_tensor(probe.shape(), 0.0, 1.0, DType::F64);
    let scalar = |xs: &[Tensor]| -> Result<Tensor> {
        let y = f(xs)?.to_dtype(DType::F64);
        ops::sum_all(&ops::mul(&y, &weights)?)
    };
    let grads = scalar(&inputs)?.backward()?;
    let mut report = GradcheckReport::default();
    for (i, x) in inputs.iter().enumerate() {
        let analytic = match grads.get(x) {
            Some(g) => g.to_vec_f64(),
            None => vec![0.0; x.numel()], // the output does not depend on this input
        };
        let base = x.to_vec_f64();
        for j in 0..base.len() {
            let eval_at = |v: f64| -> Result<f64> {
                let mut moved = base.clone();
                moved[j] = v;
                let xs: Vec<Tensor> = inputs
                    .iter()
                    .enumerate()
                    .map(|(k, t)| {
                        if k == i {
                            Tensor::from_vec(moved.clone(), t.shape())
                        } else {
                            Ok(t.clone())
                        }
                    })
                    .collect::<Result<_>>()?;
                no_grad(|| scalar(&xs))?.item()
            };
            let h = opts.step;
            let near = eval_at(base[j] + h)? - eval_at(base[j] - h)?;
            let far = eval_at(base[j] + 2.0 * h)? - eval_at(base[j] - 2.0 * h)?;
            let numeric = (8.0 * near - far) / (12.0 * h);
            let a = analytic[j];
            let abs = (a - numeric).abs();
            let rel = abs / a.abs().max(numeric.abs()).max(opts.abs_floor);
            report.checked += 1;
            report.max_abs_error = report.max_abs_error.max(abs);
            if rel > report.max_rel_error || report.worst.is_none() {
                report.max_rel_error = report.max_rel_error.max(rel);
                report.worst = Some((i, j, a, numeric));
            }
        }
    }
    report.passed = report.max_rel_error <= opts.rel_tol;
    Ok(report)
}

/// Runs `f` on the inputs in f32 and in f64 and returns the largest relative difference of
/// the outputs (relative to max(|y64|, 1)): how far single precision drifts from the f64
/// reference for this function.
pub fn forward_f32_vs_f64(
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
    inputs: &[Tensor],
) -> Result<f64> {
    let as_type =
        |dt: DType| -> Vec<Tensor> { inputs.iter().map(|x| x.detach().to_dtype(dt)).collect() };
    let y32 = no_grad(|| f(&as_type(DType::F32)))?.to_vec_f64();
    let y64 = no_grad(|| f(&as_type(DType::F64)))?.to_vec_f64();
    Ok(y32
        .iter()
        .zip(&y64)
        .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
        .fold(0.0, f64::max))
}

pub mod cases;
