//! Run-time detection of the SIMD instruction set the fast kernels may use.

use std::sync::OnceLock;

/// The instruction set the fast f32 kernels run with on this machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimdLevel {
    /// x86-64 with AVX2 and FMA: 8 f32 lanes, fused multiply-add.
    Avx2Fma,
    /// aarch64 NEON: 4 f32 lanes, fused multiply-add.
    Neon,
    /// No usable SIMD: plain scalar loops (still threaded).
    Scalar,
}

impl std::fmt::Display for SimdLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SimdLevel::Avx2Fma => "AVX2+FMA",
            SimdLevel::Neon => "NEON",
            SimdLevel::Scalar => "scalar",
        })
    }
}

/// The SIMD level detected once at run time. Setting the environment variable
/// `FERROCHAT_SIMD=scalar` forces the scalar fallback (to test it, or to compare).
pub fn simd_level() -> SimdLevel {
    static LEVEL: OnceLock<SimdLevel> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        if std::env::var("FERROCHAT_SIMD").is_ok_and(|v| v == "scalar") {
            return SimdLevel::Scalar;
        }
        detect()
    })
}

#[cfg(target_arch = "x86_64")]
fn detect() -> SimdLevel {
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        SimdLevel::Avx2Fma
    } else {
        SimdLevel::Scalar
    }
}

#[cfg(target_arch = "aarch64")]
fn detect() -> SimdLevel {
    if std::arch::is_aarch64_feature_detected!("neon") {
        SimdLevel::Neon
    } else {
        SimdLevel::Scalar
    }
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn detect() -> SimdLevel {
    SimdLevel::Scalar
}

/// Whether the AVX-512 versions of the kernels that have one may run: the CPU has AVX-512F and
/// the environment variable `FERROCHAT_NO_AVX512` is not set (to compare, or to mimic an
/// AVX2-only CPU). Detected once.
pub fn avx512_usable() -> bool {
    static USABLE: OnceLock<bool> = OnceLock::new();
    *USABLE.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            simd_level() == SimdLevel::Avx2Fma
                && is_x86_feature_detected!("avx512f")
                && std::env::var_os("FERROCHAT_NO_AVX512").is_none()
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}
