//! Building the host C++ parts of the tests (kernel sources through `tests/host/cuda_shim.h`,
//! the fake CUDA libraries of `tests/fake_cuda`) with the system's C++ compiler.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// A working C++17 compiler: `$CXX`, `c++`, `g++` or `clang++`.
pub fn compiler() -> Option<String> {
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

/// The crate's root folder.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Compiles `sources` (relative to the crate root) with the kernel and shim folders on the
/// include path, plus `extra` arguments, into `out`; panics with the compiler's output on error.
pub fn build(cxx: &str, sources: &[&str], extra: &[&str], out: &Path) {
    let r = root();
    let mut cmd = Command::new(cxx);
    cmd.args(["-std=c++17", "-O1", "-Wall", "-Wextra", "-Werror"]);
    for inc in ["kernels", "tests/host", "tests/fake_cuda"] {
        cmd.arg("-I").arg(r.join(inc));
    }
    for s in sources {
        cmd.arg(r.join(s));
    }
    cmd.args(extra).arg("-o").arg(out);
    let o = cmd.output().expect("run the C++ compiler");
    assert!(
        o.status.success(),
        "{cxx} failed building {}:\n{}",
        out.display(),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A fresh folder under cargo's scratch space for integration tests.
pub fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::create_dir_all(&dir).expect("create a scratch folder");
    dir
}
