#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod error;
mod gemm;
mod kernels;
mod probe;
mod softmax;

pub use error::GpuError;
pub use probe::{DeviceInfo, probe};
pub use softmax::{GpuVec, SoftmaxGpu};
