//! `mpirun -np P bda hyperclean|fewshot …` (feature `mpi`; `scripts/test-all.sh` installs
//! Open MPI and runs these): the same JSON as one process for P = 1, 2, 3 (hyper-cleaning:
//! every method, both classifiers; few-shot: training, evaluation, a run resumed on
//! another number of ranks; the whole-network methods, their tasks split over the ranks);
//! a failure on one rank ends all of them with one line; a rank
//! killed with SIGKILL ends the job and leaves the last checkpoint whole; commands that do
//! not split refuse several ranks. On the CPU stand-ins of the CUDA libraries, hyper-cleaning
//! and few-shot on `--device cuda` have the same JSON on 1, 2 and 3 ranks.
#![cfg(feature = "mpi")]

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use bda_testkit::report::{argv, fixture, json, run, without_timings};
use serde_json::Value;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_bda")
}

/// `mpirun` with what a container's root and a small machine need.
fn mpirun(np: usize) -> Command {
    let mut c = Command::new("mpirun");
    c.args(["--allow-run-as-root", "--oversubscribe", "-np"]);
    c.arg(np.to_string());
    c
}

fn under_mpirun(np: usize, args: &[&str]) -> Output {
    mpirun(np)
        .arg(bin())
        .args(args)
        .output()
        .expect("mpirun (Open MPI) on PATH: the `mpi` feature needs it")
}

/// A report without its timings, thread and rank counts.
fn comparable(out: &Output) -> Value {
    let mut v = without_timings(&json(out));
    let o = v.as_object_mut().unwrap();
    o.remove("threads");
    o.remove("ranks");
    o.remove("s_per_ul_iter");
    if let Some(Value::Object(c)) = o.get_mut("config") {
        c.remove("threads");
    }
    v
}

#[test]
fn every_method_has_the_json_of_one_process_on_1_2_3_ranks() {
    let dir = tempfile::tempdir().unwrap();
    // 1100 training rows: five units of 256 (the last short), so 3 ranks own 1, 2 and 2.
    bda_testkit::idx::write_dataset(dir.path(), 1400, 200, 12, 3).unwrap();
    let data = dir.path().display();
    for model in ["--model linear", "--model mlp --hidden 12"] {
        for method in ["bda", "rhg", "trhg", "ihg", "obda"] {
            let args = format!(
                "hyperclean --data-dir {data} --n-train 1100 --n-val 150 --K 4 --ul-iters 2 \
                 --method {method} {model} --seed 5 --json --quiet --threads 1"
            );
            let one = comparable(&run(Path::new(bin()), &argv(&args), &[]));
            for np in [1, 2, 3] {
                let out = under_mpirun(np, &argv(&args));
                assert_eq!(json(&out)["ranks"], np, "{args}");
                assert_eq!(
                    comparable(&out),
                    one,
                    "{args}: {np} ranks differ from one process"
                );
            }
        }
    }
}

/// The fake CUDA libraries (`bda-gpu/tests/fake_cuda`), built once: `None` (skip) off Linux
/// or without a C++ compiler.
fn fake_cuda() -> Option<std::path::PathBuf> {
    static LIB: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    LIB.get_or_init(|| {
        let cc = bda_testkit::cxx::compiler().filter(|_| cfg!(target_os = "linux"))?;
        let base = env!("CARGO_TARGET_TMPDIR");
        Some(bda_testkit::cxx::build_fake_cuda(&cc, base, "mpi_cuda"))
    })
    .clone()
}

/// `under_mpirun` on the fake CUDA device `lib` (every rank's `cuda` wraps to its device 0).
fn under_mpirun_on(lib: &Path, np: usize, args: &[&str]) -> Output {
    mpirun(np)
        .args(["-x", "LD_LIBRARY_PATH"])
        .env("LD_LIBRARY_PATH", lib)
        .arg(bin())
        .args(args)
        .output()
        .expect("mpirun")
}

