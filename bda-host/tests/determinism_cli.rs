//! The same seed gives the same JSON with 1, 2 and 3 threads, on inputs of several of the
//! backends' chunks (256 rows for softmax regression, 128 for the network; the few-shot
//! meta-batch's images): data hyper-cleaning with both classifiers and every method,
//! few-shot training and evaluation. (`bda data kanji`: `data_kanji_cli.rs`.)

use std::path::Path;

use bda_testkit::report::{argv, fixture, json, run, without_timings};
use serde_json::Value;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_bda"))
}

/// The report of `bda ARGS --threads T`, without timings and thread counts.
fn report(args: &str, threads: u32) -> Value {
    let full = format!("{args} --threads {threads}");
    let out = run(bin(), &argv(&full), &[]);
    let mut v = without_timings(&json(&out));
    let o = v.as_object_mut().unwrap();
    o.remove("threads");
    if let Some(Value::Object(c)) = o.get_mut("config") {
        c.remove("threads");
    }
    v
}

fn same_for_1_2_3_threads(args: &str) -> Value {
    let one = report(args, 1);
    for t in [2, 3] {
        assert_eq!(report(args, t), one, "{args}: --threads {t} differs from 1");
    }
    one
}

#[test]
fn hyper_cleaning_every_method_both_classifiers() {
    let dir = tempfile::tempdir().unwrap();
    // 700 training rows (three 256-row chunks, six 128-row ones), 12×12 images.
    bda_testkit::idx::write_dataset(dir.path(), 900, 150, 12, 3).unwrap();
    let data = dir.path().display();
    for model in ["--model linear", "--model mlp --hidden 12"] {
        for method in ["bda", "rhg", "trhg", "ihg", "obda"] {
            let args = format!(
                "hyperclean --data-dir {data} --n-train 700 --n-val 150 --K 4 --ul-iters 2 \
                 --method {method} {model} --seed 5 --json --quiet"
            );
            let v = same_for_1_2_3_threads(&args);
            assert_eq!(v["method"], method);
            assert!(v["history"].as_array().unwrap().len() >= 2, "{v}");
        }
    }
}

#[test]
fn few_shot_training_and_evaluation() {
    let dir = tempfile::tempdir().unwrap();
    let data = fixture("omniglot-tiny");
    let ckpt = dir.path().join("run.ckpt");
    let train = format!(
        "fewshot --data-dir {data} --ways 3 --shots 1 --queries 2 --meta-batch 3 --channels 6 \
         --ul-iters 3 --val-every 2 --val-episodes 3 --episodes 6 --seed 2 --quiet --json"
    );
    let v = same_for_1_2_3_threads(&train);
    assert!(v["test_acc"].as_f64().is_some(), "{v}");
    // A checkpoint to evaluate: written once, evaluated with each thread count.
    let out = run(
        bin(),
        &argv(&format!("{train} --threads 2 --save {}", ckpt.display())),
        &[],
    );
    json(&out);
    let eval = format!(
        "fewshot eval --checkpoint {} --data-dir {data} --episodes 8 --seed 4 --quiet --json",
        ckpt.display()
    );
    let e = same_for_1_2_3_threads(&eval);
    assert!(e["test_acc"].as_f64().is_some(), "{e}");
}
