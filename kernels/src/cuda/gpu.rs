//! The device: a CUDA context and stream, the kernels compiled and loaded once, and copies
//! between host and device memory.

use super::{compile_cubin, compile_ptx, cuda_available, nvrtc_available, CudaError, SOURCES};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DeviceRepr, LaunchConfig, ValidAsZeroBits,
};
use std::collections::HashMap;
use std::sync::Arc;

/// One GPU with every kernel of [`SOURCES`] compiled for its architecture and loaded.
///
/// All work is queued on one stream, in call order; copies to the host wait for it. Device
/// buffers are cudarc's [`CudaSlice`]s (f32, `u16` for raw bf16 bits, i32/i64 for indices).
pub struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    arch: &'static str,
    funcs: HashMap<&'static str, CudaFunction>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu")
            .field("ordinal", &self.ctx.ordinal())
            .field("arch", &self.arch)
            .field("kernels", &self.funcs.len())
            .finish()
    }
}

/// The NVRTC target name of a compute capability, e.g. (9, 0) → `"sm_90"`.
fn arch_name(major: i32, minor: i32) -> &'static str {
    match (major, minor) {
        (8, 0) => "sm_80",
        (8, 6) => "sm_86",
        (8, 7) => "sm_87",
        (8, 9) => "sm_89",
        (9, 0) => "sm_90",
        (10, 0) => "sm_100",
        (12, 0) => "sm_120",
        // A newer card: its name, leaked once (NVRTC's options take &'static str).
        _ => Box::leak(format!("sm_{major}{minor}").into_boxed_str()),
    }
}

/// Whether GPU `ordinal` exists, without opening it or compiling anything: the driver library
/// loads ([`CudaError::NoDriver`] otherwise) and reports more than `ordinal` devices
/// ([`CudaError::NoDevice`] otherwise). Returns the number of GPUs. Never panics.
pub fn probe_device(ordinal: usize) -> Result<usize, CudaError> {
    if !cuda_available() {
        return Err(CudaError::NoDriver);
    }
    // cuInit fails (e.g. CUDA_ERROR_NO_DEVICE) on a machine with the driver but no GPU.
    let count = CudaContext::device_count()
        .map_err(|e| CudaError::NoDevice(format!("the driver reports {e}")))?;
    if count <= 0 {
        return Err(CudaError::NoDevice("the driver sees 0 GPUs".into()));
    }
    if ordinal >= count as usize {
        return Err(CudaError::NoDevice(format!(
            "GPU {ordinal} asked for, the driver sees {count}"
        )));
    }
    Ok(count as usize)
}

/// The GPU that the tests of one process share (device 0, every kernel compiled once), or
/// `None` after printing `skipped (no GPU): {test} ({why})` where there is no driver or no
/// device — how the GPU test suites of every crate skip themselves by name. For tests only: a
/// GPU that is present but cannot be set up (NVRTC missing, a kernel that does not compile)
/// panics, so that it fails the test instead of skipping it.
pub fn shared_gpu_or_skip(test: &str) -> Option<&'static Arc<Gpu>> {
    static GPU: std::sync::OnceLock<Result<Arc<Gpu>, String>> = std::sync::OnceLock::new();
    let gpu = GPU.get_or_init(|| match Gpu::new(0) {
        Ok(g) => Ok(Arc::new(g)),
        Err(e @ (CudaError::NoDriver | CudaError::NoDevice(_))) => Err(e.to_string()),
        Err(e) => panic!("a GPU is present but could not be set up: {e}"),
    });
    match gpu {
        Ok(g) => Some(g),
        Err(why) => {
            println!("skipped (no GPU): {test} ({why})");
            None
        }
    }
}

impl Gpu {
    /// Opens GPU `ordinal`, compiles every kernel source for it with NVRTC and loads the
    /// modules. Errors (never panics) when there is no driver, no GPU, no NVRTC, a GPU older
    /// than sm_80, or a kernel that does not compile.
    pub fn new(ordinal: usize) -> Result<Gpu, CudaError> {
        probe_device(ordinal)?;
        let ctx = CudaContext::new(ordinal)?;
        let (major, minor) = ctx.compute_capability()?;
        if major < 8 {
            return Err(CudaError::UnsupportedArch { major, minor });
        }
        if !nvrtc_available() {
            return Err(CudaError::NvrtcMissing);
        }
        let arch = arch_name(major, minor);
        let mut funcs = HashMap::new();
        for source in SOURCES {
            // Machine code for this GPU (no driver JIT, so an older driver is fine); PTX if
            // NVRTC cannot give a CUBIN. A source that does not compile fails either way.
            let module = match compile_cubin(source, arch) {
                Ok(cubin) => ctx.load_module(cubin)?,
                Err(CudaError::Compile { .. }) | Err(CudaError::NvrtcMissing) => {
                    ctx.load_module(compile_ptx(source, arch)?)?
                }
                Err(e) => return Err(e),
            };
            for &k in source.kernels {
                funcs.insert(k, module.load_function(k)?);
            }
        }
        // Kernels that use more than the default 48 KiB of dynamic shared memory per block
        // must say so before their first launch.
        for (name, bytes) in super::ops::LARGE_SMEM_KERNELS {
            if let Some(f) = funcs.get(name) {
                f.set_attribute(
                    cudarc::driver::sys::CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    *bytes as i32,
                )?;
            }
        }
        let stream = ctx.default_stream();
        Ok(Gpu {
            ctx,
            stream,
            arch,
            funcs,
        })
    }

