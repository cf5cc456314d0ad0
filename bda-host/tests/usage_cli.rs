//! The `bda` command itself: what a bare call prints, and that a mistyped or out-of-range
//! flag is one line naming it (with clap's suggestion) and exit 2.

use std::path::Path;

use bda_testkit::report::{argv, one_line_error, run};

fn bda(args: &[&str]) -> std::process::Output {
    run(Path::new(env!("CARGO_BIN_EXE_bda")), args, &[])
}

#[test]
fn a_bare_call_lists_the_commands() {
    let out = bda(&[]);
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stderr);
    for command in ["toy", "hyperclean", "fewshot", "data", "plot"] {
        assert!(text.contains(&format!("  {command} ")), "{text}");
    }
}

#[test]
fn mistyped_and_out_of_range_flags_are_one_line() {
    let err = one_line_error(&bda(&argv("hyperclean --methd bda")), 2);
    assert!(
        err.contains("'--methd'") && err.contains("'--method'"),
        "{err}"
    );
    assert!(err.ends_with("(see bda hyperclean --help)"), "{err}");
    let err = one_line_error(&bda(&argv("toy --mu 2")), 2);
    assert!(err.starts_with("bda: --mu 2:"), "{err}");
    let err = one_line_error(&bda(&argv("hyperclean --threads 100000")), 2);
    assert!(err.contains("--threads 100000"), "{err}");
    let err = one_line_error(
        &bda(&argv(
            "fewshot eval --random-backbone --synthetic --episodes 0",
        )),
        2,
    );
    assert!(err.contains("--episodes 0"), "{err}");
}

#[test]
fn the_step_count_is_k_or_capital_k_in_every_command() {
    let dir = bda_testkit::report::fixture("fmnist-tiny");
    let run = |flag: &str| {
        let mut args = argv("hyperclean --n-train 50 --n-val 50 --ul-iters 1 --quiet --json");
        args.extend([flag, "3", "--data-dir", &dir]);
        bda_testkit::report::json(&bda(&args))["K"].clone()
    };
    assert_eq!(run("--k"), 3);
    assert_eq!(run("--K"), 3);
    let toy = bda_testkit::report::json(&bda(&argv("toy --k 4 --ul-iters 1 --json")));
    assert_eq!(toy["K"], 4);
}
