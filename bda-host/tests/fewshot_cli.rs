//! `bda fewshot` from the command line: JSON report, determinism, checkpoints and resume,
//! evaluation, errors. Tiny networks (`--channels 4`) on synthetic episodes keep it fast.

use std::path::Path;
use std::process::Output;

use bda_testkit::report::{argv, json, one_line_error, run};

fn bda(args: &[&str]) -> Output {
    run(Path::new(env!("CARGO_BIN_EXE_bda")), args, &[])
}

const TINY: &str = "fewshot --synthetic --channels 4 --ways 3 --shots 1 --queries 2 --meta-batch 2 --episodes 4 --val-every 2 --val-episodes 2 --threads 2 --quiet";

fn train(extra: &[&str]) -> Output {
    let mut args = argv(TINY);
    args.extend_from_slice(extra);
    bda(&args)
}

fn without_time(mut v: serde_json::Value) -> serde_json::Value {
    let o = v.as_object_mut().unwrap();
    o.remove("seconds");
    o.remove("s_per_ul_iter");
    v
}

#[test]
fn train_reports_json_and_is_deterministic() {
    let a = json(&train(&["--ul-iters", "3", "--method", "bda", "--json"]));
    for key in argv("ways shots method K ul_iters test_acc ci95 seconds s_per_ul_iter seed device")
    {
        assert!(a.get(key).is_some(), "missing {key}: {a}");
    }
    assert_eq!(a["ul_iters"], 3);
    assert_eq!(a["method"], "bda");
    assert_eq!(a["device"], "cpu");
    let b = json(&train(&["--ul-iters", "3", "--method", "bda", "--json"]));
    assert_eq!(without_time(a), without_time(b));
}

fn load(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn resume_continues_the_same_run() {
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full.ckpt");
    let half = dir.path().join("half.ckpt");
    let resumed = dir.path().join("resumed.ckpt");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let trhg = |steps: &str, save: &Path| {
        let mut args = argv("--method trhg --truncate 2 --json --ul-iters");
        args.push(steps);
        let save = s(save);
        args.extend(["--save", &save]);
        json(&train(&args))
    };
    trhg("4", &full);
    trhg("2", &half);
    let r = json(&train(&[
        "--resume",
        &s(&half),
        "--ul-iters",
        "4",
        "--save",
        &s(&resumed),
        "--json",
    ]));
    assert_eq!(r["ul_iters"], 4);
    let (a, b) = (load(&full), load(&resumed));
    assert_eq!(a["params"], b["params"]);
    assert_eq!(a["adam"], b["adam"]);
    assert_eq!(a["rng"], b["rng"]);
    assert_eq!(a["history"], b["history"]);
    assert_eq!(a["step"], 4);
    assert!(!dir.path().join("full.ckpt.tmp").exists());

    // Evaluate the checkpoint, and a random backbone.
    let e = json(&bda(&[
        "fewshot",
        "eval",
        "--checkpoint",
        &s(&full),
        "--episodes",
        "6",
        "--synthetic",
        "--quiet",
        "--json",
    ]));
    assert_eq!(e["episodes"], 6);
    assert_eq!(e["ul_iters"], 4);
    let acc = e["test_acc"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&acc), "accuracy in percent: {acc}");

    // A version-1 checkpoint (old key names, accuracies as fractions) is read and converted.
    let mut v1 = a.clone();
    v1["version"] = 1.into();
    let c = v1["config"].as_object_mut().unwrap();
    for (new, old) in [("ll_lr", "lr"), ("ul_lr", "meta_lr")] {
        let x = c.remove(new).unwrap();
        c.insert(old.into(), x);
    }
    for row in v1["history"]["loss"].as_array_mut().unwrap() {
        row[2] = (row[2].as_f64().unwrap() / 100.0).into();
    }
    let old = dir.path().join("v1.ckpt");
    std::fs::write(&old, serde_json::to_vec(&v1).unwrap()).unwrap();
    let e1 = json(&bda(&[
        "fewshot",
        "eval",
        "--checkpoint",
        &s(&old),
        "--episodes",
        "6",
        "--synthetic",
        "--quiet",
        "--json",
    ]));
    assert_eq!(e1["test_acc"], e["test_acc"]);
    let resumed_v1 = json(&train(&["--resume", &s(&old), "--ul-iters", "4", "--json"]));
    let h = &resumed_v1["history"][0]["train_acc"];
    assert!(
        h.as_f64().unwrap() > 1.0 || a["history"]["loss"][0][2] == 0.0,
        "{h}"
    );
    let r = json(&bda(&argv(
        "fewshot eval --random-backbone --channels 4 --ways 3 --queries 2 --episodes 4 --synthetic --quiet --json",
    )));
    assert_eq!(r["method"], "random");
}

#[test]
fn bad_checkpoints_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.ckpt");
    for content in [
        &b"not json"[..],
        b"{\"format\":\"something-else\",\"version\":1}",
        b"{\"format\":\"bda-fewshot-checkpoint\",\"version\":99}",
        b"{\"format\":\"bda-fewshot-checkpoint\",\"version\":1,\"step\":3}",
    ] {
        std::fs::write(&p, content).unwrap();
        let out = bda(&["fewshot", "eval", "--checkpoint", p.to_str().unwrap()]);
        one_line_error(&out, 2);
        let out = train(&["--resume", p.to_str().unwrap()]);
        one_line_error(&out, 2);
    }
    let out = bda(&["fewshot", "eval", "--checkpoint", "/nonexistent/x.ckpt"]);
    one_line_error(&out, 2);
}

