//! The backend split over ranks: which rows of a set this rank's passes cover, and the
//! collectives that put the ranks' results together with the bits of one process
//! ([`bda_kernel::collective`]).
//!
//! The unit of ownership is a chunk of [`UNIT_ROWS`] packed rows (`CHUNK_GROUPS` groups of
//! 8): the chunk of softmax regression's partials and of the network's `Uᵀ·G`, two of its
//! thin chunks. Rank `r` passes over the rows of its units; the per-unit partials are
//! chained in unit order, the per-row terms and per-chunk losses gathered. The units are
//! split by their cost (the products skip all-zero pixel blocks, and the packed order puts
//! the sparse samples together), not by their number; which rank computes a unit never
//! changes a bit.

use std::ops::Range;
use std::sync::Arc;

use bda_kernel::collective::{Add, Collective, Solo, chunk_rows, owned_by_weight};

use super::packed::{CHUNK_GROUPS, LANES, Packed};

/// Packed rows per unit of ownership.
pub const UNIT_ROWS: usize = CHUNK_GROUPS * LANES;

/// This process's share of every set: all of it alone, a range of units on several ranks.
#[derive(Clone)]
pub struct Split {
    comm: Arc<dyn Collective>,
    /// Per set ([`Which`](super::Which)), the units of every rank.
    shares: [Vec<Range<usize>>; 2],
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

/// What a unit of a set costs: its non-zero (group × pixel) blocks, which the products
/// multiply, and per group the dense work of its 8 rows (the network's thin products, the
/// softmax), worth about 20 blocks at the network's sizes.
fn unit_costs(set: &Packed) -> Vec<u64> {
    const PER_GROUP: u64 = 20;
    (0..set.groups.div_ceil(CHUNK_GROUPS))
        .map(|u| {
            (u * CHUNK_GROUPS..((u + 1) * CHUNK_GROUPS).min(set.groups))
                .map(|g| set.index.features(g).len() as u64 + PER_GROUP)
                .sum()
        })
        .collect()
}

impl Split {
    /// The shares of the training and validation sets over the ranks of `comm`.
    pub fn new(comm: Arc<dyn Collective>, train: &Packed, val: &Packed) -> Self {
        let p = comm.size();
        let share = |set: &Packed| -> Vec<Range<usize>> {
            let costs = unit_costs(set);
            (0..p).map(|r| owned_by_weight(&costs, r, p)).collect()
        };
        Split {
            shares: [share(train), share(val)],
            comm,
        }
    }

    /// One process.
    pub fn alone_on(train: &Packed, val: &Packed) -> Self {
        Self::new(Arc::new(Solo), train, val)
    }

    /// Whether this process holds every row (one rank).
    pub fn alone(&self) -> bool {
        self.comm.size() == 1
    }

    /// The packed rows of set `which` (of `rows` padded rows) that rank `r` passes over.
    fn rows_of(&self, which: usize, rows: usize, r: usize) -> Range<usize> {
        chunk_rows(self.shares[which][r].clone(), UNIT_ROWS, rows)
    }

    /// The packed rows of set `which` (of `rows` padded rows) that this rank passes over.
    pub fn own_rows(&self, which: usize, rows: usize) -> Range<usize> {
        self.rows_of(which, rows, self.comm.rank())
    }

    /// `acc ←` the sum of every rank's partials in unit order (`acc` zeroed here; `add`
    /// adds this rank's in order, range by range of `acc`).
    pub fn chain(&self, acc: &mut [f32], add: &mut Add<'_, f32>) {
        acc.fill(0.0);
        self.comm.chain_f32(acc, add);
    }

    /// `per_row` (this rank's rows of set `which`, of `rows` rows) ← every rank's rows in
    /// order.
    pub fn gather_rows(&self, which: usize, rows: usize, per_row: &mut Vec<f32>) {
        if self.alone() {
            return;
        }
        let counts = self.counts(|r| self.rows_of(which, rows, r).len());
        let mut all = vec![0.0; rows];
        self.comm.gather_f32(per_row, &counts, &mut all);
        *per_row = all;
    }

    /// `per_chunk` (one value per `chunk_rows` rows of this rank's rows of set `which`)
    /// ← every rank's values in order.
    pub fn gather_chunks(
        &self,
        which: usize,
        rows: usize,
        chunk_rows: usize,
        per_chunk: &mut Vec<f64>,
    ) {
        if self.alone() {
            return;
        }
        debug_assert_eq!(UNIT_ROWS % chunk_rows, 0);
        let counts = self.counts(|r| self.rows_of(which, rows, r).len().div_ceil(chunk_rows));
        let mut all = vec![0.0; counts.iter().sum()];
        self.comm.gather_f64(per_chunk, &counts, &mut all);
        *per_chunk = all;
    }

    fn counts(&self, of: impl Fn(usize) -> usize) -> Vec<usize> {
        (0..self.comm.size()).map(of).collect()
    }
}
