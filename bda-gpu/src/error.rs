//! The one error type of the crate.

use cudarc::cublas::result::CublasError;
use cudarc::driver::DriverError;
use cudarc::nvrtc::result::NvrtcError;

/// Why a CUDA operation failed. `Display` is always one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GpuError {
    /// `libcuda` (the driver library) could not be loaded.
    #[error("no CUDA driver found")]
    NoDriver,
    /// The driver is present but reports no device.
    #[error("no CUDA device")]
    NoDevice,
    /// The requested ordinal is not below the device count.
    #[error("CUDA device {ordinal} not present ({count} devices)")]
    DeviceNotPresent {
        /// Requested ordinal.
        ordinal: usize,
        /// Devices the driver reports.
        count: usize,
    },
    /// `libnvrtc` could not be loaded.
    #[error("NVRTC library not found")]
    NoNvrtc,
    /// `libcublas` could not be loaded.
    #[error("cuBLAS library not found")]
    NoCublas,
    /// A CUDA library call panicked (for instance a symbol missing from an old library).
    #[error("CUDA library call failed: {0}")]
    LibraryPanic(String),
    /// A driver API call failed.
    #[error("CUDA driver: {0}")]
    Driver(#[from] DriverError),
    /// An NVRTC call failed.
    #[error("NVRTC: {0}")]
    Nvrtc(#[from] NvrtcError),
    /// NVRTC rejected a kernel source; `log` holds NVRTC's full log, `Display` its first error.
    #[error("NVRTC could not compile {module}.cu for {arch}: {}", first_line(log))]
    Compile {
        /// The module (file stem in `kernels/`).
        module: &'static str,
        /// The `--gpu-architecture` value.
        arch: String,
        /// NVRTC's log.
        log: String,
    },
    /// A cuBLAS call failed.
    #[error("cuBLAS: {0}")]
    Cublas(#[from] CublasError),
    /// The hyper-cleaning data are inconsistent (message from `HypercleanData::validate`).
    #[error("invalid data: {0}")]
    Data(&'static str),
    /// A buffer does not have the length the operation needs.
    #[error("{what}: expected length {expected}, got {got}")]
    Shape {
        /// Which buffer.
        what: &'static str,
        /// The length needed.
        expected: usize,
        /// The length given.
        got: usize,
    },
    /// A kernel that reduces over its block was to be launched with a block size that is not
    /// a positive multiple of 32 up to 1024 (a bug in this crate, caught before the launch).
    #[error("block size {0} is not a positive multiple of 32 up to 1024 (block reduction)")]
    BlockSize(u32),
    /// A dimension does not fit the 32-bit integers of cuBLAS and the kernels.
    #[error("{0} too large for 32-bit CUDA indexing")]
    TooLarge(&'static str),
    /// A product split over ranks failed on one of them: the lowest-ranked failure, which
    /// every rank reports (`rank R: <its error>`), so that none waits for the others.
    #[error("{0}")]
    Ranks(String),
}

/// The first line of an NVRTC log that says something (NVRTC logs are multi-line).
fn first_line(log: &str) -> &str {
    log.lines()
        .map(str::trim)
        .find(|l| l.contains("error"))
        .or_else(|| log.lines().map(str::trim).find(|l| !l.is_empty()))
        .unwrap_or("(empty log)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_one_line() {
        let errors = [
            GpuError::NoDriver,
            GpuError::NoDevice,
            GpuError::DeviceNotPresent {
                ordinal: 3,
                count: 1,
            },
            GpuError::NoNvrtc,
            GpuError::NoCublas,
            GpuError::Compile {
                module: "softmax",
                arch: "sm_90".into(),
                log: "softmax.cu(3): warning: x\nsoftmax.cu(7): error: y is undefined\n\n1 error\n"
                    .into(),
            },
            GpuError::Data("a label is not below the number of classes"),
            GpuError::Shape {
                what: "y",
                expected: 7850,
                got: 10,
            },
            GpuError::TooLarge("feature matrix"),
            GpuError::BlockSize(48),
        ];
        for e in &errors {
            let s = e.to_string();
            assert!(!s.contains('\n'), "{s:?}");
            assert!(!s.is_empty());
        }
        assert_eq!(errors[0].to_string(), "no CUDA driver found");
        assert_eq!(errors[1].to_string(), "no CUDA device");
        assert_eq!(
            errors[2].to_string(),
            "CUDA device 3 not present (1 devices)"
        );
        assert_eq!(errors[3].to_string(), "NVRTC library not found");
        assert_eq!(errors[4].to_string(), "cuBLAS library not found");
        assert_eq!(
            errors[5].to_string(),
            "NVRTC could not compile softmax.cu for sm_90: softmax.cu(7): error: y is undefined"
        );
    }
}
