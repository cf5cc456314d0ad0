//! `--threads`: every command runs its work in one rayon pool of the size asked for.

use crate::error::CliError;

/// Run `f` in a pool of `threads` workers (0: one per core). Results never depend on it:
/// every parallel reduction of the crate has a fixed order.
pub fn install<R: Send>(
    threads: usize,
    f: impl FnOnce() -> Result<R, CliError> + Send,
) -> Result<R, CliError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| CliError::run(format!("--threads {threads}: cannot start threads: {e}")))?
        .install(f)
}
