//! The `bda` command line: commands, data readers, reports and plots. The methods come
//! from `bda-kernel`'s engine, the products from the backends of `bda-cpu` and `bda-gpu`
//! (chosen in [`device`]); each command here is an upper-level loop that drives them and
//! reports.
//!
//! | module | holds |
//! |---|---|
//! | [`toy`] | `bda toy`: the papers' synthetic problems (fixed-size kernel) |
//! | [`hyperclean`] | `bda hyperclean`: data hyper-cleaning |
//! | [`fewshot`] | `bda fewshot`: few-shot meta-learning |
//! | [`plot`] | `bda plot` and the SVG charts of every command |
//! | [`datagen`] | `bda data`: the kanji stand-in for Omniglot |
//! | [`data`] | MNIST-format IDX reading and the hyper-cleaning split |
//! | [`config`] | what reports record about a run, and `--config FILE` |
//! | [`optim`] | Adam (PyTorch's update) and gradient descent |
//! | [`device`] | `--device`, and the one place a (device, model) pair becomes a backend |
//! | [`check`] | the option checks every command shares, and the flag of each method parameter |
//! | [`output`] | output paths checked up front, atomic writes, a closed pipe, SIGINT/SIGTERM |
//! | [`memory`] | the peak memory of the process, for reports |
//! | [`ranks`] | several processes on one run (MPI, feature `mpi`) |
//! | [`threads`], [`progress`], [`error`] | `--threads`, progress bars, one-line errors |
pub mod check;
pub mod config;
pub mod data;
pub mod datagen;
pub mod device;
pub mod error;
pub mod fewshot;
pub mod hyperclean;
pub mod memory;
pub mod optim;
pub mod output;
pub mod plot;
pub mod progress;
pub mod ranks;
pub mod threads;
pub mod toy;
