//! `--device`: where `bda hyperclean` and `bda fewshot` compute (`cpu`, `cuda`, `cuda:N`).

use crate::error::CliError;

/// Where the computation runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    /// The CPU backend.
    Cpu,
    /// A CUDA device by ordinal.
    Cuda(usize),
}

impl std::str::FromStr for Device {
    type Err = String;

    /// `cpu`, `cuda` (device 0) or `cuda:N`.
    fn from_str(s: &str) -> Result<Device, String> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Device::Cuda)
                .ok_or_else(|| format!("expected cpu, cuda or cuda:N, not {s:?}")),
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// Parse `--device` (a one-line input error naming the flag).
pub fn parse_device(s: &str) -> Result<Device, CliError> {
    s.parse()
        .map_err(|_| CliError::input(format!("--device {s}: expected cpu, cuda or cuda:N")))
}

/// Probe a CUDA device (the driver, NVRTC and cuBLAS libraries and the ordinal); the
/// error is one line ("no CUDA driver found", "CUDA device 3 not present (1 devices)", …).
pub fn cuda_probe(ordinal: usize) -> Result<String, String> {
    bda_gpu::probe(ordinal)
        .map(|info| {
            format!(
                "{} (sm_{}{})",
                info.name, info.compute_capability.0, info.compute_capability.1
            )
        })
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::Device;

    #[test]
    fn device_names_round_trip() {
        for d in [Device::Cpu, Device::Cuda(0), Device::Cuda(3)] {
            assert_eq!(d.to_string().parse::<Device>(), Ok(d));
        }
        assert_eq!("cuda".parse::<Device>(), Ok(Device::Cuda(0)));
        for bad in ["gpu", "cuda:", "cuda:x", "cuda:-1", ""] {
            assert!(bad.parse::<Device>().is_err(), "{bad}");
        }
    }
}
