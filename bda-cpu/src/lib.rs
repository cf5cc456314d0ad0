//! # bda-cpu
//!
//! The products of bda's models on the CPU: each backend implements the capability traits
//! of [`bda_kernel::backend`] (or the few-shot seam [`bda_kernel::fewshot::MetaBackend`])
//! and computes products, nothing else — the methods live in the kernel's engine, the
//! upper-level loops in the `bda` command line. A peer of `bda-gpu`: neither knows the
//! other; both take their shapes and model descriptors from `bda-kernel`.
//!
//! | module | holds |
//! |---|---|
//! | [`hyperclean`] | data hyper-cleaning: one backend per classifier ([`hyperclean::LinearCpu`], [`hyperclean::MlpCpu`]), byte pixels, AVX2+FMA kernels, predictions |
//! | [`conv4`] | the conv4 backbone: im2col and Winograd convolutions, batch norm, pooling, forward and backward |
//! | [`fewshot`] | few-shot meta-gradients and evaluations ([`fewshot::CpuMeta`]) |
//! | [`network`] | the whole network as the lower level (the MAML family): gradients and exact Hessian–vector products per task |
//! | [`projection`] | norms, spectral clipping and normalisation, orthogonality of weight matrices |
//! | [`linalg`] | a safe strided GEMM over matrixmultiply, and the scalar types it serves |
//! | [`aligned`] | cache-line aligned `f32` buffers for the SIMD kernels |
//! | [`ranks`] | ranks as threads of one process, behind the kernel's `Collective` (tests of a split over ranks) |
//!
//! Every reduction is made over chunks fixed independently of the thread count and summed
//! in chunk order: results do not depend on the number of threads. Split over ranks
//! (`HypercleanCpu::with_ranks`, `CpuMeta::with_ranks`), every rank passes its own chunks
//! and the partials are still added in chunk order: results do not depend on the number of
//! ranks either.
#![deny(missing_docs)]

pub mod aligned;
pub mod conv4;
pub mod fewshot;
pub mod hyperclean;
pub mod linalg;
pub mod network;
pub mod projection;
pub mod ranks;
