//! End-to-end tests of `bda hyperclean` on the tiny IDX fixtures (no system dataset).

use std::process::{Command, Output};

use bda_testkit::report::{argv, fixture, json as json_of, one_line_error};

const BDA: &str = env!("CARGO_BIN_EXE_bda");

/// `bda hyperclean` on fmnist-tiny with small sizes, plus `extra` flags (which replace
/// the defaults of the same name).
fn run(extra: &[&str]) -> Output {
    let dir = fixture("fmnist-tiny");
    let base = [
        ("--data-dir", dir.as_str()),
        ("--n-train", "100"),
        ("--n-val", "100"),
        ("--K", "5"),
        ("--truncate", "2"),
        ("--ul-iters", "3"),
        ("--ll-lr", "0.3"),
        ("--ul-lr", "0.1"),
    ];
    let mut args = vec!["hyperclean", "--quiet"];
    for (flag, value) in base {
        let overridden = extra
            .iter()
            .any(|e| *e == flag || e.starts_with(&format!("{flag}=")));
        if !overridden {
            args.extend([flag, value]);
        }
    }
    args.extend_from_slice(extra);
    Command::new(BDA).args(&args).output().expect("bda runs")
}

/// The JSON report of `bda hyperclean --data-dir <fixture> <flags> --json --quiet` (no
/// defaults added), and the fixture's path.
fn json_on(name: &str, flags: &str) -> (String, serde_json::Value) {
    let dir = fixture(name);
    let args = [
        argv("hyperclean --json --quiet --data-dir"),
        vec![dir.as_str()],
        argv(flags),
    ]
    .concat();
    let out = Command::new(BDA).args(&args).output().expect("bda runs");
    let v = json_of(&out);
    (dir, v)
}

/// The one-line error and the exit code of a failing run.
fn failure(out: &Output) -> (i32, String) {
    let code = out.status.code().unwrap_or(-1);
    (code, one_line_error(out, code))
}

#[test]
fn bda_reports_the_required_fields() {
    let v = json_of(&run(&["--method", "bda", "--json"]));
    for key in argv(
        "dataset method K ul_iters val_acc test_acc test_f1 clean_f1 seconds s_per_ul_iter seed",
    ) {
        assert!(v.get(key).is_some(), "missing {key} in {v}");
    }
    assert_eq!(v["method"], "bda");
    assert_eq!(v["K"], 5);
    assert_eq!(v["ul_iters"], 3);
    assert_eq!(v["n_test"], 100);
    for key in ["val_acc", "test_acc", "test_f1", "clean_f1"] {
        let x = v[key].as_f64().unwrap();
        assert!((0.0..=100.0).contains(&x), "{key} = {x}");
    }
    // One record per upper iteration, then the final state's.
    let h = v["history"].as_array().unwrap();
    assert_eq!(h.len(), 4);
    assert_eq!(h[3]["ul_iter"], 3);
    assert_eq!(h[3]["ul_loss"], v["ul_loss"]);
    assert_eq!(
        h[3]["val_acc"]
            .as_f64()
            .map(|a| (a * 100.0).round() / 100.0),
        v["val_acc"].as_f64()
    );
    assert!(v["n_flagged"].as_u64().unwrap() <= 100);
}

#[test]
fn same_seed_same_json_except_timings() {
    // Timings, and the options whose whole point is not to change results.
    let strip = |v: serde_json::Value| {
        let mut v = bda_testkit::report::without_timings(&v);
        v.as_object_mut().unwrap().remove("threads");
        let config = v["config"].as_object_mut().unwrap();
        config.remove("threads");
        config.remove("no_prob_cache");
        v
    };
    let a = strip(json_of(&run(&["--json", "--seed", "7"])));
    let b = strip(json_of(&run(&["--json", "--seed", "7", "--threads", "1"])));
    assert_eq!(a, b);
    let c = strip(json_of(&run(&["--json", "--seed", "8"])));
    assert_ne!(a, c, "another seed gives another split");
    // the softmax cache changes memory and time, not results
    let d = strip(json_of(&run(&["--json", "--seed", "7", "--no-prob-cache"])));
    assert_eq!(a, d);
}

#[test]
fn every_row_runs() {
    for m in ["rhg", "trhg", "ihg", "obda", "noclean", "oracle"] {
        let v = json_of(&run(&["--method", m, "--json"]));
        assert_eq!(v["method"], m);
        let iters = if m == "noclean" || m == "oracle" {
            0
        } else {
            3
        };
        assert_eq!(v["ul_iters"], iters, "{m}");
    }
    let oracle = json_of(&run(&["--method", "oracle", "--json"]));
    assert_eq!(oracle["clean_f1"], 100.0);
}

#[test]
fn table_and_plot() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("curves.svg");
    let out = run(&["--plot", svg.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("test acc") && table.contains("bda"),
        "{table}"
    );
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<svg") && text.contains("validation accuracy"));
}

