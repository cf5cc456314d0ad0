#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod buffers;
mod conv4;
mod device;
mod error;
mod fewshot;
mod gemm;
mod head;
mod kernels;
mod probe;
mod shape;
mod softmax;

pub use conv4::BN_EPS;
pub use device::GpuDevice;
pub use error::GpuError;
pub use fewshot::{Episodes, FewshotError, FewshotGpu, TaskResults};
pub use head::{HeadDims, HeadGpu};
pub use probe::{DeviceInfo, probe};
pub use shape::Conv4Shape;
pub use softmax::{GpuVec, HypercleanGpu};
