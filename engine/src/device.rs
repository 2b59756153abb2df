//! Where a tensor's storage lives. The CPU always; CUDA comes behind the `cuda` feature (the
//! seam is here: [`Device::cuda`] is the one place that asks for a GPU).

/// A compute device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Device {
    /// Host memory, CPU kernels.
    #[default]
    Cpu,
}

impl Device {
    /// Asks for CUDA device `ordinal`. This build has no CUDA backend, so it is an error —
    /// never a panic.
    pub fn cuda(ordinal: usize) -> crate::Result<Device> {
        Err(crate::Error::Device(format!(
            "CUDA device {ordinal} requested, but this build has no CUDA backend (rebuild with --features cuda)"
        )))
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
        }
    }
}
