//! The pieces of a linear layer y = x·W + b that are not the GEMM (that is [`super::matmul`]),
//! and the element-wise sum of two tensors (the residual stream and gradient accumulation).
//!
//! With x `[rows, k]`, W `[k, cols]`, b `[cols]`:
//!   forward:  y = x·W + b        (each row of y starts as b, then the GEMM adds x·W into it);
//!   backward: dx = dy·Wᵀ,  dW = xᵀ·dy,  db = Σ_rows dy   ([`bias_grad`]).

use crate::cpu::vecmath::{for_elem_tasks, rows_per_task, use_threads};
use crate::Float;
use rayon::prelude::*;

/// Reference bias gradient: `db[c] = Σ_r dy[r, c]` for `dy` `[rows, cols]` (overwrites `db`).
pub fn bias_grad_ref<F: Float>(dy: &[F], rows: usize, cols: usize, db: &mut [F]) {
    db[..cols].iter_mut().for_each(|v| *v = F::zero());
    for r in 0..rows {
        for c in 0..cols {
            db[c] += dy[r * cols + c];
        }
    }
}

/// Fast f32 bias gradient (same contract as [`bias_grad_ref`]). Rows are cut into tasks of a
/// fixed number of rows (from `cols` only); each task sums its rows into its own partial
/// (a row-by-row vector add the compiler vectorises), and the partials are added in task
/// order: the same bits for any thread count.
pub fn bias_grad(dy: &[f32], rows: usize, cols: usize, db: &mut [f32]) {
    let db = &mut db[..cols];
    if rows == 0 || cols == 0 {
        db.fill(0.0);
        return;
    }
    let dy = &dy[..rows * cols];
    let rpt = rows_per_task(cols);
    let mut partial = vec![0.0f32; rows.div_ceil(rpt) * cols];
    let task = |(t, p): (usize, &mut [f32])| {
        for row in dy[t * rpt * cols..].chunks_exact(cols).take(rpt) {
            p.iter_mut().zip(row).for_each(|(a, &g)| *a += g);
        }
    };
    if use_threads(rows * cols) {
        partial.par_chunks_mut(cols).enumerate().for_each(task);
    } else {
        partial.chunks_mut(cols).enumerate().for_each(task);
    }
    let mut parts = partial.chunks_exact(cols);
    db.copy_from_slice(parts.next().expect("rows > 0"));
    for p in parts {
        db.iter_mut().zip(p).for_each(|(a, &g)| *a += g);
    }
}

/// Reference element-wise sum `out = a + b` (same lengths).
pub fn add_ref<F: Float>(a: &[F], b: &[F], out: &mut [F]) {
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = x + y;
    }
}

/// Fast f32 element-wise sum (same contract as [`add_ref`]): vectorised chunks, on rayon
/// above a size threshold. Each element is one addition, so the result is exactly the
/// reference's.
pub fn add(a: &[f32], b: &[f32], out: &mut [f32]) {
    let n = out.len();
    let (a, b) = (&a[..n], &b[..n]);
    for_elem_tasks(out, |off, o| {
        let (a, b) = (&a[off..off + o.len()], &b[off..off + o.len()]);
        for ((o, &x), &y) in o.iter_mut().zip(a).zip(b) {
            *o = x + y;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testutil::{assert_close, to64, Rng};
    use proptest::prelude::*;

    fn check_bias_grad(rows: usize, cols: usize, seed: u64) {
        let dy = Rng::new(seed).vec(rows * cols, -1.0, 1.0);
        let mut db = vec![9.0; cols];
        bias_grad(&dy, rows, cols, &mut db);
        let mut db64 = vec![9.0; cols];
        bias_grad_ref(&to64(&dy), rows, cols, &mut db64);
        let tol = 1e-6 * (rows as f64).sqrt().max(1.0);
        assert_close(&format!("bias_grad {rows}x{cols}"), &db, &db64, tol, tol);
    }

    #[test]
    fn bias_grad_matches_reference_on_awkward_shapes() {
        // One row, one column, prime sizes, and enough rows for several parallel tasks.
        for (rows, cols) in [
            (0, 5),
            (1, 1),
            (1, 7),
            (7, 1),
            (3, 33),
            (257, 17),
            (2048, 128),
        ] {
            check_bias_grad(rows, cols, (rows * 31 + cols) as u64);
        }
        check_bias_grad(40_000, 3, 1);
    }

    #[test]
    fn bias_grad_same_bits_on_one_and_two_threads() {
        let (rows, cols) = (3000, 129);
        let dy = Rng::new(5).vec(rows * cols, -1.0, 1.0);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut db = vec![0.0; cols];
            pool.install(|| bias_grad(&dy, rows, cols, &mut db));
            db
        };
        let (one, two) = (run(1), run(2));
        assert!(one
            .iter()
            .zip(&two)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
    }

    #[test]
    fn add_matches_reference_exactly() {
        for n in [0, 1, 15, 16, 17, 100_003] {
            let a = Rng::new(n as u64).vec(n, -2.0, 2.0);
            let b = Rng::new(n as u64 + 1).vec(n, -2.0, 2.0);
            let (mut out, mut want) = (vec![9.0; n], vec![7.0; n]);
            add(&a, &b, &mut out);
            add_ref(&a, &b, &mut want);
            assert_eq!(out, want, "n={n}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn bias_grad_random_shapes(rows in 0usize..700, cols in 1usize..70, seed in 0u64..1000) {
            check_bias_grad(rows, cols, seed);
        }
    }
}