#[test]
fn both_commands_on_cuda_have_the_same_json_on_1_2_3_ranks() {
    let Some(lib) = fake_cuda() else {
        println!("skipped: no C++ compiler for the fake CUDA libraries");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // Rows in chunks of 512: 3 training chunks (the last of 76) and 2 validation chunks, so
    // that on 3 ranks one owns no validation chunk.
    bda_testkit::idx::write_dataset(dir.path(), 1800, 100, 10, 3).unwrap();
    let data = dir.path().display();
    for model in ["--model linear", "--model mlp --hidden 6"] {
        for method in ["bda", "rhg"] {
            let args = format!(
                "hyperclean --data-dir {data} --n-train 1100 --n-val 600 --K 3 --ul-iters 2 \
                 --method {method} {model} --seed 5 --json --quiet --threads 1 --device cuda"
            );
            let one = under_mpirun_on(&lib, 1, &argv(&args));
            let one_json = json(&one);
            assert!(one_json["kernels"].as_str().unwrap().starts_with("cuda"));
            let one = comparable(&one);
            for np in [2, 3] {
                let out = under_mpirun_on(&lib, np, &argv(&args));
                assert_eq!(json(&out)["ranks"], np, "{args}");
                assert_eq!(comparable(&out), one, "{args}: {np} ranks differ from one");
            }
            // A process of its own multiplies whole sets at once: other roundings, the
            // same run.
            let plain = Command::new(bin())
                .args(argv(&args))
                .env("LD_LIBRARY_PATH", &lib)
                .output()
                .unwrap();
            let (a, b) = (json(&plain)["ul_loss"].as_f64(), one["ul_loss"].as_f64());
            let (a, b) = (a.unwrap(), b.unwrap());
            assert!((a - b).abs() < 1e-5 * b.abs(), "{args}: F {a} vs {b}");
        }
    }
    // Few-shot on CUDA: its images split over the ranks, the same JSON (training, then
    // evaluation of the checkpoint) on 1, 2 and 3 ranks.
    let train = format!(
        "fewshot --data-dir {} --ways 3 --shots 1 --queries 2 --meta-batch 3 --channels 4 \
         --ul-iters 2 --val-every 2 --val-episodes 2 --episodes 3 --seed 2 --quiet --json \
         --threads 1 --device cuda",
        fixture("omniglot-tiny")
    );
    let mut first: Option<(Value, Value)> = None;
    for np in [1, 2, 3] {
        let ckpt = dir.path().join(format!("cuda{np}.ckpt"));
        let out = under_mpirun_on(
            &lib,
            np,
            &argv(&format!("{train} --save {}", ckpt.display())),
        );
        assert_eq!(json(&out)["ranks"], np);
        assert!(json(&out)["device"].as_str().unwrap().starts_with("cuda"));
        let eval = format!(
            "fewshot eval --checkpoint {} --data-dir {} --episodes 4 --seed 4 --quiet --json --threads 1 --device cuda",
            ckpt.display(),
            fixture("omniglot-tiny")
        );
        let mut evaluated = comparable(&under_mpirun_on(&lib, np, &argv(&eval)));
        // Each evaluates its own checkpoint file.
        evaluated["config"]
            .as_object_mut()
            .unwrap()
            .remove("checkpoint");
        let trained = comparable(&out);
        match &first {
            None => first = Some((trained, evaluated)),
            Some((t, e)) => {
                assert_eq!(&trained, t, "few-shot training on CUDA, {np} ranks");
                assert_eq!(&evaluated, e, "few-shot evaluation on CUDA, {np} ranks");
            }
        }
    }
}

/// A device that fails on one rank alone (the stand-in's launches fail after a count on
/// rank 1): every rank ends with that rank's error, one line from rank 0, exit 1, no hang.
#[test]
fn a_device_failing_on_one_rank_ends_every_rank() {
    let Some(lib) = fake_cuda() else {
        println!("skipped: no C++ compiler for the fake CUDA libraries");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    bda_testkit::idx::write_dataset(dir.path(), 1800, 100, 10, 3).unwrap();
    let runs = [
        format!(
            "hyperclean --data-dir {} --n-train 1100 --n-val 600 --K 3 --ul-iters 3 --quiet \
             --threads 1 --device cuda",
            dir.path().display()
        ),
        format!(
            "fewshot --data-dir {} --ways 3 --shots 1 --queries 2 --meta-batch 3 --channels 4 \
             --ul-iters 3 --episodes 2 --quiet --threads 1 --device cuda",
            fixture("omniglot-tiny")
        ),
    ];
    for args in &runs {
        let t = Instant::now();
        let out = mpirun(1)
            .args(["-x", "LD_LIBRARY_PATH"])
            .env("LD_LIBRARY_PATH", &lib)
            .arg(bin())
            .args(argv(args))
            .args([":", "-np", "1", "env", "BDA_FAKE_CUDA_FAIL_AFTER=40", bin()])
            .args(argv(args))
            .output()
            .unwrap();
        assert!(t.elapsed() < Duration::from_secs(60), "no hang");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args}: {err}");
        let ours: Vec<&str> = err.lines().filter(|l| l.starts_with("bda: ")).collect();
        assert_eq!(ours.len(), 1, "one line, from rank 0: {err}");
        assert!(ours[0].contains("rank 1: "), "{}", ours[0]);
        assert!(out.stdout.is_empty(), "no report");
    }
}

#[test]
fn few_shot_training_and_evaluation_have_the_json_of_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let data = fixture("omniglot-tiny");
    // 3 tasks × 9 images = 27 images a meta-batch: 4 chunks of 8, the last of 3.
    let train = format!(
        "fewshot --data-dir {data} --ways 3 --shots 1 --queries 2 --meta-batch 3 --channels 6 \
         --ul-iters 3 --val-every 2 --val-episodes 3 --episodes 6 --seed 2 --quiet --json --threads 1"
    );
    let ckpt = dir.path().join("run.ckpt");
    let saved = format!("{train} --save {}", ckpt.display());
    let one = comparable(&run(Path::new(bin()), &argv(&saved), &[]));
    assert!(one["test_acc"].as_f64().is_some(), "{one}");
    let eval = format!(
        "fewshot eval --checkpoint {} --data-dir {data} --episodes 8 --seed 4 --quiet --json --threads 1",
        ckpt.display()
    );
    let one_eval = comparable(&run(Path::new(bin()), &argv(&eval), &[]));
    for np in [1, 2, 3] {
        let other = dir.path().join(format!("run{np}.ckpt"));
        let out = under_mpirun(np, &argv(&format!("{train} --save {}", other.display())));
        assert_eq!(json(&out)["ranks"], np);
        assert_eq!(comparable(&out), one, "training on {np} ranks");
        // Rank 0 wrote the checkpoint: the same backbone, optimizer and history.
        let (a, b) = (read_json(&ckpt), read_json(&other));
        for key in ["params", "adam", "rng", "history"] {
            assert_eq!(a[key], b[key], "{key} of the checkpoint on {np} ranks");
        }
        let out = under_mpirun(np, &argv(&eval));
        assert_eq!(comparable(&out), one_eval, "evaluation on {np} ranks");
    }
}

