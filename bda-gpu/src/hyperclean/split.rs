//! Both hyper-cleaning backends split over ranks ([`bda_kernel::collective`]): each rank
//! passes over its chunks of the rows, and the chunks' results are put together in chunk
//! order, so that every rank holds the bits one rank would.
//!
//! # Chunks
//!
//! A set (training rows, validation rows) is cut into chunks of [`CHUNK_ROWS`] rows, the last
//! shorter; rank `r` of `P` owns the contiguous range [`owned`]`(chunks, r, P)` of each set.
//! A product's pass runs chunk by chunk: every GEMM has the shape of one chunk whatever `P`
//! is (cuBLAS picks its algorithm, and with it the order of its additions, by shape), and a
//! chunk's contribution to a `y`-sized sum lands in its own slot of `parts`.
//!
//! # Sums
//!
//! The slots are added by a chain through host memory ([`Collective::chain_f32`]): a rank
//! uploads the running sum's segment, adds its slots to it in chunk order on the device
//! (`fold_chunks`, one addition at a time), and downloads it for the next rank. When a pass
//! covers both sets (a lower step of BDA), each set has its own running sum, added at the
//! end: the order of every addition is fixed by the chunks alone. Per-row results (the `x`
//! terms, the validation cross-entropies) are gathered in rank order, which is row order.
//!
//! # Failures
//!
//! A device error on one rank must not leave the others waiting in the next collective: a
//! rank that failed still enters every collective of the product (with zeros), and the ranks
//! then agree on the lowest-ranked failure, which every rank returns as [`GpuError::Ranks`].

use std::ops::Range;
use std::sync::Arc;

use bda_kernel::collective::{Collective, chunk_rows, owned};
use cudarc::driver::{CudaSlice, CudaViewMut, PushKernelArg};

use crate::kernels::Kernel;
use crate::launch::{axpy, elementwise, i32_of, scale};
use crate::{GpuDevice, GpuError, GpuVec};

/// Rows per chunk: enough for a GEMM to fill a large GPU, few enough that 10,000 rows give
/// 20 chunks to share.
pub const CHUNK_ROWS: usize = 512;

type R<T = ()> = Result<T, GpuError>;

/// Where a pass's `y`-sized result goes: `out ← α·result + β·out`.
pub(super) struct Sink<'a> {
    pub(super) out: CudaViewMut<'a, f32>,
    pub(super) alpha: f32,
    pub(super) beta: f32,
}

impl<'a> Sink<'a> {
    /// `out ← α·result + β·out` for a whole `y` buffer.
    pub(super) fn of(out: &'a mut GpuVec, alpha: f32, beta: f32) -> Self {
        Sink {
            out: out.0.as_view_mut(),
            alpha,
            beta,
        }
    }
}

/// A backend that may be split over ranks: gives access to its [`RowSplit`] (none when it is
/// one plain process).
pub(super) trait Splittable {
    /// The split, taken out while a product uses it.
    fn split_mut(&mut self) -> &mut Option<RowSplit>;
}

/// This rank's share of the rows, the slots of its chunks' partial sums, and the ranks.
pub(crate) struct RowSplit {
    comm: Arc<dyn Collective>,
    n_tr: usize,
    n_all: usize,
    y_len: usize,
    /// Per set (training, validation), the chunks of every rank.
    shares: [Vec<Range<usize>>; 2],
    /// One `y`-sized slot per own chunk: training chunks, then validation chunks.
    parts: CudaSlice<f32>,
    /// A running sum's segment on its way through the device.
    seg: CudaSlice<f32>,
}

impl std::fmt::Debug for RowSplit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RowSplit(rank {} of {})",
            self.comm.rank(),
            self.comm.size()
        )
    }
}

