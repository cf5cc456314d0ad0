//! [`GpuDevice`]: one opened CUDA device, shared by every backend a command builds on it.

use std::sync::Arc;

use cudarc::driver::CudaContext;

use crate::kernels::arch_for;
use crate::probe::{guard, open};
use crate::{DeviceInfo, GpuError};

/// An opened CUDA device: the libraries probed, the primary context created, the NVRTC
/// target chosen. Cheap to clone (the context is shared); a command opens it once and
/// hands it to its backends.
#[derive(Clone, Debug)]
pub struct GpuDevice {
    pub(crate) ctx: Arc<CudaContext>,
    pub(crate) info: DeviceInfo,
    pub(crate) arch: String,
}

impl GpuDevice {
    /// Probe the driver, NVRTC and cuBLAS and open device `ordinal`. Never panics: a missing
    /// library or device is an `Err` whose message is one line.
    pub fn open(ordinal: usize) -> Result<Self, GpuError> {
        let (ctx, info) = open(ordinal)?;
        let arch = guard(|| arch_for(info.compute_capability))?;
        Ok(GpuDevice { ctx, info, arch })
    }

    /// The device.
    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    /// The NVRTC target architecture, e.g. `sm_90`.
    pub fn arch(&self) -> &str {
        &self.arch
    }
}
