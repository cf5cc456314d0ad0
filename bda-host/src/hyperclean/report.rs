//! Reports of `bda hyperclean`: a readable table, one JSON object, an SVG plot.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use super::driver::IterRecord;
use crate::config::ReportHeader;
use crate::error::CliError;
use crate::plot;

/// The outcome of a run: the JSON report (accuracies and F1 in percent).
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// Command, version, effective configuration, data read.
    #[serde(flatten)]
    pub header: ReportHeader,
    /// What the data is called: the dataset's name, or the folder read with `--data-dir`.
    pub dataset: String,
    /// Row name.
    pub method: String,
    /// Where it ran (`cpu`, `cuda:0`).
    pub device: String,
    /// Lower-level steps K.
    #[serde(rename = "K")]
    pub k: u32,
    /// T of T-RHG (absent for other rows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncate: Option<u32>,
    /// Upper iterations run.
    pub ul_iters: u32,
    /// Upper learning rate.
    pub ul_lr: f64,
    /// Optimizer.
    pub optimizer: String,
    /// Training size.
    pub n_train: usize,
    /// Validation size.
    pub n_val: usize,
    /// Test size.
    pub n_test: usize,
    /// Label noise (the fraction actually corrupted).
    pub noise: f64,
    /// Final upper objective.
    pub ul_loss: f64,
    /// Validation accuracy, %.
    pub val_acc: f64,
    /// Test accuracy, %.
    pub test_acc: f64,
    /// Test macro-F1, %.
    pub test_f1: f64,
    /// Clean-detection macro-F1 of σ(x) > 0.5, %.
    pub clean_f1: f64,
    /// Wall seconds of the training (loop and final lower-level solve).
    pub seconds: f64,
    /// Seconds per upper iteration (0 without upper iterations).
    pub s_per_ul_iter: f64,
    /// Seconds to load and split the data.
    pub load_seconds: f64,
    /// Seed.
    pub seed: u64,
    /// Threads (per rank).
    pub threads: usize,
    /// Processes the run was split over (MPI ranks; 1 without a launcher).
    pub ranks: usize,
    /// Kernel choice of the CPU backend, or the CUDA device.
    pub kernels: String,
    /// Peak resident memory of the process, MiB (Linux; absent elsewhere).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_rss_mib: Option<f64>,
    /// Training samples whose weight flags them as noisy (σ(x_i) ≤ ½).
    pub n_flagged: usize,
    /// Per-iteration history, then the final state.
    pub history: Vec<IterRecord>,
    /// Stopped early by SIGINT or SIGTERM (present only then): `ul_iters` were run.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
}

/// The summary as a small table (one row, the columns of the papers' Table 2).
pub fn table(s: &Summary) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "data hyper-cleaning: {} (n_train {}, n_val {}, n_test {}, noise {:.2}), K {}, {} upper iterations ({} lr {}), seed {}",
        s.dataset,
        s.n_train,
        s.n_val,
        s.n_test,
        s.noise,
        s.k,
        s.ul_iters,
        s.optimizer,
        s.ul_lr,
        s.seed
    );
    let _ = writeln!(
        out,
        "{:<8} {:>9} {:>9} {:>9} {:>9} {:>10} {:>12}",
        "method", "val acc", "test acc", "test F1", "clean F1", "time (s)", "s/UL iter"
    );
    let _ = writeln!(
        out,
        "{:<8} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>10.2} {:>12.4}",
        s.method, s.val_acc, s.test_acc, s.test_f1, s.clean_f1, s.seconds, s.s_per_ul_iter
    );
    out
}

/// The summary as one line of JSON.
pub fn json(s: &Summary) -> Result<String, CliError> {
    serde_json::to_string(s).map_err(|e| CliError::run(format!("cannot write the report: {e}")))
}

/// One panel per curve (upper-level loss, validation accuracy, clean-detection F1)
/// against the upper iteration.
pub fn plot(p: &Path, s: &Summary) -> Result<(), CliError> {
    type Getter = fn(&IterRecord) -> Option<f64>;
    let curves: [(&str, Getter); 3] = [
        ("upper-level loss F", |r| Some(r.ul_loss)),
        ("validation accuracy (%)", |r| Some(r.val_acc)),
        ("clean-detection F1 (%)", |r| Some(r.clean_f1)),
    ];
    let run = (format!("{} (K={})", s.method, s.k), &s.history[..]);
    let iter = |r: &IterRecord| f64::from(r.ul_iter);
    let panels = plot::metric_panels(&curves, &[run], iter, false);
    plot::write_svg(
        p,
        &format!("data hyper-cleaning — {}, {}", s.method, s.dataset),
        &panels,
    )
}