impl RowSplit {
    /// The chunks of `n_tr` training and `n_all − n_tr` validation rows over the ranks of
    /// `comm`, with slots for `y_len`-sized partial sums on `dev`.
    pub(super) fn new(
        dev: &GpuDevice,
        comm: Arc<dyn Collective>,
        n_tr: usize,
        n_all: usize,
        y_len: usize,
    ) -> R<Self> {
        let p = comm.size();
        let share = |n: usize| -> Vec<Range<usize>> {
            let chunks = n.div_ceil(CHUNK_ROWS);
            (0..p).map(|r| owned(chunks, r, p)).collect()
        };
        let shares = [share(n_tr), share(n_all - n_tr)];
        let r = comm.rank();
        let slots = shares[0][r].len() + shares[1][r].len();
        let len = slots
            .checked_mul(y_len)
            .ok_or(GpuError::TooLarge("partial sums"))?;
        let stream = dev.stream();
        Ok(RowSplit {
            parts: stream.alloc_zeros(len.max(1))?,
            seg: stream.alloc_zeros(y_len.max(1))?,
            comm,
            n_tr,
            n_all,
            y_len,
            shares,
        })
    }

    /// Device bytes held.
    pub(super) fn num_bytes(&self) -> usize {
        self.parts.num_bytes() + self.seg.num_bytes()
    }

    /// The rows of each set: `[start, end)`.
    fn set_rows(&self, set: usize) -> (usize, usize) {
        [(0, self.n_tr), (self.n_tr, self.n_all)][set]
    }

    /// The sets `rows` covers (a product passes over the training rows, the validation
    /// rows, or both).
    fn sets(&self, (r0, r1): (usize, usize)) -> Vec<usize> {
        let sets: Vec<usize> = (0..2)
            .filter(|&s| {
                let (a, b) = self.set_rows(s);
                a < b && r0 <= a && b <= r1
            })
            .collect();
        debug_assert_eq!(
            sets.iter()
                .map(|&s| self.set_rows(s))
                .map(|(a, b)| b - a)
                .sum::<usize>(),
            r1 - r0,
            "rows {r0}..{r1} are not a union of sets"
        );
        sets
    }

    /// Rank `r`'s rows of set `set`.
    fn rows_of(&self, set: usize, r: usize) -> (usize, usize) {
        let (a, b) = self.set_rows(set);
        let rows = chunk_rows(self.shares[set][r].clone(), CHUNK_ROWS, b - a);
        (a + rows.start, a + rows.end)
    }

    /// The first slot of set `set`'s own chunks, and how many there are.
    fn own_slots(&self, set: usize) -> (usize, usize) {
        let r = self.comm.rank();
        let first = if set == 0 { 0 } else { self.shares[0][r].len() };
        (first, self.shares[set][r].len())
    }

    /// This rank's chunks of the sets `rows` covers, in order: their rows and slots.
    pub(super) fn own_chunks(&self, rows: (usize, usize)) -> Vec<((usize, usize), usize)> {
        let r = self.comm.rank();
        let mut out = Vec::new();
        for set in self.sets(rows) {
            let (start, end) = self.set_rows(set);
            let (first, _) = self.own_slots(set);
            for (k, j) in self.shares[set][r].clone().enumerate() {
                let c0 = start + j * CHUNK_ROWS;
                out.push(((c0, (c0 + CHUNK_ROWS).min(end)), first + k));
            }
        }
        out
    }

