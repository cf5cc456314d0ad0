//! Replayable reports: every command's JSON report records its effective configuration, and
//! `--config REPORT` reproduces the report's results exactly (timings aside); options given
//! on the command line win; a bad config file is one line naming the key, exit 2.

use std::path::{Path, PathBuf};

use bda_testkit::report::{argv, failure, fixture, json_lines, run, without_timings};
use serde_json::Value;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_bda"))
}

/// Run `args`, write stdout (the JSON report) to `dir/name` and return the reports.
fn record(dir: &Path, name: &str, args: &[&str]) -> (PathBuf, Vec<Value>) {
    let out = run(bin(), args, &[]);
    let reports = json_lines(&out);
    let path = dir.join(name);
    std::fs::write(&path, &out.stdout).unwrap();
    (path, reports)
}

/// `bda <command> --config FILE --json --quiet` gives the same reports, timings aside.
fn replays(command: &[&str], file: &Path, want: &[Value]) {
    let mut args = command.to_vec();
    args.extend(["--config", file.to_str().unwrap(), "--json", "--quiet"]);
    let got = json_lines(&run(bin(), &args, &[]));
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert_eq!(without_timings(g), without_timings(w), "{command:?}");
    }
}

#[test]
fn toy_reports_replay() {
    let dir = tempfile::tempdir().unwrap();
    let (file, want) = record(
        dir.path(),
        "toy.jsonl",
        &argv("toy --example icml --K 16 --ul-iters 40 --y0 2,2 --json"),
    );
    assert_eq!(want.len(), 1, "one report");
    assert_eq!(
        want[0]["runs"].as_array().unwrap().len(),
        2,
        "one run per method"
    );
    let config = &want[0]["config"];
    // Every option is recorded, the example's defaults included.
    for key in [
        "example", "K", "ul_iters", "ul_lr", "mu", "alpha", "schedule", "beta", "su", "sl", "y0",
        "seed",
    ] {
        assert!(!config[key].is_null(), "{key} missing in {config}");
    }
    assert_eq!(config["ul_lr"], 0.5);
    assert_eq!(want[0]["command"], "toy");
    assert_eq!(want[0]["version"], env!("CARGO_PKG_VERSION"));
    assert!(!want[0]["runs"][0]["history"].as_array().unwrap().is_empty());
    replays(&["toy"], &file, &want);
}

fn hyperclean_args(dir: &str) -> Vec<&str> {
    vec![
        "hyperclean",
        "--data-dir",
        dir,
        "--n-train",
        "100",
        "--n-val",
        "100",
        "--K",
        "5",
        "--ul-iters",
        "3",
        "--method",
        "trhg",
        "--quiet",
        "--json",
    ]
}

#[test]
fn hyperclean_reports_replay_and_the_command_line_wins() {
    let dir = tempfile::tempdir().unwrap();
    let data = fixture("fmnist-tiny");
    let (file, want) = record(dir.path(), "run.json", &hyperclean_args(&data));
    let c = &want[0]["config"];
    // Derived defaults are written out: T = K/2, s_u = s_l = ll-lr.
    assert_eq!(c["truncate"], 2);
    assert_eq!(c["su"], c["ll_lr"]);
    assert_eq!(c["data_dir"], data.as_str());
    assert_eq!(want[0]["data"]["files"], 4);
    replays(&["hyperclean"], &file, &want);
    // An option given on the command line wins over the file.
    let out = run(
        bin(),
        &[
            "hyperclean",
            "--config",
            file.to_str().unwrap(),
            "--seed",
            "5",
            "--json",
        ],
        &[],
    );
    let v = &json_lines(&out)[0];
    assert_eq!(v["config"]["seed"], 5);
    assert_eq!(v["config"]["method"], "trhg");
    assert_ne!(v["test_acc"], Value::Null);
}

#[test]
fn fewshot_training_and_evaluation_reports_replay() {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("run.ckpt");
    let data = fixture("omniglot-tiny");
    let (file, want) = record(
        dir.path(),
        "train.json",
        &[
            argv("fewshot --data-dir"),
            vec![data.as_str()],
            argv("--channels 4 --ways 3 --shots 1 --queries 2 --meta-batch 2 --ul-iters 3 --episodes 6 --val-every 2 --val-episodes 2 --quiet --json --save"),
            vec![ck.to_str().unwrap()],
        ]
        .concat(),
    );
    assert_eq!(want[0]["config"]["truncate"], 2, "T = K/2 written out");
    assert_eq!(want[0]["data"]["sha256"].as_str().unwrap().len(), 64);
    replays(&["fewshot"], &file, &want);
    let (file, want) = record(
        dir.path(),
        "eval.json",
        &[
            "fewshot",
            "eval",
            "--checkpoint",
            ck.to_str().unwrap(),
            "--episodes",
            "6",
            "--quiet",
            "--json",
        ],
    );
    // The checkpoint's settings are recorded as the values used.
    assert_eq!(want[0]["config"]["ways"], 3);
    assert_eq!(want[0]["command"], "fewshot eval");
    replays(&["fewshot", "eval"], &file, &want);
}

#[test]
fn bad_config_files_are_one_line_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let toy_report = {
        let out = run(bin(), &["toy", "--ul-iters", "2", "--json"], &[]);
        assert!(out.status.success());
        write("toy.jsonl", &String::from_utf8_lossy(&out.stdout))
    };
    let cases: [(&str, PathBuf, &str); 7] = [
        (
            "toy",
            write("a.json", r#"{"mu": 0.3, "muu": 1}"#),
            "unknown key \"muu\"",
        ),
        ("toy", write("b.json", r#"{"K": "ten"}"#), "key \"K\""),
        (
            "toy",
            write("c.json", r#"{"example": "tpamii"}"#),
            "key \"example\"",
        ),
        ("toy", write("d.json", r#"{"json": true}"#), "output option"),
        ("toy", write("e.json", "not json"), "not JSON"),
        ("hyperclean", toy_report, "a report of `bda toy`"),
        ("toy", dir.path().join("missing.json"), "cannot read"),
    ];
    for (command, path, needle) in cases {
        let out = run(bin(), &[command, "--config", path.to_str().unwrap()], &[]);
        let (code, err) = failure(&out);
        assert_eq!(code, 2, "{path:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains("--config") && err.contains(needle),
            "{needle}: {err}"
        );
    }
    // A hand-written file with the same keys works.
    let p = write(
        "hand.json",
        r#"{"example": "icml", "K": 8, "ul_iters": 5, "method": "bda"}"#,
    );
    let out = run(
        bin(),
        &["toy", "--config", p.to_str().unwrap(), "--json"],
        &[],
    );
    let v = json_lines(&out);
    assert_eq!(v.len(), 1);
    assert_eq!(
        (v[0]["K"].clone(), v[0]["runs"][0]["ul_iters"].clone()),
        (8.into(), 5.into())
    );
    assert_eq!(
        v[0]["runs"].as_array().unwrap().len(),
        1,
        "--method bda: one run"
    );
}
