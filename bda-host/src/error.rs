//! The command line's error: one line for the user and an exit code.

use std::fmt;

use crate::output::Signal;

/// A failure the `bda` command reports as one line on stderr.
#[derive(Debug)]
pub enum CliError {
    /// Bad input: a flag, a file, a dataset (exit 2).
    Input(String),
    /// The computation failed (divergence, backend failure) (exit 1).
    Run(String),
    /// Stopped early by a signal, after writing what the run had (exit 128 + the signal).
    Interrupted {
        /// The signal.
        signal: Signal,
        /// What was written, in one line.
        message: String,
    },
}

impl CliError {
    /// Bad input, exit code 2.
    pub fn input(msg: impl Into<String>) -> Self {
        CliError::Input(msg.into())
    }
    /// Failed computation, exit code 1.
    pub fn run(msg: impl Into<String>) -> Self {
        CliError::Run(msg.into())
    }
    /// The process exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Input(_) => 2,
            CliError::Run(_) => 1,
            CliError::Interrupted { signal, .. } => signal.exit_code(),
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Input(m) | CliError::Run(m) => f.write_str(m),
            CliError::Interrupted { message, .. } => f.write_str(message),
        }
    }
}

impl std::error::Error for CliError {}

/// `m` with its line breaks and other control characters escaped (`\n`, `\u{1b}`): a
/// message that quotes a file's text (an unknown key, an unknown variant) stays one line.
pub fn one_line(m: &str) -> String {
    m.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_debug().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// An upper-level loss above this is a divergence even while finite (a step of 1e30 gives
/// losses of 1e30 and chance accuracy): 1000 times the cross-entropy of a uniform guess
/// over `classes` classes. Error messages call it that.
pub fn blow_up_bound(classes: usize) -> f64 {
    1e3 * (classes as f64).ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_line_breaks_are_escaped() {
        assert_eq!(
            one_line("unknown key `a\nb\r`\t"),
            "unknown key `a\\nb\\r`\\t"
        );
        assert_eq!(one_line("plain × text"), "plain × text");
    }
}
