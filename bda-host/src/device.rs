//! `--device`: where `bda hyperclean` and `bda fewshot` compute (`cpu`, `cuda`, `cuda:N`),
//! the one place a command opens it, and the one place a (device, model) pair becomes a
//! backend: [`hyperclean_backend`] and [`fewshot_backend`], as candle's `Device`
//! dispatches once. A new device is one more arm in each.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use std::fmt::Display;

use bda_cpu::hyperclean::{CpuClassifier, HypercleanCpu, Linear, Mlp, Predictor};
use bda_kernel::backend::Methods;
use bda_kernel::fewshot::{Conv4Shape, HeadProcedure, MetaBackend};
use bda_kernel::hyperclean::{Classifier, HypercleanData};

use crate::error::CliError;
use crate::ranks::Reduce;

/// Where a command computes: the device and the CPU threads. Shared by every command that
/// can run on a GPU.
#[derive(clap::Args, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlaceArgs {
    /// Worker threads (0: one per core). Results do not depend on it.
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// `cpu`, `cuda` (device 0; under an MPI launcher, the device of the node-local rank) or
    /// `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: Device,
    /// How MPI ranks add their partial results: `ordered` (in chunk order: the same bits on
    /// any number of ranks) or `fast` (MPI's all-reduce: results then depend on the number
    /// of ranks). One process: no difference.
    #[arg(long, value_enum, default_value_t = Reduce::Ordered)]
    #[serde(default)]
    pub reduce: Reduce,
}

impl PlaceArgs {
    /// Open the device, then run `f` on it in a pool of `threads` workers.
    pub fn run<R: Send>(
        &self,
        f: impl FnOnce(&OpenDevice) -> Result<R, CliError> + Send,
    ) -> Result<R, CliError> {
        crate::ranks::set_reduce(self.reduce);
        // A device may fail to open on one rank alone: every rank ends with its error.
        let device = crate::ranks::agree(self.device.open())?;
        crate::threads::install(self.threads, || f(&device))
    }
}

/// Where the computation runs, as the user names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    /// The CPU backend.
    Cpu,
    /// A CUDA device: by ordinal, or (`None`, plain `cuda`) the device of the node-local
    /// rank among the node's devices (device 0 for one process).
    Cuda(Option<usize>),
}

impl std::str::FromStr for Device {
    type Err = String;

    /// `cpu`, `cuda` or `cuda:N`.
    fn from_str(s: &str) -> Result<Device, String> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(None)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(|n| Device::Cuda(Some(n)))
                .ok_or_else(|| format!("expected cpu, cuda or cuda:N, not {s:?}")),
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(None) => f.write_str("cuda"),
            Device::Cuda(Some(n)) => write!(f, "cuda:{n}"),
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
    /// read, so a missing driver or device is one line and exit 2 (naming the device
    /// `cuda:N` that plain `cuda` stood for).
    pub fn open(self) -> Result<OpenDevice, CliError> {
        match self {
            Device::Cpu => Ok(OpenDevice::Cpu),
            #[cfg(feature = "cuda")]
            Device::Cuda(n) => {
                let ordinal = n.unwrap_or_else(|| {
                    // The node's ranks take its devices in turn; without a device (or a
                    // driver) device 0, whose error says why.
                    let count = bda_gpu::device_count().unwrap_or(0);
                    crate::ranks::local_rank() % count.max(1)
                });
                bda_gpu::GpuDevice::open(ordinal)
                    .map(|d| OpenDevice::Cuda(Box::new(d)))
                    .map_err(|e| CliError::input(format!("--device cuda:{ordinal}: {e}")))
            }
            #[cfg(not(feature = "cuda"))]
            Device::Cuda(_) => Err(CliError::input(format!(
                "--device {self}: this bda was built without CUDA (build bda-host with its default feature `cuda`)"
            ))),
        }
    }
}

/// An opened device, handed to the backends of a command.
pub enum OpenDevice {
    /// The CPU.
    Cpu,
    /// A CUDA device with its context, stream, module cache and cuBLAS handle.
    #[cfg(feature = "cuda")]
    Cuda(Box<bda_gpu::GpuDevice>),
}

