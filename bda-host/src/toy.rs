//! `bda toy` (placeholder).
use crate::error::CliError;

/// Arguments of `bda toy`.
#[derive(clap::Args, Debug)]
pub struct ToyArgs {}

/// Run `bda toy`.
pub fn run(_args: &ToyArgs) -> Result<(), CliError> {
    Ok(())
}