    /// The slot of one chunk's partial sum.
    pub(super) fn slot(&mut self, k: usize) -> CudaViewMut<'_, f32> {
        self.parts.slice_mut(k * self.y_len..(k + 1) * self.y_len)
    }

    /// `into ← α·Σ + β·into`, `Σ` the sum of every rank's slots of the sets `rows` covers in
    /// chunk order; `computed` is whether this rank's passes succeeded.
    pub(super) fn sum_into(
        &mut self,
        dev: &GpuDevice,
        rows: (usize, usize),
        computed: R,
        into: Sink<'_>,
    ) -> R {
        let (y_len, sets) = (self.y_len, self.sets(rows));
        let mut err = computed.err();
        let mut acc = vec![0.0f32; sets.len() * y_len];
        let comm = Arc::clone(&self.comm);
        comm.chain_f32(&mut acc, &mut |range: Range<usize>, acc: &mut [f32]| {
            // The range may straddle the two sets' sums: add set by set.
            let mut at = range.start;
            while at < range.end && err.is_none() {
                let i = at / y_len;
                let end = range.end.min((i + 1) * y_len);
                let part = &mut acc[at - range.start..end - range.start];
                let (first, count) = self.own_slots(sets[i]);
                if let Err(e) = self.fold(dev, part, first, count, at - i * y_len) {
                    err = Some(e);
                }
                at = end;
            }
        });
        self.agree(err)?;
        // Σ = training sum + validation sum, then α·Σ, on the host (every rank the same).
        let (first, rest) = acc.split_at_mut(y_len);
        if !rest.is_empty() {
            first.iter_mut().zip(rest.iter()).for_each(|(a, b)| *a += b);
        }
        first.iter_mut().for_each(|a| *a *= into.alpha);
        let done = self.store(dev, first, into);
        self.agree(done.err())
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
        let parts = self.parts.slice(first * self.y_len + off..);
        let ints = [n, self.y_len, count].map(i32_of);
        let mut l = stream.launch_builder(&f);
        l.arg(&mut seg).arg(&parts);
        crate::launch::push(&mut l, &ints);
        // SAFETY: matches `fold_chunks`; seg holds n entries, parts (count − 1)·y_len + n
        // from its start (off + n ≤ y_len, slots first .. first + count exist).
        unsafe { l.launch(elementwise(n)) }?;
        stream.memcpy_dtoh(&seg, part)?;
        stream.synchronize()?;
        Ok(())
    }

    /// `into.out ← sum + β·into.out` (`sum` already scaled by α).
    fn store(&mut self, dev: &GpuDevice, sum: &[f32], into: Sink<'_>) -> R {
        let Sink { mut out, beta, .. } = into;
        let stream = dev.stream();
        if beta == 0.0 {
            stream.memcpy_htod(sum, &mut out)?;
            return Ok(());
        }
        let mut s = self.seg.slice_mut(..sum.len());
        stream.memcpy_htod(sum, &mut s)?;
        if beta != 1.0 {
            scale(dev, beta, &mut out)?;
        }
        axpy(dev, 1.0, &s.as_view(), &mut out)
    }

    /// `gx` (this rank's training rows computed) ← every rank's training rows; `computed` is
    /// whether this rank's passes succeeded.
    pub(super) fn gather_train(&self, dev: &GpuDevice, computed: R, gx: &mut GpuVec) -> R {
        let mut err = computed.err();
        let counts: Vec<usize> = (0..self.comm.size())
            .map(|r| {
                let (a, b) = self.rows_of(0, r);
                b - a
            })
            .collect();
        let (a, b) = self.rows_of(0, self.comm.rank());
        let mut mine = vec![0.0f32; b - a];
        if err.is_none() {
            err = download(dev, &gx.0.slice(a..b), &mut mine).err();
        }
        let mut all = vec![0.0f32; self.n_tr];
        self.comm.gather_f32(&mine, &counts, &mut all);
        self.agree(err)?;
        let done = dev
            .stream()
            .memcpy_htod(&all, &mut gx.0)
            .map_err(GpuError::from);
        self.agree(done.err())
    }

    /// `Σ_j ce_j` over every validation row, in `f64` and row order, from this rank's rows of
    /// `ce` (one value per row, training then validation).
    pub(super) fn val_sum(&self, dev: &GpuDevice, computed: R, ce: &CudaSlice<f32>) -> R<f64> {
        let mut err = computed.err();
        let counts: Vec<usize> = (0..self.comm.size())
            .map(|r| {
                let (a, b) = self.rows_of(1, r);
                b - a
            })
            .collect();
        let (a, b) = self.rows_of(1, self.comm.rank());
        let mut mine = vec![0.0f32; b - a];
        if err.is_none() {
            err = download(dev, &ce.slice(a..b), &mut mine).err();
        }
        let mut all = vec![0.0f32; self.n_all - self.n_tr];
        self.comm.gather_f32(&mine, &counts, &mut all);
        self.agree(err)?;
        Ok(all.iter().map(|&v| f64::from(v)).sum())
    }

    /// Every rank's failure agreed on: the lowest-ranked one, on every rank.
    fn agree(&self, mine: Option<GpuError>) -> R {
        if self.comm.size() == 1 {
            return mine.map_or(Ok(()), Err);
        }
        let r = self.comm.rank();
        let msg = mine.map(|e| format!("rank {r}: {e}"));
        match self.comm.agree(msg.as_deref()) {
            None => Ok(()),
            Some(m) => Err(GpuError::Ranks(m)),
        }
    }
}

