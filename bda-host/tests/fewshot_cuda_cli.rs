//! `bda fewshot --device cuda` end to end on the CPU stand-ins of libcuda, cuBLAS and NVRTC
//! (`bda-gpu/tests/fake_cuda`, built with the host C++ compiler and put first on
//! `LD_LIBRARY_PATH` of the `bda` process): training, evaluation and bench take the CUDA path,
//! agree with `--device cpu`, and checkpoints move between the two. Prints `skipped: …` without
//! a C++ compiler or off Linux. What it cannot check: a real GPU (see bda-gpu/README.md).

use std::path::{Path, PathBuf};
use std::process::Output;

use bda_testkit::cxx;
use bda_testkit::report::{argv, json, run};

const TINY: &str = "fewshot --synthetic --channels 4 --ways 3 --shots 1 --queries 2 --meta-batch 2 --episodes 8 --val-every 2 --val-episodes 2 --threads 2 --quiet --json";

fn fake_libs(name: &str) -> Option<PathBuf> {
    if !cfg!(target_os = "linux") {
        println!("skipped: the fake CUDA libraries are built for Linux only");
        return None;
    }
    let Some(cc) = cxx::compiler() else {
        println!("skipped: no C++ compiler");
        return None;
    };
    Some(cxx::build_fake_cuda(&cc, env!("CARGO_TARGET_TMPDIR"), name))
}

/// `bda ARGS`, with the fake CUDA libraries first on the library path if given.
fn bda(fake: Option<&PathBuf>, args: &[&str]) -> Output {
    let lib = fake.map(|d| d.display().to_string());
    let env: Vec<(&str, &str)> = lib
        .iter()
        .map(|d| ("LD_LIBRARY_PATH", d.as_str()))
        .collect();
    run(Path::new(env!("CARGO_BIN_EXE_bda")), args, &env)
}

