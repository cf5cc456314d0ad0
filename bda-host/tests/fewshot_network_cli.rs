//! `bda fewshot` with the whole network as the lower level (MAML, first-order MAML,
//! Meta-SGD, Reptile, iMAML, BDA on the whole network): every method trains, tests and
//! reports; the same seed gives the same JSON on 1 and 2 threads and with checkpoints in
//! the reverse pass; checkpoints resume bit for bit and evaluate; reports replay; bad
//! values are one line naming the flag.

use std::path::Path;
use std::process::Output;

use bda_testkit::report::{argv, fixture, json, one_line_error, run, without_timings};

fn bda(args: &[&str]) -> Output {
    run(Path::new(env!("CARGO_BIN_EXE_bda")), args, &[])
}

const TINY: &str = "fewshot --synthetic --channels 4 --ways 3 --shots 1 --queries 2 --meta-batch 3 --episodes 6 --val-every 2 --val-episodes 3 --quiet --json";

/// A run of `TINY` with `extra`, 3 meta-steps of K = 2 unless `extra` says otherwise.
fn train(extra: &str) -> serde_json::Value {
    let mut args = argv(TINY);
    args.extend(argv(extra));
    for (flag, default) in [("--ul-iters", "3"), ("--K", "2")] {
        if !extra.contains(flag) {
            args.extend([flag, default]);
        }
    }
    json(&bda(&args))
}

#[test]
fn every_method_trains_and_is_the_same_on_any_threads() {
    for method in ["maml", "fomaml", "metasgd", "reptile", "imaml", "bda-net"] {
        let one = train(&format!("--method {method} --threads 1"));
        let two = train(&format!("--method {method} --threads 2"));
        assert_eq!(one["method"], method);
        assert_eq!(one["config"]["method"], method);
        let acc = one["test_acc"].as_f64().unwrap();
        assert!((0.0..=100.0).contains(&acc), "{method}: {acc}");
        let loss = one["ul_loss"].as_f64().unwrap();
        assert!(loss.is_finite() && loss > 0.0, "{method}: {loss}");
        // The whole network's default inner step is the peer's.
        assert_eq!(one["config"]["ll_lr"], 0.4, "{method}");
        let strip = |mut v: serde_json::Value| {
            v["config"]["threads"] = 0.into();
            without_timings(&v)
        };
        assert_eq!(strip(one), strip(two), "{method}: 1 and 2 threads");
    }
}

#[test]
fn first_order_maml_is_fomaml_and_checkpoints_change_no_bit() {
    let fo = train("--method maml --first-order");
    let plain = train("--method fomaml");
    assert_eq!(fo["method"], "fomaml");
    assert_eq!(fo["test_acc"], plain["test_acc"]);
    assert_eq!(fo["history"], plain["history"]);
    for method in ["maml", "bda-net"] {
        let full = train(&format!("--method {method} --K 4"));
        let ck = train(&format!("--method {method} --K 4 --checkpoint-every 2"));
        assert_eq!(ck["config"]["checkpoint_every"], 2);
        assert_eq!(full["history"], ck["history"], "{method}");
        assert_eq!(full["test_acc"], ck["test_acc"], "{method}");
    }
}

