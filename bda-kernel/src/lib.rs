//! # bda-kernel
//!
//! Bi-level Descent Aggregation (Liu et al., ICML 2020; journal extension) for fixed-size
//! problems, in `#![no_std]` Rust without an allocator and without `unsafe`.
//!
//! A bi-level problem is `min_x F(x, y)` subject to `y ∈ argmin_y f(x, y)`. BDA replaces the
//! lower-level problem by K steps of journal Eq. (9),
//!
//! `y ← Proj_Y(y − (μ·α_k·s_u·∇_y F + (1−μ)·β_k·s_l·∇_y f))`,
//!
//! and descends on `φ_K(x) = F(x, y_K(x))` with the exact hypergradient `∇φ_K`, obtained
//! here in forward mode. Unlike the classical methods it does not need the lower level to
//! have a unique solution.
//!
//! The vocabulary, shared with `bda-cpu`, `bda-gpu` and the `bda` command line (`bda-host`):
//!
//! | module | holds |
//! |---|---|
//! | [`scalar`] | [`Scalar`]/[`Real`] and [`Dual`] numbers |
//! | [`problem`] | capabilities [`Objective`], [`Gradient`], [`SecondOrder`]; [`Smooth`] + [`AutoDiff`] |
//! | [`schedule`] | `α_k`, `β_k` schedules and [`LowerDynamics`] (the weights of Eq. 9) |
//! | [`projection`] | `Proj_Y`, `Proj_X`: none, box, ball, with Jacobians |
//! | [`lower`] | the K-step lower-level module |
//! | [`hypergrad`] | hypergradient methods: [`ForwardMode`], [`Truncated`], [`CentralDifference`] |
//! | [`upper`] | the upper-level driver [`Solver`] |
//! | [`observer`] | [`Observer`] and the allocation-free [`History`] |
//! | [`method`] | method names (`bda`, `rhg`, …) |
//! | [`backend`] | the engine of the dataset-scale methods (RHG, T-RHG, BDA, IHG, O-BDA) over capability traits |
//! | [`hyperclean`] | the data hyper-cleaning problem and its [`Classifier`](hyperclean::Classifier)s, which every device implements, and their `f64` reference (`alloc`) |
//! | [`fewshot`] | the backbone's shape; the per-task head problem of few-shot learning and the device seam of meta-learning (`alloc`) |
//! | [`synthetic`] | the papers' synthetic problems (ICML Example 1, journal Eq. 40, Remark 4) |
//!
//! ```
//! use bda_kernel::prelude::*;
//! use bda_kernel::synthetic::icml_example1;
//! use nalgebra::{Vector1, Vector2};
//!
//! // ICML Example 1: the lower level has a continuum of solutions; x* = 1, y* = (1, 1).
//! let problem = icml_example1::<f64>();
//! let solver = Solver {
//!     lower: LowerConfig {
//!         steps: 64,
//!         dynamics: LowerDynamics::Aggregated {
//!             mu: 0.5,
//!             alpha: Schedule::Proposition1 { gamma: 1.0, beta: 0.0, eps: 0.1 },
//!             beta: Beta::Icml,
//!             s_u: 0.7,
//!             s_l: 0.2,
//!         },
//!         projection: Projection::None,
//!     },
//!     upper: UpperConfig { projection: Projection::cube(-100.0, 100.0), ..UpperConfig::new(0.5, 300) },
//! };
//! let out = solver
//!     .solve(&problem, &mut ForwardMode, &Vector1::new(0.0), &Vector2::new(0.0, 0.0), &mut ())
//!     .unwrap();
//! assert!((out.x[0] - 1.0).abs() < 0.05);
//! ```
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod backend;
#[cfg(feature = "alloc")]
pub mod collective;
pub mod error;
pub mod fewshot;
pub mod hyperclean;
pub mod hypergrad;
pub mod lower;
pub mod method;
pub mod observer;
pub mod problem;
pub mod projection;
pub mod scalar;
pub mod schedule;
pub mod synthetic;
pub mod upper;

pub use error::{ConfigError, Error, Stage};
pub use hypergrad::{CentralDifference, ForwardMode, HyperGrad, HypergradientMethod, Truncated};
pub use lower::LowerConfig;
pub use method::Method;
pub use observer::{History, IterState, Observer, Record};
pub use problem::{AutoDiff, Bilevel, Gradient, KnownSolution, Objective, SecondOrder, Smooth};
pub use projection::Projection;
pub use scalar::{Dual, Real, Scalar};
pub use schedule::{Beta, LowerDynamics, Schedule, StepSizes};
pub use upper::{Outcome, Solver, Termination, UpperConfig};

/// Everything a typical user needs, in one import.
pub mod prelude {
    pub use crate::{
        AutoDiff, Beta, Bilevel, ForwardMode, Gradient, History, KnownSolution, LowerConfig,
        LowerDynamics, Method, Objective, Observer, Projection, Real, Scalar, Schedule,
        SecondOrder, Smooth, Solver, StepSizes, UpperConfig,
    };
}