fn num(v: &serde_json::Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

#[test]
fn train_eval_and_bench_run_on_the_cuda_path() {
    let Some(fake) = fake_libs("fake_cuda_cli") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ck_cuda = dir.path().join("cuda.ckpt");
    let ck_cpu = dir.path().join("cpu.ckpt");
    let train = |device: &str, ck: &PathBuf| {
        let mut args = argv(TINY);
        args.extend_from_slice(&[
            "--meta-steps",
            "4",
            "--method",
            "bda",
            "--device",
            device,
            "--save",
            ck.to_str().unwrap(),
        ]);
        json(&bda(Some(&fake), &args))
    };
    let cuda = train("cuda", &ck_cuda);
    let cpu = train("cpu", &ck_cpu);
    println!("cuda: {cuda}\ncpu:  {cpu}");
    // Same episodes, same Adam: the meta-training losses agree to f32 rounding, and the
    // predictions are the same, so the test accuracies are equal. (A query within f32
    // rounding of a decision boundary would change one prediction: none is, on these
    // episodes; a near-tie that appears would have to be shown and documented here.)
    let (lc, lp) = (num(&cuda, "ul_loss"), num(&cpu, "ul_loss"));
    assert!((lc - lp).abs() < 1e-5 * lp.abs(), "train loss {lc} vs {lp}");
    let (ac, ap) = (num(&cuda, "test_acc"), num(&cpu, "test_acc"));
    assert_eq!(ac, ap, "test accuracy (%) on cuda and cpu");
    // Deterministic on the device too.
    let again = train("cuda", &dir.path().join("again.ckpt"));
    assert_eq!(num(&again, "ul_loss"), lc);
    assert_eq!(num(&again, "test_acc"), ac);

    // Checkpoints move between devices: each evaluated on the other device.
    let eval = |device: &str, ck: &PathBuf| {
        json(&bda(
            Some(&fake),
            &[
                "fewshot",
                "eval",
                "--checkpoint",
                ck.to_str().unwrap(),
                "--episodes",
                "8",
                "--device",
                device,
                "--quiet",
                "--json",
            ],
        ))
    };
    for ck in [&ck_cuda, &ck_cpu] {
        let (on_cuda, on_cpu) = (eval("cuda", ck), eval("cpu", ck));
        let (a, b) = (num(&on_cuda, "test_acc"), num(&on_cpu, "test_acc"));
        println!("{}: cuda {a}, cpu {b}", ck.display());
        assert_eq!(
            a,
            b,
            "{}: the same predictions on both devices",
            ck.display()
        );
        assert_eq!(on_cuda["ul_iters"], 4);
    }

    // Bench reports the device and its timings.
    let out = json(&bda(
        Some(&fake),
        &argv(
            "fewshot bench --device cuda --ways 3 --queries 2 --meta-batch 2 --K 2 --steps 1 --json",
        ),
    ));
    assert!(
        out["device"]
            .as_str()
            .unwrap()
            .starts_with("cuda (fake CUDA device"),
        "{out}"
    );
    assert!(num(&out, "s_per_ul_iter") > 0.0 && num(&out, "gflops_backbone") > 0.0);
}

/// `--ul-projection` acts on the host's parameters, so the CUDA path projects exactly as
/// the CPU path does: the runs agree as the unconstrained ones do, orthogonality included.
#[test]
fn projections_run_the_same_on_the_cuda_path() {
    let Some(fake) = fake_libs("fake_cuda_projection") else {
        return;
    };
    for proj in ["spectral:0.4", "sn:0.4", "max-norm:0.3"] {
        let train = |device: &str| {
            let mut args = argv(TINY);
            args.extend_from_slice(&["--ul-iters", "4", "--ul-projection", proj]);
            args.extend_from_slice(&["--device", device]);
            json(&bda(Some(&fake), &args))
        };
        let (cuda, cpu) = (train("cuda"), train("cpu"));
        let (lc, lp) = (num(&cuda, "ul_loss"), num(&cpu, "ul_loss"));
        assert!(
            (lc - lp).abs() < 1e-4 * lp.abs(),
            "{proj}: train loss {lc} vs {lp}"
        );
        let ortho = |r: &serde_json::Value| -> Vec<f64> {
            r["history"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|h| h["orthogonality"].as_f64())
                .collect()
        };
        let (oc, op) = (ortho(&cuda), ortho(&cpu));
        assert_eq!(oc.len(), 3, "{proj}: {cuda}");
        for (a, b) in oc.iter().zip(&op) {
            assert!((a - b).abs() < 1e-4 * b, "{proj}: orthogonality {a} vs {b}");
        }
    }
}

/// MiniImageNet-layout data (3×84×84 RGB) on the CUDA path: the same run as on the CPU, and
/// the bench at RGB shapes.
#[test]
fn rgb_images_run_the_same_on_the_cuda_path() {
    let Some(fake) = fake_libs("fake_cuda_rgb") else {
        return;
    };
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/miniimagenet-tiny");
    let base = TINY.replace("--synthetic", "--data-dir");
    let train = |device: &str| {
        let mut args = argv(&base);
        args.insert(2, data);
        args.extend_from_slice(&["--ul-iters", "2", "--device", device]);
        json(&bda(Some(&fake), &args))
    };
    let (cuda, cpu) = (train("cuda"), train("cpu"));
    assert_eq!(cuda["config"]["format"], "miniimagenet", "{cuda}");
    let (lc, lp) = (num(&cuda, "ul_loss"), num(&cpu, "ul_loss"));
    assert!((lc - lp).abs() < 1e-5 * lp.abs(), "train loss {lc} vs {lp}");
    let (ac, ap) = (num(&cuda, "test_acc"), num(&cpu, "test_acc"));
    assert_eq!(ac, ap, "test accuracy (%) on cuda and cpu");
    let out = json(&bda(
        Some(&fake),
        &argv(
            "fewshot bench --device cuda --ways 2 --queries 1 --meta-batch 1 --K 1 --steps 1 --image-size 20 --in-channels 3 --channels 4 --json",
        ),
    ));
    assert_eq!(
        (out["in_channels"].as_u64(), out["image_size"].as_u64()),
        (Some(3), Some(20))
    );
    assert!(num(&out, "s_per_ul_iter") > 0.0);
}

/// The whole-network methods on the CUDA path: the same training as on the CPU (losses to
/// f32 rounding, the same test accuracy), checkpoints evaluated on either device, and the
/// bench's whole-network timings.
#[test]
fn whole_network_methods_run_the_same_on_the_cuda_path() {
    let Some(fake) = fake_libs("fake_cuda_network") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for method in ["maml", "metasgd", "reptile", "bda-net"] {
        let ck = |device: &str| dir.path().join(format!("{method}-{device}.ckpt"));
        let train = |device: &str| {
            let mut args = argv(TINY);
            args.extend(["--meta-steps", "2", "--K", "2", "--method", method]);
            let path = ck(device);
            args.extend(["--device", device, "--save", path.to_str().unwrap()]);
            json(&bda(Some(&fake), &args))
        };
        let (cuda, cpu) = (train("cuda"), train("cpu"));
        assert!(
            cuda["device"].as_str().unwrap().starts_with("cuda"),
            "{cuda}"
        );
        let (lc, lp) = (num(&cuda, "ul_loss"), num(&cpu, "ul_loss"));
        println!("{method}: train loss cuda {lc}, cpu {lp}");
        assert!((lc - lp).abs() < 1e-5 * lp.abs(), "{method}: {lc} vs {lp}");
        assert_eq!(num(&cuda, "test_acc"), num(&cpu, "test_acc"), "{method}");
        let eval = |device: &str, from: &str| {
            let ck = ck(from);
            let args = ["fewshot", "eval", "--checkpoint", ck.to_str().unwrap()];
            let mut args = args.to_vec();
            args.extend(["--episodes", "4", "--device", device, "--quiet", "--json"]);
            num(&json(&bda(Some(&fake), &args)), "test_acc")
        };
        assert_eq!(eval("cuda", "cpu"), eval("cpu", "cuda"), "{method}: eval");
    }
    let out = json(&bda(
        Some(&fake),
        &argv(
            "fewshot bench --method maml --device cuda --ways 3 --queries 2 --meta-batch 2 --K 2 --steps 1 --channels 4 --image-size 12 --json",
        ),
    ));
    assert!(num(&out, "s_per_ul_iter") > 0.0, "{out}");
}

#[test]
fn without_cuda_the_probe_error_is_one_line() {
    // Only meaningful where no real driver is installed (CI, this container).
    let out = bda(
        None,
        &["fewshot", "bench", "--device", "cuda", "--steps", "1"],
    );
    if out.status.success() {
        println!("skipped: a CUDA device is present");
        return;
    }
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("--device cuda:0: "), "{err}");
}
