//! End-to-end tests of `bda plot`: hand-made reports in, one SVG out, one-line errors.

use std::fs;
use std::path::Path;

use bda_testkit::report::{failure, run};
use serde_json::{Value, json};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_bda"))
}

/// `bda plot ARGS`, file arguments (all but options and the values of `--metrics`,
/// `--title`, `--ll-at`, `--plane`, `--mark` and `--dashed`) taken relative to `dir`.
fn plot(dir: &Path, args: &[&str]) -> std::process::Output {
    let mut full = vec!["plot".to_string()];
    for (i, a) in args.iter().enumerate() {
        let value_of = i.checked_sub(1).map(|j| args[j]);
        let raw = [
            "--metrics",
            "--title",
            "--ll-at",
            "--plane",
            "--mark",
            "--dashed",
        ];
        if a.starts_with("--") || value_of.is_some_and(|v| raw.contains(&v)) {
            full.push(a.to_string());
        } else {
            full.push(dir.join(a).display().to_string());
        }
    }
    let full: Vec<&str> = full.iter().map(String::as_str).collect();
    run(bin(), &full, &[])
}

/// A report shaped like `bda hyperclean --json`'s: 5 history rows.
fn hyperclean(method: &str, k: u32, shift: f64) -> Value {
    let history: Vec<Value> = (0..5)
        .map(|t| {
            let t = f64::from(t);
            json!({
                "ul_iter": t as u32,
                "ul_loss": 1.7 - 0.02 * t - shift,
                "val_acc": 52.0 + 1.5 * t + 10.0 * shift,
                "clean_f1": 40.0 + 7.0 * t,
            })
        })
        .collect();
    json!({
        "command": "hyperclean",
        "version": "0.1.0",
        "config": {"K": k, "method": method, "seed": 0, "threads": 2, "truncate": 25, "ul_lr": 0.01},
        "dataset": "fashion-mnist",
        "method": method,
        "K": k,
        "ul_loss": 1.6,
        "history": history,
    })
}

fn write(dir: &Path, name: &str, v: &Value) {
    fs::write(dir.join(name), serde_json::to_string(v).unwrap()).unwrap();
}

use bda_testkit::report::svg_texts as texts;

#[test]
fn overlays_two_reports_with_labels_and_integer_ticks() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.json", &hyperclean("bda", 50, 0.0));
    write(dir.path(), "b.json", &hyperclean("rhg", 20, 0.1));
    let out = plot(dir.path(), &["a.json", "b.json", "--out", "fig.svg"]);
    let (code, err) = failure(&out);
    assert_eq!(code, 0, "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("plot written to"));
    let svg = fs::read_to_string(dir.path().join("fig.svg")).unwrap();
    assert!(!dir.path().join("fig.svg.tmp").exists());
    let labels = texts(&svg);
    let has = |t: &str| labels.iter().any(|l| l == t);
    // Only the settings that differ: K (seed, threads, ul_lr are equal; T is for trhg).
    assert!(has("bda K=50") && has("rhg K=20"), "{labels:?}");
    for title in [
        "upper-level loss",
        "validation accuracy (%)",
        "clean-detection F1 (%)",
    ] {
        assert!(has(title), "no panel {title}: {labels:?}");
    }
    for t in ["0", "1", "2", "3", "4"] {
        assert!(has(t), "no iteration tick {t}: {labels:?}");
    }
    for l in &labels {
        let fractional_integer = l.ends_with(".0") && l[..l.len() - 2].parse::<i64>().is_ok();
        assert!(!fractional_integer, "tick label {l}: {labels:?}");
    }
    // Five points per series: markers.
    assert!(svg.contains("<circle"));
}

#[test]
fn metrics_choose_and_order_the_panels() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.json", &hyperclean("bda", 50, 0.0));
    let out = plot(
        dir.path(),
        &[
            "a.json",
            "--out",
            "f.svg",
            "--metrics",
            "val_acc",
            "--title",
            "Fig. 7",
        ],
    );
    assert_eq!(failure(&out).0, 0, "{}", failure(&out).1);
    let labels = texts(&fs::read_to_string(dir.path().join("f.svg")).unwrap());
    assert!(labels.iter().any(|l| l == "Fig. 7"), "{labels:?}");
    assert!(labels.iter().any(|l| l == "validation accuracy (%)"));
    assert!(!labels.iter().any(|l| l == "upper-level loss"));
}

#[test]
fn a_file_of_json_lines_is_one_series_per_report() {
    let dir = tempfile::tempdir().unwrap();
    let toy = |method: &str| {
        json!({
            "command": "toy", "config": {"K": 16, "method": "both", "example": "icml"},
            "example": "icml", "method": method, "K": 16,
            "history": [{"ul_iter": 0, "upper": 1.0, "x_err": 1.0},
                        {"ul_iter": 1, "upper": 0.1, "x_err": 1e-4}],
        })
    };
    let lines = format!("{}\n{}\n", toy("bda"), toy("rhg"));
    fs::write(dir.path().join("toy.jsonl"), lines).unwrap();
    let out = plot(dir.path(), &["toy.jsonl", "--out", "toy.svg"]);
    assert_eq!(failure(&out).0, 0, "{}", failure(&out).1);
    let labels = texts(&fs::read_to_string(dir.path().join("toy.svg")).unwrap());
    for t in ["bda", "rhg", "ICML Example 1", "‖x − x*‖"] {
        assert!(labels.iter().any(|l| l == t), "no {t}: {labels:?}");
    }
}

