//! Nothing lost: output paths are checked before any work, SIGINT/SIGTERM end a training
//! run after the current step with its checkpoint and report, an output that fails at the
//! end is reported after the report, and `--resume` continues the stored run.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use bda_testkit::report::{argv, fixture, json, one_line_error, run};
use serde_json::Value;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_bda"))
}

fn bda(args: &[&str]) -> Output {
    run(bin(), args, &[])
}

const FEWSHOT: &str = "fewshot --synthetic --channels 4 --ways 3 --shots 1 --queries 2 --meta-batch 2 --episodes 4 --threads 1 --quiet";

fn hyperclean() -> Vec<&'static str> {
    let mut args = argv("hyperclean --n-train 80 --n-val 60 --K 10 --quiet --data-dir");
    args.push(Box::leak(fixture("shapes-12x12").into_boxed_str()));
    args
}

fn spawn(args: &[&str]) -> Child {
    Command::new(bin())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Send `signal` (by name) to `child`.
fn kill(child: &Child, signal: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{signal}");
}

fn wait_for(path: &Path) {
    let t0 = Instant::now();
    while !path.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "{path:?} never written"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The JSON report on stdout, whatever the exit status.
fn report(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).expect("a JSON report on stdout")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn unwritable_outputs_are_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let p = |name: &str| missing.join(name).to_str().unwrap().to_string();
    let (svg, ckpt, csv) = (p("c.svg"), p("a.ckpt"), p("w.csv"));
    let folder = dir.path().to_str().unwrap();
    let mut cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["toy", "--plot", &svg], "--plot"),
        (vec!["toy", "--plot", "curves.png"], ".svg"),
        (vec!["plot", "report.json", "--out", &svg], "--out"),
    ];
    for (flag, path) in [
        ("--plot", svg.as_str()),
        ("--save", &ckpt),
        ("--save", folder),
    ] {
        let mut args = argv(FEWSHOT);
        args.extend([flag, path, "--ul-iters", "1"]);
        cases.push((args, flag));
    }
    for (flag, path) in [("--plot", svg.as_str()), ("--weights-out", &csv)] {
        let mut args = hyperclean();
        args.extend([flag, path]);
        cases.push((args, flag));
    }
    for (args, flag) in &cases {
        let t0 = Instant::now();
        let out = bda(args);
        let err = one_line_error(&out, 2);
        assert!(err.contains(flag), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}: no report");
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{args:?}: refused at once"
        );
    }
    assert!(!missing.exists());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no probe left"
    );
}

#[test]
fn sigterm_saves_reports_and_resume_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("run.ckpt");
    let plots = dir.path().join("plots");
    std::fs::create_dir(&plots).unwrap();
    let svg = plots.join("c.svg");
    let mut args = argv(FEWSHOT);
    let (ck, sv) = (ckpt.to_str().unwrap(), svg.to_str().unwrap());
    args.extend(["--ul-iters", "1000000", "--save-every", "1", "--save", ck]);
    args.extend(["--plot", sv, "--json"]);
    let child = spawn(&args);
    // The first checkpoint: the loop (and the signal watch) is running.
    wait_for(&ckpt);
    // The chart's folder goes away: the plot fails at the end, after the report.
    std::fs::remove_dir(&plots).unwrap();
    kill(&child, "TERM");
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    let report = report(&out);
    assert_eq!(report["interrupted"], true, "{report}");
    let steps = report["ul_iters"].as_u64().unwrap();
    assert!(steps >= 1);
    assert!(
        report["test_acc"].is_null(),
        "no test after an interruption"
    );
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines[0].contains("SIGTERM") && lines[0].contains(&format!("after {steps} meta-steps")),
        "{err}"
    );
    assert!(lines[1].contains("c.svg"), "{err}");
    assert_eq!(out.status.code(), Some(2), "the lost plot decides: {err}");
    let saved: Value = serde_json::from_slice(&std::fs::read(&ckpt).unwrap()).unwrap();
    assert_eq!(saved["step"].as_u64(), Some(steps), "the final checkpoint");

    // Without the plot: exit 128 + 15.
    let mut args = argv(FEWSHOT);
    args.extend(["--ul-iters", "1000000", "--save-every", "1", "--save", ck]);
    std::fs::remove_file(&ckpt).unwrap();
    let child = spawn(&args);
    wait_for(&ckpt);
    kill(&child, "TERM");
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("(interrupted)"), "{text}");

    // Resume to a few steps past the checkpoint: the stored run goes on and ends normally.
    let saved: Value = serde_json::from_slice(&std::fs::read(&ckpt).unwrap()).unwrap();
    let target = (saved["step"].as_u64().unwrap() + 3).to_string();
    let out = bda(&[
        "fewshot",
        "--resume",
        ck,
        "--ul-iters",
        &target,
        "--quiet",
        "--json",
    ]);
    let r = json(&out);
    assert_eq!(r["ul_iters"].as_u64().unwrap().to_string(), target);
    assert!(
        r.get("interrupted").is_none() && r["test_acc"].is_number(),
        "{r}"
    );
    assert_eq!(r["config"]["ways"], 3, "the stored configuration");
}

