//! Replayable runs: what every JSON report records about how it was made, and `--config FILE`,
//! which reads it back.
//!
//! A command's options are split in two clap structs: its *configuration* (everything that
//! decides what is computed: data, method, numbers, seeds, device, threads), which is also a
//! serde struct, and its [`OutputArgs`] (what is printed or written). A report records the
//! configuration with every value resolved, defaults included ([`ReportHeader::config`]),
//! the data it read ([`DataSource`]) and the version; `--config FILE` takes the
//! configuration from a report (its `config` object) or from a hand-written JSON object with
//! the same keys, and options given on the command line win ([`apply_config`]).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use clap::ArgMatches;
use clap::parser::ValueSource;
use rayon::prelude::*;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::error::{CliError, one_line};

/// The options every command has that choose what is printed or written, not what is
/// computed: not part of a report's configuration, and not read from `--config`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct OutputArgs {
    /// Print one JSON object (the report) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Take the configuration from this file: a JSON report of the same command (its
    /// `config` object) or a JSON object with the same keys. Options given on the command
    /// line win.
    #[arg(long, value_name = "FILE.json")]
    pub config: Option<PathBuf>,
}

impl OutputArgs {
    /// The configuration `run` with `--config FILE` applied, if given (options given on the
    /// command line win; `matches` are the command's own).
    pub fn configured<C: Serialize + DeserializeOwned + Clone>(
        &self,
        run: &C,
        matches: &ArgMatches,
        command: &str,
    ) -> Result<C, CliError> {
        let mut c = run.clone();
        if let Some(path) = &self.config {
            apply_config(&mut c, matches, path, command)?;
        }
        Ok(c)
    }
}

/// The options of [`OutputArgs`] and of commands' other output-only flags, named as a
/// configuration key would be, for a clear error when a config file holds one.
const OUTPUT_KEYS: [&str; 6] = ["json", "quiet", "plot", "config", "save", "save_every"];

/// The first lines of every JSON report: the command, the version that made it, the
/// effective configuration and the data read.
#[derive(Clone, Debug, Serialize)]
pub struct ReportHeader {
    /// `toy`, `hyperclean`, `fewshot`, `fewshot eval`, `fewshot bench`.
    pub command: &'static str,
    /// The `bda` version (the crate version).
    pub version: &'static str,
    /// Every configuration option with its value, defaults included.
    pub config: Value,
    /// What was read (`null` for built-in problems and random inputs).
    pub data: Option<DataSource>,
}

impl ReportHeader {
    /// The header of a `command` report with configuration `config`.
    pub fn new<C: Serialize>(
        command: &'static str,
        config: &C,
        data: Option<DataSource>,
    ) -> Result<Self, CliError> {
        Ok(ReportHeader {
            command,
            version: env!("CARGO_PKG_VERSION"),
            config: serde_json::to_value(config)
                .map_err(|e| CliError::run(format!("cannot record the configuration: {e}")))?,
            data,
        })
    }
}

/// The data a run read: the folder as given, how many files, and one SHA-256 over their
/// contents (each file's digest, in the order of their paths relative to the folder), so a
/// report says exactly which bytes it was computed from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataSource {
    /// The folder.
    pub path: PathBuf,
    /// Files hashed.
    pub files: usize,
    /// Hex SHA-256 (see the type's docs).
    pub sha256: String,
}

impl DataSource {
    /// Hash `files` (paths under `root`). Errors name the file.
    pub fn of_files(root: &Path, files: &[PathBuf]) -> Result<Self, CliError> {
        let mut rel: Vec<(String, &PathBuf)> = files
            .iter()
            .map(|f| {
                let r = f.strip_prefix(root).unwrap_or(f);
                (r.to_string_lossy().into_owned(), f)
            })
            .collect();
        rel.sort();
        let digests: Vec<[u8; 32]> = rel
            .par_iter()
            .map(|(_, f)| file_digest(f))
            .collect::<Result<_, _>>()?;
        let mut all = Sha256::new();
        for ((name, _), d) in rel.iter().zip(&digests) {
            all.update((name.len() as u64).to_le_bytes());
            all.update(name.as_bytes());
            all.update(d);
        }
        Ok(DataSource {
            path: root.to_path_buf(),
            files: files.len(),
            sha256: hex(&all.finalize()),
        })
    }
}