/// Exit 2, one line on stderr that contains `file` and `what`, and no SVG written.
fn refused(dir: &Path, args: &[&str], file: &str, what: &str) {
    let out = plot(dir, args);
    let (code, err) = failure(&out);
    assert_eq!(code, 2, "{args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    assert!(err.contains(file) && err.contains(what), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!dir.join("x.svg").exists(), "{args:?}: a plot was written");
}

#[test]
fn errors_are_one_line_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "a.json", &hyperclean("bda", 50, 0.0));
    fs::write(d.join("bad.json"), "{\"history\": [").unwrap();
    fs::write(d.join("empty.json"), "").unwrap();
    let mut eval = hyperclean("bda", 50, 0.0);
    eval["command"] = json!("fewshot eval");
    eval["history"] = json!([]);
    write(d, "eval.json", &eval);
    write(
        d,
        "bench.json",
        &json!({"command": "fewshot bench", "method": "bda", "s_per_ul_iter": 0.1}),
    );
    write(
        d,
        "toy.json",
        &json!({"command": "toy", "method": "bda",
                "history": [{"ul_iter": 0, "upper": 1.0}, {"ul_iter": 1, "upper": 0.5}]}),
    );
    let x = ["--out", "x.svg"];
    let with = |files: &[&'static str]| [files, &x[..]].concat();
    refused(
        d,
        &with(&["a.json", "missing.json"]),
        "missing.json",
        "cannot read",
    );
    refused(d, &with(&["bad.json"]), "bad.json", "not JSON");
    refused(d, &with(&["empty.json"]), "empty.json", "empty file");
    refused(
        d,
        &with(&["a.json", "eval.json"]),
        "eval.json",
        "report has no per-iteration history (bda fewshot eval reports none)",
    );
    refused(
        d,
        &with(&["bench.json"]),
        "bench.json",
        "no per-iteration history",
    );
    refused(
        d,
        &with(&["a.json", "toy.json"]),
        "toy.json",
        "no history quantity common to all reports",
    );
    refused(
        d,
        &["a.json", "--out", "x.svg", "--metrics", "train_acc"],
        "a.json",
        "no \"train_acc\"",
    );
    refused(
        d,
        &["a.json", "--out", "x.png"],
        "x.png",
        "must end in .svg",
    );
    refused(
        d,
        &["a.json", "--out", "no/such/x.svg"],
        "no/such/x.svg",
        "does not exist",
    );
}

#[test]
fn a_toy_report_is_one_series_per_run_on_log_axes() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(bin(), &["toy", "--ul-iters", "30", "--json"], &[]);
    let (code, err) = failure(&out);
    assert_eq!(code, 0, "{err}");
    fs::write(dir.path().join("toy.json"), &out.stdout).unwrap();
    let out = plot(dir.path(), &["toy.json", "--out", "toy.svg"]);
    let (code, err) = failure(&out);
    assert_eq!(code, 0, "{err}");
    let labels = texts(&fs::read_to_string(dir.path().join("toy.svg")).unwrap());
    for want in [
        "bda",
        "rhg",
        "|F − F*|",
        "‖x − x*‖",
        "‖y − y*‖",
        "upper iteration",
    ] {
        assert!(
            labels.iter().any(|l| l.contains(want)),
            "{want}: {labels:?}"
        );
    }
    // |F − F*| is drawn instead of F, and distances get decade ticks.
    assert!(!labels.iter().any(|l| l == "F"), "{labels:?}");
    assert!(
        labels.iter().any(|l| l == "0.1" || l == "1e-2"),
        "{labels:?}"
    );
}

/// `bda toy ARGS --json` written to `dir/name`.
fn toy_report(dir: &Path, name: &str, args: &str) {
    let full = format!("toy --json {args}");
    let out = run(bin(), &bda_testkit::report::argv(&full), &[]);
    let (code, err) = failure(&out);
    assert_eq!(code, 0, "{args}: {err}");
    fs::write(dir.join(name), &out.stdout).unwrap();
}

fn svg_labels(dir: &Path, args: &[&str]) -> (String, Vec<String>) {
    let out = plot(dir, args);
    let (code, err) = failure(&out);
    assert_eq!(code, 0, "{args:?}: {err}");
    let svg = fs::read_to_string(dir.join("x.svg")).unwrap();
    let labels = texts(&svg);
    (svg, labels)
}

fn has(labels: &[String], want: &str) -> bool {
    labels.iter().any(|l| l == want)
}

