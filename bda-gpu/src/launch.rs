//! What every device backend launches with, beside [`crate::GpuDevice`]: the buffer type
//! [`GpuVec`], the launch geometries, the length checks that make an `unsafe` launch sound, and
//! the kernels that belong to no one problem (`axpy`, `scale`, the single-block reductions).

use cudarc::driver::{
    CudaSlice, CudaView, CudaViewMut, DeviceRepr, LaunchArgs, LaunchConfig, PushKernelArg,
};

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

/// Threads per block of the per-channel reductions.
const PER_CHANNEL_THREADS: u32 = 256;

/// Threads of the single-block reductions.
const REDUCE_THREADS: u32 = 1024;

/// The geometry of a launch whose kernel calls `bda_block_sum` (`kernels/common.cuh`):
/// `blocks` blocks of `threads` threads. The reduction shuffles whole warps and keeps one
/// shared slot per warp, so `threads` must be a positive multiple of 32, at most 1024; anything
/// else is [`GpuError::BlockSize`] rather than a silently wrong sum.
pub(crate) fn block_reduction(blocks: usize, threads: u32) -> Result<LaunchConfig, GpuError> {
    if threads == 0 || threads % 32 != 0 || threads > 1024 {
        return Err(GpuError::BlockSize(threads));
    }
    let grid = u32::try_from(blocks).map_err(|_| GpuError::TooLarge("reduction grid"))?;
    Ok(LaunchConfig {
        grid_dim: (grid, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    })
}

/// One block per channel, for the per-channel reductions.
pub(crate) fn per_channel(ch: usize) -> Result<LaunchConfig, GpuError> {
    block_reduction(ch, PER_CHANNEL_THREADS)
}

/// The single-block reductions.
pub(crate) fn single_block() -> Result<LaunchConfig, GpuError> {
    block_reduction(1, REDUCE_THREADS)
}

/// `y ← y + a·v`.
pub(crate) fn axpy(
    dev: &GpuDevice,
    a: f32,
    v: &CudaView<'_, f32>,
    y: &mut CudaViewMut<'_, f32>,
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
pub(crate) fn scale(dev: &GpuDevice, a: f32, y: &mut CudaViewMut<'_, f32>) -> Result<(), GpuError> {
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
        let cfg = single_block()?;
        let mut l = dev.stream().launch_builder(&f);
        l.arg(a).arg(b).arg(&n).arg(&mut out);
        // SAFETY: matches `reduce_dot`; a and b hold n entries (checked above), out 1.
        unsafe { l.launch(cfg) }?;
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
        let cfg = single_block()?;
        let mut l = dev.stream().launch_builder(&f);
        l.arg(a).arg(&n).arg(&mut out);
        // SAFETY: matches `reduce_sum`; a holds n entries, out 1.
        unsafe { l.launch(cfg) }?;
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
        let cfg = single_block()?;
        let mut l = dev.stream().launch_builder(&f);
        l.arg(a).arg(&n).arg(&mut self.flag);
        // SAFETY: matches `any_nonfinite`; a holds n entries, flag 1.
        unsafe { l.launch(cfg) }?;
        let mut host = [0u32; 1];
        dev.stream().memcpy_dtoh(&self.flag, &mut host)?;
        dev.stream().synchronize()?;
        Ok(host[0] == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_reductions_take_whole_warps() {
        for threads in [32, 64, 96, 256, 1024] {
            let cfg = block_reduction(5, threads).unwrap();
            assert_eq!((cfg.grid_dim, cfg.block_dim), ((5, 1, 1), (threads, 1, 1)));
        }
        for threads in [0, 1, 31, 48, 100, 1000, 1056, 2048] {
            assert_eq!(
                block_reduction(1, threads).unwrap_err(),
                GpuError::BlockSize(threads),
                "{threads}"
            );
        }
        assert!(matches!(
            block_reduction(usize::MAX, 32),
            Err(GpuError::TooLarge(_))
        ));
        // The launches of this crate that reduce.
        let (a, b) = (per_channel(64).unwrap(), single_block().unwrap());
        assert_eq!(a.grid_dim.0, 64);
        assert_eq!(b.grid_dim.0, 1);
        for cfg in [a, b] {
            assert!(cfg.block_dim.0 % 32 == 0 && cfg.block_dim.0 <= 1024);
        }
    }
    // bda_block_sum's barriers are checked by behaviour, not here: tests/host/kernels_check.cpp
    // runs the reductions on emulated blocks whose threads really wait at the barriers, and a
    // removed barrier fails it.
}
