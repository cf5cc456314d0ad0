//! `bda fewshot` (placeholder; owned by the few-shot work).
pub mod data;

use crate::error::CliError;

/// Arguments of `bda fewshot`.
#[derive(clap::Args, Debug)]
pub struct FewshotArgs {}

/// Run `bda fewshot`.
pub fn run(_args: &FewshotArgs) -> Result<(), CliError> {
    Err(CliError::input("bda fewshot: not implemented yet"))
}
