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
//!   an order of the library's choosing, which changes with `P`.) The vector travels in
//!   [`segments`], so that a rank adds to one segment while the next is on its way: a
//!   chain of `P` ranks then takes about `(P − 1 + S)/S` times one transfer of the vector
//!   (`S` segments) rather than `P` times.
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
//! // `add` gets a range of the vector and that range of the running sum.
//! let mut acc = [0.0f32; 2];
//! Solo.chain_f32(&mut acc, &mut |range, acc| {
//!     for chunk in [[1.0, 2.0], [3.0, 4.0]] {
//!         acc.iter_mut().zip(&chunk[range.clone()]).for_each(|(a, c)| *a += c);
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

/// The chunks rank `rank` of `ranks` owns when chunk `i` costs `weights[i]`: contiguous, in
/// rank order, each range ending at the first chunk where the running cost reaches its
/// share (`rank + 1` of `ranks` of the total). Which rank computes a chunk never changes
/// the results, only the balance: chunks of uneven cost (sparse data) are split by cost.
pub fn owned_by_weight(weights: &[u64], rank: usize, ranks: usize) -> Range<usize> {
    assert!(rank < ranks, "rank {rank} of {ranks}");
    let total: u128 = weights.iter().map(|&w| u128::from(w)).sum();
    // The end of rank i's range: the chunks whose cumulative cost (through the chunk's
    // middle) falls below (i + 1)/P of the total.
    let end = |i: usize| -> usize {
        if i + 1 == ranks {
            return weights.len();
        }
        let share = total * (i as u128 + 1);
        let mut before = 0u128;
        for (k, &w) in weights.iter().enumerate() {
            // Chunk k goes to the rank whose share contains its middle.
            if (2 * before + u128::from(w)) * ranks as u128 > 2 * share {
                return k;
            }
            before += u128::from(w);
        }
        weights.len()
    };
    let start = if rank == 0 { 0 } else { end(rank - 1) };
    start..end(rank).max(start)
}

/// Floats per segment of a chain (256 KB of `f32`).
pub const SEGMENT: usize = 1 << 16;

/// The segments a chain moves a vector of `n` values in: [`SEGMENT`] long, the last shorter.
pub fn segments(n: usize) -> impl Iterator<Item = Range<usize>> {
    (0..n.div_ceil(SEGMENT)).map(move |s| s * SEGMENT..((s + 1) * SEGMENT).min(n))
}

/// This rank's additions to a range of a chain's running sum: `add(range, acc)` adds its
/// partials' values at `range` to `acc` (`acc.len() == range.len()`).
pub type Add<'a, T> = dyn FnMut(Range<usize>, &mut [T]) + 'a;

/// The rows of `n` that the chunks `chunks` of `per_chunk` rows cover (the last chunk of
/// the `n` rows may be short): a rank's rows from its chunks.
pub fn chunk_rows(chunks: Range<usize>, per_chunk: usize, n: usize) -> Range<usize> {
    (chunks.start * per_chunk).min(n)..(chunks.end * per_chunk).min(n)
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
    /// `add` is called on ranges of the vector (its [`segments`], or the whole of it), each
    /// element once.
    fn chain_f32(&self, acc: &mut [f32], add: &mut Add<'_, f32>);

    /// [`Self::chain_f32`] for `f64`.
    fn chain_f64(&self, acc: &mut [f64], add: &mut Add<'_, f64>);

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
    fn chain_f32(&self, acc: &mut [f32], add: &mut Add<'_, f32>) {
        add(0..acc.len(), acc);
    }
    fn chain_f64(&self, acc: &mut [f64], add: &mut Add<'_, f64>) {
        add(0..acc.len(), acc);
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
    fn weighted_ownership_is_contiguous_and_balances_cost() {
        // Even weights: the even split's sizes.
        for ranks in 1..=7 {
            let w = [5u64; 20];
            let sizes: Vec<usize> = (0..ranks)
                .map(|r| owned_by_weight(&w, r, ranks).len())
                .collect();
            assert_eq!(sizes.iter().sum::<usize>(), 20);
            assert!(
                sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1,
                "{sizes:?}"
            );
        }
        // The dense chunks at the end: the last rank takes fewer of them.
        let w: Vec<u64> = (0..20).map(|i| if i < 10 { 10 } else { 14 }).collect();
        assert_eq!(owned_by_weight(&w, 0, 2), 0..11);
        assert_eq!(owned_by_weight(&w, 1, 2), 11..20);
        for chunks in 0..30 {
            for ranks in 1..=9 {
                let w: Vec<u64> = (0..chunks as u64).map(|i| 1 + (i * 7919) % 13).collect();
                let ranges: Vec<_> = (0..ranks).map(|r| owned_by_weight(&w, r, ranks)).collect();
                assert_eq!(ranges[0].start, 0);
                assert_eq!(ranges[ranks - 1].end, chunks);
                for p in ranges.windows(2) {
                    assert_eq!(p[0].end, p[1].start, "{ranges:?}");
                }
            }
        }
    }

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
