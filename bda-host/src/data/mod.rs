//! Datasets (owned by the data work).
