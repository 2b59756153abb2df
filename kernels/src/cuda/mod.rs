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
//! local-memory stack frame. The numerical tests against the CPU reference
//! (`kernels/tests/cuda.rs`) need a GPU: without one they report themselves skipped.
//!
//! Running kernels: [`Gpu::new`] opens a device, compiles every source for its architecture
//! and loads the modules once; its methods (in `ops.rs`) are the typed, checked launches of
//! each kernel. Where there is no driver or no GPU, [`Gpu::new`] returns
//! [`CudaError::NoDriver`] or [`CudaError::NoDevice`] instead of panicking.

use cudarc::nvrtc::{CompileError, CompileOptions, Ptx};

mod gpu;
mod ops;

/// cudarc's device buffer, the type every launch takes (re-exported so callers need no cudarc
/// dependency of their own).
pub use cudarc::driver::CudaSlice;
pub use gpu::{bf16_bits_to_f32, f32_to_bf16_bits, probe_device, shared_gpu_or_skip, Gpu};
pub use ops::{
    Bf16Operand, DeviceFloat, EmbeddingGroups, HeadsLayout, Strides, ATTENTION_BF16_HEAD_DIM,
    ATTENTION_MAX_HEAD_DIM,
};

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

/// Every kernel family of the backend. Kernels with an `_f32` and a `_bf16` version are the
/// same template instantiated for both storage types (f32 arithmetic in both).
pub const SOURCES: &[KernelSource] = &[
    KernelSource {
        name: "layernorm",
        src: concat!(include_str!("common.cuh"), include_str!("layernorm.cu")),
        kernels: &[
            "layernorm_fwd_f32",
            "layernorm_residual_fwd_f32",
            "layernorm_bwd_dx_f32",
            "layernorm_bwd_dgamma_dbeta_f32",
            "layernorm_fwd_bf16",
            "layernorm_residual_fwd_bf16",
            "layernorm_bwd_dx_bf16",
            "layernorm_bwd_dgamma_dbeta_bf16",
        ],
    },
    KernelSource {
        name: "matmul",
        src: include_str!("matmul.cu"),
        kernels: &[
            "gemm_f32_tiled",
            "gemm_bf16_tc_nn",
            "gemm_bf16_tc_nt",
            "gemm_bf16_tc_tn",
            "gemm_bf16_tc_tt",
        ],
    },
    KernelSource {
        name: "attention",
        src: include_str!("attention.cu"),
        kernels: &[
            "attention_fwd_f32",
            "attention_bwd_dot_f32",
            "attention_bwd_dq_f32",
            "attention_bwd_dkdv_f32",
            "attention_fwd_bf16_d64",
            "attention_bwd_dot_bf16",
            "attention_bwd_dq_bf16_d64",
            "attention_bwd_dkdv_bf16_d64",
        ],
    },
    KernelSource {
        name: "softmax",
        src: concat!(include_str!("common.cuh"), include_str!("softmax.cu")),
        kernels: &[
            "softmax_fwd_f32",
            "softmax_bwd_f32",
            "log_softmax_fwd_f32",
            "log_softmax_bwd_f32",
            "softmax_fwd_bf16",
            "softmax_bwd_bf16",
            "log_softmax_fwd_bf16",
            "log_softmax_bwd_bf16",
        ],
    },
    KernelSource {
        name: "crossentropy",
        src: concat!(include_str!("common.cuh"), include_str!("crossentropy.cu")),
        kernels: &[
            "cross_entropy_fwd_f32",
            "cross_entropy_bwd_f32",
            "cross_entropy_fwd_bf16",
            "cross_entropy_bwd_bf16",
        ],
    },
    KernelSource {
        name: "gelu",
        src: concat!(include_str!("common.cuh"), include_str!("gelu.cu")),
        kernels: &[
            "gelu_fwd_f32",
            "gelu_bwd_f32",
            "gelu_fwd_bf16",
            "gelu_bwd_bf16",
        ],
    },
    KernelSource {
        name: "embedding",
        src: concat!(include_str!("common.cuh"), include_str!("embedding.cu")),
        kernels: &[
            "embedding_fwd_f32",
            "embedding_bwd_f32",
            "embedding_fwd_bf16",
            "embedding_bwd_bf16",
        ],
    },
    KernelSource {
        name: "elementwise",
        src: concat!(include_str!("common.cuh"), include_str!("elementwise.cu")),
        kernels: &[
            "add_f32",
            "mul_f32",
            "scale_f32",
            "add_bias_f32",
            "sum_rows_f32",
            "sum_partial_f32",
            "add_bf16",
            "mul_bf16",
            "scale_bf16",
            "add_bias_bf16",
            "sum_rows_bf16",
            "sum_partial_bf16",
            "sum_final_f32",
            "f32_to_bf16",
            "bf16_to_f32",
            "rows_to_heads_f32",
            "rows_to_heads_bf16",
            "heads_to_rows_f32",
            "heads_to_rows_bf16",
            "heads_to_rows_f32_to_bf16",
        ],
    },
    KernelSource {
        name: "adamw",
        src: concat!(include_str!("common.cuh"), include_str!("adamw.cu")),
        kernels: &[
            "adamw_f32",
            "adamw_f32_bf16_copy",
            "sumsq_partial_f32",
            "grad_norm_final_f32",
            "clip_scale_f32",
        ],
    },
];

