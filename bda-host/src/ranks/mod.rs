//! Several processes on one run: `mpirun -np P bda hyperclean|fewshot …` (or Slurm's
//! `srun`).
//!
//! Every rank runs the same upper-level loop on the same `x`, optimizer state and draws;
//! the CPU backend splits its fixed chunks over the ranks (hyper-cleaning's rows,
//! few-shot's images) and puts their results together in chunk order
//! ([`bda_kernel::collective`]), so a run's numbers have the same bits on any number of
//! ranks. Rank 0 alone writes the report, the checkpoints, the files and the progress bar.
//!
//! MPI comes with the cargo feature `mpi` (the `mpi` crate over the system's Open MPI or
//! MPICH). A build without it refuses to run under a launcher that started several
//! processes, instead of running the whole job once per process.
//!
//! Failures: ranks [`agree`] on the outcome of each phase that may fail on one of them
//! alone (reading the options and the data) before any rank enters a collective, so that a
//! failure ends every rank with the same message instead of leaving the others waiting.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use bda_kernel::collective::{Collective, Solo};

use crate::error::CliError;

#[cfg(feature = "mpi")]
mod mpi;

/// The ranks of this process's run, set once at start-up.
static RANKS: OnceLock<Arc<dyn Collective>> = OnceLock::new();

/// `--reduce fast`: chains as MPI all-reduces.
static FAST: AtomicBool = AtomicBool::new(false);

/// How ranks add their partial results (`--reduce`).
#[derive(
    clap::ValueEnum,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Reduce {
    /// In chunk order, rank after rank: the same bits on any number of ranks.
    #[default]
    Ordered,
    /// Each rank's sum, then MPI's all-reduce (its order is the library's): faster on many
    /// ranks, results that depend on their number.
    Fast,
}

/// Use `reduce` from now on (a command sets it from its options before computing).
pub fn set_reduce(reduce: Reduce) {
    FAST.store(reduce == Reduce::Fast, Ordering::Relaxed);
}

/// Whether chains are MPI all-reduces (`--reduce fast`).
pub fn fast() -> bool {
    FAST.load(Ordering::Relaxed)
}

/// What [`init`] hands back: MPI stays initialised while it lives.
pub struct Membership {
    #[cfg(feature = "mpi")]
    _universe: Option<::mpi::environment::Universe>,
}

/// The number of processes a launcher started this one among (`mpirun`, `mpiexec`,
/// `srun`), from the variables they set; `None` outside a launcher.
pub fn launched() -> Option<(usize, usize)> {
    const PAIRS: [(&str, &str); 4] = [
        ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK"),
        ("PMI_SIZE", "PMI_RANK"),
        ("PMIX_SIZE", "PMIX_RANK"),
        ("SLURM_STEP_NUM_TASKS", "SLURM_PROCID"),
    ];
    PAIRS.iter().find_map(|(size, rank)| {
        let size = std::env::var(size).ok()?.parse().ok()?;
        let rank = std::env::var(rank).ok()?.parse().ok()?;
        Some((size, rank))
    })
}

/// The ranks a launcher started on this node (1 outside a launcher or when it does not
/// say): `--threads 0` shares the node's cores among them.
pub fn local_ranks() -> usize {
    ["OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse().ok())
        .unwrap_or(1)
}

/// This process's rank among those a launcher started on its node (0 outside a launcher or
/// when it does not say): `--device cuda` takes the node's devices in this order.
pub fn local_rank() -> usize {
    [
        "OMPI_COMM_WORLD_LOCAL_RANK",
        "MPI_LOCALRANKID",
        "SLURM_LOCALID",
    ]
    .iter()
    .find_map(|v| std::env::var(v).ok()?.parse().ok())
    .unwrap_or(0)
}

/// Join the launcher's ranks (with MPI) or stand alone. Without the `mpi` feature, a
/// launch of several processes is refused.
pub fn init() -> Result<Membership, CliError> {
    let launched = launched().filter(|&(size, _)| size > 1);
    #[cfg(feature = "mpi")]
    if launched.is_some() {
        let (universe, comm) = mpi::init()?;
        let _ = RANKS.set(comm);
        abort_on_panic();
        return Ok(Membership {
            _universe: Some(universe),
        });
    }
    if let Some((size, _)) = launched {
        return Err(CliError::input(format!(
            "started as one of {size} processes, but this bda was built without MPI: build it with `cargo build --release -p bda-host --features mpi` (needs an MPI library and libclang), or run one process"
        )));
    }
    Ok(Membership {
        #[cfg(feature = "mpi")]
        _universe: None,
    })
}

/// A panic on one rank ends the process at once (after its message), so that the launcher
/// ends the job: unwinding would finalise MPI, which waits for the other ranks, which wait
/// in a collective for this one.
#[cfg(feature = "mpi")]
fn abort_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        std::process::abort();
    }));
}

/// The ranks of this run ([`Solo`] outside a launcher).
pub fn comm() -> Arc<dyn Collective> {
    RANKS.get().cloned().unwrap_or_else(|| Arc::new(Solo))
}

/// The number of ranks of this run.
pub fn size() -> usize {
    RANKS.get().map_or(1, |c| c.size())
}

/// Whether this process writes the run's output (rank 0, or the only one).
pub fn lead() -> bool {
    match RANKS.get() {
        Some(c) => c.rank() == 0,
        // Refused launches and failed start-ups: the launcher's rank 0 reports them.
        None => launched().is_none_or(|(_, rank)| rank == 0),
    }
}

/// Refuse a command that does not split its work over ranks when there are several.
pub fn alone(command: &str) -> Result<(), CliError> {
    match size() {
        1 => Ok(()),
        n => Err(CliError::input(format!(
            "{command} runs as one process (started as one of {n}): `bda hyperclean` and `bda fewshot` split their work over MPI ranks"
        ))),
    }
}

/// Agree on the outcome of a phase: every rank gets the error of the lowest-ranked rank
/// that failed, with its exit code, or `Ok` when none did (a collective: every rank calls
/// it at the same point).
pub fn agree<T>(mine: Result<T, CliError>) -> Result<T, CliError> {
    if size() == 1 {
        return mine;
    }
    let encoded = mine
        .as_ref()
        .err()
        .map(|e| format!("{}:{e}", e.exit_code()));
    match comm().agree(encoded.as_deref()) {
        None => mine,
        Some(m) => {
            let (code, msg) = m.split_once(':').unwrap_or(("2", &m));
            Err(match code {
                "1" => CliError::run(msg),
                _ => CliError::input(msg),
            })
        }
    }
}
