//! `--threads`: every command runs its work in one rayon pool of the size asked for.

use crate::error::CliError;

/// More threads than this many per core only slow a run down (each is a stack and a share
/// of every chunked loop); a mistyped `--threads 100000` is refused instead of starting
/// them.
pub const MAX_PER_CORE: usize = 16;

/// Run `f` in a pool of `threads` workers (0: one per core this process may use, shared
/// among the ranks a launcher started on this node). Results never depend on it: every
/// parallel reduction of the crate has a fixed order.
pub fn install<R: Send>(
    threads: usize,
    f: impl FnOnce() -> Result<R, CliError> + Send,
) -> Result<R, CliError> {
    // The cores this process may run on (a launcher that binds each rank to a core leaves
    // it one).
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = match (threads, crate::ranks::local_ranks()) {
        (0, local) if local > 1 => (cores / local).max(1),
        _ => threads,
    };
    let most = MAX_PER_CORE * cores;
    if threads > most {
        return Err(CliError::input(format!(
            "--threads {threads}: at most {most} on this machine ({MAX_PER_CORE} per core; 0 takes one per core)"
        )));
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| CliError::run(format!("--threads {threads}: cannot start threads: {e}")))?
        .install(f)
}
