//! `bda plot REPORT.json... --out FIG.svg`: the per-iteration curves of saved reports
//! overlaid on one chart, one panel per history quantity, one series per report.
//!
//! A file is one JSON report (the `--json` output of `bda hyperclean`, `bda fewshot`, or
//! `bda toy`, whose runs count as one report each) or JSON lines, one report per line. A report's `history` is an array of
//! objects with the upper-level iteration `ul_iter` and numeric quantities; each quantity
//! every report has is a panel (`--metrics` chooses and orders them). A series is labelled
//! with its report's `method` and the settings (keys of `config`) whose values differ
//! between the reports given ([`legend_labels`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

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

/// The horizontal axis of every panel.
const ITER_KEY: &str = "ul_iter";

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

/// Settings shown first in legend labels, in this order (other differing keys follow in
/// alphabetical order).
const SETTING_ORDER: [&str; 9] = [
    "K",
    "truncate",
    "ul_projection",
    "ways",
    "shots",
    "example",
    "dataset",
    "ul_lr",
    "ll_lr",
];

/// Configuration keys never shown in a label: the method is already its first word, and
/// threads do not change a curve.
const SETTING_SKIP: [&str; 2] = ["method", "threads"];

/// Top-level keys taken as settings when a report has no `config` (older reports).
const TOP_SETTINGS: [&str; 6] = ["K", "truncate", "ways", "shots", "example", "dataset"];

/// At most this many settings follow the method in a label.
const MAX_SETTINGS: usize = 3;

/// One report read from a file.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The file, and the report's line when the file holds several: for messages.
    pub origin: String,
    /// `command` of the report (absent in hand-made files).
    pub command: Option<String>,
    /// `method` of the report.
    pub method: String,
    /// The settings labels are made from: `config`, or a few top-level keys.
    pub settings: Map<String, Value>,
    /// Top-level scalars, for the default title (`dataset`, `ways`, `shots`, `example`).
    pub top: Map<String, Value>,
    /// Each numeric history key: its `(ul_iter, value)` points.
    pub curves: BTreeMap<String, Vec<(f64, f64)>>,
}

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
                .map(|(r, name)| Series {
                    name: name.clone(),
                    points: r.curves.get(m).cloned().unwrap_or_default(),
                })
                .collect();
            Panel {
                title: metric_title(m),
                y_log: wants_log(m, series.iter().flat_map(|s| s.points.iter().map(|p| p.1))),
                series,
            }
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

/// Every report of the file `path` (one JSON value, or one per line). Errors are one line
/// naming the file.
pub fn read_reports(path: &Path) -> Result<Vec<Loaded>, CliError> {
    let file = path.display().to_string();
    let fail = |m: String| CliError::input(format!("{file}: {m}"));
    let text = fs::read_to_string(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    let values: Vec<Value> = serde_json::Deserializer::from_str(&text)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .map_err(|e| fail(format!("not JSON: {e}")))?;
    if values.is_empty() {
        return Err(fail("empty file, expected a JSON report".into()));
    }
    // A `bda toy` report holds one run per method: each is a report of its own, with the
    // fields the runs share.
    let values: Vec<Value> = values.into_iter().flat_map(split_runs).collect();
    let several = values.len() > 1;
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let origin = if several {
                format!("{file} (report {})", i + 1)
            } else {
                file.clone()
            };
            parse_report(v, origin)
        })
        .collect()
}

/// A report with `runs` (`bda toy`) as one report per run, each with the top-level fields;
/// any other value as it is.
fn split_runs(v: Value) -> Vec<Value> {
    let Value::Object(mut m) = v else {
        return vec![v];
    };
    match m.remove("runs") {
        Some(Value::Array(runs)) if !runs.is_empty() => runs
            .into_iter()
            .map(|run| {
                let mut one = m.clone();
                if let Value::Object(r) = run {
                    one.extend(r);
                }
                Value::Object(one)
            })
            .collect(),
        Some(other) => {
            m.insert("runs".into(), other);
            vec![Value::Object(m)]
        }
        None => vec![Value::Object(m)],
    }
}