fn file_digest(path: &Path) -> Result<[u8; 32], CliError> {
    let fail = |e: std::io::Error| CliError::input(format!("{}: cannot read: {e}", path.display()));
    let mut f = fs::File::open(path).map_err(fail)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(fail)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Replace the options of `config` by the values in the file `path`, except those given on
/// the command line (`matches` are the command's own matches). `command` is the report's
/// `command` the file may come from.
///
/// The file is a report of `command` (its `config` object is used; a file of JSON lines
/// gives its first line) or a plain JSON object. A key the command does not have, a value of
/// the wrong type, or a report of another command is a one-line error naming the key (exit 2).
pub fn apply_config<C: Serialize + DeserializeOwned>(
    config: &mut C,
    matches: &ArgMatches,
    path: &Path,
    command: &str,
) -> Result<(), CliError> {
    let origin = format!("--config {}", path.display());
    let bytes =
        fs::read(path).map_err(|e| CliError::input(format!("{origin}: cannot read: {e}")))?;
    apply_config_bytes(config, matches, &bytes, &origin, command)
}

/// [`apply_config`] on the file's bytes; `origin` (`--config FILE`) starts every error.
pub fn apply_config_bytes<C: Serialize + DeserializeOwned>(
    config: &mut C,
    matches: &ArgMatches,
    bytes: &[u8],
    origin: &str,
    command: &str,
) -> Result<(), CliError> {
    let fail = |m: String| CliError::input(one_line(&format!("{origin}: {m}")));
    let text = std::str::from_utf8(bytes)
        .map_err(|e| fail(format!("cannot read: not UTF-8 text ({e})")))?;
    let first = serde_json::Deserializer::from_str(text)
        .into_iter::<Value>()
        .next()
        .ok_or_else(|| fail("empty file".into()))?
        .map_err(|e| fail(format!("not JSON: {e}")))?;
    let file = match first {
        Value::Object(mut m) => match m.remove("config") {
            Some(Value::Object(c)) => {
                let made_by = m.get("command").and_then(Value::as_str);
                if let Some(other) = made_by.filter(|&c| c != command) {
                    return Err(fail(format!(
                        "a report of `bda {other}`, not of `bda {command}`"
                    )));
                }
                c
            }
            Some(_) => return Err(fail("key \"config\": expected an object".into())),
            None => m,
        },
        _ => return Err(fail("expected a JSON object".into())),
    };
    let Value::Object(mut current) = serde_json::to_value(&*config)
        .map_err(|e| CliError::run(format!("cannot record the configuration: {e}")))?
    else {
        return Err(CliError::run("a configuration is a JSON object"));
    };
    merge(&mut current, file, matches).map_err(fail)?;
    let de = Value::Object(current);
    *config = serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        fail(format!("key \"{key}\": {}", e.inner()))
    })?;
    Ok(())
}

/// `current[k] = file[k]` for every key of `file` not given on the command line.
fn merge(
    current: &mut Map<String, Value>,
    file: Map<String, Value>,
    matches: &ArgMatches,
) -> Result<(), String> {
    for (k, v) in file {
        if !current.contains_key(&k) {
            if OUTPUT_KEYS.contains(&k.as_str()) {
                return Err(format!(
                    "key \"{k}\" is an output option: give it on the command line"
                ));
            }
            let mut known: Vec<&str> = current.keys().map(String::as_str).collect();
            known.sort_unstable();
            return Err(format!(
                "unknown key \"{k}\" (expected some of: {})",
                known.join(", ")
            ));
        }
        if !given_on_command_line(matches, &k) {
            current.insert(k, v);
        }
    }
    Ok(())
}

/// Whether the option of configuration key `key` was given on the command line (`matches`:
/// the command's own).
pub fn given_on_command_line(matches: &ArgMatches, key: &str) -> bool {
    matches.ids().any(|id| id.as_str() == key)
        && matches.value_source(key) == Some(ValueSource::CommandLine)
}

/// The flag of configuration key `key`: `--ul-iters` for `ul_iters`, `--K` for `K`.
pub fn flag_of(key: &str) -> String {
    format!("--{}", key.replace('_', "-"))
}

/// What `--config` promises on any file (the `config` fuzz target and the corpus test), for
/// every command that takes one, given as `bda COMMAND --config fuzz.json` with no other
/// option: no panic; an accepted file gives a configuration that, written back as a file,
/// reads back to the same configuration (a report's `config` replays what ran); an error is
/// one non-empty line that starts with `--config fuzz.json:`, exit code 2.
pub fn check_config_invariants(bytes: &[u8]) {
    use crate::fewshot::args::{BenchArgs, EvalArgs, TrainArgs};
    use std::sync::OnceLock;
    // Each command's parsed `--config fuzz.json`, built once: building a clap command takes
    // longer than most checks.
    static PARSED: [OnceLock<ArgMatches>; 5] = [const { OnceLock::new() }; 5];
    check_one(bytes, "toy", &PARSED[0], |a: crate::toy::ToyArgs| a.run);
    check_one(
        bytes,
        "hyperclean",
        &PARSED[1],
        |a: crate::hyperclean::HypercleanArgs| a.run,
    );
    check_one(bytes, "fewshot", &PARSED[2], |a: TrainArgs| a.run);
    check_one(bytes, "fewshot eval", &PARSED[3], |a: EvalArgs| a.run);
    check_one(bytes, "fewshot bench", &PARSED[4], |a: BenchArgs| a.run);
}

/// [`check_config_invariants`] for the command `command` with arguments `A` (parsed once
/// into `parsed`), whose configuration `run` takes out.
fn check_one<A, C>(
    bytes: &[u8],
    command: &str,
    parsed: &std::sync::OnceLock<ArgMatches>,
    run: fn(A) -> C,
) where
    A: clap::Args + clap::FromArgMatches,
    C: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let origin = "--config fuzz.json";
    let matches = parsed.get_or_init(|| {
        A::augment_args(clap::Command::new("bda"))
            .try_get_matches_from(["bda", "--config", "fuzz.json"])
            .expect("every option but --config has a default")
    });
    let fresh = || run(A::from_arg_matches(matches).expect("the default configuration"));
    let mut c = fresh();
    match apply_config_bytes(&mut c, matches, bytes, origin, command) {
        Ok(()) => {
            let text = serde_json::to_vec(&c).expect("a configuration serialises");
            let mut again = fresh();
            apply_config_bytes(&mut again, matches, &text, origin, command)
                .unwrap_or_else(|e| panic!("{command}: its own configuration is refused: {e}"));
            assert_eq!(again, c, "{command}: the configuration does not read back");
        }
        Err(e) => {
            let m = e.to_string();
            crate::fewshot::image::assert_one_line(&m);
            assert!(m.starts_with("--config fuzz.json: "), "{command}: {m}");
            assert_eq!(e.exit_code(), 2, "{command}: {m}");
        }
    }
}
