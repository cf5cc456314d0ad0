//! Finding a usable CUDA device without panicking.
//!
//! cudarc loads `libcuda`, `libnvrtc` and `libcublas` with `dlopen` on first use and panics when
//! one is missing, so every entry point of this crate first goes through [`context`] (called by
//! [`GpuDevice::open`]), which checks that each library can be loaded before any cudarc call
//! touches it.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use cudarc::driver::{CudaContext, DriverError, sys as drv};

use crate::{GpuDevice, GpuError};

/// A device's description, as [`GpuDevice::info`] and [`probe`] give it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Device ordinal (as in `CUDA_VISIBLE_DEVICES` order).
    pub ordinal: usize,
    /// Device name, e.g. `NVIDIA H100 80GB HBM3`.
    pub name: String,
    /// Compute capability `(major, minor)`, e.g. `(9, 0)`.
    pub compute_capability: (u32, u32),
    /// Total device memory in bytes.
    pub total_memory: usize,
}

impl DeviceInfo {
    /// The NVRTC real architecture of the device, e.g. `sm_90`.
    pub fn arch(&self) -> String {
        let (major, minor) = self.compute_capability;
        format!("sm_{major}{minor}")
    }
}

impl fmt::Display for DeviceInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CUDA device {}: {} ({}, {:.1} GiB)",
            self.ordinal,
            self.name,
            self.arch(),
            self.total_memory as f64 / (1u64 << 30) as f64
        )
    }
}

/// Checks that the CUDA driver, NVRTC and cuBLAS libraries can be loaded and that device
/// `ordinal` exists, and describes it. Never panics: a missing library or device is an `Err`.
///
/// For callers that only ask (a `--help` line, a report header). A command that goes on to
/// compute opens the device once with [`GpuDevice::open`] and keeps it: this opens one and
/// drops it again.
pub fn probe(ordinal: usize) -> Result<DeviceInfo, GpuError> {
    GpuDevice::open(ordinal).map(|d| d.info().clone())
}

/// The number of CUDA devices this process sees (after `CUDA_VISIBLE_DEVICES`), checking that
/// the libraries load first. Never panics. A launcher's ranks use it to share a node's
/// devices: each takes the device of its node-local rank, modulo this count.
pub fn device_count() -> Result<usize, GpuError> {
    check_libraries()?;
    guard(count_devices)
}

/// The primary context of device `ordinal` and its description, after checking that the
/// libraries load and the device exists (the first half of [`GpuDevice::open`]).
pub(crate) fn context(ordinal: usize) -> Result<(Arc<CudaContext>, DeviceInfo), GpuError> {
    check_libraries()?;
    guard(|| {
        let count = count_devices()?;
        if count == 0 {
            return Err(GpuError::NoDevice);
        }
        if ordinal >= count {
            return Err(GpuError::DeviceNotPresent { ordinal, count });
        }
        let ctx = CudaContext::new(ordinal)?;
        let (major, minor) = ctx.compute_capability()?;
        let info = DeviceInfo {
            ordinal,
            name: ctx.name()?,
            compute_capability: (major.max(0) as u32, minor.max(0) as u32),
            total_memory: ctx.total_mem()?,
        };
        Ok((ctx, info))
    })
}

/// The three libraries, in the order a user has to install them.
fn check_libraries() -> Result<(), GpuError> {
    // SAFETY: these only try `dlopen` on the candidate names and close the handle again; they
    // run no library code.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(GpuError::NoDriver);
    }
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(GpuError::NoNvrtc);
    }
    if !unsafe { cudarc::cublas::sys::is_culib_present() } {
        return Err(GpuError::NoCublas);
    }
    Ok(())
}

/// `cuInit` + `cuDeviceGetCount`; "no device" (`cuInit` fails with it when no GPU is visible)
/// is a count of 0.
fn count_devices() -> Result<usize, GpuError> {
    match CudaContext::device_count() {
        Ok(n) => Ok(n.max(0) as usize),
        Err(DriverError(drv::CUresult::CUDA_ERROR_NO_DEVICE)) => Ok(0),
        Err(e) => Err(e.into()),
    }
}

/// Runs `f`, turning a panic inside cudarc (a library present but lacking a symbol of the CUDA
/// version cudarc was built for) into an error.
pub(crate) fn guard<T>(f: impl FnOnce() -> Result<T, GpuError>) -> Result<T, GpuError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("panic");
            Err(GpuError::LibraryPanic(
                msg.lines().next().unwrap_or("panic").to_owned(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_never_panics() {
        // On a machine without CUDA (CI, the development container) this must be an error, on a
        // GPU machine a description of device 0; either way no panic.
        match probe(0) {
            Ok(info) => {
                assert_eq!(info.ordinal, 0);
                assert!(info.compute_capability.0 >= 3, "{info}");
                assert!(info.total_memory > 0);
            }
            Err(e) => {
                let s = e.to_string();
                assert!(!s.contains('\n'));
                eprintln!("probe(0): {s}");
            }
        }
    }

    #[test]
    fn missing_driver_is_reported() {
        if unsafe { cudarc::driver::sys::is_culib_present() } {
            eprintln!("skipped: libcuda is present on this machine");
            return;
        }
        assert_eq!(probe(0), Err(GpuError::NoDriver));
        assert_eq!(probe(7).unwrap_err().to_string(), "no CUDA driver found");
    }

    #[test]
    fn absent_ordinal_is_an_error() {
        match probe(usize::MAX) {
            Ok(info) => panic!("device {info} should not exist"),
            Err(GpuError::DeviceNotPresent { ordinal, .. }) => assert_eq!(ordinal, usize::MAX),
            Err(e) => eprintln!("probe(MAX): {e}"),
        }
    }

    #[test]
    fn guard_turns_panics_into_errors() {
        let r: Result<(), GpuError> = guard(|| panic!("Unable to dynamically load \"cuda\"\nmore"));
        assert_eq!(
            r,
            Err(GpuError::LibraryPanic(
                "Unable to dynamically load \"cuda\"".into()
            ))
        );
    }
}
