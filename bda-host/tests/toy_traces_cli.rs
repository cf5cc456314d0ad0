//! `bda toy`'s records for the papers' figures: T-RHG, the lower-level steps at chosen
//! upper iterations, the iterates, and the y*(x) quantities.

use bda_testkit::report::{argv, failure, run};
use serde_json::Value;

fn toy(args: &str) -> Value {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_bda"));
    let full = format!("toy --json {args}");
    let out = run(bin, &argv(&full), &[]);
    let (code, err) = failure(&out);
    assert_eq!(code, 0, "{args}: {err}");
    serde_json::from_slice(&out.stdout).expect("one JSON report")
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn all_runs_bda_rhg_and_trhg_and_trhg_differs_from_rhg() {
    let r = toy("--example tpami --n 3 --K 8 --ul-iters 30 --method all --truncate 2");
    let runs = r["runs"].as_array().unwrap();
    let methods: Vec<&str> = runs.iter().map(|r| r["method"].as_str().unwrap()).collect();
    assert_eq!(methods, ["bda", "rhg", "trhg"]);
    assert_eq!(runs[2]["truncate"], 2);
    assert!(runs[1].get("truncate").is_none(), "{}", runs[1]);
    assert_eq!(r["config"]["truncate"], 2);
    // Same lower-level steps, another hypergradient: another path from the first step on.
    let (rhg, trhg) = (&runs[1]["history"], &runs[2]["history"]);
    assert_eq!(rhg[0]["upper"], trhg[0]["upper"]);
    assert_ne!(rhg[0]["grad_norm"], trhg[0]["grad_norm"]);
    assert_ne!(runs[1]["x"], runs[2]["x"]);
    // T = K is RHG.
    let full = toy("--example tpami --n 3 --K 8 --ul-iters 30 --method trhg --truncate 8");
    assert_eq!(full["runs"][0]["x"], runs[1]["x"]);
}

#[test]
fn lower_level_traces_end_where_the_history_says() {
    for start in ["--warm-start", "--no-warm-start"] {
        let r = toy(&format!(
            "--example tpami --n 2 --K 6 --ul-iters 12 --method both --ll-trace 0,5,12 {start}"
        ));
        for run in r["runs"].as_array().unwrap() {
            let traces = run["ll_history"].as_array().unwrap();
            let at: Vec<u64> = traces
                .iter()
                .map(|t| t["ul_iter"].as_u64().unwrap())
                .collect();
            assert_eq!(at, [0, 5, 12], "{start}");
            for t in traces {
                let steps = t["steps"].as_array().unwrap();
                assert_eq!(steps.len(), 7, "k = 0..=K");
                assert_eq!(steps[0]["ll_iter"], 0);
                let row = &run["history"][t["ul_iter"].as_u64().unwrap() as usize];
                let end = &steps[6];
                // The replayed K-th step is the solver's y_K, bit for bit.
                for key in ["upper", "lower_gap", "y_err", "y_best_err"] {
                    assert_eq!(end[key], row[key], "{start} {} {key}", run["method"]);
                }
            }
        }
    }
}

#[test]
fn the_best_lower_solution_and_the_figures_quantities() {
    let r = toy("--example icml --K 16 --ul-iters 40 --method both --record-iterates --y0 2");
    for run in r["runs"].as_array().unwrap() {
        for h in run["history"].as_array().unwrap() {
            let (x, y) = (h["x"].as_array().unwrap(), h["y"].as_array().unwrap());
            assert_eq!((x.len(), y.len()), (1, 2));
            let (x, y1, y2) = (f(&x[0]), f(&y[0]), f(&y[1]));
            // y*(x) = (x, x) and φ*(x) = F(x, y*(x)) = ½(x − 1)² on Example 1.
            let best = ((y1 - x).powi(2) + (y2 - x).powi(2)).sqrt();
            assert!((f(&h["y_best_err"]) - best).abs() < 1e-12, "{h}");
            assert!(
                (f(&h["phi_star"]) - 0.5 * (x - 1.0).powi(2)).abs() < 1e-12,
                "{h}"
            );
            assert!((f(&h["phi_gap"]) - (f(&h["upper"]) - f(&h["phi_star"])).abs()).abs() < 1e-12);
            assert!(
                (f(&h["x_err_sq_rel"]) - (x - 1.0).powi(2)).abs() < 1e-12,
                "{h}"
            );
            let y_rel = ((y1 - 1.0).powi(2) + (y2 - 1.0).powi(2)) / 2.0;
            assert!((f(&h["y_err_sq_rel"]) - y_rel).abs() < 1e-12, "{h}");
            assert_eq!((f(&h["x_mean"]), f(&h["free_mean"])), (x, y2));
        }
    }
    // RHG never moves y₂ (the lower level leaves it free): its path stays at y₂ = 2.
    let rhg = &r["runs"][1]["history"];
    assert!(
        rhg.as_array()
            .unwrap()
            .iter()
            .all(|h| f(&h["free_mean"]) == 2.0)
    );
    // Without --record-iterates, no iterates.
    let plain = toy("--example icml --ul-iters 3");
    assert!(plain["runs"][0]["history"][0].get("x").is_none());
    assert!(plain["runs"][0].get("ll_history").is_none());
}

#[test]
fn bad_truncation_and_traces_are_one_line_errors() {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_bda"));
    for (args, want) in [
        (
            "toy --method trhg --K 8 --truncate 9",
            "--truncate 9: must lie in 1..=K (K = 8)",
        ),
        (
            "toy --method trhg --truncate 0",
            "--truncate 0: must lie in 1..=K (K = 64)",
        ),
        (
            "toy --ul-iters 10 --ll-trace 3,11",
            "--ll-trace 11: after the last upper iteration (--ul-iters 10)",
        ),
        ("toy --ll-trace x", "--ll-trace"),
    ] {
        let out = run(bin, &argv(args), &[]);
        let (code, err) = failure(&out);
        assert_eq!(code, 2, "{args}: {err}");
        assert_eq!(err.lines().count(), 1, "{args}: {err}");
        assert!(err.contains(want), "{args}: {err}");
    }
}
