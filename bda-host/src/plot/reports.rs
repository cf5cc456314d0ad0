//! Reading saved reports for `bda plot`: one JSON report or JSON lines per file, a `bda
//! toy` report's runs as reports of their own, each history as numeric curves.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use serde_json::{Map, Value};

use crate::error::{CliError, one_line};

/// The horizontal axis of every panel.
pub const ITER_KEY: &str = "ul_iter";

/// Top-level keys taken as settings when a report has no `config` (older reports).
const TOP_SETTINGS: [&str; 6] = ["K", "truncate", "ways", "shots", "example", "dataset"];

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
    /// Each numeric history key: its `(ul_iter, value)` points. An array of numbers (the
    /// iterates `x` and `y` of `bda toy --record-iterates`) gives a curve per element,
    /// `x[0]`, `x[1]`, ….
    pub curves: Curves,
    /// `bda toy --ll-trace`'s lower-level steps: per upper iteration, each numeric key's
    /// `(ll_iter, value)` points.
    pub ll_curves: BTreeMap<u32, Curves>,
}

/// The horizontal axis of a lower-level trace.
pub const LL_ITER_KEY: &str = "ll_iter";

/// Curves by key, each a list of `(iteration, value)` points.
pub type Curves = BTreeMap<String, Vec<(f64, f64)>>;

/// The rows of one history as curves against the integer key `axis`; `what` names a row in
/// errors (`history row 3`).
fn curves_of(rows: &[Value], axis: &str, what: &str) -> Result<Curves, String> {
    let mut curves = Curves::new();
    for (i, row) in rows.iter().enumerate() {
        let Value::Object(row) = row else {
            return Err(format!("{what} {i} is not an object"));
        };
        let x = row
            .get(axis)
            .and_then(Value::as_f64)
            .filter(|x| x.fract() == 0.0)
            .ok_or_else(|| format!("{what} {i} has no integer \"{axis}\""))?;
        for (k, v) in row.iter().filter(|(k, _)| *k != axis) {
            if let Value::Array(items) = v {
                for (j, e) in items.iter().enumerate() {
                    if let Some(y) = e.as_f64() {
                        curves.entry(format!("{k}[{j}]")).or_default().push((x, y));
                    }
                }
            } else if let Some(y) = v.as_f64() {
                curves.entry(k.clone()).or_default().push((x, y));
            }
        }
    }
    Ok(curves)
}

/// `ll_history` (absent: none) as curves per upper iteration.
fn ll_curves_of(v: Option<Value>) -> Result<BTreeMap<u32, Curves>, String> {
    let entries = match v {
        None => return Ok(BTreeMap::new()),
        Some(Value::Array(e)) => e,
        Some(_) => return Err("\"ll_history\" is not an array".into()),
    };
    let mut out = BTreeMap::new();
    for (i, e) in entries.iter().enumerate() {
        let t = e
            .get(ITER_KEY)
            .and_then(Value::as_u64)
            .and_then(|t| u32::try_from(t).ok())
            .ok_or_else(|| format!("ll_history entry {i} has no integer \"{ITER_KEY}\""))?;
        let Some(Value::Array(steps)) = e.get("steps") else {
            return Err(format!("ll_history entry {i} has no \"steps\" array"));
        };
        let what = format!("ll_history entry {i} step");
        out.insert(t, curves_of(steps, LL_ITER_KEY, &what)?);
    }
    Ok(out)
}

/// Every report of the file `path` (one JSON value, or one per line). Errors are one line
/// naming the file.
pub fn read_reports(path: &Path) -> Result<Vec<Loaded>, CliError> {
    let file = path.display().to_string();
    let bytes = fs::read(path).map_err(|e| CliError::input(format!("{file}: cannot read: {e}")))?;
    parse_reports(&bytes, &file)
}

/// [`read_reports`] on the bytes of a file; `file` names it in errors.
pub fn parse_reports(bytes: &[u8], file: &str) -> Result<Vec<Loaded>, CliError> {
    let file = file.to_string();
    let fail = |m: String| CliError::input(one_line(&format!("{file}: {m}")));
    let text = std::str::from_utf8(bytes)
        .map_err(|e| fail(format!("cannot read: not UTF-8 text ({e})")))?;
    let values: Vec<Value> = serde_json::Deserializer::from_str(text)
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
    let curves = curves_of(&rows, ITER_KEY, "history row").map_err(fail)?;
    let ll_curves = ll_curves_of(m.remove("ll_history")).map_err(fail)?;
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
        ll_curves,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// A hyper-cleaning report of `method` with `config` and a two-row history.
    pub(crate) fn report(method: &str, config: Value) -> Loaded {
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
}
