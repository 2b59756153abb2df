//! `ferrochat gradcheck`: every op's autograd gradient against finite differences.

use anyhow::{bail, Result};
use engine::gradcheck::{cases, gradcheck, GradcheckOptions};
use engine::Rng;

#[derive(clap::Args)]
pub struct Args {
    /// Seed for the random inputs.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The three small dims the inputs are shaped from.
    #[arg(long, num_args = 3, default_values_t = [3, 4, 5])]
    dims: Vec<usize>,
    /// Only the cases whose name contains this.
    #[arg(long)]
    only: Option<String>,
}

pub fn run(args: Args) -> Result<()> {
    let opts = GradcheckOptions::default();
    let dims = [
        args.dims[0].max(1),
        args.dims[1].max(1),
        args.dims[2].max(1),
    ];
    println!(
        "autograd vs fourth-order central differences (h = {:e}), f64, dims {dims:?}, seed {}",
        opts.step, args.seed
    );
    println!(
        "pass: max relative error <= {:e} (absolute floor {:e})\n",
        opts.rel_tol, opts.abs_floor
    );
    println!(
        "{:<26} {:>9} {:>14} {:>14}  result",
        "op", "elements", "max rel err", "max abs err"
    );
    let mut failed = vec![];
    for &name in cases::CASES {
        if args.only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        let mut rng = Rng::new(args.seed);
        let (inputs, f) = cases::case(name, dims, &mut rng).expect("every listed case exists");
        let r = gradcheck(&f, &inputs, &opts)?;
        println!(
            "{name:<26} {:>9} {:>14.3e} {:>14.3e}  {}",
            r.checked,
            r.max_rel_error,
            r.max_abs_error,
            if r.passed { "pass" } else { "FAIL" }
        );
        if !r.passed {
            failed.push(name);
        }
    }
    if !failed.is_empty() {
        bail!("gradcheck failed for: {}", failed.join(", "));
    }
    Ok(())
}
