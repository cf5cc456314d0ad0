//! Progress bars on stderr, the same for every command: hidden when stderr is not a terminal
//! or `--quiet` is given, and on every MPI rank but the first.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// A bar of `len` steps labelled `what` (hidden when `quiet`, when stderr is not a
/// terminal, or on a rank other than the first).
pub fn bar_unless(quiet: bool, len: u64, what: &str) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() || !crate::ranks::lead() {
        return ProgressBar::hidden();
    }
    bar(len, what)
}

/// A visible bar of `len` steps labelled `what`.
pub fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template(&format!(
        "{what} [{{bar:30}}] {{pos}}/{{len}} {{elapsed}}/{{eta}} {{msg}}"
    ))
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar
}
