//! On-CPU time, for benchmarks on a shared machine: other processes taking turns on the
//! cores do not add to it, as they do to wall time. `clock_gettime` has nanosecond
//! resolution (unlike /proc/thread-self/schedstat, brought up to date only at scheduler
//! events). Unix only.

/// Seconds of CPU the calling thread has used (CLOCK_THREAD_CPUTIME_ID).
pub fn thread_seconds() -> f64 {
    seconds(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// Seconds of CPU the whole process has used, all threads (CLOCK_PROCESS_CPUTIME_ID).
pub fn process_seconds() -> f64 {
    seconds(libc::CLOCK_PROCESS_CPUTIME_ID)
}

fn seconds(clock: libc::clockid_t) -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec and `clock` a clock this OS defines.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}
