//! Host side of bda: the `bda` command line, data loading, dataset-scale solvers (CPU),
//! reports and plots. The algorithms come from `bda-kernel`; this crate supplies data,
//! CPU math backends and user interface.
pub mod data;
pub mod datagen;
pub mod device;
pub mod error;
pub mod fewshot;
pub mod hyperclean;
pub mod plot;
pub mod toy;
