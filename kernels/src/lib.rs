//! ferrochat's compute kernels: raw math on slices, no autograd, no tensors.
//!
//! Every kernel family lives in one file under [`cpu`] and keeps its plain reference version
//! (generic over [`Float`], written for clarity, used for f64 gradient checks) beside the fast
//! f32 version (SIMD + rayon). Tests check the fast one against the reference.
//!
//! With the `cuda` feature (off by default), [`cuda`] holds the CUDA C kernels and compiles
//! them to PTX with NVRTC.

#![warn(missing_docs)]

pub mod cpu;
#[cfg(unix)]
pub mod cputime;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod float;
pub mod simd;

pub use float::Float;
pub use simd::{avx512_usable, simd_level, SimdLevel};
