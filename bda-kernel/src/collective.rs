//! Several processes ("ranks") computing one product: who owns which chunks, and the
//! collectives that put the chunks' results together in an order that does not depend on
//! how many ranks there are.
//!
//! A backend's products are sums over fixed chunks of the data (rows of a training set,
//! images of a meta-batch), computed per chunk and added in chunk order, so that the thread
//! count never changes a bit. Ranks split the *same* chunks: rank `r` of `P` owns the
//! contiguous range [`owned`]`(chunks, r, P)`, and the partial results are put together by
//!
//! * [`Collective::chain_f32`]: rank 0 adds its chunks' partials to zero in chunk order and
//!   passes the running sum on; rank `r` receives it, adds its own chunks in order, passes
//!   it on; the last rank's sum goes back to every rank. Every element is added in chunk
//!   order, exactly as one process adds the chunks, whatever `P` is. (An all-reduce adds in
//!   an order of the library's choosing, which changes with `P`.)
//! * [`Collective::gather_f32`] / [`Collective::gather_f64`]: per-chunk values (per-sample
//!   terms, per-chunk losses) concatenated in rank order, that is in chunk order; no
//!   arithmetic, so exact.
//!
//! and [`Collective::agree`], which every rank calls before it branches on a failure, so
//! that an error seen by one rank ends all of them with the same message instead of
//! leaving the others waiting in a collective.
//!
//! [`Solo`] is one process (every collective is the identity). Implementations for several
//! ranks live with the hosts: threads in one process (`bda-cpu`, for tests) and MPI
//! (`bda-host`, feature `mpi`).
//!
//! ```
//! use bda_kernel::collective::{Collective, Solo, owned};
//!
//! // 10 chunks over 3 ranks: 3, 3 and 4 chunks, contiguous, in order.
//! assert_eq!(owned(10, 0, 3), 0..3);
//! assert_eq!(owned(10, 1, 3), 3..6);
//! assert_eq!(owned(10, 2, 3), 6..10);
//!
//! // One process: the chain is a plain sum of its chunks in order.
//! let mut acc = [0.0f32; 2];
//! Solo.chain_f32(&mut acc, &mut |acc| {
//!     for chunk in [[1.0, 2.0], [3.0, 4.0]] {
//!         acc.iter_mut().zip(chunk).for_each(|(a, c)| *a += c);
//!     }
//! });
//! assert_eq!(acc, [4.0, 6.0]);
//! ```

use alloc::string::String;
use alloc::vec::Vec;
use core::ops::Range;

/// The chunks rank `rank` of `ranks` owns out of `chunks`: contiguous, in rank order, sizes
/// differing by at most one (the later ranks take the larger share). A rank may own none
/// when there are fewer chunks than ranks.
pub fn owned(chunks: usize, rank: usize, ranks: usize) -> Range<usize> {
    assert!(rank < ranks, "rank {rank} of {ranks}");
    // Split points ⌊i·n/P⌋: monotone, 0 at the first rank, n at the last.
    let at = |i: usize| (i as u128 * chunks as u128 / ranks as u128) as usize;
    at(rank)..at(rank + 1)
}

/// How many of `chunks` every rank owns, in rank order (the counts of a gather).
pub fn counts(chunks: usize, ranks: usize) -> Vec<usize> {
    (0..ranks).map(|r| owned(chunks, r, ranks).len()).collect()
}

/// The collectives a backend split over ranks needs. Every rank calls the same collectives
/// in the same order with the same lengths (they are blocking and matched by order).
pub trait Collective: Send + Sync {
    /// This process's rank, `0..size()`.
    fn rank(&self) -> usize;
    /// The number of ranks.
    fn size(&self) -> usize;

    /// The running sum in rank order. On entry `acc` holds zeros (its length is the same on
    /// every rank); the sum received from the previous rank replaces it (rank 0 starts from
    /// the zeros), `add` adds this rank's chunks to it in chunk order, and the result is
    /// passed to the next rank. On return every rank's `acc` holds the last rank's sum.
    fn chain_f32(&self, acc: &mut [f32], add: &mut dyn FnMut(&mut [f32]));

    /// [`Self::chain_f32`] for `f64`.
    fn chain_f64(&self, acc: &mut [f64], add: &mut dyn FnMut(&mut [f64]));

    /// `out` ← every rank's `mine` concatenated in rank order; `counts[r]` is the length of
    /// rank `r`'s piece (`mine.len() == counts[rank]`, `out.len() == Σ counts`).
    fn gather_f32(&self, mine: &[f32], counts: &[usize], out: &mut [f32]);

    /// [`Self::gather_f32`] for `f64`.
    fn gather_f64(&self, mine: &[f64], counts: &[usize], out: &mut [f64]);

    /// Agree on a failure before branching on it: every rank passes its own (`None` when
    /// it has none) and every rank gets the message of the lowest-ranked rank that failed,
    /// or `None` when none did.
    fn agree(&self, mine: Option<&str>) -> Option<String>;
}

/// One process: the chain adds this process's chunks to zero, a gather copies.
#[derive(Clone, Copy, Debug, Default)]
pub struct Solo;

impl Collective for Solo {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn chain_f32(&self, acc: &mut [f32], add: &mut dyn FnMut(&mut [f32])) {
        add(acc);
    }
    fn chain_f64(&self, acc: &mut [f64], add: &mut dyn FnMut(&mut [f64])) {
        add(acc);
    }
    fn gather_f32(&self, mine: &[f32], _: &[usize], out: &mut [f32]) {
        out.copy_from_slice(mine);
    }
    fn gather_f64(&self, mine: &[f64], _: &[usize], out: &mut [f64]) {
        out.copy_from_slice(mine);
    }
    fn agree(&self, mine: Option<&str>) -> Option<String> {
        mine.map(String::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_covers_every_chunk_once_in_order() {
        for chunks in 0..40 {
            for ranks in 1..=9 {
                let ranges: Vec<_> = (0..ranks).map(|r| owned(chunks, r, ranks)).collect();
                assert_eq!(ranges[0].start, 0);
                assert_eq!(ranges[ranks - 1].end, chunks);
                for w in ranges.windows(2) {
                    assert_eq!(w[0].end, w[1].start, "{chunks} chunks on {ranks} ranks");
                }
                let (lo, hi) = ranges.iter().fold((usize::MAX, 0), |(lo, hi), r| {
                    (lo.min(r.len()), hi.max(r.len()))
                });
                assert!(hi - lo <= 1, "{chunks} chunks on {ranks} ranks: {ranges:?}");
                assert_eq!(counts(chunks, ranks).iter().sum::<usize>(), chunks);
            }
        }
    }
}