#[test]
fn bad_flags_are_one_line_exit_2() {
    let cases: &[(&[&str], &str)] = &[
        (&["--K", "0"], "--K"),
        (&["--method", "sgd"], "--method"),
        (&["--mu", "1.5"], "--mu"),
        (&["--ll-lr=-1"], "--ll-lr"),
        (&["--ul-lr", "nan"], "--ul-lr"),
        (&["--noise", "2"], "--noise"),
        (&["--n-train", "290"], "--n-train"),
        (&["--n-val", "0"], "--n-val"),
        (&["--truncate", "9"], "--truncate"),
        (&["--device", "tpu"], "--device"),
        (
            &["--device", "cuda:0"],
            "--device cuda:0: no CUDA driver found",
        ),
        (&["--plot", "/nonexistent-dir/x.svg"], "--plot"),
        (&["--plot", "curves.png"], "--plot"),
        (&["--optimizer", "lbfgs"], "--optimizer"),
    ];
    for (extra, needle) in cases {
        let mut args = vec!["--method", "trhg"];
        args.extend_from_slice(extra);
        let (code, err) = failure(&run(&args));
        assert_eq!(code, 2, "{extra:?}: {err}");
        assert!(err.contains(needle), "{extra:?}: {err}");
    }
}

#[test]
fn bad_data_is_one_line_exit_2() {
    for (dir, needle) in [
        ("does-not-exist".to_string(), "does-not-exist"),
        (fixture("bad-idx/dims-mixed"), "27x27"),
        (fixture("bad-idx/missing-test"), "t10k"),
        (fixture("bad-idx/count-mismatch"), "labels"),
    ] {
        let out = Command::new(BDA)
            .args(["hyperclean", "--quiet", "--data-dir", &dir])
            .output()
            .unwrap();
        let (code, err) = failure(&out);
        assert_eq!(code, 2, "{dir}: {err}");
        assert!(err.contains(needle), "{dir}: {err}");
    }
}

#[test]
fn divergence_names_the_upper_iteration_and_lower_step() {
    let (code, err) = failure(&run(&["--method", "rhg", "--ll-lr", "1e38"]));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("upper iteration 0") && err.contains("step"),
        "{err}"
    );
}

#[test]
fn mnist_fixture_and_dataset_name() {
    let (dir, v) = json_on(
        "mnist-tiny",
        "--dataset mnist --n-train 50 --n-val 50 --K 4 --ul-iters 2 --method ihg --cg-iters 3",
    );
    // The data is named by what was read: the folder, whatever --dataset says.
    assert_eq!(v["dataset"], dir.as_str());
    assert_eq!(v["data"]["path"], dir.as_str());
    assert_eq!(v["data"]["files"], 4);
    assert_eq!(v["n_test"], 50);
}

#[test]
fn trhg_truncates_to_half_of_k_by_default() {
    let (_, v) = json_on(
        "fmnist-tiny",
        "--n-train 60 --n-val 60 --method trhg --K 10 --ul-iters 1",
    );
    assert_eq!(v["truncate"], 5);
    assert_eq!(v["config"]["truncate"], 5);
    let help = Command::new(BDA)
        .args(["hyperclean", "--help"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("default: K/2"));
}

#[test]
fn checkpointed_runs_equal_full_tape_runs() {
    let strip = |mut v: serde_json::Value| {
        v["config"]["checkpoint_every"] = serde_json::Value::Null;
        bda_testkit::report::without_timings(&v)
    };
    for method in ["bda", "trhg"] {
        let full = json_of(&run(&[
            "--method",
            method,
            "--checkpoint-every",
            "0",
            "--json",
        ]));
        assert_eq!(full["config"]["checkpoint_every"], 0);
        let ck = json_of(&run(&[
            "--method",
            method,
            "--checkpoint-every",
            "2",
            "--json",
        ]));
        assert_eq!(ck["config"]["checkpoint_every"], 2);
        assert_eq!(strip(full), strip(ck), "{method}");
    }
    // The default at these sizes keeps every iterate.
    let auto = json_of(&run(&["--json"]));
    assert_eq!(auto["config"]["checkpoint_every"], 0);
    // A tape of 801 iterates of 2 MiB does not fit in the 1 GiB budget: ⌈√800⌉ = 29.
    use bda_host::hyperclean::args::auto_checkpoint;
    assert_eq!(auto_checkpoint(800, 2 << 20), 29);
    assert_eq!(auto_checkpoint(50, 2 << 20), 0);
}

#[test]
fn other_image_sizes_and_class_counts_and_the_weights_file() {
    // 12×12 images of 3 classes: both classifiers train, and --weights-out lists every
    // training sample with what the run learned about it.
    let dir = tempfile::tempdir().unwrap();
    for model in ["--model linear", "--model mlp --hidden 16"] {
        let csv = dir.path().join("w.csv");
        let flags = format!(
            "--n-train 80 --n-val 60 --K 10 --ul-iters 3 {model} --weights-out {}",
            csv.display()
        );
        let (_, v) = json_on("shapes-12x12", &flags);
        assert_eq!(v["n_test"], 70, "{model}");
        let text = std::fs::read_to_string(&csv).unwrap();
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some("file,index,label,weight,flagged_noisy,corrupted")
        );
        let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
        assert_eq!(rows.len(), 80, "{model}: one row per training sample");
        let count = |col: usize| rows.iter().filter(|r| r[col] == "1").count();
        assert_eq!(count(4) as u64, v["n_flagged"].as_u64().unwrap(), "{model}");
        assert_eq!(count(5), 40, "{model}: noise 0.5 of 80 corrupted");
        for r in &rows {
            let label: u8 = r[2].parse().unwrap();
            let weight: f64 = r[3].parse().unwrap();
            assert!(label < 3 && (0.0..=1.0).contains(&weight), "{r:?}");
            assert_eq!(r[4] == "1", weight <= 0.5, "{r:?}");
        }
        let mut seen: Vec<(&str, &str)> = rows.iter().map(|r| (r[0], r[1])).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 80, "{model}: distinct samples");
    }
}
