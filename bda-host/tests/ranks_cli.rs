//! A build without the `mpi` feature started as one of several processes by a launcher
//! refuses to run (instead of running the whole job once per process): one line from the
//! launcher's rank 0, exit 2 on every rank. With the feature, `mpi_cli.rs`.
#![cfg(not(feature = "mpi"))]

use std::path::Path;

use bda_testkit::report::{argv, run};

#[test]
fn several_processes_without_mpi_are_refused() {
    let bin = Path::new(env!("CARGO_BIN_EXE_bda"));
    for (size, rank) in [
        ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK"),
        ("PMI_SIZE", "PMI_RANK"),
    ] {
        for r in ["0", "2"] {
            let out = run(bin, &argv("toy --ul-iters 2"), &[(size, "3"), (rank, r)]);
            assert_eq!(out.status.code(), Some(2), "{size} rank {r}");
            assert!(out.stdout.is_empty());
            let err = String::from_utf8_lossy(&out.stderr);
            match r {
                "0" => {
                    assert_eq!(err.lines().count(), 1, "{err}");
                    assert!(
                        err.contains("one of 3") && err.contains("--features mpi"),
                        "{err}"
                    );
                }
                _ => assert!(err.is_empty(), "rank {r} says nothing: {err}"),
            }
        }
    }
    // One process under a launcher runs.
    let out = run(
        bin,
        &argv("toy --ul-iters 2"),
        &[("OMPI_COMM_WORLD_SIZE", "1"), ("OMPI_COMM_WORLD_RANK", "0")],
    );
    assert!(out.status.success());
}
