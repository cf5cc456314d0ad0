//! `bda hyperclean --model mlp` end to end on the tiny IDX fixture: every row, the options
//! of the network (hidden units, initialisation), the ICML split, replay and determinism.

use std::process::Command;

use bda_testkit::report::{argv, fixture, json as json_of, one_line_error, without_timings};

const BDA: &str = env!("CARGO_BIN_EXE_bda");

/// `bda hyperclean` on fmnist-tiny with small sizes and a network of 12 hidden units,
/// plus `extra` flags (`--K` among them replaces the default 6).
fn run(extra: &str) -> std::process::Output {
    let dir = fixture("fmnist-tiny");
    let k = if extra.contains("--K ") { "" } else { "--K 6" };
    let args = [
        argv("hyperclean --quiet --data-dir"),
        vec![dir.as_str()],
        argv("--n-train 100 --n-val 100 --ul-iters 3 --model mlp --hidden 12"),
        argv(k),
        argv(extra),
    ]
    .concat();
    Command::new(BDA).args(&args).output().expect("bda runs")
}

fn json(extra: &str) -> serde_json::Value {
    json_of(&run(&format!("--json {extra}")))
}

#[test]
fn every_row_runs_with_the_network_and_records_it() {
    for m in ["bda", "rhg", "trhg", "ihg", "obda", "noclean", "oracle"] {
        let v = json(&format!("--method {m}"));
        assert_eq!(v["method"], m);
        let c = &v["config"];
        assert_eq!(c["model"], "mlp", "{m}");
        assert_eq!(c["hidden"], 12, "{m}");
        assert_eq!(c["init"], "xavier", "{m}: the network's default");
        let acc = v["test_acc"].as_f64().unwrap();
        assert!((0.0..=100.0).contains(&acc), "{m}: {acc}");
    }
    // IHG records its CG solve each upper iteration (the final state's record has none).
    let ihg = json("--method ihg");
    let (last, iters) = ihg["history"].as_array().unwrap().split_last().unwrap();
    for rec in iters {
        assert!(rec["cg"]["iters"].as_u64().is_some(), "{rec}");
    }
    assert!(last.get("cg").is_none(), "{last}");
}

#[test]
fn the_network_is_deterministic_across_threads_and_seeded() {
    let strip = |v: serde_json::Value| {
        let mut v = without_timings(&v);
        v.as_object_mut().unwrap().remove("threads");
        v["config"].as_object_mut().unwrap().remove("threads");
        v
    };
    let a = strip(json("--seed 3 --threads 2"));
    assert_eq!(a, strip(json("--seed 3 --threads 1")));
    // The same split with a zero start differs: the Xavier draws take part.
    let zero = strip(json("--seed 3 --init zero"));
    assert_eq!(zero["config"]["init"], "zero");
    assert_ne!(a["history"], zero["history"]);
    // A warm start (BOAT's copy_last_param) changes every upper iteration after the first.
    let warm = strip(json("--seed 3 --threads 2 --warm-start"));
    assert_eq!(warm["config"]["warm_start"], true);
    let (h, hw) = (
        a["history"].as_array().unwrap(),
        warm["history"].as_array().unwrap(),
    );
    assert_eq!(h[0], hw[0]);
    assert_ne!(h[1..], hw[1..]);
}

#[test]
fn the_network_learns_on_the_fixture() {
    // The oracle row (clean samples only) with enough lower-level steps beats chance by far.
    let v = json("--method oracle --K 200 --ll-lr 0.3");
    let acc = v["test_acc"].as_f64().unwrap();
    assert!(acc > 50.0, "test accuracy {acc}");
}

#[test]
fn checkpointed_network_runs_equal_full_tape_runs() {
    let strip = |mut v: serde_json::Value| {
        v["config"]["checkpoint_every"] = serde_json::Value::Null;
        without_timings(&v)
    };
    let full = json("--method bda --checkpoint-every 0");
    let ck = json("--method bda --checkpoint-every 2");
    assert_eq!(strip(full), strip(ck));
}