#[test]
fn sigint_ends_hyper_cleaning_after_the_current_iteration() {
    let mut args = hyperclean();
    args.extend(["--ul-iters", "100000000", "--json"]);
    // Wait long enough for the signal watch to start; a slower machine gets longer.
    for wait in [300, 1000, 3000, 10000] {
        let child = spawn(&args);
        std::thread::sleep(Duration::from_millis(wait));
        kill(&child, "INT");
        let out = child.wait_with_output().unwrap();
        if out.status.code().is_none() {
            continue; // Killed before the watch started.
        }
        assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
        let r = report(&out);
        assert_eq!(r["interrupted"], true);
        let n = r["ul_iters"].as_u64().unwrap();
        let history = r["history"].as_array().unwrap();
        assert_eq!(
            history.len() as u64,
            n + 1,
            "every iteration and the final state"
        );
        assert_eq!(history.last().unwrap()["ul_iter"].as_u64(), Some(n));
        assert!(stderr(&out).contains(&format!("after {n} upper iterations")));
        return;
    }
    panic!("the signal always arrived before the watch");
}

#[test]
fn resume_refuses_contradicting_flags_and_other_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("omniglot");
    copy_dir(Path::new(&fixture("omniglot-tiny")), &data);
    let ckpt = dir.path().join("a.ckpt");
    let ck = ckpt.to_str().unwrap();
    let common = "--ways 3 --shots 1 --queries 2 --meta-batch 2 --episodes 4 --quiet --json";
    let mut args = argv("fewshot --channels 4 --ul-iters 2 --val-every 1 --val-episodes 2");
    args.extend(argv(common));
    // Trained with a relative --data-dir, resumed from elsewhere: the folder is found.
    args.extend(["--data-dir", "omniglot", "--save", ck]);
    let out = Command::new(bin())
        .args(&args)
        .current_dir(dir.path())
        .output()
        .unwrap();
    json(&out);
    // The stored validation schedule is used: no flag repeats it.
    let r = json(&bda(&[
        "fewshot",
        "--resume",
        ck,
        "--ul-iters",
        "4",
        "--json",
        "--quiet",
    ]));
    let validated = r["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["val_acc"].is_number());
    assert_eq!(validated.count(), 4, "{r}");
    // A flag that would change the run.
    let err = one_line_error(&bda(&["fewshot", "--resume", ck, "--K", "3"]), 2);
    assert!(
        err.contains("--K 3") && err.contains("trained with 5"),
        "{err}"
    );
    // An identical copy of the data elsewhere is the same data.
    let copy = dir.path().join("copy");
    copy_dir(&data, &copy);
    let c = copy.to_str().unwrap();
    let resume = [
        "fewshot",
        "--resume",
        ck,
        "--ul-iters",
        "3",
        "--json",
        "--quiet",
    ];
    let on_copy = || bda(&[&resume[..], &["--data-dir", c]].concat());
    let r = json(&on_copy());
    assert_eq!(r["ul_iters"], 3);
    // Changed data is refused, naming the folder.
    let first = |dir: &Path| {
        std::fs::read_dir(dir)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path()
    };
    let image = first(&first(&first(&copy.join("images_background"))));
    std::fs::remove_file(image).unwrap();
    let err = one_line_error(&on_copy(), 2);
    assert!(
        err.contains("copy") && err.contains("not those the run was trained on"),
        "{err}"
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn finite_blow_ups_are_divergences_at_their_iteration() {
    let mut args = argv(FEWSHOT);
    args.extend(["--ul-iters", "3", "--ll-lr", "1e6"]);
    let err = one_line_error(&bda(&args), 1);
    assert!(
        err.contains("meta-step 1") && err.contains("exceeds"),
        "{err}"
    );
    let mut args = hyperclean();
    args.extend(["--ul-iters", "5", "--ll-lr", "1e6"]);
    let err = one_line_error(&bda(&args), 1);
    assert!(
        err.contains("upper iteration 0") && err.contains("exceeds"),
        "{err}"
    );
}
