//! Host side of bda: data loading, dataset-scale solvers, reports and plots.
pub mod data;
