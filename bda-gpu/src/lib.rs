#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod conv4;
mod device;
mod error;
mod fewshot;
mod gemm;
mod head;
mod hyperclean;
mod kernels;
mod launch;
mod meta;
mod network;
mod on_device;
mod probe;
mod ranks;

pub use conv4::{CHUNK_IMAGES, check_shape};
pub use device::GpuDevice;
pub use error::GpuError;
pub use fewshot::{Episodes, FewshotError, FewshotGpu, TaskResults};
pub use head::{BatchedHead, HeadDims, HeadGpu};
pub use hyperclean::{CHUNK_ROWS, Hyperclean, HypercleanGpu, HypercleanMlp, HypercleanMlpGpu};
pub use launch::GpuVec;
pub use meta::GpuMeta;
pub use network::{GpuNetworkMeta, GpuTask};
pub use on_device::OnDevice;
pub use probe::{DeviceInfo, device_count, probe};
