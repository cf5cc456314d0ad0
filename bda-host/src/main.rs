//! `bda`: Bi-level Descent Aggregation from the command line.

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// The subcommands, for pointing an error to the right help.
const SUBCOMMANDS: [&str; 5] = ["toy", "hyperclean", "fewshot", "data", "plot"];

/// Bi-level Descent Aggregation (BDA): synthetic problems, data hyper-cleaning, few-shot
/// learning.
#[derive(Parser, Debug)]
#[command(name = "bda", version, about, long_about = None, arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// Run the papers' synthetic problems (ICML Example 1, journal Eq. 40, Remark 4).
    Toy(bda_host::toy::ToyArgs),
    /// Data hyper-cleaning on MNIST-format data (journal §8.2, Table 2).
    Hyperclean(bda_host::hyperclean::HypercleanArgs),
    /// Few-shot meta-learning on Omniglot- or MiniImageNet-layout data (journal §8.3, Tables 3–4).
    Fewshot(bda_host::fewshot::FewshotArgs),
    /// Generate datasets (the kanji stand-in for Omniglot).
    Data(bda_host::datagen::DataArgs),
    /// Overlay the per-iteration curves of saved JSON reports on one SVG chart.
    Plot(bda_host::plot::overlay::PlotArgs),
}

fn main() -> ExitCode {
    bda_host::memory::keep_freed_memory();
    bda_host::output::quiet_on_closed_pipe();
    let parsed = Cli::command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m).map(|cli| (cli, m)));
    let (cli, matches) = match parsed {
        Ok(p) => p,
        // --help, --version, and bare `bda` (the command list).
        Err(e)
            if !e.use_stderr()
                || e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand =>
        {
            e.exit()
        }
        Err(_) if !bda_host::ranks::lead() => return ExitCode::from(2),
        Err(e) => {
            // clap's message is several lines (what is wrong, then usage and hints): keep
            // what is wrong and the hints, joined into one line, and point to the help of
            // the subcommand that was given.
            let text = e.to_string();
            let what: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| {
                    !l.is_empty()
                        && !l.starts_with("Usage:")
                        && !l.starts_with("For more information")
                        && !l.starts_with("bda ")
                })
                .collect();
            let what = what.join(" ");
            let sub = std::env::args()
                .nth(1)
                .filter(|a| SUBCOMMANDS.contains(&a.as_str()))
                .map_or(String::new(), |a| format!("{a} "));
            eprintln!(
                "bda: {} (see bda {sub}--help)",
                what.trim_start_matches("error: ")
            );
            return ExitCode::from(2);
        }
    };
    // The subcommand's own matches tell which options were given on the command line
    // (they win over `--config FILE`).
    let sub = matches
        .subcommand()
        .map(|(_, m)| m)
        .expect("clap requires a subcommand");
    // Under `mpirun`: join the other ranks (MPI stays up while `_membership` lives).
    let (_membership, started) = match bda_host::ranks::init() {
        Ok(s) => (Some(s), Ok(())),
        Err(e) => (None, Err(e)),
    };
    let alone = bda_host::ranks::alone;
    let result = started.and_then(|()| match cli.command {
        Command::Toy(args) => alone("bda toy").and_then(|()| bda_host::toy::run(&args, sub)),
        Command::Hyperclean(args) => bda_host::hyperclean::run(&args, sub),
        Command::Fewshot(args) => bda_host::fewshot::run(&args, sub),
        Command::Data(args) => alone("bda data").and_then(|()| bda_host::datagen::run(&args)),
        Command::Plot(args) => alone("bda plot").and_then(|()| bda_host::plot::overlay::run(&args)),
    });
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Ranks agree on failures: rank 0 says it once for all.
            if bda_host::ranks::lead() {
                eprintln!("bda: {e}");
            }
            ExitCode::from(e.exit_code())
        }
    };
    // `_membership` ends MPI here, after every rank's output.
    code
}
