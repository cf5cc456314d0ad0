//! What every device backend launches with, beside [`crate::GpuDevice`]: the buffer type
//! [`GpuVec`], the launch geometries, the length checks that make an `unsafe` launch sound, and
//! the kernels that belong to no one problem (`axpy`, `scale`, the single-block reductions).

use cudarc::driver::{CudaSlice, CudaView, DeviceRepr, LaunchArgs, LaunchConfig, PushKernelArg};

use crate::kernels::Kernel;
use crate::{GpuDevice, GpuError};

/// A device buffer of `f32`: the `X` and `Y` of every backend of this crate.
#[derive(Debug)]
pub struct GpuVec(pub(crate) CudaSlice<f32>);

impl GpuVec {
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.0.len() == 0
    }
    /// The underlying cudarc slice.
    pub fn as_slice(&self) -> &CudaSlice<f32> {
        &self.0
    }
}

/// A length or index as the kernels' `int`.
pub(crate) fn i32_of(v: usize) -> i32 {
    // Every value passed here is bounded by a product that the backend's shape check
    // (`Dims::of`, `Conv4Shape::validate`, `HeadDims::validate`) bounded by i32::MAX.
    v as i32
}

/// `Ok` when buffer `what` has the length the operation needs, else [`GpuError::Shape`].
pub(crate) fn check(what: &'static str, got: usize, expected: usize) -> Result<(), GpuError> {
    if got == expected {
        Ok(())
    } else {
        Err(GpuError::Shape {
            what,
            expected,
            got,
        })
    }
}

/// Pushes `vals` as consecutive kernel arguments (the runs of `int` shape arguments, one line
/// instead of one `.arg` each).
pub(crate) fn push<'a, T: DeviceRepr>(l: &mut LaunchArgs<'a>, vals: &'a [T]) {
    for v in vals {
        l.arg(v);
    }
}

/// One thread per element, 256 per block.
pub(crate) fn elementwise(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n.div_ceil(256).max(1) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One thread per sample row, 128 per block.
pub(crate) fn per_row(rows: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows.div_ceil(128).max(1) as u32, 1, 1),
        block_dim: (128, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Grid-stride launches (`BDA_FOR_EACH`): 256 threads per block, at most 2^20 blocks.
pub(crate) fn spread(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n.div_ceil(256).clamp(1, 1 << 20) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One block per channel, for the per-channel reductions.
pub(crate) fn per_channel(ch: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (ch as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// The single-block reductions.
pub(crate) const REDUCE: LaunchConfig = LaunchConfig {
    grid_dim: (1, 1, 1),
    block_dim: (1024, 1, 1),
    shared_mem_bytes: 0,
};

/// `y ← y + a·v`.
pub(crate) fn axpy(
    dev: &GpuDevice,
    a: f32,
    v: &CudaSlice<f32>,
    y: &mut CudaSlice<f32>,
) -> Result<(), GpuError> {
    check("axpy v", v.len(), y.len())?;
    let f = dev.kernel(Kernel::Axpy)?;
    let len = y.len();
    let n = i32_of(len);
    let mut l = dev.stream().launch_builder(&f);
    l.arg(&a).arg(v).arg(y).arg(&n);
    // SAFETY: matches `axpy`; v and y hold n entries (checked above).
    unsafe { l.launch(elementwise(len)) }?;
    Ok(())
}

/// `y ← a·y`.
pub(crate) fn scale(dev: &GpuDevice, a: f32, y: &mut CudaSlice<f32>) -> Result<(), GpuError> {
    let f = dev.kernel(Kernel::Scale)?;
    let len = y.len();
    let n = i32_of(len);
    let mut l = dev.stream().launch_builder(&f);
    l.arg(&a).arg(y).arg(&n);
    // SAFETY: matches `scale`; y holds n entries.
    unsafe { l.launch(elementwise(len)) }?;
    Ok(())
}

/// Two `f64` result slots and a flag for the single-block reductions of one backend. Results
/// stay on the device until [`ReduceScratch::read`], so a backend can queue several
/// reductions and wait once.
#[derive(Debug)]
pub(crate) struct ReduceScratch {
    red: CudaSlice<f64>,
    flag: CudaSlice<u32>,
}

impl ReduceScratch {
    /// Slots of [`ReduceScratch::read`].
    pub(crate) const SLOTS: usize = 2;

    pub(crate) fn new(dev: &GpuDevice) -> Result<Self, GpuError> {
        Ok(ReduceScratch {
            red: dev.stream().alloc_zeros(Self::SLOTS)?,
            flag: dev.stream().alloc_zeros(1)?,
        })
    }

    /// Device bytes held.
    pub(crate) fn num_bytes(&self) -> usize {
        self.red.num_bytes() + self.flag.num_bytes()
    }

    /// Slot `slot` (`< SLOTS`, a constant at every call site) ← `Σ a_i b_i`, accumulated in
    /// `f64`.
    pub(crate) fn dot(
        &mut self,
        dev: &GpuDevice,
        a: &CudaView<'_, f32>,
        b: &CudaView<'_, f32>,
        slot: usize,
    ) -> Result<(), GpuError> {
        check("dot b", b.len(), a.len())?;
        let f = dev.kernel(Kernel::ReduceDot)?;
        let n = i32_of(a.len());
        let mut out = self.red.slice_mut(slot..slot + 1);
        let mut l = dev.stream().launch_builder(&f);
        l.arg(a).arg(b).arg(&n).arg(&mut out);
        // SAFETY: matches `reduce_dot`; a and b hold n entries (checked above), out 1.
        unsafe { l.launch(REDUCE) }?;
        Ok(())
    }

    /// Slot `slot` (`< SLOTS`) ← `Σ a_i`, accumulated in `f64`.
    pub(crate) fn sum(
        &mut self,
        dev: &GpuDevice,
        a: &CudaView<'_, f32>,
        slot: usize,
    ) -> Result<(), GpuError> {
        let f = dev.kernel(Kernel::ReduceSum)?;
        let n = i32_of(a.len());
        let mut out = self.red.slice_mut(slot..slot + 1);
        let mut l = dev.stream().launch_builder(&f);
        l.arg(a).arg(&n).arg(&mut out);
        // SAFETY: matches `reduce_sum`; a holds n entries, out 1.
        unsafe { l.launch(REDUCE) }?;
        Ok(())
    }

    /// Downloads both slots (a synchronisation point).
    pub(crate) fn read(&self, dev: &GpuDevice) -> Result<[f64; Self::SLOTS], GpuError> {
        let mut host = [0.0f64; Self::SLOTS];
        dev.stream().memcpy_dtoh(&self.red, &mut host)?;
        dev.stream().synchronize()?;
        Ok(host)
    }

    /// Whether every entry of `a` is finite (a synchronisation point).
    pub(crate) fn all_finite(
        &mut self,
        dev: &GpuDevice,
        a: &CudaView<'_, f32>,
    ) -> Result<bool, GpuError> {
        let f = dev.kernel(Kernel::AnyNonfinite)?;
        let n = i32_of(a.len());
        let mut l = dev.stream().launch_builder(&f);
        l.arg(a).arg(&n).arg(&mut self.flag);
        // SAFETY: matches `any_nonfinite`; a holds n entries, flag 1.
        unsafe { l.launch(REDUCE) }?;
        let mut host = [0u32; 1];
        dev.stream().memcpy_dtoh(&self.flag, &mut host)?;
        dev.stream().synchronize()?;
        Ok(host[0] == 0)
    }
}
