//! The backend split over ranks: which rows of a set this rank's passes cover, and the
//! collectives that put the ranks' results together with the bits of one process
//! ([`bda_kernel::collective`]).
//!
//! The unit of ownership is a chunk of [`UNIT_ROWS`] packed rows (`CHUNK_GROUPS` groups of
//! 8): the chunk of softmax regression's partials and of the network's `Uᵀ·G`, two of its
//! thin chunks. Rank `r` passes over the rows of its units; the per-unit partials are
//! chained in unit order, the per-row terms and per-chunk losses gathered.

use std::ops::Range;
use std::sync::Arc;

use bda_kernel::collective::{Collective, Solo, owned};

use super::packed::{CHUNK_GROUPS, LANES};

/// Packed rows per unit of ownership.
pub const UNIT_ROWS: usize = CHUNK_GROUPS * LANES;

/// This process's share of every set: all of it alone, a range of units on several ranks.
#[derive(Clone)]
pub struct Split {
    comm: Arc<dyn Collective>,
}

impl std::fmt::Debug for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Split(rank {} of {})",
            self.comm.rank(),
            self.comm.size()
        )
    }
}

impl Default for Split {
    fn default() -> Self {
        Split::new(Arc::new(Solo))
    }
}

impl Split {
    /// This rank's share of `comm`.
    pub fn new(comm: Arc<dyn Collective>) -> Self {
        Split { comm }
    }

    /// Whether this process holds every row (one rank).
    pub fn alone(&self) -> bool {
        self.comm.size() == 1
    }

    /// The packed rows of a set of `rows` (padded) rows that rank `r` passes over.
    fn rows_of(&self, rows: usize, r: usize) -> Range<usize> {
        let u = owned(rows.div_ceil(UNIT_ROWS), r, self.comm.size());
        (u.start * UNIT_ROWS).min(rows)..(u.end * UNIT_ROWS).min(rows)
    }

    /// The packed rows of a set of `rows` rows that this rank passes over.
    pub fn own_rows(&self, rows: usize) -> Range<usize> {
        self.rows_of(rows, self.comm.rank())
    }

    /// `acc ←` the sum of every rank's partials in unit order (`acc` zeroed here; `add`
    /// adds this rank's in order).
    pub fn chain(&self, acc: &mut [f32], add: &mut dyn FnMut(&mut [f32])) {
        acc.fill(0.0);
        self.comm.chain_f32(acc, add);
    }

    /// `per_row` (this rank's rows of a set of `rows` rows) ← every rank's rows in order.
    pub fn gather_rows(&self, rows: usize, per_row: &mut Vec<f32>) {
        if self.alone() {
            return;
        }
        let counts = self.counts(|r| self.rows_of(rows, r).len());
        let mut all = vec![0.0; rows];
        self.comm.gather_f32(per_row, &counts, &mut all);
        *per_row = all;
    }

    /// `per_chunk` (one value per `chunk_rows` rows of this rank's rows) ← every rank's
    /// values in order.
    pub fn gather_chunks(&self, rows: usize, chunk_rows: usize, per_chunk: &mut Vec<f64>) {
        if self.alone() {
            return;
        }
        debug_assert_eq!(UNIT_ROWS % chunk_rows, 0);
        let counts = self.counts(|r| self.rows_of(rows, r).len().div_ceil(chunk_rows));
        let mut all = vec![0.0; counts.iter().sum()];
        self.comm.gather_f64(per_chunk, &counts, &mut all);
        *per_chunk = all;
    }

    fn counts(&self, of: impl Fn(usize) -> usize) -> Vec<usize> {
        (0..self.comm.size()).map(of).collect()
    }
}
