//! `bda fewshot --ul-projection`: every convolution ends each meta-step inside its set, the
//! orthogonality sum is in the history and the chart, `sn:C` resumes bit for bit from its
//! checkpointed power-iteration vectors, and bad values are one-line errors.

use std::path::Path;
use std::process::Output;

use bda_cpu::projection::singular_values;
use bda_kernel::fewshot::Conv4Shape;
use bda_testkit::report::{argv, json, one_line_error, run};

fn bda(args: &[&str]) -> Output {
    run(Path::new(env!("CARGO_BIN_EXE_bda")), args, &[])
}

const TINY: &str = "fewshot --synthetic --channels 4 --ways 3 --shots 1 --queries 2 --meta-batch 2 --episodes 4 --val-every 2 --val-episodes 2 --threads 2 --quiet --json";

/// Train `steps` meta-steps with `proj`, saving to `save`; the report and the checkpoint.
fn train(
    proj: &str,
    steps: &str,
    save: &Path,
    extra: &[&str],
) -> (serde_json::Value, serde_json::Value) {
    let mut args = argv(TINY);
    let save = save.to_str().unwrap();
    args.extend(["--ul-projection", proj, "--ul-iters", steps, "--save", save]);
    args.extend_from_slice(extra);
    let report = json(&bda(&args));
    let ck = serde_json::from_slice(&std::fs::read(save).unwrap()).unwrap();
    (report, ck)
}

/// Each block's weight matrix (rows = filters) of a checkpoint's parameters.
fn layers(ck: &serde_json::Value) -> Vec<(Vec<f32>, usize, usize)> {
    let arch: Conv4Shape = serde_json::from_value(ck["config"]["arch"].clone()).unwrap();
    let p: Vec<f32> = serde_json::from_value(ck["params"].clone()).unwrap();
    (0..arch.blocks)
        .map(|l| {
            let (w, g, _) = arch.offsets(l);
            (p[w..g].to_vec(), arch.channels, arch.c_in(l) * 9)
        })
        .collect()
}

#[test]
fn every_layer_ends_in_its_set_and_the_history_has_the_orthogonality_sum() {
    let dir = tempfile::tempdir().unwrap();
    let ck_path = dir.path().join("run.ckpt");
    let slack = 1.0 + 1e-5;
    for proj in ["max-norm:0.3", "spectral:0.4", "sn:0.4"] {
        let (r, ck) = train(proj, "4", &ck_path, &[]);
        assert_eq!(r["config"]["ul_projection"], proj);
        assert_eq!(ck["config"]["ul_projection"], proj);
        for (l, (w, rows, cols)) in layers(&ck).into_iter().enumerate() {
            if proj.starts_with("max-norm") {
                for f in w.chunks(cols) {
                    let n = f.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
                    assert!(n <= 0.3 * slack, "{proj}: block {l}: filter norm {n}");
                }
            } else {
                let top = singular_values(&w, rows, cols).unwrap()[0];
                // sn:C bounds the power-iteration estimate, which is within a few percent
                // of σ_max after 15 + 4 steps on these small layers.
                let bound = if proj.starts_with("sn") {
                    0.4 * 1.05
                } else {
                    0.4 * slack
                };
                assert!(top <= bound, "{proj}: block {l}: σ_max {top}");
            }
        }
        let ortho: Vec<u64> = r["history"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h["orthogonality"].as_f64().is_some_and(|o| o > 0.0))
            .map(|h| h["ul_iter"].as_u64().unwrap())
            .collect();
        assert_eq!(ortho, [0, 2, 4], "{proj}");
        let power = ck["power"].as_array().unwrap();
        assert_eq!(power.len(), if proj.starts_with("sn") { 4 } else { 0 });
    }
}

#[test]
fn projections_change_the_run_and_none_is_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("run.ckpt");
    let (none, _) = train("none", "2", &p, &[]);
    let (default, _) = {
        let mut args = argv(TINY);
        args.extend(["--ul-iters", "2"]);
        (json(&bda(&args)), ())
    };
    assert_eq!(default["config"]["ul_projection"], "none");
    assert_eq!(none["history"], default["history"]);
    let (spectral, _) = train("spectral:0.2", "2", &p, &[]);
    assert_ne!(spectral["history"], none["history"]);
}

#[test]
fn spectral_normalisation_resumes_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let (full, half, resumed) = (
        dir.path().join("full.ckpt"),
        dir.path().join("half.ckpt"),
        dir.path().join("resumed.ckpt"),
    );
    let (_, a) = train("sn:0.3", "4", &full, &[]);
    train("sn:0.3", "2", &half, &[]);
    // A flag that contradicts the checkpoint is refused, naming it.
    let mut args = argv(TINY);
    args.extend([
        "--resume",
        half.to_str().unwrap(),
        "--ul-projection",
        "none",
    ]);
    let err = one_line_error(&bda(&args), 2);
    assert!(
        err.contains("--ul-projection none: the run in") && err.contains("sn:0.3"),
        "{err}"
    );
    let (_, b) = train(
        "sn:0.3",
        "4",
        &resumed,
        &["--resume", half.to_str().unwrap()],
    );
    assert_eq!(b["config"]["ul_projection"], "sn:0.3");
    for key in ["params", "adam", "power", "history"] {
        assert_eq!(a[key], b[key], "{key}");
    }
    // A checkpoint of an sn run without its vectors is refused, naming the problem.
    let mut broken = a.clone();
    broken.as_object_mut().unwrap().remove("power");
    let bad = dir.path().join("bad.ckpt");
    std::fs::write(&bad, serde_json::to_vec(&broken).unwrap()).unwrap();
    let err = one_line_error(&bda(&["fewshot", "--resume", bad.to_str().unwrap()]), 2);
    assert!(err.contains("power-iteration"), "{err}");
}

#[test]
fn bad_values_name_the_flag() {
    for v in [
        "max-norm:0",
        "spectral:-2",
        "sn:NaN",
        "spectral:inf",
        "frobenius:1",
        "spectral",
        "max-norm:x",
    ] {
        let mut args = argv(TINY);
        args.extend(["--ul-iters", "1", "--ul-projection", v]);
        let err = one_line_error(&bda(&args), 2);
        assert!(err.contains("--ul-projection"), "{v}: {err}");
    }
}

/// A layer the spectral projection cannot decompose stops the run with exit 1 (a failed
/// computation) and one line naming the meta-step, the projection and the block: an Adam
/// step of 1e39 is infinite in `f32`, so meta-step 1 makes the weights infinite.
#[test]
fn an_unprojectable_layer_stops_the_run_naming_step_and_block() {
    let mut args = argv(TINY);
    args.extend([
        "--ul-iters",
        "3",
        "--ul-lr",
        "1e39",
        "--ul-projection",
        "spectral:1",
    ]);
    let err = one_line_error(&bda(&args), 1);
    assert_eq!(
        err,
        "bda: meta-step 1: --ul-projection spectral:1, block 0: the 4×4 Gram matrix is not finite (no eigendecomposition)"
    );
}

#[test]
fn the_chart_draws_the_orthogonality_sum() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("run.svg");
    let mut args = argv(TINY);
    args.extend([
        "--ul-iters",
        "4",
        "--ul-projection",
        "max-norm:0.5",
        "--plot",
        svg.to_str().unwrap(),
    ]);
    json(&bda(&args));
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains("orthogonality sum"), "no orthogonality panel");
    assert!(text.contains("max-norm:0.5"));
}
