//! [`GpuDevice`]: one opened CUDA device — context, stream, module cache, cuBLAS handle —
//! shared by every backend a command builds on it (candle's `CudaDevice`).
//!
//! One handle per command, so that the libraries are probed and the context created once,
//! all work of the command is ordered on one stream (no cross-stream events, no
//! synchronisation between backends), each kernel module is loaded into the context once, and
//! one cuBLAS handle (with its workspace) serves every product. A backend takes `&GpuDevice`
//! and keeps a clone (an `Arc`).

use std::fmt;
use std::sync::Arc;

use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaFunction, CudaStream};

use crate::kernels::{Kernel, ModuleCache, arch_for};
use crate::probe::{context, guard};
use crate::{DeviceInfo, GpuError};

/// An opened CUDA device: the libraries probed, the primary context retained, the NVRTC
/// target chosen, one stream, the kernel modules (loaded lazily) and one cuBLAS handle on that
/// stream. Cheap to clone (an `Arc`); a command opens it once and hands it to its backends,
/// which then queue all their work on its one stream.
#[derive(Clone)]
pub struct GpuDevice(Arc<Shared>);

/// What the clones of a [`GpuDevice`] share. Fields drop in declaration order: the cuBLAS
/// handle and the modules before the stream (the stream and the modules keep the context).
struct Shared {
    info: DeviceInfo,
    blas: CudaBlas,
    modules: ModuleCache,
    stream: Arc<CudaStream>,
}

impl Drop for Shared {
    /// Waits for queued work before the handle, modules and stream go (an error cannot be
    /// reported from a drop and is ignored).
    fn drop(&mut self) {
        let _ = self.stream.synchronize();
    }
}

impl fmt::Debug for GpuDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GpuDevice")
            .field("info", &self.0.info)
            .field("arch", &self.arch())
            .finish_non_exhaustive()
    }
}

impl GpuDevice {
    /// Probe the driver, NVRTC and cuBLAS and open device `ordinal`: its primary context, one
    /// stream and a cuBLAS handle on it. Never panics: a missing library or device is an `Err`
    /// whose message is one line.
    pub fn open(ordinal: usize) -> Result<Self, GpuError> {
        let (ctx, info) = context(ordinal)?;
        guard(|| {
            let arch = arch_for(info.compute_capability)?;
            // SAFETY: every backend built on this device issues all its work on the one
            // stream created below, so cudarc's cross-stream event tracking is not needed
            // (it would record two events per buffer per launch). It affects buffers
            // allocated from now on in this context object, i.e. all of ours.
            unsafe { ctx.disable_event_tracking() };
            let stream = ctx.new_stream()?;
            let blas = CudaBlas::new(stream.clone())?;
            Ok(GpuDevice(Arc::new(Shared {
                modules: ModuleCache::new(ctx.clone(), arch),
                info,
                blas,
                stream,
            })))
        })
    }

    /// The device.
    pub fn info(&self) -> &DeviceInfo {
        &self.0.info
    }

    /// The NVRTC target architecture, e.g. `sm_90`.
    pub fn arch(&self) -> &str {
        self.0.modules.arch()
    }

    /// Compiles (once per process) and loads every kernel now, to keep NVRTC out of a timed
    /// loop; otherwise each module is compiled on first use.
    pub fn warm_up(&self) -> Result<(), GpuError> {
        self.0.modules.load_all()
    }

    /// Waits until all work queued on the device's stream is done (for timing).
    pub fn synchronize(&self) -> Result<(), GpuError> {
        Ok(self.0.stream.synchronize()?)
    }

    /// The one stream.
    pub(crate) fn stream(&self) -> &Arc<CudaStream> {
        &self.0.stream
    }

    /// The kernel `k`, its module loaded on first use.
    pub(crate) fn kernel(&self, k: Kernel) -> Result<CudaFunction, GpuError> {
        self.0.modules.get(k)
    }

    /// The cuBLAS handle, bound to the one stream (products: [`GpuDevice::gemm`] in
    /// `gemm.rs`).
    pub(crate) fn blas(&self) -> &CudaBlas {
        &self.0.blas
    }
}