    /// The GPU's name as the driver reports it (e.g. "NVIDIA H100 80GB HBM3").
    pub fn name(&self) -> Result<String, CudaError> {
        Ok(self.ctx.name()?)
    }

    /// The NVRTC target the kernels were compiled for, e.g. `"sm_90"`.
    pub fn arch(&self) -> &'static str {
        self.arch
    }

    /// The cudarc context (for cuBLAS handles, events, ...).
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The stream every kernel of this `Gpu` is queued on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Copies a host slice to a new device buffer.
    pub fn upload<T: DeviceRepr>(&self, host: &[T]) -> Result<CudaSlice<T>, CudaError> {
        Ok(self.stream.clone_htod(host)?)
    }

    /// Copies a host slice into an existing device buffer of the same length (a length
    /// mismatch is [`CudaError::BadArgument`], not cudarc's panic).
    pub fn upload_into<T: DeviceRepr>(
        &self,
        host: &[T],
        dev: &mut CudaSlice<T>,
    ) -> Result<(), CudaError> {
        if host.len() != dev.len() {
            return Err(CudaError::BadArgument(format!(
                "upload of {} elements into a device buffer of {}",
                host.len(),
                dev.len()
            )));
        }
        Ok(self.stream.memcpy_htod(host, dev)?)
    }

    /// Copies a device buffer to a new host vector (waits for the queued work).
    pub fn download<T: DeviceRepr>(&self, dev: &CudaSlice<T>) -> Result<Vec<T>, CudaError> {
        Ok(self.stream.clone_dtoh(dev)?)
    }

    /// A new device buffer of `len` zeros.
    pub fn zeros<T: DeviceRepr + ValidAsZeroBits>(
        &self,
        len: usize,
    ) -> Result<CudaSlice<T>, CudaError> {
        Ok(self.stream.alloc_zeros(len)?)
    }

    /// Waits until every queued kernel and copy has finished.
    pub fn synchronize(&self) -> Result<(), CudaError> {
        Ok(self.stream.synchronize()?)
    }

    /// The loaded kernel `name` (one of the names in [`SOURCES`]).
    pub(crate) fn func(&self, name: &str) -> Result<&CudaFunction, CudaError> {
        self.funcs
            .get(name)
            .ok_or_else(|| CudaError::BadArgument(format!("no kernel named {name}")))
    }
}

/// A launch shape: `grid` blocks of `block` threads, `smem` bytes of dynamic shared memory.
pub(crate) fn cfg(grid: (u32, u32, u32), block: (u32, u32, u32), smem: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: grid,
        block_dim: block,
        shared_mem_bytes: smem,
    }
}

/// f32 → bf16 bits, rounding to nearest even (NaN stays NaN): the same function as
/// `f32_to_bf16` in common.cuh, for the host side of mixed precision and for tests.
pub fn f32_to_bf16_bits(x: f32) -> u16 {
    let u = x.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        return ((u >> 16) | 0x0040) as u16;
    }
    ((u + 0x7fff + ((u >> 16) & 1)) >> 16) as u16
}

/// bf16 bits → f32 (exact).
pub fn bf16_bits_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounding() {
        assert_eq!(f32_to_bf16_bits(1.0), 0x3f80);
        assert_eq!(bf16_bits_to_f32(0x3f80), 1.0);
        // 1 + 2^-8 is halfway between two bf16 values: ties go to the even one (1.0).
        assert_eq!(f32_to_bf16_bits(1.0 + 1.0 / 256.0), 0x3f80);
        // 1 + 3·2^-8 is halfway between 1 + 2^-7 (0x3f81) and 1 + 2^-6 (0x3f82): even wins.
        assert_eq!(f32_to_bf16_bits(1.0 + 3.0 / 256.0), 0x3f82);
        assert!(bf16_bits_to_f32(f32_to_bf16_bits(f32::NAN)).is_nan());
        assert_eq!(f32_to_bf16_bits(f32::INFINITY), 0x7f80);
        assert_eq!(f32_to_bf16_bits(-2.5), 0xc020);
    }

    #[test]
    fn arch_names() {
        assert_eq!(arch_name(9, 0), "sm_90");
        assert_eq!(arch_name(8, 0), "sm_80");
        assert_eq!(arch_name(11, 3), "sm_113");
    }
}