/// The whole network as the lower level: ranks split the meta-batch's tasks (3 tasks on
/// 2 and 3 ranks) and the JSON is one process's, on the CPU and on the stand-in device.
#[test]
fn whole_network_methods_have_the_json_of_one_process() {
    let data = fixture("omniglot-tiny");
    let lib = fake_cuda();
    for method in ["maml", "imaml", "bda-net"] {
        let train = format!(
            "fewshot --data-dir {data} --ways 3 --shots 1 --queries 2 --meta-batch 3 --channels 4 \
             --K 2 --ul-iters 2 --val-every 2 --val-episodes 3 --episodes 4 --seed 3 --quiet \
             --json --threads 1 --method {method}"
        );
        let one = comparable(&run(Path::new(bin()), &argv(&train), &[]));
        assert!(one["test_acc"].as_f64().is_some(), "{one}");
        for np in [2, 3] {
            let out = under_mpirun(np, &argv(&train));
            assert_eq!(json(&out)["ranks"], np);
            assert_eq!(comparable(&out), one, "{method} on {np} ranks");
        }
        let Some(lib) = &lib else { continue };
        let cuda = format!("{train} --device cuda");
        let one = comparable(&under_mpirun_on(lib, 1, &argv(&cuda)));
        let out = under_mpirun_on(lib, 3, &argv(&cuda));
        assert!(json(&out)["device"].as_str().unwrap().starts_with("cuda"));
        assert_eq!(comparable(&out), one, "{method} on CUDA, 3 ranks");
    }
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

#[test]
fn a_run_resumed_on_another_number_of_ranks_continues_the_same_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = fixture("omniglot-tiny");
    let base = format!(
        "fewshot --data-dir {data} --ways 3 --shots 1 --queries 2 --meta-batch 3 --channels 6 \
         --episodes 3 --seed 3 --quiet --json --threads 1"
    );
    let (full, half, resumed) = (
        dir.path().join("full.ckpt"),
        dir.path().join("half.ckpt"),
        dir.path().join("resumed.ckpt"),
    );
    let one = format!("{base} --ul-iters 4 --save {}", full.display());
    json(&run(Path::new(bin()), &argv(&one), &[]));
    json(&under_mpirun(
        2,
        &argv(&format!("{base} --ul-iters 2 --save {}", half.display())),
    ));
    let again = format!(
        "fewshot --resume {} --ul-iters 4 --save {} --quiet --json --threads 1",
        half.display(),
        resumed.display()
    );
    assert_eq!(json(&under_mpirun(3, &argv(&again)))["ul_iters"], 4);
    let (a, b) = (read_json(&full), read_json(&resumed));
    for key in ["params", "adam", "rng", "history"] {
        assert_eq!(
            a[key], b[key],
            "{key}: 2 steps on 2 ranks then 2 on 3 against 4 on one"
        );
    }
}

