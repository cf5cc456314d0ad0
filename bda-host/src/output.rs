//! Where results go, and how a run ends early without losing them.
//!
//! * Every output path (`--plot`, `--save`, `--weights-out`, `bda plot --out`) is proven
//!   writable before any work ([`check_writable`]): its folder exists and takes the
//!   temporary file that [`write_atomic`] will rename over it.
//! * Files are written atomically ([`write_atomic`]): an interruption never leaves half a
//!   file, nor destroys the previous one.
//! * A closed standard output (`bda … | head`) ends the process quietly
//!   ([`quiet_on_closed_pipe`]), as for any Unix filter.
//! * SIGINT and SIGTERM ask a training loop to stop after the current step ([`Interrupt`]):
//!   it writes its final checkpoint and report, marked `"interrupted": true`, and exits with
//!   128 + the signal (130, 143). A second signal ends the process at once.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::error::CliError;

/// The temporary file [`write_atomic`] writes before renaming it over `path`.
fn temporary(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    PathBuf::from(tmp)
}

/// Write `bytes` to `path` atomically: a temporary file next to it, then a rename, so an
/// interruption never leaves half a file (and never destroys the previous one).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = temporary(path);
    fs::write(&tmp, bytes)?;
    fs::rename(&tmp, path)
}

/// Fail before any work when `path` (given as `flag`) cannot be written: its folder must
/// exist, `path` must not be a folder, and the folder must take the temporary file of
/// [`write_atomic`] (created and removed here). One line naming the flag, exit 2.
pub fn check_writable(flag: &str, path: &Path) -> Result<(), CliError> {
    let bad = |why: String| CliError::input(format!("{flag} {}: {why}", path.display()));
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(bad(format!("folder {} does not exist", dir.display())));
    }
    if path.is_dir() {
        return Err(bad("is a folder".into()));
    }
    let tmp = temporary(path);
    let existed = tmp.exists();
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&tmp)
        .map_err(|e| bad(format!("cannot be written ({e})")))?;
    if !existed {
        // Best effort: a probe left behind is harmless (the next write replaces it).
        let _ = fs::remove_file(&tmp);
    }
    Ok(())
}

/// [`check_writable`] for an SVG chart: the name must also end in `.svg`.
pub fn check_svg(flag: &str, path: &Path) -> Result<(), CliError> {
    if path.extension().and_then(|e| e.to_str()) != Some("svg") {
        return Err(CliError::input(format!(
            "{flag} {}: the file name must end in .svg",
            path.display()
        )));
    }
    check_writable(flag, path)
}

/// How a run that has printed its report ends: with the first output that could not be
/// written at the end (`late`; a line saying the run was `stopped` comes first when it
/// was), else with the interruption, else successfully.
pub fn finish(late: Option<CliError>, stopped: Option<CliError>) -> Result<(), CliError> {
    match (late, stopped) {
        (Some(e), Some(stop)) => {
            eprintln!("bda: {stop}");
            Err(e)
        }
        (Some(e), None) => Err(e),
        (None, stop) => stop.map_or(Ok(()), Err),
    }
}

/// `--plot FILE`, checked before any work: an SVG name that can be written, and a run with
/// upper iterations to draw (`why_none`: what makes a run have none, e.g. "--ul-iters 0").
pub fn check_plot(path: &Path, iterations: u64, why_none: &str) -> Result<(), CliError> {
    if iterations == 0 {
        return Err(CliError::input(format!(
            "--plot {}: {why_none} runs no upper iterations, so there is no curve to draw",
            path.display()
        )));
    }
    check_svg("--plot", path)
}

/// End the process quietly when standard output is closed (`bda … --json | head -c 100`):
/// SIGPIPE's default action, as for any Unix filter, instead of Rust's "failed printing to
/// stdout" panic.
pub fn quiet_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: restores the default disposition of SIGPIPE before any thread is started; no
    // handler is installed, so no code runs in signal context.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// A request to stop early: SIGINT (Ctrl-C) or SIGTERM (a scheduler's time limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT (exit 130).
    Int,
    /// SIGTERM (exit 143).
    Term,
}