impl OpenDevice {
    /// `cpu` or `cuda:N`.
    pub fn name(&self) -> String {
        match self {
            OpenDevice::Cpu => "cpu".into(),
            #[cfg(feature = "cuda")]
            OpenDevice::Cuda(d) => format!("cuda:{}", d.info().ordinal),
        }
    }
}

/// The predictions of one classifier on a fixed set of samples (the validation and test
/// sets of a run), whatever device trained it: the classifier's CPU backend computes them.
pub type PredictorFn =
    for<'a> fn(&HypercleanData<'_>, &'a [f32], &[u8]) -> Result<Predictor<'a>, String>;

/// What a hyper-cleaning run learns about its backend besides the products.
#[derive(Clone, Copy)]
pub struct BackendInfo<'a> {
    /// The device (`cpu`, `cuda:0`).
    pub device: &'a str,
    /// The kernels for reports (`avx2`, `portable`, `cuda (NVIDIA H200)`).
    pub kernels: &'a str,
    /// The classifier's predictions.
    pub predictor: PredictorFn,
}

/// A hyper-cleaning command's work on a backend: its upper-level loop, written once over
/// any backend that runs the engine's methods ([`Methods`]).
pub trait HypercleanJob {
    /// What the job returns.
    type Output;
    /// Run on `backend`.
    fn run<B: Methods>(
        self,
        backend: &mut B,
        info: BackendInfo<'_>,
    ) -> Result<Self::Output, CliError>
    where
        B::Error: Display;
}

/// The hyper-cleaning backend of `problem`'s classifier on `device`, handed to `job`.
/// `prob_cache`: the CPU backends keep each iterate's forward pass (softmax outputs and
/// hidden activations) for the reverse pass.
pub fn hyperclean_backend<J: HypercleanJob>(
    device: &OpenDevice,
    problem: &HypercleanData<'_>,
    prob_cache: bool,
    job: J,
) -> Result<J::Output, CliError> {
    match (device, problem.classifier) {
        (OpenDevice::Cpu, Classifier::Linear) => on_cpu::<Linear, J>(problem, prob_cache, job),
        (OpenDevice::Cpu, Classifier::Mlp { .. }) => on_cpu::<Mlp, J>(problem, prob_cache, job),
        #[cfg(feature = "cuda")]
        (OpenDevice::Cuda(dev), Classifier::Linear) => {
            let b = bda_gpu::HypercleanGpu::new(dev, problem).and_then(|b| match ranked() {
                Some(comm) => b.with_ranks(comm),
                None => Ok(b),
            });
            on_cuda(
                device,
                dev,
                b,
                bda_cpu::hyperclean::predictor::<Linear>,
                job,
            )
        }
        #[cfg(feature = "cuda")]
        (OpenDevice::Cuda(dev), Classifier::Mlp { .. }) => {
            let b = bda_gpu::HypercleanMlpGpu::new(dev, problem).and_then(|b| match ranked() {
                Some(comm) => b.with_ranks(comm),
                None => Ok(b),
            });
            on_cuda(device, dev, b, bda_cpu::hyperclean::predictor::<Mlp>, job)
        }
    }
}

fn on_cpu<C: CpuClassifier, J: HypercleanJob>(
    problem: &HypercleanData<'_>,
    prob_cache: bool,
    job: J,
) -> Result<J::Output, CliError> {
    let mut backend = HypercleanCpu::<C>::new(problem)
        .map_err(|e| CliError::input(format!("data: {e}")))?
        .with_ranks(crate::ranks::comm());
    backend.set_prob_cache(prob_cache);
    let kernels = format!("{:?}", backend.kernels()).to_lowercase();
    let info = BackendInfo {
        device: "cpu",
        kernels: &kernels,
        predictor: bda_cpu::hyperclean::predictor::<C>,
    };
    job.run(&mut backend, info)
}

/// The ranks a CUDA backend splits its rows (images) over: under a launcher, whatever the number of
/// ranks (`mpirun -np 1` sums chunk by chunk too, so its results have the bits of every
/// other number of ranks); `None` for a process started on its own, whose products are
/// whole-set GEMMs (faster, other roundings).
#[cfg(feature = "cuda")]
fn ranked() -> Option<std::sync::Arc<dyn bda_kernel::collective::Collective>> {
    crate::ranks::launched().map(|_| crate::ranks::comm())
}

