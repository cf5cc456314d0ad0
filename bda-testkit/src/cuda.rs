//! Whether a GPU test may skip: without CUDA a test prints `skipped: <reason>` and passes, so
//! the tests run everywhere; with [`REQUIRE_ENV`] set (the GPU kit sets it on the device
//! machine) the same situation is a failure that names the reason, so a loader problem cannot
//! read as a pass.

use std::fmt::Display;
use std::process::Command;

/// Set to anything but `""` or `0`: a missing CUDA library or device fails the test.
pub const REQUIRE_ENV: &str = "BDA_REQUIRE_CUDA";

/// The device ordinal the GPU tests open (default 0).
pub const ORDINAL_ENV: &str = "BDA_GPU_TEST_ORDINAL";

/// Whether [`REQUIRE_ENV`] is set.
pub fn required() -> bool {
    std::env::var_os(REQUIRE_ENV).is_some_and(|v| !v.is_empty() && v != "0")
}

/// The ordinal of the device the GPU tests use: [`ORDINAL_ENV`], else 0.
pub fn ordinal() -> usize {
    std::env::var(ORDINAL_ENV)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The message of a required CUDA that is unusable.
pub fn required_message(reason: &dyn Display) -> String {
    format!("CUDA required ({REQUIRE_ENV} is set) but unusable: {reason}")
}

/// `Some(value)` when opening the device worked; otherwise prints `skipped: <reason>` and
/// returns `None`, or panics with the reason when [`required`].
pub fn or_skip<T, E: Display>(opened: Result<T, E>) -> Option<T> {
    match opened {
        Ok(v) => Some(v),
        Err(e) if required() => panic!("{}", required_message(&e)),
        Err(e) => {
            println!("skipped: {e}");
            None
        }
    }
}

/// Checks the switch itself: runs the test `test` of the current test binary in a child
/// process with [`REQUIRE_ENV`] set and [`ORDINAL_ENV`] naming a device that no machine has,
/// and asserts that it fails with [`required_message`]'s text — on a machine without CUDA
/// (no driver), with one (no such device) and on the fake device alike.
pub fn assert_required_fails(test: &str) {
    let run = Command::new(std::env::current_exe().expect("the test binary"))
        .env(REQUIRE_ENV, "1")
        .env(ORDINAL_ENV, "1000000")
        .args(["--exact", test, "--test-threads=1", "--nocapture"])
        .output()
        .expect("run the test binary");
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        !run.status.success(),
        "{test} passed with {REQUIRE_ENV}=1 and no usable device:\n{out}"
    );
    let want = format!("CUDA required ({REQUIRE_ENV} is set) but unusable: ");
    assert!(
        out.contains(&want),
        "{test} failed, not for the missing device:\n{out}"
    );
    assert!(out.contains("1 failed"), "{out}");
    assert!(!out.contains("skipped:"), "{out}");
    let reason = out.lines().find(|l| l.contains(&want)).unwrap_or_default();
    println!("{test} with {REQUIRE_ENV}=1: {reason}");
}

/// A GPU test's tolerance: `stand_in` on the stand-in device (the host-compiled kernels, where
/// f32 against the f64 reference is measured at about 1e-6), `hardware` on a real GPU, whose
/// different summation orders and fused multiply-adds are bounded more loosely until a run on
/// the hardware measures them.
pub fn tolerance(stand_in: f64, hardware: f64) -> f64 {
    if std::env::var_os(crate::cxx::FAKE_ENV).is_some() {
        stand_in
    } else {
        hardware
    }
}