impl Signal {
    /// The name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Int => "SIGINT",
            Signal::Term => "SIGTERM",
        }
    }

    /// 128 + the signal number, the shell's convention for a process ended by a signal.
    pub fn exit_code(self) -> u8 {
        match self {
            Signal::Int => 130,
            Signal::Term => 143,
        }
    }

    /// The error that ends a run this signal stopped: "interrupted by SIGINT after
    /// `after`" (what was done, and what was written).
    pub fn stopped(self, after: &str) -> CliError {
        CliError::Interrupted {
            signal: self,
            message: format!("interrupted by {} after {after}", self.name()),
        }
    }
}

/// Watches SIGINT and SIGTERM while a training loop runs: the loop asks [`Interrupt::requested`]
/// between steps. Dropped, the default actions come back (a signal then ends the process).
pub struct Interrupt {
    signal: Arc<AtomicUsize>,
    ids: Vec<signal_hook::SigId>,
    /// On several ranks: the signal the ranks last agreed on ([`Interrupt::poll`]), what
    /// [`Interrupt::requested`] reports there (a launcher's signal reaches the ranks at
    /// different instants; they must stop after the same step).
    agreed: AtomicUsize,
}

impl Interrupt {
    /// Start watching. A second signal ends the process at once (with 128 + the signal), so
    /// a stuck shutdown can still be stopped.
    pub fn watch() -> Result<Interrupt, CliError> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let signal = Arc::new(AtomicUsize::new(0));
        let armed = Arc::new(AtomicBool::new(false));
        let mut ids = Vec::new();
        let fail = |e: std::io::Error| CliError::run(format!("cannot watch signals: {e}"));
        for sig in [SIGINT, SIGTERM] {
            // The shutdown must be registered first: it reads `armed` before the flag sets it.
            ids.push(
                signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, armed.clone())
                    .map_err(fail)?,
            );
            ids.push(signal_hook::flag::register(sig, armed.clone()).map_err(fail)?);
            ids.push(
                signal_hook::flag::register_usize(sig, signal.clone(), sig as usize)
                    .map_err(fail)?,
            );
        }
        Ok(Interrupt {
            signal,
            ids,
            agreed: AtomicUsize::new(0),
        })
    }

    /// The signal received since [`Interrupt::watch`], if any; on several ranks, the one
    /// they last agreed on.
    pub fn requested(&self) -> Option<Signal> {
        let at = match crate::ranks::size() {
            1 => &self.signal,
            _ => &self.agreed,
        };
        Self::decode(at.load(Ordering::Relaxed))
    }

    /// Where a loop decides whether to stop: [`Interrupt::requested`] alone; on several
    /// ranks a collective (every rank calls it at the same point) after which every rank
    /// reports a signal any of them received.
    pub fn poll(&self) -> Option<Signal> {
        if crate::ranks::size() > 1 {
            let mine = self.signal.load(Ordering::Relaxed).to_string();
            let mine = (mine != "0").then_some(mine.as_str());
            let first = crate::ranks::comm().agree(mine);
            let code = first.and_then(|c| c.parse().ok()).unwrap_or(0);
            self.agreed.store(code, Ordering::Relaxed);
        }
        self.requested()
    }

    fn decode(code: usize) -> Option<Signal> {
        match code as i32 {
            0 => None,
            signal_hook::consts::SIGINT => Some(Signal::Int),
            _ => Some(Signal::Term),
        }
    }
}

impl Drop for Interrupt {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unwritable_paths_are_refused_before_any_work() {
        let dir = std::env::temp_dir().join(format!("bda-output-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let ok = dir.join("run.svg");
        check_svg("--plot", &ok).unwrap();
        assert!(!temporary(&ok).exists(), "the probe is removed");
        let e = check_svg("--plot", &dir.join("run.png")).unwrap_err();
        assert!(e.to_string().ends_with("must end in .svg"), "{e}");
        let e = check_writable("--save", &dir.join("no/such/run.ckpt")).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        let e = check_writable("--save", &dir).unwrap_err();
        assert!(e.to_string().ends_with("is a folder"), "{e}");
        // A folder that exists but cannot be written (/proc's files take no new entries).
        let e = check_writable("--plot", Path::new("/proc/bda.svg")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("--plot /proc/bda.svg: cannot be written"),
            "{e}"
        );
        assert_eq!(e.exit_code(), 2);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn signals_map_to_the_shells_exit_codes() {
        assert_eq!(Signal::Int.exit_code(), 130);
        assert_eq!(Signal::Term.exit_code(), 143);
        let i = Interrupt::watch().unwrap();
        assert_eq!(i.requested(), None);
    }
}
