//! The kernel's [`Collective`] over MPI (feature `mpi`): the chain as point-to-point
//! messages from rank to rank and a broadcast from the last; gathers as
//! `MPI_Allgatherv`; agreement as an all-gather of failure flags and a broadcast of the
//! first failing rank's message. No reduction of MPI's own: its order is the library's
//! choice and changes with the number of ranks.

use std::sync::{Arc, Mutex};

use ::mpi::Threading;
use ::mpi::collective::SystemOperation;
use ::mpi::datatype::PartitionMut;
use ::mpi::environment::Universe;
use ::mpi::topology::SimpleCommunicator;
use ::mpi::traits::*;
use bda_kernel::collective::{Add, Collective, segments};

use crate::error::CliError;

/// The world communicator. MPI is called from whichever thread runs the command (a
/// thread of the rayon pool), one call at a time: the mutex serialises them, which is what
/// `MPI_THREAD_SERIALIZED` asks of the caller.
pub struct MpiRanks {
    world: Mutex<World>,
    rank: usize,
    size: usize,
}

/// The communicator, movable to the pool's thread.
struct World(SimpleCommunicator);

// SAFETY: MPI was initialised with at least `MPI_THREAD_SERIALIZED` (checked in `init`):
// its calls may come from any thread as long as no two run at once, which the mutex
// around `World` guarantees; the handle itself is plain data.
unsafe impl Send for World {}

/// Initialise MPI; the universe finalises it when dropped.
pub fn init() -> Result<(Universe, Arc<dyn Collective>), CliError> {
    let (universe, level) = ::mpi::initialize_with_threading(Threading::Serialized)
        .ok_or_else(|| CliError::run("MPI: already initialised"))?;
    if !matches!(level, Threading::Serialized | Threading::Multiple) {
        return Err(CliError::run(format!(
            "MPI: this library gives thread level {level:?}; bda needs Serialized (its work runs on a pool thread)"
        )));
    }
    let world = universe.world();
    let (rank, size) = (world.rank() as usize, world.size() as usize);
    let ranks = MpiRanks {
        world: Mutex::new(World(world)),
        rank,
        size,
    };
    Ok((universe, Arc::new(ranks)))
}

impl MpiRanks {
    fn with<R>(&self, f: impl FnOnce(&SimpleCommunicator) -> R) -> R {
        let w = self.world.lock().unwrap_or_else(|p| p.into_inner());
        f(&w.0)
    }
}

/// `counts` as MPI counts and their displacements.
fn partition(counts: &[usize]) -> (Vec<i32>, Vec<i32>) {
    let c: Vec<i32> = counts
        .iter()
        .map(|&n| i32::try_from(n).expect("a piece fits an MPI count"))
        .collect();
    let d = c
        .iter()
        .scan(0i32, |at, &n| {
            let here = *at;
            *at += n;
            Some(here)
        })
        .collect();
    (c, d)
}

fn all_gather<T: Equivalence>(w: &SimpleCommunicator, mine: &[T], counts: &[usize], out: &mut [T]) {
    let (c, d) = partition(counts);
    let mut part = PartitionMut::new(out, &c[..], &d[..]);
    w.all_gather_varcount_into(mine, &mut part);
}

/// The running sum from rank to rank (point to point, segment by segment: a rank adds to
/// one segment while the previous rank works on the next), then a broadcast from the last.
fn chain<T: Equivalence>(
    w: &SimpleCommunicator,
    rank: usize,
    size: usize,
    acc: &mut [T],
    add: &mut Add<'_, T>,
) {
    let (r, p) = (rank as i32, size as i32);
    for seg in segments(acc.len()) {
        let part = &mut acc[seg.clone()];
        if r > 0 {
            w.process_at_rank(r - 1).receive_into(part);
        }
        add(seg, part);
        if r + 1 < p {
            w.process_at_rank(r + 1).send(part);
        }
    }
    w.process_at_rank(p - 1).broadcast_into(acc);
}

/// `--reduce fast`: this rank's sum from zero, then MPI's all-reduce (in an order of the
/// library's choosing: the results depend on the number of ranks).
fn all_reduce<T: Equivalence + Copy>(w: &SimpleCommunicator, acc: &mut [T], add: &mut Add<'_, T>) {
    add(0..acc.len(), acc);
    let mine = acc.to_vec();
    w.all_reduce_into(&mine[..], acc, SystemOperation::sum());
}

impl Collective for MpiRanks {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }

    fn chain_f32(&self, acc: &mut [f32], add: &mut Add<'_, f32>) {
        self.with(|w| match super::fast() {
            true => all_reduce(w, acc, add),
            false => chain(w, self.rank, self.size, acc, add),
        });
    }

    fn chain_f64(&self, acc: &mut [f64], add: &mut Add<'_, f64>) {
        self.with(|w| match super::fast() {
            true => all_reduce(w, acc, add),
            false => chain(w, self.rank, self.size, acc, add),
        });
    }

    fn gather_f32(&self, mine: &[f32], counts: &[usize], out: &mut [f32]) {
        self.with(|w| all_gather(w, mine, counts, out));
    }

    fn gather_f64(&self, mine: &[f64], counts: &[usize], out: &mut [f64]) {
        self.with(|w| all_gather(w, mine, counts, out));
    }

    fn agree(&self, mine: Option<&str>) -> Option<String> {
        self.with(|w| {
            let flag = i32::from(mine.is_some());
            let mut flags = vec![0i32; self.size];
            w.all_gather_into(&flag, &mut flags[..]);
            let first = flags.iter().position(|&f| f != 0)?;
            let root = w.process_at_rank(first as i32);
            let mut len = mine.map_or(0, |m| m.len() as u64);
            root.broadcast_into(&mut len);
            let mut bytes = match mine {
                Some(m) if self.rank == first => m.as_bytes().to_vec(),
                _ => vec![0u8; len as usize],
            };
            root.broadcast_into(&mut bytes[..]);
            Some(String::from_utf8_lossy(&bytes).into_owned())
        })
    }
}