#[test]
fn lower_level_steps_get_a_column_per_upper_iteration() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    toy_report(d, "t.json", "--K 6 --ul-iters 8 --ll-trace 0,4");
    let (_, labels) = svg_labels(
        d,
        &[
            "t.json",
            "--ll-at",
            "0,4",
            "--metrics",
            "lower_gap,y_err",
            "--out",
            "x.svg",
        ],
    );
    for want in [
        "f − f* at x_0",
        "f − f* at x_4",
        "‖y − y*‖ at x_0",
        "‖y − y*‖ at x_4",
    ] {
        assert!(has(&labels, want), "{want}: {labels:?}");
    }
    assert!(has(&labels, "lower iteration k") && !has(&labels, "upper iteration"));
    // k runs 0..=6: integer ticks up to 6.
    assert!(has(&labels, "6") && !has(&labels, "6.5"), "{labels:?}");
    fs::remove_file(d.join("x.svg")).unwrap();
    refused(
        d,
        &["t.json", "--ll-at", "3", "--out", "x.svg"],
        "t.json (report 1)",
        "no lower-level steps recorded at upper iteration 3 (recorded: 0, 4;",
    );
    toy_report(d, "plain.json", "--ul-iters 8");
    refused(
        d,
        &["plain.json", "--ll-at", "0", "--out", "x.svg"],
        "plain.json (report 1)",
        "(recorded: none; bda toy --ll-trace records them)",
    );
}

#[test]
fn a_path_in_a_plane_with_the_optimum_marked() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    toy_report(d, "t.json", "--K 16 --ul-iters 30 --record-iterates --y0 2");
    let args = [
        "t.json",
        "--plane",
        "x[0],y[1]",
        "--mark",
        "1,1",
        "--dashed",
        "rhg",
        "--out",
        "x.svg",
    ];
    let (svg, labels) = svg_labels(d, &args);
    for want in [
        "the iterates in the plane (x[0], y[1])",
        "x[0]",
        "optimum",
        "bda",
        "rhg",
    ] {
        assert!(has(&labels, want), "{want}: {labels:?}");
    }
    // The plane alone: no history panel, value ticks (not iterations) on the x axis.
    assert!(
        !has(&labels, "upper iteration") && !has(&labels, "|F − F*|"),
        "{labels:?}"
    );
    assert!(labels.iter().any(|l| l.contains('.')), "{labels:?}");
    // RHG dashed: its line is drawn in pieces.
    let (solid, _) = svg_labels(
        d,
        &["t.json", "--plane", "x_mean,free_mean", "--out", "x.svg"],
    );
    assert!(svg.matches("<polyline").count() > solid.matches("<polyline").count() + 5);
    // With --metrics, the history panels come first.
    let (_, labels) = svg_labels(
        d,
        &[
            "t.json",
            "--metrics",
            "phi_gap",
            "--plane",
            "x_mean,free_mean",
            "--out",
            "x.svg",
        ],
    );
    assert!(
        has(&labels, "|φ_K(x) − φ*(x)|") && has(&labels, "x_mean"),
        "{labels:?}"
    );
    fs::remove_file(d.join("x.svg")).unwrap();
    for (args, what) in [
        (
            vec!["t.json", "--mark", "1,1", "--out", "x.svg"],
            "--mark: marks a point of the --plane panel",
        ),
        (
            vec![
                "t.json",
                "--plane",
                "x[0],y[1]",
                "--mark",
                "1",
                "--out",
                "x.svg",
            ],
            "--mark: expected two finite numbers",
        ),
        (
            vec!["t.json", "--plane", "x[0]", "--out", "x.svg"],
            "--plane: expected two history keys",
        ),
        (
            vec![
                "t.json",
                "--plane",
                "x[0],y[1]",
                "--ll-at",
                "0",
                "--out",
                "x.svg",
            ],
            "give one of them",
        ),
    ] {
        refused(d, &args, "--", what);
    }
    refused(
        d,
        &["t.json", "--plane", "x[0],y[7]", "--out", "x.svg"],
        "t.json (report 1)",
        "--plane: no \"y[7]\" in the history",
    );
}

#[test]
fn a_long_legend_gets_a_cell_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut files = Vec::new();
    for i in 0..6 {
        let name = format!("t{i}.json");
        toy_report(d, &name, &format!("--K 4 --ul-iters 5 --x0 {i}"));
        files.push(name);
    }
    let mut args: Vec<&str> = files.iter().map(String::as_str).collect();
    args.extend(["--metrics", "x_err", "--dashed", "rhg", "--out", "x.svg"]);
    let (svg, labels) = svg_labels(d, &args);
    for i in 0..6 {
        for m in ["bda", "rhg"] {
            let want = format!("{m} x0={i}");
            assert!(has(&labels, &want), "{want}: {labels:?}");
        }
    }
    // One panel and the legend beside it: two columns.
    assert!(svg.contains("width=\"960\""), "{}", &svg[..200]);
}