#[test]
fn checkpoints_resume_evaluate_and_replay() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    for method in ["maml", "metasgd"] {
        let (full, half, resumed) = (p("full.ckpt"), p("half.ckpt"), p("resumed.ckpt"));
        train(&format!("--method {method} --ul-iters 4 --save {full}"));
        train(&format!("--method {method} --ul-iters 2 --save {half}"));
        let r = json(&bda(&argv(&format!(
            "fewshot --resume {half} --ul-iters 4 --save {resumed} --quiet --json"
        ))));
        assert_eq!(r["ul_iters"], 4);
        let load = |f: &str| -> serde_json::Value {
            serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap()
        };
        let (a, b) = (load(&full), load(&resumed));
        assert_eq!(a["params"], b["params"], "{method}");
        assert_eq!(a["history"], b["history"], "{method}");
        // Backbone (4 blocks of 4 channels on 28×28: 16 features), head (3 ways), and
        // for Meta-SGD a step size per weight.
        let arch_params = 4 * 9 + 3 * 4 * 4 * 9 + 4 * 2 * 4;
        let weights = arch_params + 3 * (16 + 1);
        let want = if method == "metasgd" {
            2 * weights
        } else {
            weights
        };
        assert_eq!(a["params"].as_array().unwrap().len(), want, "{method}");

        let e = json(&bda(&argv(&format!(
            "fewshot eval --checkpoint {full} --episodes 5 --synthetic --quiet --json"
        ))));
        assert_eq!(e["method"], method);
        let acc = e["test_acc"].as_f64().unwrap();
        assert!((0.0..=100.0).contains(&acc));
        let wrong = bda(&argv(&format!(
            "fewshot eval --checkpoint {full} --ways 5 --episodes 5 --synthetic --quiet"
        )));
        assert!(one_line_error(&wrong, 2).contains("--ways 5"));
    }
    // The report replays.
    let report = p("report.json");
    let want = train("--method imaml --lambda 1.5 --cg-iters 3");
    assert_eq!(want["config"]["lambda"], 1.5);
    assert_eq!(want["config"]["cg_iters"], 3);
    std::fs::write(&report, serde_json::to_vec(&want).unwrap()).unwrap();
    let got = json(&bda(&argv(&format!(
        "fewshot --config {report} --quiet --json"
    ))));
    assert_eq!(without_timings(&got), without_timings(&want));
}

#[test]
fn trains_on_the_omniglot_fixture() {
    let dir = fixture("omniglot-tiny");
    let r = json(&bda(&argv(&format!(
        "fewshot --data-dir {} --method maml --channels 4 --ways 3 --queries 2 --meta-batch 2 --ul-iters 2 --episodes 4 --val-every 0 --quiet --json",
        dir
    ))));
    assert_eq!(r["method"], "maml");
    assert!(r["test_acc"].as_f64().unwrap() >= 0.0);
}

#[test]
fn bad_values_name_the_flag() {
    for (args, flag) in [
        ("--method imaml --lambda 0", "--lambda 0"),
        ("--method imaml --lambda nan", "--lambda NaN"),
        ("--method imaml --cg-iters 0", "--cg-iters 0"),
        ("--method bda --first-order", "--first-order"),
        ("--method maml --checkpoint-every 0", "--checkpoint-every 0"),
        ("--method maml --inner-lr -1", "-1"),
    ] {
        let mut a = argv(TINY);
        a.extend(argv(args));
        let line = one_line_error(&bda(&a), 2);
        assert!(line.contains(flag), "{args}: {line}");
    }
}

/// iMAML's CG stops at non-positive curvature are recorded in the history (the meta-step's
/// count of tasks), kept by a checkpoint, and never appear for MAML.
#[test]
fn cg_stops_are_recorded_in_the_history() {
    let stops = |r: &serde_json::Value| -> Vec<u64> {
        r["history"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|h| h["cg_negative_curvature"].as_u64())
            .collect()
    };
    // λ = 0.05 on random weights: the support Hessian's negative curvature dominates.
    let imaml = train("--ul-iters 3 --method imaml --lambda 0.05 --threads 1");
    let got = stops(&imaml);
    assert_eq!(got.len(), 3, "{imaml}");
    assert!(got.iter().all(|&n| (1..=3).contains(&n)), "{got:?}");
    let maml = train("--ul-iters 3 --method maml --threads 1");
    assert!(stops(&maml).is_empty(), "{maml}");
    // A run resumed from its second meta-step's checkpoint reports the same stops.
    let dir = tempfile::tempdir().unwrap();
    let half = dir.path().join("half.ckpt");
    let half = half.to_str().unwrap();
    train(&format!(
        "--ul-iters 2 --method imaml --lambda 0.05 --threads 1 --save {half}"
    ));
    let resumed = json(&bda(&argv(&format!(
        "fewshot --resume {half} --ul-iters 3 --quiet --json"
    ))));
    assert_eq!(stops(&resumed), got, "{resumed}");
}
