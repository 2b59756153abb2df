//! Where computation runs. The CPU always; a CUDA GPU behind the `cuda` feature (the seam is
//! here: [`Device::cuda`] is the one place that asks for a GPU).
//!
//! The engine's [`Tensor`](crate::Tensor) lives in host memory whatever the build: its ops are
//! CPU kernels. A [`Device::Cuda`] names a GPU that exists (checked when it is made) for the
//! code that runs on it, the llm.c-style GPT of `model::cuda_gpt`.

/// A compute device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Device {
    /// Host memory, CPU kernels.
    #[default]
    Cpu,
    /// CUDA GPU number `.0` (as the driver counts them), known to exist when the value was
    /// made by [`Device::cuda`].
    #[cfg(feature = "cuda")]
    Cuda(usize),
}

impl Device {
    /// Asks for CUDA device `ordinal`: `Ok` when the CUDA driver loads and sees a GPU with that
    /// number, otherwise an [`Error::Device`](crate::Error::Device) that says which is missing
    /// (no driver, no GPU, no such GPU; or, in a build without the `cuda` feature, the
    /// backend itself). Never a panic. Opens no context and compiles no kernel.
    pub fn cuda(ordinal: usize) -> crate::Result<Device> {
        #[cfg(feature = "cuda")]
        {
            use kernels::cuda::{probe_device, CudaError};
            match probe_device(ordinal) {
                Ok(_) => Ok(Device::Cuda(ordinal)),
                Err(CudaError::NoDriver) => Err(crate::Error::Device(format!(
                    "CUDA device {ordinal} requested, but there is no CUDA driver on this machine (libcuda.so could not be loaded)"
                ))),
                Err(e) => Err(crate::Error::Device(format!(
                    "CUDA device {ordinal} requested: {e}"
                ))),
            }
        }
        #[cfg(not(feature = "cuda"))]
        Err(crate::Error::Device(format!(
            "CUDA device {ordinal} requested, but this build has no CUDA backend (rebuild with --features cuda)"
        )))
    }

    /// Parses `cpu`, `cuda` (GPU 0) or `cuda:N`, checking that the GPU exists as
    /// [`Device::cuda`] does.
    pub fn parse(s: &str) -> crate::Result<Device> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Device::cuda(0),
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Device::cuda(n),
                _ => Err(crate::Error::Device(format!(
                    "unknown device {s:?} (expected cpu, cuda or cuda:N)"
                ))),
            },
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            #[cfg(feature = "cuda")]
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display() {
        assert_eq!(Device::parse("cpu").unwrap(), Device::Cpu);
        assert_eq!(Device::Cpu.to_string(), "cpu");
        for bad in ["gpu", "cuda:", "cuda:x", "cuda:-1"] {
            let e = Device::parse(bad).unwrap_err().to_string();
            assert!(e.contains("unknown device"), "{bad}: {e}");
        }
        #[cfg(feature = "cuda")]
        assert_eq!(Device::Cuda(3).to_string(), "cuda:3");
    }

    #[test]
    fn cuda_is_ok_or_a_clear_error() {
        match Device::cuda(0) {
            // A build with the backend on a machine with a GPU.
            Ok(d) => assert_eq!(d.to_string(), "cuda:0"),
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.contains("CUDA device 0 requested"), "{msg}");
                #[cfg(not(feature = "cuda"))]
                assert!(msg.contains("--features cuda"), "{msg}");
                #[cfg(feature = "cuda")]
                assert!(
                    msg.contains("no CUDA driver") || msg.contains("no usable CUDA GPU"),
                    "{msg}"
                );
            }
        }
        // No machine has this many GPUs: an error in every build, never a panic.
        assert!(Device::cuda(usize::MAX).is_err());
        assert!(Device::parse("cuda:100000").is_err());
    }
}