#[test]
fn the_few_shot_benchmark_runs_on_ranks() {
    let args = "fewshot bench --steps 1 --meta-batch 2 --channels 8 --json --threads 1";
    let out = under_mpirun(2, &argv(args));
    let v = json(&out);
    assert_eq!(v["ranks"], 2);
    assert!(v["s_per_ul_iter"].as_f64().unwrap() > 0.0);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        1,
        "rank 0 alone reports"
    );
}

#[test]
fn reduce_fast_is_recorded_and_close_to_the_ordered_sums() {
    let dir = tempfile::tempdir().unwrap();
    bda_testkit::idx::write_dataset(dir.path(), 1400, 200, 12, 3).unwrap();
    let args = format!(
        "hyperclean --data-dir {} --n-train 1100 --n-val 150 --K 4 --ul-iters 3 \
         --model mlp --hidden 12 --seed 5 --json --quiet --threads 1",
        dir.path().display()
    );
    let ordered = json(&under_mpirun(3, &argv(&args)));
    assert_eq!(ordered["config"]["reduce"], "ordered");
    let fast = json(&under_mpirun(3, &argv(&format!("{args} --reduce fast"))));
    assert_eq!(fast["config"]["reduce"], "fast");
    let (a, b) = (
        ordered["ul_loss"].as_f64().unwrap(),
        fast["ul_loss"].as_f64().unwrap(),
    );
    assert!((a - b).abs() <= 1e-4 * a.abs(), "{a} vs {b}");
    // One rank: nothing to reduce, the same report.
    let one = comparable(&under_mpirun(1, &argv(&args)));
    let mut one_fast = comparable(&under_mpirun(1, &argv(&format!("{args} --reduce fast"))));
    one_fast["config"]["reduce"] = "ordered".into();
    assert_eq!(one, one_fast);
}

