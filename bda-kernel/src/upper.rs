//! The upper-level (UL) driver of Algorithm 1: `x ← Proj_X(x − λ∇φ_K(x))`, with termination
//! rules, observers and typed errors.
//!
//! ## Requirements on the problem
//! Those of the hypergradient method, plus [`Objective`] for `f` (its value is reported).

use nalgebra::SVector;

use crate::error::{ConfigError, Error, Stage};
use crate::hypergrad::HypergradientMethod;
use crate::lower::{LowerConfig, all_finite};
use crate::observer::Observer;
use crate::problem::{Bilevel, Objective};
use crate::projection::Projection;
use crate::scalar::Real;

/// Configuration of the upper-level loop.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct UpperConfig<T, const N: usize> {
    /// Step size `λ > 0`.
    pub lambda: T,
    /// Upper-level iterations at most.
    pub max_iters: u32,
    /// Stop when `‖∇φ_K(x)‖ ≤ grad_tol` (0 disables).
    pub grad_tol: T,
    /// Stop when `‖x_{t+1} − x_t‖ ≤ step_tol` (0 disables).
    pub step_tol: T,
    /// `Proj_X`.
    pub projection: Projection<T, N>,
    /// Start each K-step run from the previous `y_K` instead of the fixed `y0`. The papers
    /// restart from `y0` (the default); warm starts cost nothing and help when K is small.
    pub warm_start: bool,
}

impl<T: Real, const N: usize> UpperConfig<T, N> {
    /// `λ`, `max_iters` and no tolerance, no projection, no warm start.
    pub fn new(lambda: T, max_iters: u32) -> Self {
        UpperConfig {
            lambda,
            max_iters,
            grad_tol: T::zero(),
            step_tol: T::zero(),
            projection: Projection::None,
            warm_start: false,
        }
    }

    /// Check λ, the tolerances and the projection.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.lambda.is_finite() && self.lambda > T::zero()) {
            return Err(ConfigError::NonPositiveStep("lambda"));
        }
        if !(self.grad_tol.is_finite() && self.grad_tol >= T::zero()) {
            return Err(ConfigError::NonFiniteInput("grad_tol"));
        }
        if !(self.step_tol.is_finite() && self.step_tol >= T::zero()) {
            return Err(ConfigError::NonFiniteInput("step_tol"));
        }
        self.projection.validate()
    }
}

/// Why the loop stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Termination {
    /// `max_iters` reached.
    MaxIters,
    /// `‖∇φ_K‖ ≤ grad_tol`.
    GradTol,
    /// `‖Δx‖ ≤ step_tol`.
    StepTol,
}

/// The result of [`Solver::solve`].
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Outcome<T, const N: usize, const M: usize> {
    /// Final `x`.
    pub x: SVector<T, N>,
    /// `y_K(x)` at the final `x`.
    pub y: SVector<T, M>,
    /// `F(x, y)`.
    pub upper: T,
    /// `f(x, y)`.
    pub lower: T,
    /// `‖∇φ_K(x)‖` at the final `x`.
    pub grad_norm: T,
    /// Upper-level iterations performed.
    pub iters: u32,
    /// Why it stopped.
    pub termination: Termination,
}

/// Algorithm 1: K lower-level steps (configured by `lower`), then one upper-level step,
/// repeated.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Solver<T, const N: usize, const M: usize> {
    /// The K-step lower-level module.
    pub lower: LowerConfig<T, M>,
    /// The upper-level loop.
    pub upper: UpperConfig<T, N>,
}

impl<T: Real, const N: usize, const M: usize> Solver<T, N, M> {
    /// Check every parameter.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.lower.validate()?;
        self.upper.validate()
    }

    /// Solve from `(x0, y0)` with the given hypergradient method, reporting to `observer`.
    ///
    /// `x0` is projected onto `X` first. Errors: [`Error::Config`] before any work if the
    /// configuration or the starting point is invalid; [`Error::NonFinite`] with the
    /// iteration where the iterates diverged.
    pub fn solve<U, L, H, O>(
        &self,
        problem: &Bilevel<U, L>,
        method: &mut H,
        x0: &SVector<T, N>,
        y0: &SVector<T, M>,
        observer: &mut O,
    ) -> Result<Outcome<T, N, M>, Error>
    where
        L: Objective<T, N, M>,
        H: HypergradientMethod<T, U, L, N, M>,
        O: Observer<T, N, M>,
    {
        self.validate()?;
        if !all_finite(x0) {
            return Err(ConfigError::NonFiniteInput("x0").into());
        }
        if !all_finite(y0) {
            return Err(ConfigError::NonFiniteInput("y0").into());
        }
        let mut x = self.upper.projection.project(x0);
        let mut y_start = *y0;
        observer.observe_init(&x, y0);

        let norm = |v: &SVector<T, N>| v.dot(v).sqrt();
        // One evaluation per visited x: y_K(x), φ_K(x), ∇φ_K(x) and f(x, y_K).
        let mut evaluate = |x: &SVector<T, N>, y_start: &SVector<T, M>, t: u32| {
            method
                .hypergradient(problem, &self.lower, x, y_start, t)
                .map(|hg| (problem.lower.value(x, &hg.y), hg))
        };
        let mut termination = Termination::MaxIters;
        let mut iters = 0;
        for t in 0..self.upper.max_iters {
            let (lower, hg) = evaluate(&x, &y_start, t)?;
            let grad_norm = norm(&hg.grad);
            observer.observe_iter(&hg.state(t, &x, lower, grad_norm));
            if self.upper.grad_tol > T::zero() && grad_norm <= self.upper.grad_tol {
                termination = Termination::GradTol;
                break;
            }
            let x_next = self
                .upper
                .projection
                .project(&(x - hg.grad * self.upper.lambda));
            if !all_finite(&x_next) {
                return Err(Error::NonFinite {
                    stage: Stage::UpperIterate,
                    ul_iter: t,
                    ll_iter: 0,
                });
            }
            let step = norm(&(x_next - x));
            x = x_next;
            iters = t + 1;
            if self.upper.warm_start {
                y_start = hg.y;
            }
            if self.upper.step_tol > T::zero() && step <= self.upper.step_tol {
                termination = Termination::StepTol;
                break;
            }
        }
        let (lower, hg) = evaluate(&x, &y_start, iters)?;
        let grad_norm = norm(&hg.grad);
        observer.observe_final(&hg.state(iters, &x, lower, grad_norm));
        Ok(Outcome {
            x,
            y: hg.y,
            upper: hg.upper,
            lower,
            grad_norm,
            iters,
            termination,
        })
    }
}
