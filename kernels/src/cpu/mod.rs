//! CPU kernels, one file per family. Each file has `*_ref` (plain, generic, the definition of
//! the math) and the fast f32 version the engine calls.

pub mod adamw;
pub mod attention;
pub mod crossentropy;
pub mod gelu;
pub mod layernorm;
pub mod linear;
pub mod matmul;
pub mod softmax;
#[cfg(test)]
mod testutil;
pub(crate) mod vecmath;

/// Runs `f` on one of rayon's worker threads (of the global pool) and returns its result.
///
/// The fast kernels split their work with rayon. Called from a thread outside the pool (a
/// program's main thread), each split is injected into the pool and the caller sleeps until
/// both halves are done: two wake-ups, tens of microseconds, as much as half of a 256³ GEMM
/// (measured on 2 threads: 0.09–0.16 ms a call from the main thread, 0.077 ms from a worker).
/// Called from a worker, the caller runs one half itself and the other worker steals the
/// rest. So a program runs its work through this once, at the top (the `ferrochat` binary
/// and the benchmarks do).
pub fn on_worker_thread<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
}

#[cfg(test)]
mod tests {
    #[test]
    fn on_worker_thread_runs_the_closure_on_a_pool_thread_and_returns_its_value() {
        assert_eq!(
            rayon::current_thread_index(),
            None,
            "the test thread is no worker"
        );
        let (on_worker, value) =
            super::on_worker_thread(|| (rayon::current_thread_index().is_some(), 42));
        assert!(on_worker);
        assert_eq!(value, 42);
    }
}
