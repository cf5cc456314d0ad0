//! `bda data` (placeholder; owned by the few-shot data work).
use crate::error::CliError;

/// Arguments of `bda data`.
#[derive(clap::Args, Debug)]
pub struct DataArgs {}

/// Run `bda data`.
pub fn run(_args: &DataArgs) -> Result<(), CliError> {
    Err(CliError::input("bda data: not implemented yet"))
}
