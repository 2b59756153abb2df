//! The CUDA backend (feature `cuda`): kernels written in CUDA C, compiled to PTX at run time
//! with NVRTC through `cudarc`.
//!
//! Each kernel family is one `.cu` file in this folder, embedded with `include_str!` and listed
//! in [`SOURCES`]. `cudarc` loads the CUDA libraries dynamically, so this module builds with no
//! CUDA installed; NVRTC (`libnvrtc.so`) is needed only when [`compile_ptx`] runs, and the
//! driver (`libcuda.so`) and a GPU only to launch kernels (not done here yet).
//!
//! What is checked without a GPU (`scripts/cuda-check-no-gpu.sh`): every source compiles with
//! NVRTC for each of [`ARCHES`], and `ptxas` assembles the PTX with no register spills and no
//! local-memory stack frame. Numerical tests against the CPU reference need a GPU and are not
//! written yet.

use cudarc::nvrtc::{CompileError, CompileOptions, Ptx};

/// One kernel family: a CUDA C source file and the `extern "C"` kernels it defines.
#[derive(Debug, Clone, Copy)]
pub struct KernelSource {
    /// File stem, e.g. `"layernorm"` for `layernorm.cu`.
    pub name: &'static str,
    /// The CUDA C source text.
    pub src: &'static str,
    /// Names of the `__global__` functions in `src` (unmangled: they are `extern "C"`).
    pub kernels: &'static [&'static str],
}

/// Every kernel family of the backend.
pub const SOURCES: &[KernelSource] = &[
    KernelSource {
        name: "layernorm",
        src: include_str!("layernorm.cu"),
        kernels: &[
            "layernorm_fwd_f32",
            "layernorm_bwd_dx_f32",
            "layernorm_bwd_dgamma_dbeta_f32",
        ],
    },
    KernelSource {
        name: "matmul",
        src: include_str!("matmul.cu"),
        kernels: &["gemm_f32_tiled"],
    },
];

/// GPU architectures the kernels are compiled for: Ampere (A100, `sm_80`) and Hopper (H100,
/// `sm_90`).
pub const ARCHES: &[&str] = &["sm_80", "sm_90"];

/// Why a kernel source did not become PTX.
#[derive(Debug)]
pub enum CudaError {
    /// `libnvrtc.so` could not be loaded (put its folder on `LD_LIBRARY_PATH`).
    NvrtcMissing,
    /// NVRTC rejected the source; the payload holds the compiler log.
    Compile {
        /// The [`KernelSource::name`] that failed.
        name: &'static str,
        /// The target architecture, e.g. `"sm_90"`.
        arch: &'static str,
        /// cudarc's error, including NVRTC's log.
        err: CompileError,
    },
}

impl std::fmt::Display for CudaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CudaError::NvrtcMissing => write!(
                f,
                "libnvrtc could not be loaded (is its folder on LD_LIBRARY_PATH?)"
            ),
            CudaError::Compile { name, arch, err } => match err {
                CompileError::CompileError { log, .. } => write!(
                    f,
                    "NVRTC failed on {name}.cu for {arch}:\n{}",
                    log.to_string_lossy()
                ),
                other => write!(f, "NVRTC failed on {name}.cu for {arch}: {other:?}"),
            },
        }
    }
}

impl std::error::Error for CudaError {}

/// Whether NVRTC can be loaded. Never panics.
pub fn nvrtc_available() -> bool {
    // SAFETY: only tries to dlopen the library by its usual names; no symbol is called.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// Whether the CUDA driver library can be loaded (the first condition for running a kernel;
/// a machine may have the driver and still no usable GPU). Never panics, so CPU-only callers
/// can ask before touching anything else of `cudarc::driver`.
pub fn cuda_available() -> bool {
    // SAFETY: only tries to dlopen the library by its usual names; no symbol is called.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Compiles one kernel source to PTX for `arch` (e.g. `"sm_90"`).
///
/// Returns [`CudaError::NvrtcMissing`] instead of panicking when NVRTC cannot be loaded.
pub fn compile_ptx(source: &KernelSource, arch: &'static str) -> Result<Ptx, CudaError> {
    if !nvrtc_available() {
        return Err(CudaError::NvrtcMissing);
    }
    let opts = CompileOptions {
        arch: Some(arch),
        name: Some(format!("{}.cu", source.name)),
        ..Default::default()
    };
    cudarc::nvrtc::compile_ptx_with_opts(source.src, opts).map_err(|err| CudaError::Compile {
        name: source.name,
        arch,
        err,
    })
}

/// Compiles every source in [`SOURCES`] for every arch in [`ARCHES`]. Returns
/// `(source name, arch, ptx)` in that order, or the first failure.
pub fn compile_all() -> Result<Vec<(&'static str, &'static str, Ptx)>, CudaError> {
    let mut out = Vec::with_capacity(SOURCES.len() * ARCHES.len());
    for source in SOURCES {
        for &arch in ARCHES {
            out.push((source.name, arch, compile_ptx(source, arch)?));
        }
    }
    Ok(out)
}
