//! What every backend split over ranks shares ([`bda_kernel::collective`]): device slots for
//! the partial sums of the chunks a rank owns, the chain that adds every rank's slots in
//! chunk order through host memory, and the agreement on failures.
//!
//! A rank uploads the running sum's segment it receives, adds its slots to it in chunk order
//! on the device (`fold_chunks`, one addition at a time), and downloads it for the next
//! rank: every element is added in chunk order whatever the number of ranks.
//!
//! A device error on one rank must not leave the others waiting in the next collective: a
//! rank that failed skips its device work but still enters every collective (with zeros),
//! and the ranks then [`agree`] on the lowest-ranked failure, which every rank returns as
//! [`GpuError::Ranks`].

use std::ops::Range;

use bda_kernel::collective::Collective;
use cudarc::driver::{CudaSlice, CudaView, CudaViewMut, DeviceRepr, PushKernelArg};

use crate::kernels::Kernel;
use crate::launch::{elementwise, i32_of, push};
use crate::{GpuDevice, GpuError};

type R<T = ()> = Result<T, GpuError>;

/// `slots` device slots of `len` floats, one per chunk a rank owns, and the segment buffer
/// a chain passes through.
pub(crate) struct Slots {
    parts: CudaSlice<f32>,
    seg: CudaSlice<f32>,
    len: usize,
}

impl std::fmt::Debug for Slots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Slots({} × {})",
            self.parts.len() / self.len.max(1),
            self.len
        )
    }
}

impl Slots {
    pub(crate) fn new(dev: &GpuDevice, slots: usize, len: usize) -> R<Self> {
        let total = slots
            .checked_mul(len)
            .ok_or(GpuError::TooLarge("partial sums"))?;
        let stream = dev.stream();
        Ok(Slots {
            parts: stream.alloc_zeros(total.max(1))?,
            seg: stream.alloc_zeros(len.max(1))?,
            len,
        })
    }

    /// Floats per slot.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Slots held.
    pub(crate) fn count(&self) -> usize {
        self.parts.len() / self.len.max(1)
    }

    /// Device bytes held.
    pub(crate) fn num_bytes(&self) -> usize {
        self.parts.num_bytes() + self.seg.num_bytes()
    }

    /// Slot `k`.
    pub(crate) fn slot(&mut self, k: usize) -> CudaViewMut<'_, f32> {
        self.parts.slice_mut(k * self.len..(k + 1) * self.len)
    }

    /// Every rank's slots added in chunk order: for each group `(first, count)` of this
    /// rank's slots, a running sum of `len` floats (the groups' sums side by side). `err`
    /// records this rank's failure (the device work is skipped after one; the chain is
    /// entered all the same).
    pub(crate) fn chain(
        &mut self,
        dev: &GpuDevice,
        comm: &dyn Collective,
        groups: &[(usize, usize)],
        err: &mut Option<GpuError>,
    ) -> Vec<f32> {
        let len = self.len;
        let mut acc = vec![0.0f32; groups.len() * len];
        comm.chain_f32(&mut acc, &mut |range: Range<usize>, acc: &mut [f32]| {
            // The range may straddle two groups' sums: add group by group.
            let mut at = range.start;
            while at < range.end && err.is_none() {
                let g = at / len;
                let end = range.end.min((g + 1) * len);
                let part = &mut acc[at - range.start..end - range.start];
                let (first, count) = groups[g];
                if let Err(e) = self.fold(dev, part, first, count, at - g * len) {
                    *err = Some(e);
                }
                at = end;
            }
        });
        acc
    }

    /// `part += ` slots `first .. first + count` at offset `off`, one addition at a time in
    /// slot order, on the device.
    fn fold(
        &mut self,
        dev: &GpuDevice,
        part: &mut [f32],
        first: usize,
        count: usize,
        off: usize,
    ) -> R {
        if count == 0 {
            return Ok(());
        }
        let n = part.len();
        let stream = dev.stream();
        let mut seg = self.seg.slice_mut(..n);
        stream.memcpy_htod(part, &mut seg)?;
        let f = dev.kernel(Kernel::FoldChunks)?;
        let parts = self.parts.slice(first * self.len + off..);
        let ints = [n, self.len, count].map(i32_of);
        let mut l = stream.launch_builder(&f);
        l.arg(&mut seg).arg(&parts);
        push(&mut l, &ints);
        // SAFETY: matches `fold_chunks`; seg holds n entries, parts (count − 1)·len + n
        // from its start (off + n ≤ len, slots first .. first + count exist).
        unsafe { l.launch(elementwise(n)) }?;
        stream.memcpy_dtoh(&seg, part)?;
        stream.synchronize()?;
        Ok(())
    }

    /// The segment buffer holding `src` (at most `len` floats), for a last update of a
    /// device buffer from a chain's result.
    pub(crate) fn staged(&mut self, dev: &GpuDevice, src: &[f32]) -> R<CudaView<'_, f32>> {
        let mut s = self.seg.slice_mut(..src.len());
        dev.stream().memcpy_htod(src, &mut s)?;
        Ok(self.seg.slice(..src.len()))
    }
}

/// `dst ← src` from the device (waits for it); nothing after an earlier failure in `err`,
/// which records this one.
pub(crate) fn download<T: DeviceRepr>(
    dev: &GpuDevice,
    src: &CudaView<'_, T>,
    dst: &mut [T],
    err: &mut Option<GpuError>,
) {
    if err.is_some() {
        return;
    }
    let r = dev
        .stream()
        .memcpy_dtoh(src, dst)
        .and_then(|()| dev.stream().synchronize());
    if let Err(e) = r {
        *err = Some(e.into());
    }
}

/// Every rank's failure agreed on: the lowest-ranked one, on every rank (`rank R: …`; one
/// rank keeps its own error).
pub(crate) fn agree(comm: &dyn Collective, mine: Option<GpuError>) -> R {
    if comm.size() == 1 {
        return mine.map_or(Ok(()), Err);
    }
    let r = comm.rank();
    let msg = mine.map(|e| format!("rank {r}: {e}"));
    match comm.agree(msg.as_deref()) {
        None => Ok(()),
        Some(m) => Err(GpuError::Ranks(m)),
    }
}
