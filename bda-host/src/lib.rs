//! Host side of bda: the `bda` command line, data loading, the CPU backends, reports and
//! plots. The methods come from `bda-kernel`'s engine; each command here is an upper-level
//! loop that drives it and reports.
//!
//! | module | holds |
//! |---|---|
//! | [`toy`] | `bda toy`: the papers' synthetic problems (fixed-size kernel) |
//! | [`hyperclean`] | `bda hyperclean`: data hyper-cleaning, its CPU backend |
//! | [`fewshot`] | `bda fewshot`: few-shot meta-learning, conv4 on the CPU |
//! | [`plot`] | `bda plot` and the SVG charts of every command |
//! | [`datagen`] | `bda data`: the kanji stand-in for Omniglot |
//! | [`data`] | MNIST-format IDX reading and the hyper-cleaning split |
//! | [`config`] | what reports record about a run, and `--config FILE` |
//! | [`optim`] | Adam (PyTorch's update) and gradient descent |
//! | [`projection`] | `Proj_X` for weight matrices (max-norm, spectral norm) and the orthogonality measure |
//! | [`linalg`] | a safe strided GEMM over matrixmultiply |
//! | [`aligned`] | cache-line aligned `f32` buffers for the SIMD kernels |
//! | [`memory`] | the peak memory of the process, for reports |
//! | [`device`], [`threads`], [`progress`], [`error`] | `--device`, `--threads`, progress bars, one-line errors |
pub mod aligned;
pub mod config;
pub mod data;
pub mod datagen;
pub mod device;
pub mod error;
pub mod fewshot;
pub mod hyperclean;
pub mod linalg;
pub mod memory;
pub mod optim;
pub mod plot;
pub mod progress;
pub mod projection;
pub mod threads;
pub mod toy;
