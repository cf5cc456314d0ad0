//! `bda plot REPORT.json... --out FIG.svg`: the per-iteration curves of saved reports
//! overlaid on one chart, one panel per history quantity, one series per report.
//!
//! A file is one JSON report (the `--json` output of `bda hyperclean`, `bda fewshot`, or
//! `bda toy`, whose runs count as one report each) or JSON lines, one report per line. A
//! report's `history` is an array of objects with the upper-level iteration `ul_iter` and
//! numeric quantities; each quantity every report has is a panel (`--metrics` chooses and
//! orders them). A series is labelled with its report's `method` and the settings (keys of
//! `config`) whose values differ between the reports given ([`legend_labels`]).
//!
//! For the papers' figures: `--ll-at T,...` draws `bda toy --ll-trace`'s lower-level steps
//! instead (a column per upper iteration), `--plane A,B` a path in the plane of two history
//! quantities (with `--mark X,Y` the optimum), and `--dashed rhg` draws RHG dashed in the
//! colour of the BDA run with the same settings.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::legend::legend_labels;
use super::reports::{Curves, ITER_KEY, LL_ITER_KEY, Loaded, read_reports};
use super::{Panel, Series, XAxis, columns, write_svg_grid};
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
    /// all reports have, e.g. ul_loss,val_acc,clean_f1 for hyper-cleaning; with `--plane`
    /// alone, none].
    #[arg(long, value_delimiter = ',', value_name = "KEY,...")]
    pub metrics: Vec<String>,
    /// Draw the lower-level steps recorded at these upper iterations (`bda toy --ll-trace`)
    /// instead of the history: one column per iteration, one row per quantity.
    #[arg(long, value_delimiter = ',', value_name = "T,...")]
    pub ll_at: Vec<u32>,
    /// Add a panel with each report's path in the plane of two history quantities, e.g.
    /// `x[0],y[50]` (elements of `bda toy --record-iterates`'s iterates).
    #[arg(long, value_delimiter = ',', value_name = "KEY,KEY")]
    pub plane: Vec<String>,
    /// Mark this point of the `--plane` panel as the optimum.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "X,Y",
        allow_hyphen_values = true
    )]
    pub mark: Vec<f64>,
    /// Draw the series of these methods dashed, and give a dashed series the colour of the
    /// solid one with the same settings (the papers' RHG beside BDA), e.g. `rhg,trhg`.
    #[arg(long, value_delimiter = ',', value_name = "METHOD,...")]
    pub dashed: Vec<String>,
    /// Draw each history curve as the running mean of its last N points (a per-step loss
    /// is noisy); 1 draws them as recorded.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub smooth: u32,
    /// Title of the figure [default: from the reports' command and data].
    #[arg(long)]
    pub title: Option<String>,
}

/// The running mean of the last `n` points' values (the first points: of those so far).
fn running_mean(points: &[(f64, f64)], n: usize) -> Vec<(f64, f64)> {
    let mut sum = 0.0;
    points
        .iter()
        .enumerate()
        .map(|(i, &(x, y))| {
            sum += y;
            if i >= n {
                sum -= points[i - n].1;
            }
            (x, sum / (i + 1).min(n) as f64)
        })
        .collect()
}

/// The order of the panels of known quantities (others follow in alphabetical order).
const METRIC_ORDER: [&str; 16] = [
    "ul_loss",
    "upper",
    "phi_star",
    "upper_gap",
    "phi_gap",
    "lower_gap",
    "grad_norm",
    "x_err",
    "x_err_sq_rel",
    "y_err",
    "y_err_sq_rel",
    "y_best_err",
    "train_acc",
    "val_acc",
    "clean_f1",
    "orthogonality",
];

/// `bda toy` history quantities drawn only when asked for (the papers' figures use them;
/// the default chart keeps to the four of the toy's own plot).
const ON_REQUEST: [&str; 5] = [
    "x_err_sq_rel",
    "y_err_sq_rel",
    "phi_star",
    "phi_gap",
    "y_best_err",
];

