//! Compiles the CUDA kernel sources as host C++ (through `tests/host/cuda_shim.h`) and runs
//! `tests/host/kernels_check.cpp`, which checks their arithmetic against finite differences
//! and definitions. Needs a C++17 compiler (`$CXX`, `c++`, `g++` or `clang++`), not CUDA;
//! prints `skipped: <reason>` when there is none.

use std::process::Command;

use bda_testkit::cxx;

#[test]
fn kernel_arithmetic_on_the_host() {
    let Some(cc) = cxx::compiler() else {
        println!("skipped: no C++ compiler");
        return;
    };
    let exe = cxx::scratch(env!("CARGO_TARGET_TMPDIR"), "host_kernels").join("kernels_check");
    cxx::build(&cc, &["tests/host/kernels_check.cpp"], &[], &exe);
    let run = Command::new(&exe)
        .envs(cxx::sanitizer_env(&cc, false))
        .output()
        .expect("run the kernel check");
    let report = String::from_utf8_lossy(&run.stdout);
    println!("{report}");
    assert!(
        run.status.success(),
        "kernel checks failed:\n{report}{}",
        String::from_utf8_lossy(&run.stderr)
    );
}
