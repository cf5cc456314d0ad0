//! Building bda-gpu's host C++ test parts (kernel sources through `tests/host/cuda_shim.h`,
//! the CPU stand-ins of libcuda, cuBLAS and NVRTC in `tests/fake_cuda`) with the system's C++
//! compiler, and running tests against those stand-ins (the "fake device").

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

/// The bda-gpu crate's root folder (the C++ sources live there, next to the kernels).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../bda-gpu")
}

/// Set (to anything but `0`) to build the C++ parts with AddressSanitizer and
/// UndefinedBehaviorSanitizer, and run them with the sanitizers' runtime ([`sanitizer_env`]).
pub const SANITIZE_ENV: &str = "BDA_FAKE_CUDA_SANITIZE";

/// Whether [`SANITIZE_ENV`] asks for the sanitizers.
pub fn sanitize() -> bool {
    std::env::var_os(SANITIZE_ENV).is_some_and(|v| v != "0")
}

/// The environment a program built by [`build`] runs in: with the sanitizers, their options
/// (any report is fatal; no leak check: the fake device keeps its threads' stacks and
/// functions for the life of the process) and, for a Rust process that loads the fake
/// libraries, AddressSanitizer's runtime preloaded (it must come first).
pub fn sanitizer_env(cxx: &str, preload: bool) -> Vec<(String, String)> {
    if !sanitize() {
        return Vec::new();
    }
    let mut env = vec![
        (
            "ASAN_OPTIONS".into(),
            "detect_leaks=0:abort_on_error=1".into(),
        ),
        (
            "UBSAN_OPTIONS".into(),
            "halt_on_error=1:print_stacktrace=1".into(),
        ),
    ];
    if preload {
        let lib = Command::new(cxx)
            .arg("-print-file-name=libasan.so")
            .output()
            .expect("ask the C++ compiler for its AddressSanitizer runtime");
        let lib = String::from_utf8_lossy(&lib.stdout).trim().to_string();
        env.push(("LD_PRELOAD".into(), lib));
    }
    env
}

/// Compiles `sources` (relative to the crate root) with the kernel and shim folders on the
/// include path, plus `extra` arguments, into `out`; panics with the compiler's output on error.
/// With [`SANITIZE_ENV`] set, with `-fsanitize=address,undefined`.
pub fn build(cxx: &str, sources: &[&str], extra: &[&str], out: &Path) {
    let r = root();
    let mut cmd = Command::new(cxx);
    cmd.args(["-std=c++17", "-O1", "-Wall", "-Wextra", "-Werror"]);
    if sanitize() {
        cmd.args([
            "-fsanitize=address,undefined",
            "-fno-sanitize-recover=undefined",
            "-fno-omit-frame-pointer",
        ]);
    }
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

/// The folder `name` under `base` (an integration test passes `env!("CARGO_TARGET_TMPDIR")`),
/// created if needed.
pub fn scratch(base: &str, name: &str) -> PathBuf {
    let dir = Path::new(base).join(name);
    std::fs::create_dir_all(&dir).expect("create a scratch folder");
    dir
}

/// Set in the child processes that [`run_on_fake_device`] starts.
pub const FAKE_ENV: &str = "BDA_GPU_FAKE_CUDA";

/// Builds the CPU stand-ins of libcuda, libcublas and libnvrtc (`tests/fake_cuda`) into the
/// scratch folder `base/name` and returns it.
pub fn build_fake_cuda(cxx: &str, base: &str, name: &str) -> PathBuf {
    let dir = scratch(base, name);
    let so = |lib: &str| dir.join(format!("lib{lib}.so"));
    let soname = "-Wl,-soname,libcuda.so".to_string();
    build(
        cxx,
        &["tests/fake_cuda/cuda.cpp"],
        &["-shared", "-fPIC", &soname],
        &so("cuda"),
    );
    let libdir = format!("-L{}", dir.display());
    build(
        cxx,
        &["tests/fake_cuda/cublas.cpp"],
        &["-shared", "-fPIC", &libdir, "-lcuda", "-Wl,-rpath,$ORIGIN"],
        &so("cublas"),
    );
    build(
        cxx,
        &["tests/fake_cuda/nvrtc.cpp"],
        &["-shared", "-fPIC"],
        &so("nvrtc"),
    );
    dir
}

/// Runs the current test binary's tests (all but `skip`) once more in a child process whose
/// CUDA libraries are the fake ones, and checks that they passed on the fake device. Returns
/// without running anything in the child itself, on non-Linux hosts and without a C++
/// compiler (printing `skipped: …`).
pub fn run_on_fake_device(base: &str, scratch_name: &str, skip: &str) {
    if std::env::var_os(FAKE_ENV).is_some() {
        return; // already the child
    }
    if !cfg!(target_os = "linux") {
        println!("skipped: the fake CUDA libraries are built for Linux only");
        return;
    }
    let Some(cc) = compiler() else {
        println!("skipped: no C++ compiler");
        return;
    };
    let dir = build_fake_cuda(&cc, base, scratch_name);
    let path = match std::env::var("LD_LIBRARY_PATH") {
        Ok(old) if !old.is_empty() => format!("{}:{old}", dir.display()),
        _ => dir.display().to_string(),
    };
    let run = Command::new(std::env::current_exe().unwrap())
        .envs(sanitizer_env(&cc, true))
        .env(FAKE_ENV, "1")
        .env("LD_LIBRARY_PATH", path)
        .args(["--test-threads=1", "--nocapture", "--skip", skip])
        .output()
        .expect("run the tests on the fake device");
    let out = String::from_utf8_lossy(&run.stdout);
    let err = String::from_utf8_lossy(&run.stderr);
    println!("{out}");
    assert!(
        run.status.success(),
        "tests on the fake device failed:\n{out}\n{err}"
    );
    assert!(
        !out.contains("skipped:"),
        "the fake device was not used:\n{out}"
    );
    assert!(out.contains("fake CUDA device"), "{out}");
}