/// Run `bda plot`.
pub fn run(args: &PlotArgs) -> Result<(), CliError> {
    check_svg("--out", &args.out)?;
    // The flags first: their mistakes are reported before any file is read.
    plane_keys(args)?;
    let mut reports = Vec::new();
    for p in &args.reports {
        reports.extend(read_reports(p)?);
    }
    let (title, panels, cols) = figure(args, &reports)?;
    write_svg_grid(&args.out, &title, &panels, cols)?;
    println!("plot written to {}", args.out.display());
    Ok(())
}

/// The figure `bda plot` draws of `reports` as `args` ask: its title, its panels and the
/// number of columns of their grid.
pub fn figure(
    args: &PlotArgs,
    reports: &[Loaded],
) -> Result<(String, Vec<Panel>, usize), CliError> {
    let plane = plane_keys(args)?;
    let labels = legend_labels(reports);
    let styles = styles(reports, &labels, &args.dashed);
    let series = |curves: &dyn Fn(&Loaded) -> Vec<(f64, f64)>| -> Vec<Series> {
        reports
            .iter()
            .zip(&labels)
            .zip(&styles)
            .map(|((r, name), &(dashed, color))| Series {
                name: name.clone(),
                points: curves(r),
                dashed,
                color: Some(color),
            })
            .collect()
    };
    let log =
        |m: &str, s: &[Series]| wants_log(m, s.iter().flat_map(|s| s.points.iter().map(|p| p.1)));
    let mut panels: Vec<Panel> = Vec::new();
    let mut cols = None;
    if args.ll_at.is_empty() {
        let sets: Vec<(&str, &Curves)> = reports
            .iter()
            .map(|r| (r.origin.as_str(), &r.curves))
            .collect();
        let metrics = if args.metrics.is_empty() && plane.is_some() {
            Vec::new()
        } else {
            choose_metrics(&sets, &args.metrics, ITER_KEY, &ON_REQUEST)?
        };
        let n = args.smooth as usize;
        for m in &metrics {
            let s = series(&|r| running_mean(r.curves.get(m).map_or(&[], |c| c), n));
            let title = if n > 1 {
                format!("{} (running mean of {n})", metric_title(m))
            } else {
                metric_title(m)
            };
            panels.push(Panel::upper(title, log(m, &s), s));
        }
    } else {
        for r in reports {
            if let Some(t) = args.ll_at.iter().find(|t| !r.ll_curves.contains_key(t)) {
                let has: Vec<String> = r.ll_curves.keys().map(u32::to_string).collect();
                return Err(CliError::input(format!(
                    "{}: no lower-level steps recorded at upper iteration {t} (recorded: {}; bda toy --ll-trace records them)",
                    r.origin,
                    if has.is_empty() {
                        "none".into()
                    } else {
                        has.join(", ")
                    }
                )));
            }
        }
        let sets: Vec<(&str, &Curves)> = reports
            .iter()
            .flat_map(|r| {
                args.ll_at
                    .iter()
                    .map(|t| (r.origin.as_str(), &r.ll_curves[t]))
            })
            .collect();
        let metrics = choose_metrics(&sets, &args.metrics, LL_ITER_KEY, &[])?;
        for m in &metrics {
            let row: Vec<Vec<Series>> = args
                .ll_at
                .iter()
                .map(|t| series(&|r| r.ll_curves[t].get(m).cloned().unwrap_or_default()))
                .collect();
            let y_log = log(m, &row.concat());
            for (t, s) in args.ll_at.iter().zip(row) {
                panels.push(Panel {
                    title: format!("{} at x_{t}", metric_title(m)),
                    y_log,
                    series: s,
                    x_axis: XAxis::Lower,
                    mark: None,
                });
            }
        }
        cols = Some(args.ll_at.len());
    }
    if let Some((a, b)) = &plane {
        for r in reports {
            if let Some(k) = [a, b].into_iter().find(|k| !r.curves.contains_key(*k)) {
                return Err(CliError::input(format!(
                    "{}: --plane: no \"{k}\" in the history (bda toy --record-iterates records x[i] and y[i])",
                    r.origin
                )));
            }
        }
        let path = |r: &Loaded| {
            let (xs, ys) = (&r.curves[a], &r.curves[b]);
            xs.iter()
                .zip(ys)
                .filter(|(p, q)| p.0 == q.0)
                .map(|(p, q)| (p.1, q.1))
                .collect()
        };
        panels.push(Panel {
            title: format!("the iterates in the plane ({a}, {b})"),
            y_log: false,
            series: series(&path),
            x_axis: XAxis::Value(a.clone()),
            mark: (args.mark.len() == 2)
                .then(|| ("optimum".to_string(), (args.mark[0], args.mark[1]))),
        });
    }
    let title = args.title.clone().unwrap_or_else(|| default_title(reports));
    let cols = cols.unwrap_or_else(|| columns(panels.len()));
    Ok((title, panels, cols))
}

