//! Legend labels: a report's method and the settings that tell it from the others.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;

use super::reports::Loaded;

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

/// Settings that only some methods read, with those methods (for reports of `command`, or
/// of every command for `None`): a label shows them for these methods only, since a MAML
/// run's `lambda` (iMAML's) or an RHG run's `mu` (BDA's) says nothing about its curve.
/// `hyperclean`'s `lambda` is the upper-level regulariser, read by every method.
const METHOD_SETTINGS: [(Option<&str>, &str, &[&str]); 8] = [
    (None, "mu", &["bda", "bda-net", "obda"]),
    (None, "alpha", &["bda", "bda-net", "obda"]),
    (None, "beta", &["bda", "obda"]),
    (None, "su", &["bda", "obda"]),
    (None, "cg_iters", &["ihg", "imaml"]),
    (None, "fd_eps", &["obda"]),
    (None, "first_order", &["maml"]),
    (Some("fewshot"), "lambda", &["imaml"]),
];

/// Whether `report`'s method reads the setting `key` (see [`METHOD_SETTINGS`]).
fn reads(report: &Loaded, key: &str) -> bool {
    METHOD_SETTINGS
        .iter()
        .filter(|(command, k, _)| {
            *k == key && command.is_none_or(|c| report.command.as_deref() == Some(c))
        })
        .all(|(_, _, methods)| methods.contains(&report.method.as_str()))
}

/// At most this many settings follow the method in a label.
const MAX_SETTINGS: usize = 3;

/// One legend label per report: its `method`, then the settings whose values differ
/// between the reports (at most `MAX_SETTINGS`, `K` and `T` first), e.g. `bda K=50`,
/// `trhg K=50 T=25`. `truncate` is shown as `T`, and only for `trhg` (other methods ignore
/// it); other settings only some methods read are shown for those only
/// (`METHOD_SETTINGS`). Labels that are still equal get their report's file appended.
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
                .filter(|k| k.as_str() != "truncate" && reads(r, k))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plot::reports::tests::report;
    use serde_json::json;

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
    fn labels_leave_out_settings_the_method_does_not_read() {
        let c = |lambda: f64, mu: f64| json!({"ll_lr": 0.05, "lambda": lambda, "mu": mu});
        let fewshot = |method: &str, config| {
            let mut r = report(method, config);
            r.command = Some("fewshot".into());
            r
        };
        let rs = [
            fewshot("maml", c(2.0, 0.5)),
            fewshot("imaml", c(0.2, 0.5)),
            fewshot("bda-net", c(2.0, 0.1)),
        ];
        assert_eq!(
            legend_labels(&rs),
            ["maml", "imaml lambda=0.2", "bda-net mu=0.1"]
        );
        // hyperclean's lambda is every method's upper-level regulariser.
        let rs = [report("rhg", c(1e-4, 0.5)), report("bda", c(1e-3, 0.1))];
        assert_eq!(
            legend_labels(&rs),
            ["rhg lambda=0.0001", "bda lambda=0.001 mu=0.1"]
        );
    }

    #[test]
    fn equal_labels_get_the_file() {
        let c = json!({"K": 50});
        let rs = [report("bda", c.clone()), report("bda", c)];
        assert_eq!(legend_labels(&rs), ["bda (bda.json)", "bda (bda.json)"]);
    }
}