#[test]
fn the_linear_default_is_unchanged_and_resolved() {
    let dir = fixture("fmnist-tiny");
    let args = [
        argv("hyperclean --quiet --json --data-dir"),
        vec![dir.as_str()],
        argv("--n-train 100 --n-val 100 --K 3 --ul-iters 1"),
    ]
    .concat();
    let v = json_of(&Command::new(BDA).args(&args).output().unwrap());
    let c = &v["config"];
    assert_eq!(c["model"], "linear");
    assert_eq!(c["hidden"], 0);
    assert_eq!(c["init"], "zero");
    assert_eq!(
        (c["n_train"].clone(), c["n_val"].clone()),
        (100.into(), 100.into())
    );
}

#[test]
fn bad_network_options_are_one_line_exit_2() {
    let dir = fixture("fmnist-tiny");
    let cases: &[(&str, &str)] = &[
        ("--hidden 5", "--hidden 5"),
        ("--model mlp --hidden 0", "--hidden 0"),
        ("--model mlp --init he", "--init"),
        ("--model conv", "--model"),
        ("--split icml", "--split icml"),
        ("--split icml --n-train 100", "--split"),
    ];
    for (flags, names) in cases {
        let args = [
            argv("hyperclean --quiet --data-dir"),
            vec![dir.as_str()],
            argv(flags),
        ]
        .concat();
        let out = Command::new(BDA).args(&args).output().unwrap();
        let code = out.status.code().unwrap_or(-1);
        assert_eq!(code, 2, "{flags}");
        let line = one_line_error(&out, code);
        assert!(line.contains(names), "{flags}: {line}");
    }
}

#[test]
fn the_network_runs_the_same_on_the_cuda_path() {
    // On the CPU stand-ins of the CUDA libraries (built with the host C++ compiler): the
    // CUDA backend's launches and GEMMs, computed on the host.
    if !cfg!(target_os = "linux") {
        println!("skipped: the fake CUDA libraries are built for Linux only");
        return;
    }
    let Some(cc) = bda_testkit::cxx::compiler() else {
        println!("skipped: no C++ compiler");
        return;
    };
    let lib = bda_testkit::cxx::build_fake_cuda(&cc, env!("CARGO_TARGET_TMPDIR"), "mlp_cuda");
    // 28×28 images of 10 classes, and 12×12 of 3 (both classifiers): sizes from the data.
    let runs = [
        ("fmnist-tiny", "--model mlp --hidden 6"),
        ("shapes-12x12", "--model mlp --hidden 6"),
        ("shapes-12x12", "--model linear"),
    ];
    for (name, model) in runs {
        same_on_both_devices(&lib, &fixture(name), model);
    }
}

/// `bda hyperclean` on `dir` with `model` on the fake CUDA device `lib` and on the CPU:
/// the same losses, nearly the same accuracy.
fn same_on_both_devices(lib: &std::path::Path, dir: &str, model: &str) {
    let flags = format!(
        "hyperclean --quiet --json {model} --K 5 --ul-iters 3 --n-train 80 --n-val 60 --data-dir"
    );
    let on = |device: &str| {
        let out = Command::new(BDA)
            .args(argv(&flags))
            .arg(dir)
            .args(["--device", device])
            .env("LD_LIBRARY_PATH", lib)
            .output()
            .unwrap();
        json_of(&out)
    };
    let (cuda, cpu) = (on("cuda"), on("cpu"));
    assert!(
        cuda["kernels"].as_str().unwrap().starts_with("cuda"),
        "{cuda}"
    );
    let (lc, lp) = (
        cuda["ul_loss"].as_f64().unwrap(),
        cpu["ul_loss"].as_f64().unwrap(),
    );
    assert!(
        (lc - lp).abs() < 1e-4 * lp.abs(),
        "{dir} {model}: F {lc} vs {lp}"
    );
    let (hc, hp) = (&cuda["history"], &cpu["history"]);
    for (a, b) in hc.as_array().unwrap().iter().zip(hp.as_array().unwrap()) {
        let (a, b) = (
            a["ul_loss"].as_f64().unwrap(),
            b["ul_loss"].as_f64().unwrap(),
        );
        assert!((a - b).abs() < 1e-4 * b.abs(), "history F {a} vs {b}");
    }
    let (ac, ap) = (
        cuda["test_acc"].as_f64().unwrap(),
        cpu["test_acc"].as_f64().unwrap(),
    );
    assert!(
        (ac - ap).abs() <= 2.0,
        "{dir} {model}: test accuracy {ac} vs {ap}"
    );
}