/// The two keys of `--plane`, checked with `--mark` and `--ll-at`.
fn plane_keys(args: &PlotArgs) -> Result<Option<(String, String)>, CliError> {
    if !args.mark.is_empty() {
        if args.plane.is_empty() {
            return Err(CliError::input(
                "--mark: marks a point of the --plane panel; give --plane too",
            ));
        }
        if args.mark.len() != 2 || args.mark.iter().any(|v| !v.is_finite()) {
            return Err(CliError::input("--mark: expected two finite numbers X,Y"));
        }
    }
    match args.plane.as_slice() {
        [] => Ok(None),
        [_, _] if !args.ll_at.is_empty() => Err(CliError::input(
            "--plane: draws the history, --ll-at the lower-level steps; give one of them",
        )),
        [a, b] if !a.trim().is_empty() && !b.trim().is_empty() => {
            Ok(Some((a.trim().to_owned(), b.trim().to_owned())))
        }
        _ => Err(CliError::input(
            "--plane: expected two history keys KEY,KEY",
        )),
    }
}

/// Per report: dashed or not, and its colour. Without `--dashed`, colours in report
/// order; with it, one colour per label without its method (and T-RHG's `T=`), so that
/// `bda x0=2` and the dashed `rhg x0=2` share one — unless the reports differ by method
/// only, when each keeps its own.
fn styles(reports: &[Loaded], labels: &[String], dashed: &[String]) -> Vec<(bool, usize)> {
    let key = |label: &str| -> String {
        let words = label.split(' ').skip(1).filter(|w| !w.starts_with("T="));
        words.collect::<Vec<_>>().join(" ")
    };
    let keys: Vec<String> = labels.iter().map(|l| key(l)).collect();
    let by_settings = !dashed.is_empty() && keys.iter().any(|k| *k != keys[0]);
    let mut seen: Vec<&str> = Vec::new();
    reports
        .iter()
        .zip(&keys)
        .enumerate()
        .map(|(i, (r, k))| {
            let color = if by_settings {
                seen.iter().position(|s| *s == k).unwrap_or_else(|| {
                    seen.push(k);
                    seen.len() - 1
                })
            } else {
                i
            };
            (dashed.iter().any(|d| d.trim() == r.method), color)
        })
        .collect()
}

