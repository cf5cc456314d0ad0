//! End-to-end tests of `bda toy`.

use bda_testkit::report::argv;
use serde_json::Value;

/// `bda ARGS`: exit code, stdout, stderr.
fn bda(args: &[&str]) -> (i32, String, String) {
    bda_testkit::report::run_text(std::path::Path::new(env!("CARGO_BIN_EXE_bda")), args)
}

/// The runs of the one JSON report `stdout` holds.
fn runs(stdout: &str) -> Vec<Value> {
    let report: Value = serde_json::from_str(stdout).expect("one JSON report");
    report["runs"].as_array().expect("runs").clone()
}

#[test]
fn icml_counter_example_through_the_cli() {
    for (y0, rhg_x) in [("0,0", 0.5), ("2,2", 1.5)] {
        let (code, out, err) = bda(&[
            "toy",
            "--example",
            "icml",
            "--K",
            "256",
            "--y0",
            y0,
            "--json",
        ]);
        assert_eq!(code, 0, "{err}");
        let report: Value = serde_json::from_str(&out).unwrap();
        for key in argv("command config example n K seed runs") {
            assert!(report.get(key).is_some(), "missing {key} in the report");
        }
        let runs = runs(&out);
        assert_eq!(runs.len(), 2);
        for key in argv("method ul_iters x y upper lower_gap x_err y_err seconds history") {
            assert!(runs[0].get(key).is_some(), "missing {key} in {}", runs[0]);
        }
        assert_eq!(runs[0]["method"], "bda");
        assert!(runs[0]["x_err"].as_f64().unwrap() < 0.05, "{}", runs[0]);
        assert_eq!(runs[1]["method"], "rhg");
        let x = runs[1]["x"][0].as_f64().unwrap();
        assert!((x - rhg_x).abs() < 1e-3, "RHG from y0 = {y0}: x = {x}");
    }
}

#[test]
fn remark4_gives_one_half() {
    let (code, out, err) = bda(&argv("toy --example remark4 --eps 0.5 --method rhg --json"));
    assert_eq!(code, 0, "{err}");
    let x = runs(&out)[0]["x"][0].as_f64().unwrap();
    assert!((x - 0.5).abs() < 1e-3, "x = {x}");
}

#[test]
fn tpami_small_n_runs_and_bda_beats_rhg() {
    let (code, out, err) = bda(&argv("toy --example tpami --n 5 --json --ul-iters 400"));
    assert_eq!(code, 0, "{err}");
    let runs = runs(&out);
    let (b, r) = (
        runs[0]["x_err"].as_f64().unwrap(),
        runs[1]["x_err"].as_f64().unwrap(),
    );
    assert_eq!(runs[0]["x"].as_array().unwrap().len(), 5);
    assert_eq!(runs[0]["y"].as_array().unwrap().len(), 10);
    assert!(b < 0.5 * r, "BDA {b} vs RHG {r}");
}

#[test]
fn same_seed_same_json() {
    let strip = |s: &str| bda_testkit::report::without_timings(&serde_json::from_str(s).unwrap());
    let args = argv("toy --x0 random --y0 random --seed 7 --json --ul-iters 20");
    let (a, b) = (bda(&args), bda(&args));
    assert_eq!(strip(&a.1), strip(&b.1));
    let (_, c, _) = bda(&argv(
        "toy --x0 random --y0 random --seed 8 --json --ul-iters 20",
    ));
    assert_ne!(strip(&a.1), strip(&c));
}

#[test]
fn plot_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("curves.svg");
    let (code, _, err) = bda(&["toy", "--ul-iters", "50", "--plot", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let svg = std::fs::read_to_string(&path).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("BDA (K=64)") && svg.contains("RHG (K=64)"));
    assert!(svg.contains("<polyline") || svg.contains("<path"));
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    let cases: &[&[&str]] = &[
        &["toy", "--x0", "1,2"],
        &["toy", "--y0", "abc"],
        &["toy", "--example", "tpami", "--n", "7"],
        &["toy", "--mu", "1.5"],
        &["toy", "--sl", "-1"],
        &["toy", "--example", "remark4", "--eps", "0"],
        &["toy", "--proj-y", "box:1"],
        &["toy", "--beta", "often"],
        &["toy", "--ul-lr", "0"],
    ];
    for args in cases {
        let (code, out, err) = bda(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("bda: "), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(err.contains(args[args.len() - 2]), "names the flag: {err}");
    }
}

#[test]
fn a_plot_of_no_iterations_is_refused_before_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("curves.svg");
    let (code, out, err) = bda(&["toy", "--ul-iters", "0", "--plot", path.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(out.is_empty() && err.contains("--ul-iters 0"), "{err}");
    assert!(!path.exists());
}

#[test]
fn a_closed_pipe_ends_quietly() {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_bda"))
        .args(["toy", "--example", "tpami", "--n", "100", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read a little, then close the pipe (as `| head -c 100` does): the report (hundreds of
    // kilobytes) is larger than a pipe's buffer, so the write meets the closed pipe.
    let mut first = [0u8; 100];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.is_empty(), "nothing on stderr: {err}");
    assert!(!out.status.success(), "ended by SIGPIPE, as any filter");
}

#[test]
fn divergence_is_reported_with_the_iteration() {
    let (code, _, err) = bda(&["toy", "--method", "rhg", "--sl", "3", "--K", "5000"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("upper iteration 0") && err.contains("lower step"),
        "{err}"
    );
}
