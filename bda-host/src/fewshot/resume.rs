//! `--resume FILE`: continue a run as it was. A checkpoint stores the run's whole
//! configuration and the hash of the data it read; resuming takes them, and refuses (one
//! line naming the option) an option given on the command line that contradicts them,
//! except those meant to change: `--ul-iters` (train longer), `--data-dir` (a copy of the
//! same data elsewhere: its hash must match), `--threads`, `--device`, `--reduce` and the
//! output options.

use std::path::Path;

use clap::ArgMatches;
use serde_json::Value;

use super::args::TrainConfig;
use crate::config::{DataSource, flag_of, given_on_command_line};
use crate::error::CliError;

/// The configuration keys a resumed run may change.
pub const MAY_CHANGE: [&str; 6] = [
    "ul_iters", "data_dir", "threads", "device", "reduce", "resume",
];

/// The configuration of the run resumed from `path`: `stored` (the checkpoint's), with the
/// options of [`MAY_CHANGE`] given on the command line taken from `cli`. Any other option
/// given on the command line must have the stored value.
pub fn resumed(
    cli: &TrainConfig,
    matches: &ArgMatches,
    stored: &TrainConfig,
    path: &Path,
) -> Result<TrainConfig, CliError> {
    let as_map = |c: &TrainConfig| match serde_json::to_value(c) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(CliError::run("cannot record the configuration")),
    };
    let (given, mut effective) = (as_map(cli)?, as_map(stored)?);
    for (key, value) in given {
        if !given_on_command_line(matches, &key) {
            continue;
        }
        if MAY_CHANGE.contains(&key.as_str()) {
            effective.insert(key, value);
        } else if effective.get(&key) != Some(&value) {
            let was = effective.get(&key).map_or("unset".into(), show);
            return Err(CliError::input(format!(
                "{} {}: the run in {} was trained with {was}; --resume continues it as it was (only --ul-iters, --data-dir to a copy of the same data, --threads, --device, --reduce and output options may change)",
                flag_of(&key),
                show(&value),
                path.display()
            )));
        }
    }
    serde_json::from_value(Value::Object(effective))
        .map_err(|e| CliError::input(format!("{}: corrupt checkpoint: {e}", path.display())))
}

/// A configuration value as the command line writes it.
fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "nothing".into(),
        v => v.to_string(),
    }
}

/// The data now read must be those the run was trained on (same files, same bytes).
pub fn same_data(
    path: &Path,
    stored: Option<&DataSource>,
    now: Option<&DataSource>,
) -> Result<(), CliError> {
    match (stored, now) {
        (Some(s), Some(n)) if (s.files, &s.sha256) != (n.files, &n.sha256) => {
            Err(CliError::input(format!(
                "--resume {}: the data in {} are not those the run was trained on ({} files, sha256 {}…; the checkpoint's: {} files, {}…)",
                path.display(),
                n.path.display(),
                n.files,
                &n.sha256[..12.min(n.sha256.len())],
                s.files,
                &s.sha256[..12.min(s.sha256.len())]
            )))
        }
        _ => Ok(()),
    }
}