/// The panels: `wanted` (each must be in every curve set), or every quantity all sets
/// have except those in `on_request`, known ones in `METRIC_ORDER`. A set is a report's
/// history (`axis` = `ul_iter`) or one of its lower-level traces (`ll_iter`), named by its
/// report's origin.
pub fn choose_metrics(
    sets: &[(&str, &Curves)],
    wanted: &[String],
    axis: &str,
    on_request: &[&str],
) -> Result<Vec<String>, CliError> {
    let keys = |c: &Curves| {
        let plain: Vec<&str> = c
            .keys()
            .map(String::as_str)
            .filter(|k| !k.contains('['))
            .collect();
        plain.join(", ")
    };
    if !wanted.is_empty() {
        let mut out: Vec<String> = Vec::new();
        for w in wanted {
            let w = w.trim();
            if w.is_empty() {
                return Err(CliError::input("--metrics: an empty name"));
            }
            if w == axis {
                return Err(CliError::input(format!(
                    "--metrics: {axis} is the horizontal axis of every panel"
                )));
            }
            if let Some((origin, c)) = sets.iter().find(|(_, c)| !c.contains_key(w)) {
                return Err(CliError::input(format!(
                    "{origin}: no \"{w}\" in the history (it has: {})",
                    keys(c)
                )));
            }
            if !out.iter().any(|o| o == w) {
                out.push(w.to_owned());
            }
        }
        return Ok(out);
    }
    let mut common: BTreeSet<&String> = match sets.first() {
        Some((_, c)) => c
            .keys()
            .filter(|k| !k.contains('[') && !on_request.contains(&k.as_str()))
            .collect(),
        None => BTreeSet::new(),
    };
    for (_, c) in sets.iter().skip(1) {
        common.retain(|k| c.contains_key(*k));
    }
    if common.is_empty() {
        let each: Vec<String> = sets
            .iter()
            .map(|(origin, c)| format!("{origin} has {}", keys(c)))
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
        "x_err_sq_rel" => "‖x − x*‖²/‖x*‖²".into(),
        "y_err_sq_rel" => "‖y − y*‖²/‖y*‖²".into(),
        "phi_star" => "φ*(x) = F(x, y*(x))".into(),
        "phi_gap" => "|φ_K(x) − φ*(x)|".into(),
        "y_best_err" => "‖y − y*(x)‖".into(),
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
pub const LOG_METRICS: [&str; 9] = [
    "upper_gap",
    "lower_gap",
    "grad_norm",
    "x_err",
    "y_err",
    "x_err_sq_rel",
    "y_err_sq_rel",
    "phi_gap",
    "y_best_err",
];

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
        let sets: Vec<(&str, &Curves)> =
            rs.iter().map(|r| (r.origin.as_str(), &r.curves)).collect();
        let choose = |wanted: &[String]| choose_metrics(&sets, wanted, ITER_KEY, &ON_REQUEST);
        assert_eq!(choose(&[]).unwrap(), ["ul_loss", "val_acc"]);
        let asked = ["val_acc".to_string()];
        assert_eq!(choose(&asked).unwrap(), ["val_acc"]);
        let e = choose(&["clean_f1".to_string()]).unwrap_err();
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

    #[test]
    fn dashed_series_share_the_colour_of_their_solid_twin() {
        let c = |x0: u32| json!({"x0": x0, "truncate": 10});
        let rs = [
            report("bda", c(0)),
            report("rhg", c(0)),
            report("bda", c(2)),
            report("rhg", c(2)),
        ];
        let labels = legend_labels(&rs);
        let dashed = ["rhg".to_string()];
        assert_eq!(
            styles(&rs, &labels, &dashed),
            [(false, 0), (true, 0), (false, 1), (true, 1)]
        );
        // Without --dashed, a colour per report.
        assert_eq!(
            styles(&rs, &labels, &[]),
            [(false, 0), (false, 1), (false, 2), (false, 3)]
        );
        // Reports that differ by method only (T-RHG's T aside) keep a colour each.
        let rs = [
            report("bda", c(0)),
            report("rhg", c(0)),
            report("trhg", c(0)),
        ];
        let labels = legend_labels(&rs);
        assert_eq!(labels[2], "trhg T=10");
        let dashed = ["rhg".to_string(), "trhg".to_string()];
        assert_eq!(
            styles(&rs, &labels, &dashed),
            [(false, 0), (true, 1), (true, 2)]
        );
    }

    #[test]
    fn running_means_of_the_last_n_points() {
        let p = [(0.0, 1.0), (1.0, 3.0), (2.0, 5.0), (3.0, 7.0)];
        assert_eq!(running_mean(&p, 1), p);
        assert_eq!(
            running_mean(&p, 2),
            [(0.0, 1.0), (1.0, 2.0), (2.0, 4.0), (3.0, 6.0)]
        );
        assert_eq!(running_mean(&p, 10)[3], (3.0, 4.0));
    }
}