#[test]
fn errors_exit_codes() {
    let err = one_line_error(&train(&["--device", "cuda", "--ul-iters", "1"]), 2);
    assert!(err.contains("cuda"), "{err}");
    let err = one_line_error(&bda(&["fewshot", "bench", "--device", "cuda"]), 2);
    assert!(err.contains("cuda"), "{err}");
    one_line_error(&train(&["--method", "trhg", "--truncate", "9"]), 2);
    one_line_error(&bda(&["fewshot", "--ul-iters", "1"]), 2); // no data
    let err = one_line_error(&train(&["--ul-iters", "2", "--ll-lr", "1e38"]), 1);
    assert!(err.contains("meta-step 1"), "{err}");
}

#[test]
fn plot_and_zero_steps() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("curves.svg");
    let out = train(&["--ul-iters", "2", "--plot", svg.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("test acc"));
    assert!(std::fs::read_to_string(&svg).unwrap().contains("<svg"));
    let r = json(&train(&["--ul-iters", "0", "--json"]));
    assert_eq!(r["ul_iters"], 0);
}

#[test]
fn trains_and_evaluates_on_the_fixture() {
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/omniglot-tiny");
    let mut common = vec!["--data-dir", fixture];
    common.extend(argv(
        "--ways 3 --shots 1 --queries 2 --meta-batch 2 --episodes 4 --quiet --json",
    ));
    let mut args = argv("fewshot --channels 4 --ul-iters 2 --val-every 1");
    args.extend_from_slice(&common);
    let r = json(&bda(&args));
    assert_eq!(r["dataset"], fixture);
    assert_eq!(r["data"]["path"], fixture);
    assert_eq!(r["data"]["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(r["ul_iters"], 2);
    let mut args = vec!["fewshot", "eval", "--random-backbone", "--channels", "4"];
    args.extend_from_slice(&common);
    let r = json(&bda(&args));
    assert_eq!(r["method"], "random");
    // Episode shapes the data cannot serve, and a missing folder: one line, exit 2.
    let mut args = argv("fewshot --channels 4 --ul-iters 1 --shots 6");
    args.extend_from_slice(&common[..2]);
    one_line_error(&bda(&args), 2);
    one_line_error(&bda(&["fewshot", "--data-dir", "/nonexistent/omniglot"]), 2);
    // Validation on held-out background characters: recorded, replayed, and bounded.
    let mut args = argv("fewshot --channels 4 --ul-iters 2 --val-every 1 --val-classes 4");
    args.extend_from_slice(&common);
    let r = json(&bda(&args));
    assert_eq!(r["config"]["val_classes"], 4);
    assert!(
        r["history"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["val_acc"].is_number())
    );
    let mut args = argv("fewshot --channels 4 --ul-iters 1 --val-classes 100000");
    args.extend_from_slice(&common);
    let e = one_line_error(&bda(&args), 2);
    assert!(e.contains("--val-classes 100000"), "{e}");
}

#[test]
fn ci95_is_1_96_std_over_sqrt_n() {
    let (m, c) = bda_host::fewshot::report::mean_ci(&[0.0, 1.0, 0.0, 1.0]);
    assert_eq!(m, 0.5);
    assert!((c - 1.96 * 0.5 / 2.0).abs() < 1e-15);
}

#[test]
fn public_types_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<bda_kernel::fewshot::FeatureHead<f32>>();
    check::<bda_host::fewshot::checkpoint::Checkpoint>();
    check::<bda_kernel::fewshot::Conv4Shape>();
    check::<bda_kernel::fewshot::Task>();
    check::<bda_host::fewshot::config::Plan>();
    check::<bda_host::optim::Adam<f32>>();
}

#[test]
fn help_says_what_the_flags_do() {
    let help = bda(&["fewshot", "--help"]);
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(
        text.contains("--no-rotations") && text.contains("Do not add the 90°"),
        "{text}"
    );
    assert!(text.contains("[default: K/2]"), "{text}");
}

#[test]
fn reports_use_one_key_per_quantity_and_eval_says_what_it_evaluated() {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("run.ckpt");
    let ck = ck.to_str().unwrap();
    let r = json(&train(&["--ul-iters", "2", "--save", ck, "--json"]));
    assert!(
        r["ul_loss"].is_number() && r.get("train_loss").is_none(),
        "{r}"
    );
    assert!(r["history"][0]["ul_loss"].is_number(), "{r}");
    // The checkpoint's backbone, not the flag's default, and no training quantities.
    let eval = |extra: &[&str]| {
        let mut args = argv("fewshot eval --synthetic --episodes 3 --quiet --checkpoint");
        args.push(ck);
        args.extend_from_slice(extra);
        bda(&args)
    };
    let e = json(&eval(&["--json"]));
    assert_eq!(e["config"]["channels"], 4, "{e}");
    for key in ["s_per_ul_iter", "history", "train_loss"] {
        assert!(e.get(key).is_none(), "{key} in an eval report: {e}");
    }
    let table = String::from_utf8_lossy(&eval(&["--split", "train"]).stdout).into_owned();
    assert!(table.contains("train acc (95% CI)"), "{table}");
}
