//! Compiles the CUDA kernel sources as host C++ (through `tests/host/cuda_shim.h`) and runs
//! `tests/host/kernels_check.cpp`, which checks their arithmetic against finite differences
//! and definitions. Needs a C++17 compiler (`$CXX`, `c++`, `g++` or `clang++`), not CUDA;
//! prints `skipped: <reason>` when there is none.

use std::path::Path;
use std::process::Command;

fn compiler() -> Option<String> {
    let candidates = std::env::var("CXX")
        .into_iter()
        .chain(["c++", "g++", "clang++"].map(String::from));
    candidates.into_iter().find(|cxx| {
        Command::new(cxx)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

#[test]
fn kernel_arithmetic_on_the_host() {
    let Some(cxx) = compiler() else {
        println!("skipped: no C++ compiler");
        return;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let exe = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bda_gpu_kernels_check");
    let out = Command::new(&cxx)
        .args(["-std=c++17", "-O1", "-Wall", "-Wextra", "-Werror"])
        .arg("-I")
        .arg(root.join("kernels"))
        .arg("-I")
        .arg(root.join("tests/host"))
        .arg(root.join("tests/host/kernels_check.cpp"))
        .arg("-o")
        .arg(&exe)
        .output()
        .expect("run the C++ compiler");
    assert!(
        out.status.success(),
        "{cxx} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = Command::new(&exe).output().expect("run the kernel check");
    let report = String::from_utf8_lossy(&run.stdout);
    println!("{report}");
    assert!(
        run.status.success(),
        "kernel checks failed:\n{report}{}",
        String::from_utf8_lossy(&run.stderr)
    );
}
