//! `--device`: where `bda hyperclean` and `bda fewshot` compute (`cpu`, `cuda`, `cuda:N`),
//! and the one place a command opens it.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::CliError;

/// Where a command computes: the device and the CPU threads. Shared by every command that
/// can run on a GPU.
#[derive(clap::Args, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlaceArgs {
    /// Worker threads (0: one per core). Results do not depend on it.
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// `cpu`, `cuda` (device 0) or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: Device,
}

impl PlaceArgs {
    /// Open the device, then run `f` on it in a pool of `threads` workers.
    pub fn run<R: Send>(
        &self,
        f: impl FnOnce(&OpenDevice) -> Result<R, CliError> + Send,
    ) -> Result<R, CliError> {
        let device = self.device.open()?;
        crate::threads::install(self.threads, || f(&device))
    }
}

/// Where the computation runs, as the user names it.
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

impl Serialize for Device {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Device {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl Device {
    /// Open the device: nothing for the CPU; for CUDA, the driver, NVRTC and cuBLAS are
    /// probed and the device's context is created — once per command, before any data is
    /// read, so a missing driver or device is one line and exit 2.
    pub fn open(self) -> Result<OpenDevice, CliError> {
        match self {
            Device::Cpu => Ok(OpenDevice::Cpu),
            Device::Cuda(n) => bda_gpu::GpuDevice::open(n)
                .map(|d| OpenDevice::Cuda(Box::new(d)))
                .map_err(|e| CliError::input(format!("--device {self}: {e}"))),
        }
    }
}

/// An opened device, handed to the backends of a command.
pub enum OpenDevice {
    /// The CPU.
    Cpu,
    /// A CUDA device with its context, stream, module cache and cuBLAS handle.
    Cuda(Box<bda_gpu::GpuDevice>),
}

impl OpenDevice {
    /// `cpu` or `cuda:N`.
    pub fn name(&self) -> String {
        match self {
            OpenDevice::Cpu => "cpu".into(),
            OpenDevice::Cuda(d) => format!("cuda:{}", d.info().ordinal),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Device;

    #[test]
    fn device_names_round_trip() {
        for d in [Device::Cpu, Device::Cuda(0), Device::Cuda(3)] {
            assert_eq!(d.to_string().parse::<Device>(), Ok(d));
            let j = serde_json::to_string(&d).unwrap();
            assert_eq!(serde_json::from_str::<Device>(&j).unwrap(), d);
        }
        assert_eq!("cuda".parse::<Device>(), Ok(Device::Cuda(0)));
        for bad in ["gpu", "cuda:", "cuda:x", "cuda:-1", ""] {
            assert!(bad.parse::<Device>().is_err(), "{bad}");
        }
    }

    #[test]
    fn cuda_without_a_driver_is_one_line() {
        if let Err(e) = Device::Cuda(0).open() {
            let m = e.to_string();
            assert!(
                m.starts_with("--device cuda:0: ") && !m.contains('\n'),
                "{m}"
            );
            assert_eq!(e.exit_code(), 2);
        }
    }
}