#[test]
fn a_failure_on_one_rank_ends_every_rank_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    bda_testkit::idx::write_dataset(dir.path(), 600, 100, 12, 3).unwrap();
    let good = format!(
        "hyperclean --data-dir {} --n-train 300 --n-val 100 --K 2 --ul-iters 2 --quiet",
        dir.path().display()
    );
    let missing = dir.path().join("missing");
    let bad = format!(
        "hyperclean --data-dir {} --n-train 300 --n-val 100 --K 2 --ul-iters 2 --quiet",
        missing.display()
    );
    // Rank 0 and 2 read the data, rank 1 cannot (MPMD: one command per rank).
    let t = Instant::now();
    let out = mpirun(1)
        .arg(bin())
        .args(argv(&good))
        .args([":", "-np", "1", bin()])
        .args(argv(&bad))
        .args([":", "-np", "1", bin()])
        .args(argv(&good))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(t.elapsed() < Duration::from_secs(30), "no hang");
    let err = String::from_utf8_lossy(&out.stderr);
    let ours: Vec<&str> = err.lines().filter(|l| l.starts_with("bda: ")).collect();
    assert_eq!(ours.len(), 1, "one line, from rank 0: {err}");
    assert!(ours[0].contains("missing"), "{}", ours[0]);
    assert!(out.stdout.is_empty(), "no report");
}

#[test]
fn a_killed_rank_ends_the_job() {
    let dir = tempfile::tempdir().unwrap();
    bda_testkit::idx::write_dataset(dir.path(), 1400, 200, 12, 3).unwrap();
    // A run of minutes, marked by its seed so that its ranks can be found.
    let seed = 7_000_000 + std::process::id() % 1_000_000;
    let args = format!(
        "hyperclean --data-dir {} --n-train 1100 --n-val 150 --K 20 --ul-iters 100000 \
         --model mlp --hidden 12 --seed {seed} --quiet --threads 1",
        dir.path().display()
    );
    let (mut job, ranks) = start(&args, &format!("hyperclean.*--seed {seed}"), Stdio::null);
    // Let them get into the loop, then kill the second rank.
    std::thread::sleep(Duration::from_secs(1));
    kill_and_wait(&ranks, &mut job);
}

