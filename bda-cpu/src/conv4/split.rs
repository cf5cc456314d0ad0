//! The backbone split over ranks: rank `r` passes its own chunks of [`CHUNK`] images
//! through the blocks; batch norm still normalises with the statistics of the whole batch.
//! What crosses ranks is what one process already sums per chunk in chunk order: the
//! chunks' moments and backward sums (gathered, then merged exactly as one process merges
//! them), the weight gradients' chunk partials (chained in chunk order) and the features
//! (gathered). So every rank's results have the bits of one process.

use std::ops::Range;

use bda_kernel::collective::{Collective, chunk_rows, owned};

use super::ops::chunks;
use super::{CHUNK, Float};

/// The images of a batch of `n` that this rank passes: its chunks'.
pub(super) fn own_images(n: usize, comm: &dyn Collective) -> Range<usize> {
    images_of(n, comm.rank(), comm.size())
}

fn images_of(n: usize, rank: usize, ranks: usize) -> Range<usize> {
    chunk_rows(owned(n.div_ceil(CHUNK), rank, ranks), CHUNK, n)
}

/// Per-chunk vectors of `len` of this rank's chunks → those of every chunk of the batch
/// of `n` images, in chunk order.
pub(super) fn gather_parts<T: Float>(
    comm: &dyn Collective,
    n: usize,
    parts: Vec<Vec<T>>,
    len: usize,
) -> Vec<Vec<T>> {
    if comm.size() == 1 {
        return parts;
    }
    let mine: Vec<T> = parts.concat();
    let counts: Vec<usize> = (0..comm.size())
        .map(|r| images_of(n, r, comm.size()).len().div_ceil(CHUNK) * len)
        .collect();
    let mut all = vec![T::zero(); chunks(n).len() * len];
    T::gather(comm, &mine, &counts, &mut all);
    all.chunks_exact(len.max(1)).map(<[T]>::to_vec).collect()
}

/// Rows of `per_row` values of this rank's images → those of every image, in order.
pub(super) fn gather_rows<T: Float>(
    comm: &dyn Collective,
    n: usize,
    mine: Vec<T>,
    per_row: usize,
) -> Vec<T> {
    if comm.size() == 1 {
        return mine;
    }
    let counts: Vec<usize> = (0..comm.size())
        .map(|r| images_of(n, r, comm.size()).len() * per_row)
        .collect();
    let mut all = vec![T::zero(); n * per_row];
    T::gather(comm, &mine, &counts, &mut all);
    all
}

/// The sum of every rank's chunk partials in chunk order (this rank's: `parts`), from zero.
pub(super) fn chain_sum<T: Float>(comm: &dyn Collective, parts: &[Vec<T>], len: usize) -> Vec<T> {
    let mut acc = vec![T::zero(); len];
    T::chain(comm, &mut acc, &mut |range, acc| {
        for p in parts {
            for (a, &v) in acc.iter_mut().zip(&p[range.clone()]) {
                *a += v;
            }
        }
    });
    acc
}