/// One report: its history, method and settings. `origin` names it in errors.
pub fn parse_report(v: Value, origin: String) -> Result<Loaded, CliError> {
    let fail = |m: String| CliError::input(format!("{origin}: {m}"));
    let Value::Object(mut m) = v else {
        return Err(fail("expected a JSON report (an object)".into()));
    };
    let command = m.get("command").and_then(Value::as_str).map(str::to_owned);
    let rows = match m.remove("history") {
        Some(Value::Array(rows)) if !rows.is_empty() => rows,
        Some(Value::Array(_)) | None => {
            let why = match command.as_deref() {
                Some(c @ ("fewshot eval" | "fewshot bench")) => format!("bda {c} reports none"),
                Some(_) => "it ran no upper iterations".into(),
                None => "bda fewshot eval reports none".into(),
            };
            return Err(fail(format!("report has no per-iteration history ({why})")));
        }
        Some(_) => return Err(fail("\"history\" is not an array".into())),
    };
    let mut curves: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for (i, row) in rows.iter().enumerate() {
        let Value::Object(row) = row else {
            return Err(fail(format!("history row {i} is not an object")));
        };
        let x = row
            .get(ITER_KEY)
            .and_then(Value::as_f64)
            .filter(|x| x.fract() == 0.0)
            .ok_or_else(|| fail(format!("history row {i} has no integer \"{ITER_KEY}\"")))?;
        for (k, v) in row {
            if let (false, Some(y)) = (k == ITER_KEY, v.as_f64()) {
                curves.entry(k.clone()).or_default().push((x, y));
            }
        }
    }
    let config = match m.remove("config") {
        Some(Value::Object(c)) => Some(c),
        _ => None,
    };
    let method = m
        .get("method")
        .or_else(|| config.as_ref().and_then(|c| c.get("method")))
        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
        .unwrap_or_else(|| "report".into());
    let top: Map<String, Value> = m
        .into_iter()
        .filter(|(_, v)| !(v.is_array() || v.is_object()))
        .collect();
    let settings = config.unwrap_or_else(|| {
        top.iter()
            .filter(|(k, _)| TOP_SETTINGS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    });
    Ok(Loaded {
        origin,
        command,
        method,
        settings,
        top,
        curves,
    })
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

/// One legend label per report: its `method`, then the settings whose values differ
/// between the reports (at most `MAX_SETTINGS`, `K` and `T` first), e.g. `bda K=50`,
/// `trhg K=50 T=25`. `truncate` is shown as `T`, and only for `trhg` (other methods ignore
/// it). Labels that are still equal get their report's file appended.
pub fn legend_labels(reports: &[Loaded]) -> Vec<String> {
    let Some(first) = reports.first() else {
        return Vec::new();
    };
    let all_keys: BTreeSet<&String> = reports.iter().flat_map(|r| r.settings.keys()).collect();
    let rank = |k: &str| {
        SETTING_ORDER
            .iter()
            .position(|&o| o == k)
            .unwrap_or(usize::MAX)
    };
    let mut differing: Vec<&String> = all_keys
        .into_iter()
        .filter(|k| !SETTING_SKIP.contains(&k.as_str()))
        .filter(|k| {
            let first = first.settings.get(*k);
            reports.iter().any(|r| r.settings.get(*k) != first)
        })
        .collect();
    differing.sort_by_key(|k| rank(k));
    let mut labels: Vec<String> = reports
        .iter()
        .map(|r| {
            let mut parts = vec![r.method.clone()];
            if r.method == "trhg" {
                parts.extend(r.settings.get("truncate").and_then(|t| setting("T", t)));
            }
            let settings = differing
                .iter()
                .filter(|k| k.as_str() != "truncate")
                .filter_map(|k| setting(k, r.settings.get(*k)?));
            parts.extend(settings.take(MAX_SETTINGS));
            parts.join(" ")
        })
        .collect();
    let counts = labels.iter().fold(BTreeMap::new(), |mut m, l| {
        *m.entry(l.clone()).or_insert(0usize) += 1;
        m
    });
    for (label, r) in labels.iter_mut().zip(reports) {
        if counts[label.as_str()] > 1 {
            let name = Path::new(&r.origin)
                .file_name()
                .map_or_else(|| r.origin.clone(), |n| n.to_string_lossy().into_owned());
            label.push_str(&format!(" ({name})"));
        }
    }
    labels
}

/// `key=value` for a label: `None` for an unset value (null, false); a true flag is its
/// name; a path is its last component; long strings are cut.
fn setting(key: &str, v: &Value) -> Option<String> {
    let value = match v {
        Value::Null | Value::Bool(false) => return None,
        Value::Bool(true) => return Some(key.to_owned()),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let last = Path::new(s)
                .file_name()
                .map_or_else(|| s.clone(), |n| n.to_string_lossy().into_owned());
            if last.chars().count() > 16 {
                format!("{}…", last.chars().take(15).collect::<String>())
            } else {
                last
            }
        }
        other => other.to_string(),
    };
    let key = match key {
        "truncate" => "T",
        "ul_projection" => "proj",
        k => k,
    };
    Some(format!("{key}={value}"))
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
    use serde_json::json;

    fn report(method: &str, config: Value) -> Loaded {
        let v = json!({
            "command": "hyperclean",
            "config": config,
            "method": method,
            "dataset": "fashion-mnist",
            "history": [{"ul_iter": 0, "ul_loss": 1.0, "val_acc": 50.0},
                        {"ul_iter": 1, "ul_loss": 0.5, "val_acc": 60.0}],
        });
        parse_report(v, format!("{method}.json")).unwrap()
    }

    #[test]
    fn labels_show_only_differing_settings() {
        let c = |k: u32| json!({"K": k, "truncate": 25, "seed": 0, "method": "x", "threads": 2});
        let rs = [
            report("bda", c(50)),
            report("rhg", c(50)),
            report("trhg", c(50)),
        ];
        assert_eq!(legend_labels(&rs), ["bda", "rhg", "trhg T=25"]);
        let rs = [report("bda", c(50)), report("bda", c(100))];
        assert_eq!(legend_labels(&rs), ["bda K=50", "bda K=100"]);
        let mut d = c(50);
        d["threads"] = json!(8);
        d["data_dir"] = json!("/some/where/fashion");
        d["warm_start"] = json!(true);
        let rs = [report("bda", c(50)), report("bda", d)];
        assert_eq!(
            legend_labels(&rs),
            ["bda", "bda data_dir=fashion warm_start"]
        );
    }

    #[test]
    fn equal_labels_get_the_file() {
        let c = json!({"K": 50});
        let rs = [report("bda", c.clone()), report("bda", c)];
        assert_eq!(legend_labels(&rs), ["bda (bda.json)", "bda (bda.json)"]);
    }

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
    fn reports_without_history_are_refused() {
        let eval = json!({"command": "fewshot eval", "method": "bda", "history": []});
        let e = parse_report(eval, "e.json".into()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "e.json: report has no per-iteration history (bda fewshot eval reports none)"
        );
        let bad = json!({"history": [{"ul_iter": 0.5, "ul_loss": 1.0}]});
        let e = parse_report(bad, "b.json".into()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "b.json: history row 0 has no integer \"ul_iter\""
        );
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
