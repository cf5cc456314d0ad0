//! `bda plot REPORT.json... --out FIG.svg`: the per-iteration curves of saved reports
//! overlaid on one chart, one panel per history quantity, one series per report.
//!
//! A file is one JSON report (the `--json` output of `bda hyperclean`, `bda fewshot`, or
//! `bda toy`, whose runs count as one report each) or JSON lines, one report per line. A report's `history` is an array of
//! objects with the upper-level iteration `ul_iter` and numeric quantities; each quantity
//! every report has is a panel (`--metrics` chooses and orders them). A series is labelled
//! with its report's `method` and the settings (keys of `config`) whose values differ
//! between the reports given ([`legend_labels`]).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::legend::legend_labels;
use super::reports::{ITER_KEY, Loaded, read_reports};
use super::{Panel, Series, write_svg};
use crate::error::CliError;
use crate::output::check_svg;

/// `bda plot`: reports in, one SVG out.
#[derive(clap::Args, Debug)]
pub struct PlotArgs {
    /// JSON reports (`--json` output of bda toy, hyperclean, fewshot); a file of JSON lines
    /// holds one report per line.
    #[arg(required = true, value_name = "REPORT.json")]
    pub reports: Vec<PathBuf>,
    /// The SVG file to write.
    #[arg(long, value_name = "FIG.svg")]
    pub out: PathBuf,
    /// History quantities to draw, one panel each, in this order [default: every quantity
    /// all reports have, e.g. ul_loss,val_acc,clean_f1 for hyper-cleaning].
    #[arg(long, value_delimiter = ',', value_name = "KEY,...")]
    pub metrics: Vec<String>,
    /// Title of the figure [default: from the reports' command and data].
    #[arg(long)]
    pub title: Option<String>,
}

/// The order of the panels of known quantities (others follow in alphabetical order).
const METRIC_ORDER: [&str; 11] = [
    "ul_loss",
    "upper",
    "upper_gap",
    "lower_gap",
    "grad_norm",
    "x_err",
    "y_err",
    "train_acc",
    "val_acc",
    "clean_f1",
    "orthogonality",
];

/// Run `bda plot`.
pub fn run(args: &PlotArgs) -> Result<(), CliError> {
    check_svg("--out", &args.out)?;
    let mut reports = Vec::new();
    for p in &args.reports {
        reports.extend(read_reports(p)?);
    }
    let metrics = choose_metrics(&reports, &args.metrics)?;
    let labels = legend_labels(&reports);
    let panels: Vec<Panel> = metrics
        .iter()
        .map(|m| {
            let series: Vec<Series> = reports
                .iter()
                .zip(&labels)
                .map(|(r, name)| {
                    Series::new(name.clone(), r.curves.get(m).cloned().unwrap_or_default())
                })
                .collect();
            let y_log = wants_log(m, series.iter().flat_map(|s| s.points.iter().map(|p| p.1)));
            Panel::upper(metric_title(m), y_log, series)
        })
        .collect();
    let title = args
        .title
        .clone()
        .unwrap_or_else(|| default_title(&reports));
    write_svg(&args.out, &title, &panels)?;
    println!("plot written to {}", args.out.display());
    Ok(())
}

/// The panels: `wanted` (each must be in every report's history), or every quantity all
/// reports have, known ones in `METRIC_ORDER`.
pub fn choose_metrics(reports: &[Loaded], wanted: &[String]) -> Result<Vec<String>, CliError> {
    let keys = |r: &Loaded| r.curves.keys().cloned().collect::<Vec<_>>().join(", ");
    if !wanted.is_empty() {
        let mut out: Vec<String> = Vec::new();
        for w in wanted {
            let w = w.trim();
            if w.is_empty() {
                return Err(CliError::input("--metrics: an empty name"));
            }
            if w == ITER_KEY {
                return Err(CliError::input(format!(
                    "--metrics: {ITER_KEY} is the horizontal axis of every panel"
                )));
            }
            if let Some(r) = reports.iter().find(|r| !r.curves.contains_key(w)) {
                return Err(CliError::input(format!(
                    "{}: no \"{w}\" in the history (it has: {})",
                    r.origin,
                    keys(r)
                )));
            }
            if !out.iter().any(|o| o == w) {
                out.push(w.to_owned());
            }
        }
        return Ok(out);
    }
    let mut common: BTreeSet<&String> = match reports.first() {
        Some(r) => r.curves.keys().collect(),
        None => BTreeSet::new(),
    };
    for r in reports.iter().skip(1) {
        common.retain(|k| r.curves.contains_key(*k));
    }
    if common.is_empty() {
        let each: Vec<String> = reports
            .iter()
            .map(|r| format!("{} has {}", r.origin, keys(r)))
            .collect();
        return Err(CliError::input(format!(
            "no history quantity common to all reports: {}",
            each.join("; ")
        )));
    }
    let rank = |k: &str| {
        METRIC_ORDER
            .iter()
            .position(|&o| o == k)
            .unwrap_or(usize::MAX)
    };
    // |F − F*| says what F says, relative to the optimum: one panel, not two alike.
    if common.iter().any(|k| k.as_str() == "upper_gap") {
        common.retain(|k| k.as_str() != "upper");
    }
    let mut out: Vec<String> = common.into_iter().cloned().collect();
    out.sort_by_key(|k| rank(k)); // stable: unknown keys stay alphabetical
    Ok(out)
}

