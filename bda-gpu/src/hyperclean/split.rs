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
//! chunk's contribution to a `y`-sized sum lands in its own device slot ([`Slots`]).
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
//! As every split backend ([`crate::ranks`]): a rank that failed still enters every
//! collective of the product, and the ranks agree on the lowest-ranked failure.

use std::ops::Range;
use std::sync::Arc;

use bda_kernel::collective::{Collective, chunk_rows, owned};
use cudarc::driver::{CudaSlice, CudaViewMut};

use crate::launch::{ReduceScratch, axpy, scale};
use crate::ranks::{Slots, agree, download};
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
    /// Per set (training, validation), the chunks of every rank.
    shares: [Vec<Range<usize>>; 2],
    /// One `y`-sized slot per own chunk: training chunks, then validation chunks.
    slots: Slots,
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
        let own = shares[0][r].len() + shares[1][r].len();
        Ok(RowSplit {
            slots: Slots::new(dev, own, y_len)?,
            comm,
            n_tr,
            n_all,
            shares,
        })
    }

    /// Device bytes held.
    pub(super) fn num_bytes(&self) -> usize {
        self.slots.num_bytes()
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
        self.slots.slot(k)
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
        let groups: Vec<(usize, usize)> = self
            .sets(rows)
            .into_iter()
            .map(|s| self.own_slots(s))
            .collect();
        let mut err = computed.err();
        let mut acc = self.slots.chain(dev, &*self.comm, &groups, &mut err);
        agree(&*self.comm, err)?;
        // Σ = training sum + validation sum, then α·Σ, on the host (every rank the same).
        let (sum, rest) = acc.split_at_mut(self.slots.len());
        if !rest.is_empty() {
            sum.iter_mut().zip(rest.iter()).for_each(|(a, b)| *a += b);
        }
        sum.iter_mut().for_each(|a| *a *= into.alpha);
        let done = self.store(dev, sum, into);
        agree(&*self.comm, done.err())
    }

    /// `into.out ← sum + β·into.out` (`sum` already scaled by α).
    fn store(&mut self, dev: &GpuDevice, sum: &[f32], into: Sink<'_>) -> R {
        let Sink { mut out, beta, .. } = into;
        if beta == 0.0 {
            dev.stream().memcpy_htod(sum, &mut out)?;
            return Ok(());
        }
        if beta != 1.0 {
            scale(dev, beta, &mut out)?;
        }
        let s = self.slots.staged(dev, sum)?;
        axpy(dev, 1.0, &s, &mut out)
    }

    /// `gx` (this rank's training rows computed) ← every rank's training rows; `computed` is
    /// whether this rank's passes succeeded.
    pub(super) fn gather_train(&self, dev: &GpuDevice, computed: R, gx: &mut GpuVec) -> R {
        let all = self.gather_set(dev, 0, computed, &gx.0)?;
        let done = dev.stream().memcpy_htod(&all, &mut gx.0);
        agree(&*self.comm, done.err().map(GpuError::from))
    }

    /// `Σ_j ce_j` over every validation row, in `f64` and row order, from this rank's rows of
    /// `ce` (one value per row, training then validation).
    pub(super) fn val_sum(&self, dev: &GpuDevice, computed: R, ce: &CudaSlice<f32>) -> R<f64> {
        let all = self.gather_set(dev, 1, computed, ce)?;
        Ok(all.iter().map(|&v| f64::from(v)).sum())
    }

    /// Every rank's rows of set `set` of the per-row vector `src` (indexed by row), in row
    /// order; `computed` is whether this rank's passes succeeded.
    fn gather_set(
        &self,
        dev: &GpuDevice,
        set: usize,
        computed: R,
        src: &CudaSlice<f32>,
    ) -> R<Vec<f32>> {
        let mut err = computed.err();
        let len = |(a, b): (usize, usize)| b - a;
        let counts: Vec<usize> = (0..self.comm.size())
            .map(|r| len(self.rows_of(set, r)))
            .collect();
        let (a, b) = self.rows_of(set, self.comm.rank());
        let mut mine = vec![0.0f32; b - a];
        download(dev, &src.slice(a..b), &mut mine, &mut err);
        let mut all = vec![0.0f32; len(self.set_rows(set))];
        self.comm.gather_f32(&mine, &counts, &mut all);
        agree(&*self.comm, err)?;
        Ok(all)
    }
}

/// `Σ_j CE_j` over the validation rows (`ce` holds every row's, training then validation)
/// once a product's passes have written them: queued into slot 0 of `scratch` on a plain
/// backend (`None`: read it with the scratch), gathered and summed in row order when split.
pub(super) fn val_ce_sum(
    split: &Option<RowSplit>,
    dev: &GpuDevice,
    ce: &CudaSlice<f32>,
    n_tr: usize,
    scratch: &mut ReduceScratch,
) -> R<Option<f64>> {
    match split {
        Some(s) => s.val_sum(dev, Ok(()), ce).map(Some),
        None => scratch.sum(dev, &ce.slice(n_tr..), 0).map(|()| None),
    }
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
        Some(s) => agree(&*s.comm, r.as_ref().err().cloned()).and(r),
        None => r,
    }
}
