//! `bda data`: dataset generators.
//!
//! * `bda data kanji`: renders the kanji stroke data of Debian's `python3-kanjidraw` into
//!   the Omniglot folder layout, as a stand-in for Omniglot ([`kanji`]).
pub mod kanji;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use crate::error::CliError;

/// Arguments of `bda data`.
#[derive(clap::Args, Debug)]
pub struct DataArgs {
    #[command(subcommand)]
    pub command: DataCommand,
}

/// The generators.
#[derive(clap::Subcommand, Debug)]
pub enum DataCommand {
    /// Render kanji stroke data (python3-kanjidraw) into the Omniglot layout: a stand-in
    /// for Omniglot, NOT Omniglot.
    Kanji(KanjiArgs),
}

/// Arguments of `bda data kanji`.
#[derive(clap::Args, Debug)]
pub struct KanjiArgs {
    /// Output folder (gets images_background/, images_evaluation/, README.txt,
    /// characters.tsv); must not already hold the split folders.
    #[arg(long)]
    pub out: PathBuf,
    /// Simulated drawers per character (one PNG each).
    #[arg(long, default_value_t = 20)]
    pub drawers: usize,
    /// Seed of all the randomness (same seed, same bytes).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The kanjidraw stroke data (JSON).
    #[arg(long, default_value = kanji::KANJIDRAW_DATA)]
    pub source: PathBuf,
    /// Render only the first N characters (ordered by stroke count, then code point).
    #[arg(long)]
    pub limit: Option<usize>,
}

/// Run `bda data`.
pub fn run(args: &DataArgs) -> Result<(), CliError> {
    match &args.command {
        DataCommand::Kanji(a) => run_kanji(a),
    }
}

fn run_kanji(args: &KanjiArgs) -> Result<(), CliError> {
    let t0 = Instant::now();
    if args.drawers == 0 || args.drawers > kanji::MAX_DRAWERS {
        return Err(CliError::input(format!(
            "--drawers {}: need 1 to {}",
            args.drawers,
            kanji::MAX_DRAWERS
        )));
    }
    if args.limit == Some(0) {
        return Err(CliError::input("--limit 0: need at least 1 character"));
    }
    let all = kanji::read_kanjidraw(&args.source)?;
    let params = kanji::KanjiParams {
        drawers: args.drawers,
        seed: args.seed,
        limit: args.limit,
        source: args.source.display().to_string(),
    };
    let summary = kanji::generate(&all, &args.out, &params, std::io::stderr().is_terminal())?;
    println!(
        "bda data kanji: {} characters in {} alphabets, {} images ({} background characters, {} evaluation) to {} in {:.1} s",
        summary.characters(),
        summary.alphabets,
        summary.images(),
        summary.background,
        summary.evaluation,
        args.out.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