/// GPU architectures the kernels are compiled for: Ampere (A100, `sm_80`) and Hopper (H100,
/// `sm_90`).
pub const ARCHES: &[&str] = &["sm_80", "sm_90"];

/// Why a CUDA operation failed: no driver or GPU, a kernel that did not compile, a driver error
/// or an argument the kernel cannot take.
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
    /// The CUDA driver library (`libcuda.so`) could not be loaded: no NVIDIA driver here.
    NoDriver,
    /// The driver loaded but there is no usable GPU (the payload says why).
    NoDevice(String),
    /// The GPU is older than the kernels need (bf16 `mma.sync` and `cp.async`: sm_80+).
    UnsupportedArch {
        /// Compute capability, major.
        major: i32,
        /// Compute capability, minor.
        minor: i32,
    },
    /// A call of the CUDA driver failed.
    Driver(cudarc::driver::DriverError),
    /// A kernel was called with arguments it cannot take (shapes, lengths, sizes).
    BadArgument(String),
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
            CudaError::NoDriver => write!(
                f,
                "no CUDA driver on this machine (libcuda.so could not be loaded)"
            ),
            CudaError::NoDevice(why) => write!(f, "no usable CUDA GPU: {why}"),
            CudaError::UnsupportedArch { major, minor } => write!(
                f,
                "the GPU has compute capability {major}.{minor}; these kernels need 8.0 or newer"
            ),
            CudaError::Driver(e) => write!(f, "CUDA driver error: {e}"),
            CudaError::BadArgument(why) => write!(f, "bad kernel argument: {why}"),
        }
    }
}

impl From<cudarc::driver::DriverError> for CudaError {
    fn from(e: cudarc::driver::DriverError) -> Self {
        CudaError::Driver(e)
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

/// Compiles one kernel source straight to a CUBIN (machine code) for the real architecture
/// `arch` (e.g. `"sm_90"`), returned as a [`Ptx`] holding the binary, which
/// `CudaContext::load_module` loads as it is.
///
/// Why not PTX for running: the driver JIT-compiles PTX only up to the PTX version of its own
/// CUDA release, so PTX from a newer NVRTC (12.9's is ISA 8.8) fails to load on an older driver
/// (e.g. CUDA 12.4's), whereas a CUBIN needs no JIT. [`Gpu::new`] uses this and falls back to
/// [`compile_ptx`] if the CUBIN cannot be had.
pub fn compile_cubin(source: &KernelSource, arch: &'static str) -> Result<Ptx, CudaError> {
    cubin_bytes(source, arch).map(Ptx::from_binary)
}

/// The CUBIN of [`compile_cubin`] as bytes (an ELF image).
pub fn cubin_bytes(source: &KernelSource, arch: &'static str) -> Result<Vec<u8>, CudaError> {
    use cudarc::nvrtc::{result, sys};
    if !nvrtc_available() {
        return Err(CudaError::NvrtcMissing);
    }
    let fail = |err| CudaError::Compile {
        name: source.name,
        arch,
        err,
    };
    let src = std::ffi::CString::new(source.src).expect("kernel sources contain no NUL");
    let name = std::ffi::CString::new(format!("{}.cu", source.name)).expect("no NUL");
    let prog = result::create_program(&src, Some(&name))
        .map_err(|e| fail(CompileError::CreationError(e)))?;
    let options = vec![format!("--gpu-architecture={arch}")];
    // SAFETY: `prog` was created above and is destroyed once, at the end; the buffers passed to
    // NVRTC are sized by NVRTC's own size queries.
    let out = unsafe {
        match result::compile_program(prog, &options) {
            Err(nvrtc) => {
                let log = result::get_program_log(prog).unwrap_or_default();
                let log = std::ffi::CStr::from_ptr(log.as_ptr()).to_owned();
                Err(fail(CompileError::CompileError {
                    nvrtc,
                    options,
                    log,
                }))
            }
            Ok(()) => {
                let mut size = 0usize;
                match sys::nvrtcGetCUBINSize(prog, &mut size).result() {
                    Err(e) => Err(fail(CompileError::GetPtxError(e))),
                    Ok(()) => {
                        let mut cubin = vec![0u8; size];
                        match sys::nvrtcGetCUBIN(prog, cubin.as_mut_ptr() as *mut std::ffi::c_char)
                            .result()
                        {
                            Err(e) => Err(fail(CompileError::GetPtxError(e))),
                            Ok(()) => Ok(cubin),
                        }
                    }
                }
            }
        }
    };
    // SAFETY: created above, not destroyed before.
    let _ = unsafe { result::destroy_program(prog) };
    out
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