#[cfg(feature = "cuda")]
fn on_cuda<B: Methods<Error = bda_gpu::GpuError>, J: HypercleanJob>(
    device: &OpenDevice,
    dev: &bda_gpu::GpuDevice,
    backend: Result<B, bda_gpu::GpuError>,
    predictor: PredictorFn,
    job: J,
) -> Result<J::Output, CliError> {
    let name = device.name();
    let backend = backend.map_err(|e| CliError::run(format!("--device {name}: {e}")));
    let mut backend = crate::ranks::agree(backend)?;
    let kernels = format!("cuda ({})", dev.info().name);
    let info = BackendInfo {
        device: &name,
        kernels: &kernels,
        predictor,
    };
    job.run(&mut backend, info)
}

/// The few-shot backend computing meta-gradients and evaluations for backbones of shape
/// `shape` on `device` (split over the ranks under a launcher). Fails on one rank alone
/// when its device does: callers agree on the outcome ([`crate::ranks::agree`]).
#[cfg_attr(not(feature = "cuda"), allow(unused_variables))]
pub fn fewshot_backend(
    device: &OpenDevice,
    shape: Conv4Shape,
    head: &HeadProcedure,
) -> Result<Box<dyn MetaBackend>, CliError> {
    if head.network.is_some() {
        // The whole network as the lower level: on the CPU one task per thread, on a
        // device one task after another on its stream.
        return match device {
            OpenDevice::Cpu => Ok(Box::new(bda_cpu::network::NetworkMeta::with_ranks(
                crate::ranks::comm(),
            ))),
            #[cfg(feature = "cuda")]
            OpenDevice::Cuda(dev) => {
                let gpu = bda_gpu::GpuNetworkMeta::new(dev)
                    .map(|g| match ranked() {
                        Some(comm) => g.with_ranks(comm),
                        None => g,
                    })
                    .map_err(|e| CliError::run(format!("--device {}: {e}", device.name())))?;
                Ok(Box::new(gpu))
            }
        };
    }
    match device {
        OpenDevice::Cpu => Ok(Box::new(bda_cpu::fewshot::CpuMeta::with_ranks(
            crate::ranks::comm(),
        ))),
        #[cfg(feature = "cuda")]
        OpenDevice::Cuda(dev) => {
            let gpu = bda_gpu::GpuMeta::new(dev, shape).and_then(|g| match ranked() {
                Some(comm) => g.with_ranks(comm),
                None => Ok(g),
            });
            // The callers agree on the outcome of their set-up, this included.
            let gpu = gpu.map_err(|e| CliError::run(format!("--device {}: {e}", device.name())))?;
            Ok(Box::new(gpu))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Device;

    #[test]
    fn device_names_round_trip() {
        for d in [
            Device::Cpu,
            Device::Cuda(None),
            Device::Cuda(Some(0)),
            Device::Cuda(Some(3)),
        ] {
            assert_eq!(d.to_string().parse::<Device>(), Ok(d));
            let j = serde_json::to_string(&d).unwrap();
            assert_eq!(serde_json::from_str::<Device>(&j).unwrap(), d);
        }
        assert_eq!("cuda".parse::<Device>(), Ok(Device::Cuda(None)));
        assert_eq!("cuda:0".parse::<Device>(), Ok(Device::Cuda(Some(0))));
        for bad in ["gpu", "cuda:", "cuda:x", "cuda:-1", ""] {
            assert!(bad.parse::<Device>().is_err(), "{bad}");
        }
    }

    /// Built without the `cuda` feature, `--device cuda` is refused in one line saying how
    /// to get it (exit 2).
    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_in_a_cpu_only_build_is_one_line() {
        let e = Device::Cuda(Some(1)).open().err().unwrap();
        assert_eq!(
            e.to_string(),
            "--device cuda:1: this bda was built without CUDA (build bda-host with its default feature `cuda`)"
        );
        assert_eq!(e.exit_code(), 2);
    }

    /// Plain `cuda` names the device it stood for (device 0 for one process).
    #[cfg(feature = "cuda")]
    #[test]
    fn cuda_without_a_driver_is_one_line() {
        if let Err(e) = Device::Cuda(None).open() {
            let m = e.to_string();
            assert!(
                m.starts_with("--device cuda:0: ") && !m.contains('\n'),
                "{m}"
            );
            assert_eq!(e.exit_code(), 2);
        }
    }
}
