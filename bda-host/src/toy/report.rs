//! Reports of `bda toy`: one JSON object with a run per method, a table, the convergence
//! plot.

use serde::Serialize;

use super::args::Settings;
use super::observe::{LlTrace, Row};
use crate::config::ReportHeader;
use crate::error::CliError;
use crate::plot;

/// The report of `bda toy --json`: what the runs share, and one run per method.
#[derive(Clone, Debug, Serialize)]
pub struct ToyReport {
    /// Command, version, effective configuration, data (none).
    #[serde(flatten)]
    pub header: ReportHeader,
    /// Problem name.
    pub example: &'static str,
    /// Dimension n (tpami) or 1.
    pub n: usize,
    /// Lower-level steps.
    #[serde(rename = "K")]
    pub k: u32,
    /// Seed used for random starts.
    pub seed: u64,
    /// One per method, in the order run.
    pub runs: Vec<RunReport>,
}

/// One method's result.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    /// Problem name.
    #[serde(skip)]
    pub example: &'static str,
    /// Dimension n (tpami) or 1.
    #[serde(skip)]
    pub n: usize,
    /// `bda`, `rhg` or `trhg`.
    pub method: &'static str,
    /// T of T-RHG (`trhg` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncate: Option<u32>,
    /// Lower-level steps.
    #[serde(skip)]
    pub k: u32,
    /// Upper-level iterations performed.
    pub ul_iters: u32,
    /// Final x.
    pub x: Vec<f64>,
    /// y_K(x) at the final x.
    pub y: Vec<f64>,
    /// F(x, y).
    pub upper: f64,
    /// f(x, y) − f*(x).
    pub lower_gap: f64,
    /// ‖x − x*‖.
    pub x_err: f64,
    /// ‖y − y*‖.
    pub y_err: f64,
    /// ‖∇φ_K(x)‖ at the final x.
    pub grad_norm: f64,
    /// Why the loop stopped.
    pub termination: &'static str,
    /// Wall-clock seconds of the solve.
    pub seconds: f64,
    /// Seconds per upper-level iteration.
    pub s_per_ul_iter: f64,
    /// Per-iteration metrics (and the final state).
    pub history: Vec<Row>,
    /// The lower-level steps at the upper iterations of `--ll-trace`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ll_history: Vec<LlTrace>,
}

fn fmt_vec(v: &[f64]) -> String {
    if v.len() <= 4 {
        let parts: Vec<String> = v.iter().map(|x| format!("{x:.4}")).collect();
        format!("({})", parts.join(", "))
    } else {
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let (lo, hi) = v
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
                (a.min(x), b.max(x))
            });
        format!(
            "[{} values: mean {mean:.4}, min {lo:.4}, max {hi:.4}]",
            v.len()
        )
    }
}

/// The runs as a table, with the settings of the first in the header line.
pub(super) fn print_table(reports: &[RunReport], s: &Settings) {
    let Some(first) = reports.first() else { return };
    println!(
        "bda toy --example {} (n = {}, K = {}, λ = {}, s_u = {}, s_l = {}, μ = {}, α₀ = {} {}, β = {}, warm start: {})",
        first.example,
        first.n,
        first.k,
        s.ul_lr,
        s.su,
        s.sl,
        s.mu,
        s.alpha,
        format!("{:?}", s.schedule).to_lowercase(),
        s.beta,
        s.warm_start
    );
    println!(
        "{:<6} {:>8} {:>12} {:>12} {:>12} {:>12} {:>10}  x / y",
        "method", "UL iters", "F", "f − f*", "‖x − x*‖", "‖y − y*‖", "seconds"
    );
    for r in reports {
        println!(
            "{:<6} {:>8} {:>12.4e} {:>12.4e} {:>12.4e} {:>12.4e} {:>10.4}  x = {}, y = {}",
            r.method,
            r.ul_iters,
            r.upper,
            r.lower_gap,
            r.x_err,
            r.y_err,
            r.seconds,
            fmt_vec(&r.x),
            fmt_vec(&r.y)
        );
    }
}

/// The four metrics of every run against the upper iteration, one panel each.
pub(super) fn write_plot(path: &std::path::Path, reports: &[RunReport]) -> Result<(), CliError> {
    type Metric = fn(&Row) -> Option<f64>;
    let metrics: [(&str, Metric); 4] = [
        ("|F − F*|", |r| Some(r.upper_gap)),
        ("|f − f*|", |r| Some(r.lower_gap.abs())),
        ("‖x − x*‖", |r| Some(r.x_err)),
        ("‖y − y*‖", |r| Some(r.y_err)),
    ];
    let runs: Vec<(String, &[Row])> = reports
        .iter()
        .map(|r| {
            (
                format!("{} (K={})", r.method.to_uppercase(), r.k),
                &r.history[..],
            )
        })
        .collect();
    let iter = |h: &Row| f64::from(h.ul_iter);
    let panels = plot::metric_panels(&metrics, &runs, iter, true);
    let title = match reports.first() {
        Some(r) if r.example == "tpami" => format!("journal Eq. (40), n = {}", r.n),
        Some(r) if r.example == "remark4" => "journal Remark 4".to_string(),
        _ => "ICML Example 1".to_string(),
    };
    plot::write_svg(path, &title, &panels)
}
