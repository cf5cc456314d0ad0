//! `bda hyperclean` (placeholder; owned by the hyper-cleaning work).
use crate::error::CliError;

/// Arguments of `bda hyperclean`.
#[derive(clap::Args, Debug)]
pub struct HypercleanArgs {}

/// Run `bda hyperclean`.
pub fn run(_args: &HypercleanArgs) -> Result<(), CliError> {
    Err(CliError::input("bda hyperclean: not implemented yet"))
}
