//! `bda fewshot`: few-shot meta-learning (journal §8.3, Tables 3–4).
//!
//! * `bda fewshot [TRAIN FLAGS]` meta-trains the conv4 backbone with the hypergradient of a
//!   per-task linear head (`bda_kernel::fewshot::FeatureHead` through the kernel's engine:
//!   `--method bda|rhg|trhg`), then tests it on `--episodes` episodes.
//! * `bda fewshot eval --checkpoint FILE | --random-backbone` tests a backbone.
//! * `bda fewshot bench` times meta-steps on random inputs with the PyTorch peer's shapes.
//!
//! | module | holds |
//! |---|---|
//! | [`args`] | the options of the three commands (their configurations and output options) |
//! | [`config`] | the settings checkpoints store, and their one check into a [`config::Plan`] |
//! | [`source`] | where episodes come from: random images or a data split with its sampler |
//! | [`train`], [`eval`], [`bench`](mod@bench) | the three commands: upper-level loops and reports |
//! | [`report`] | the report, its history and the chart |
//! | [`checkpoint`] | atomic, versioned checkpoints |
//! | [`resume`] | `--resume`: the checkpoint's configuration, what may change, the data's hash |
//! | [`projection`] | `--ul-projection` (`Proj_X` on the convolution weights) and the orthogonality sum |
//! | [`data`] | the data formats, the Omniglot-layout reader and the episode sampler |
//! | [`miniimagenet`] | the MiniImageNet reader (split files or class folders, JPEG) |
//! | [`image`] | PNG and JPEG decoding, area resizing, rotation |
//!
//! The meta-gradients come from the device's [`bda_kernel::fewshot::MetaBackend`]
//! (`bda-cpu` or `bda-gpu`, chosen in [`crate::device::fewshot_backend`]). See
//! `docs/fewshot.md` for the design, the measured speed and the accuracy table.

pub mod args;
pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod eval;
pub mod image;
pub mod miniimagenet;
pub mod projection;
pub mod report;
pub mod resume;
pub mod source;
pub mod train;

use clap::ArgMatches;

pub use args::{FewshotArgs, FewshotCommand, FsMethod};

use crate::error::CliError;

/// Run `bda fewshot` (`matches`: the `fewshot` subcommand's).
pub fn run(args: &FewshotArgs, matches: &ArgMatches) -> Result<(), CliError> {
    match (&args.command, matches.subcommand()) {
        (Some(FewshotCommand::Eval(e)), Some((_, m))) => eval::run(e, m),
        (Some(FewshotCommand::Bench(b)), Some((_, m))) => bench::run(b, m),
        _ => train::run(&args.train, matches),
    }
}