/// The panel title of a history quantity (accuracies and F1 scores are in percent).
pub fn metric_title(key: &str) -> String {
    match key {
        "ul_loss" => "upper-level loss".into(),
        "train_acc" => "training query accuracy (%)".into(),
        "val_acc" => "validation accuracy (%)".into(),
        "clean_f1" => "clean-detection F1 (%)".into(),
        "orthogonality" => "orthogonality sum Σ‖ŴŴᵀ − I‖_F".into(),
        "upper" => "F(x, y)".into(),
        "upper_gap" => "|F − F*|".into(),
        "lower_gap" => "f − f*".into(),
        "grad_norm" => "‖∇φ_K(x)‖".into(),
        "x_err" => "‖x − x*‖".into(),
        "y_err" => "‖y − y*‖".into(),
        k if k.ends_with("_acc") || k.ends_with("_f1") => format!("{k} (%)"),
        k => k.into(),
    }
}

/// A logarithmic axis for the values of history key `key` when they are never negative
/// and their positive values span three decades or more (one for the distances and
/// gradient norms of [`LOG_METRICS`]).
pub fn wants_log(key: &str, values: impl Iterator<Item = f64>) -> bool {
    let (mut lo, mut hi) = (f64::INFINITY, 0.0f64);
    for v in values.filter(|v| v.is_finite()) {
        if v < 0.0 {
            return false;
        }
        if v > 0.0 {
            lo = lo.min(v);
            hi = hi.max(v);
        }
    }
    // Distances to an optimum and gradient norms converge geometrically: on a log axis
    // from one decade on (as `bda toy --plot` draws them); other quantities from three.
    let decades = if LOG_METRICS.contains(&key) { 1e1 } else { 1e3 };
    lo.is_finite() && hi >= decades * lo
}

/// History quantities that are distances to an optimum or gradient norms.
pub const LOG_METRICS: [&str; 5] = ["upper_gap", "lower_gap", "grad_norm", "x_err", "y_err"];

/// The figure's title: what the reports are about (command and data), distinct ones
/// joined.
fn default_title(reports: &[Loaded]) -> String {
    let mut parts: Vec<String> = Vec::new();
    for r in reports {
        let get = |k: &str| {
            r.top
                .get(k)
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
        };
        // A folder read with --data-dir: its name.
        let dataset = get("dataset").map_or_else(String::new, |d| {
            Path::new(&d)
                .file_name()
                .map_or(d.clone(), |n| n.to_string_lossy().into_owned())
        });
        let part = match r.command.as_deref() {
            Some("hyperclean") => format!("data hyper-cleaning — {dataset}"),
            Some("fewshot") => format!(
                "few-shot {}-way {}-shot — {dataset}",
                get("ways").unwrap_or_default(),
                get("shots").unwrap_or_default()
            ),
            Some("toy") => match get("example").as_deref() {
                Some("tpami") => "journal Eq. (40)".into(),
                Some("remark4") => "journal Remark 4".into(),
                Some("icml") => "ICML Example 1".into(),
                other => format!("bda toy {}", other.unwrap_or_default()),
            },
            Some(c) => format!("bda {c}"),
            None => "per-iteration history".into(),
        };
        if !parts.contains(&part) {
            parts.push(part);
        }
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plot::reports::tests::report;
    use serde_json::json;

    #[test]
    fn metrics_in_paper_order_or_as_asked() {
        let rs = [report("bda", json!({})), report("rhg", json!({}))];
        assert_eq!(choose_metrics(&rs, &[]).unwrap(), ["ul_loss", "val_acc"]);
        let asked = ["val_acc".to_string()];
        assert_eq!(choose_metrics(&rs, &asked).unwrap(), ["val_acc"]);
        let e = choose_metrics(&rs, &["clean_f1".to_string()]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "bda.json: no \"clean_f1\" in the history (it has: ul_loss, val_acc)"
        );
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn log_axis_for_quantities_spanning_decades() {
        assert!(wants_log("ul_loss", [1.0, 1e-4, 0.0].into_iter()));
        assert!(!wants_log("ul_loss", [1.0, 0.5].into_iter()));
        assert!(!wants_log("ul_loss", [1.0, 1e-4, -1e-9].into_iter()));
        assert!(!wants_log("ul_loss", [1.0, 0.05].into_iter()));
        assert!(wants_log("x_err", [1.0, 0.05].into_iter()));
        assert_eq!(metric_title("val_acc"), "validation accuracy (%)");
        assert_eq!(metric_title("test_acc"), "test_acc (%)");
    }
}