/// SIGKILL the last of `ranks`; `job` (mpirun) must end non-zero within 20 s.
fn kill_and_wait(ranks: &[String], job: &mut std::process::Child) {
    let victim = ranks.last().unwrap();
    assert!(
        Command::new("kill")
            .args(["-9", victim])
            .status()
            .unwrap()
            .success()
    );
    let t = Instant::now();
    let status = loop {
        if let Some(s) = job.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > Duration::from_secs(20) {
            job.kill().unwrap();
            panic!("the job went on 20 s after a rank was killed");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success(), "{status:?}");
    eprintln!(
        "job ended {:.2} s after the kill",
        t.elapsed().as_secs_f64()
    );
}

/// `mpirun -np 2 bda ARGS` in the background (its output to `io()`), ended by a watchdog
/// after 60 s (ranks that disagree wait for each other for ever), and the process ids of
/// its two ranks, found by `pattern`.
fn start(args: &str, pattern: &str, io: fn() -> Stdio) -> (std::process::Child, Vec<String>) {
    let job = Command::new("timeout")
        .arg("60")
        .args(mpirun(2).get_program().to_str())
        .args(mpirun(2).get_args())
        .arg(bin())
        .args(argv(args))
        .stdout(io())
        .stderr(io())
        .spawn()
        .unwrap();
    (job, ranks_of(pattern))
}

/// The ranks of the job whose command line matches `pattern`, once two have started: the
/// processes whose command line starts with the `bda` binary (not `mpirun`'s or the
/// watchdog's, which name it later).
fn ranks_of(pattern: &str) -> Vec<String> {
    let anchored = format!("^{} {pattern}", bin());
    (0..100)
        .find_map(|_| {
            std::thread::sleep(Duration::from_millis(100));
            let out = Command::new("pgrep")
                .args(["-f", &anchored])
                .output()
                .ok()?;
            let pids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(String::from)
                .collect();
            (pids.len() == 2).then_some(pids)
        })
        .expect("two ranks started")
}

#[test]
fn a_killed_rank_leaves_the_last_checkpoint_whole() {
    let dir = tempfile::tempdir().unwrap();
    let data = fixture("omniglot-tiny");
    let ckpt = dir.path().join("run.ckpt");
    let seed = 8_000_000 + std::process::id() % 1_000_000;
    let args = format!(
        "fewshot --data-dir {data} --ways 3 --shots 1 --queries 2 --meta-batch 3 --channels 6 \
         --ul-iters 1000000 --save {} --save-every 1 --seed {seed} --quiet --threads 1",
        ckpt.display()
    );
    let (mut job, ranks) = start(&args, &format!("fewshot.*--seed {seed}"), Stdio::null);
    // Wait for the first checkpoints, then kill a rank in the middle of the run.
    let t = Instant::now();
    while !ckpt.exists() && t.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    kill_and_wait(&ranks, &mut job);
    // The checkpoint is whole: it evaluates.
    let eval = format!(
        "fewshot eval --checkpoint {} --data-dir {data} --episodes 3 --quiet --json",
        ckpt.display()
    );
    let v = json(&run(Path::new(bin()), &argv(&eval), &[]));
    assert!(v["ul_iters"].as_u64().unwrap() >= 1, "{v}");
}

#[test]
fn a_signal_to_one_rank_stops_every_rank_after_the_same_step() {
    let dir = tempfile::tempdir().unwrap();
    let data = fixture("omniglot-tiny");
    let ckpt = dir.path().join("run.ckpt");
    let seed = 9_000_000 + std::process::id() % 1_000_000;
    let args = format!(
        "fewshot --data-dir {data} --ways 3 --shots 1 --queries 2 --meta-batch 3 --channels 6 \
         --ul-iters 1000000 --save {} --save-every 1000000 --seed {seed} --json --quiet --threads 1",
        ckpt.display()
    );
    let (job, ranks) = start(&args, &format!("fewshot.*--seed {seed}"), Stdio::piped);
    std::thread::sleep(Duration::from_secs(2));
    // SIGTERM to one rank only (as a launcher's signal reaches the ranks at different times).
    let victim = ranks.last().unwrap();
    assert!(
        Command::new("kill")
            .args(["-TERM", victim])
            .status()
            .unwrap()
            .success()
    );
    let out = job.wait_with_output().unwrap();
    assert!(!out.status.success());
    let report = json_after_signal(&out);
    assert_eq!(report["interrupted"], true, "{report}");
    let steps = report["ul_iters"].as_u64().unwrap();
    assert!(steps >= 1);
    // Both ranks stopped after that step: rank 0's checkpoint holds it.
    assert_eq!(read_json(&ckpt)["step"].as_u64(), Some(steps));
    let err = String::from_utf8_lossy(&out.stderr);
    let ours: Vec<&str> = err.lines().filter(|l| l.starts_with("bda: ")).collect();
    assert_eq!(ours.len(), 1, "{err}");
    assert!(ours[0].contains("interrupted by SIGTERM"), "{}", ours[0]);
}

/// The report a run stopped by a signal printed (its exit status is the signal's).
fn json_after_signal(out: &Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .expect("a report");
    serde_json::from_str(line).unwrap()
}

#[test]
fn commands_that_do_not_split_refuse_several_ranks() {
    for (cmd, args) in [
        ("bda toy", "toy --ul-iters 2"),
        ("bda plot", "plot --out x.svg y.json"),
    ] {
        let out = under_mpirun(2, &argv(args));
        assert_eq!(out.status.code(), Some(2), "{cmd}");
        let err = String::from_utf8_lossy(&out.stderr);
        let ours: Vec<&str> = err.lines().filter(|l| l.starts_with("bda: ")).collect();
        assert_eq!(ours.len(), 1, "{cmd}: {err}");
        assert!(
            ours[0].contains(cmd) && ours[0].contains("one of 2"),
            "{}",
            ours[0]
        );
    }
    // One rank is one process: any command runs.
    let out = under_mpirun(1, &argv("toy --ul-iters 2 --json"));
    assert!(out.status.success());
}