/// `dst ← src` from the device (waits for it).
fn download(dev: &GpuDevice, src: &cudarc::driver::CudaView<'_, f32>, dst: &mut [f32]) -> R {
    dev.stream().memcpy_dtoh(src, dst)?;
    dev.stream().synchronize()?;
    Ok(())
}

/// Runs `pass` over `rows` into `into` after the work whose result is `pre`: at once on one
/// plain process, chunk by chunk into the slots and summed over the ranks when `p` is split
/// (a rank whose `pre` failed skips its passes but still takes part in the sum).
pub(super) fn sum_rows<P: Splittable>(
    p: &mut P,
    dev: &GpuDevice,
    pre: R,
    rows: (usize, usize),
    into: Sink<'_>,
    mut pass: impl FnMut(&mut P, (usize, usize), Sink<'_>) -> R,
) -> R {
    let Some(mut s) = p.split_mut().take() else {
        pre?;
        return pass(p, rows, into);
    };
    let mut computed = pre;
    for (chunk, k) in s.own_chunks(rows) {
        if computed.is_err() {
            break;
        }
        let slot = Sink {
            out: s.slot(k),
            alpha: 1.0,
            beta: 0.0,
        };
        computed = pass(p, chunk, slot);
    }
    let r = s.sum_into(dev, rows, computed, into);
    *p.split_mut() = Some(s);
    r
}

/// Runs `pass` over the training rows `(0, n_tr)`, which writes per-row results into `gx`:
/// at once on one plain process, over this rank's chunks and then gathered when `p` is
/// split.
pub(super) fn each_train_row<P: Splittable>(
    p: &mut P,
    dev: &GpuDevice,
    n_tr: usize,
    gx: &mut GpuVec,
    mut pass: impl FnMut(&mut P, (usize, usize), &mut GpuVec) -> R,
) -> R {
    let Some(s) = p.split_mut().take() else {
        return pass(p, (0, n_tr), gx);
    };
    let mut computed = Ok(());
    for (chunk, _) in s.own_chunks((0, n_tr)) {
        computed = pass(p, chunk, gx);
        if computed.is_err() {
            break;
        }
    }
    let r = s.gather_train(dev, computed, gx);
    *p.split_mut() = Some(s);
    r
}

/// After a [`sum_rows`] whose passes also wrote per-row results into `gx` on training
/// rows: every rank's rows gathered (nothing on one plain process).
pub(super) fn gather_train<P: Splittable>(p: &mut P, dev: &GpuDevice, gx: &mut GpuVec) -> R {
    match p.split_mut() {
        Some(s) => s.gather_train(dev, Ok(()), gx),
        None => Ok(()),
    }
}

/// A product's last result, agreed on by the ranks when `p` is split (so that a failure
/// after the product's last collective does not leave the other ranks waiting in the next
/// product's).
pub(super) fn settle<P: Splittable, T>(p: &mut P, r: R<T>) -> R<T> {
    match p.split_mut() {
        // A failure anywhere is an error everywhere: then `agree` is `Err`.
        Some(s) => s.agree(r.as_ref().err().cloned()).and(r),
        None => r,
    }
}
