//! The lower-level (LL) iteration module `T_k` of journal Eq. (9):
//!
//! `y_k = Proj_Y(y_{k−1} − (μ·α_k·s_u·∇_y F(x, y_{k−1}) + (1−μ)·β_k·s_l·∇_y f(x, y_{k−1})))`,
//! `k = 1, …, K`.
//!
//! ## Requirements on the problem
//! `F` and `f` implement [`Gradient`]. With [`LowerDynamics::LowerOnly`] (RHG's dynamics)
//! `∇_y F` is never evaluated.

use nalgebra::SVector;

use crate::error::{ConfigError, Error, Stage};
use crate::problem::{Bilevel, Gradient};
use crate::projection::Projection;
use crate::scalar::Real;
use crate::schedule::LowerDynamics;

/// Configuration of the K lower-level steps.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct LowerConfig<T, const M: usize> {
    /// Number of steps `K ≥ 1`.
    pub steps: u32,
    /// Which directions are aggregated, with which weights.
    pub dynamics: LowerDynamics<T>,
    /// `Proj_Y`.
    pub projection: Projection<T, M>,
}

/// All entries finite?
#[inline(always)]
pub(crate) fn all_finite<T: Real, const R: usize, const C: usize>(
    v: &nalgebra::SMatrix<T, R, C>,
) -> bool {
    v.iter().all(|e| e.is_finite())
}

impl<T: Real, const M: usize> LowerConfig<T, M> {
    /// Check K, the dynamics and the projection.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.steps == 0 {
            return Err(ConfigError::ZeroSteps);
        }
        self.dynamics.validate()?;
        self.projection.validate()
    }

    /// The aggregated descent direction of step `k ≥ 1` (before projection):
    /// `w_u ∇_y F + w_l ∇_y f`.
    #[inline(always)]
    pub fn direction<U, L, const N: usize>(
        &self,
        problem: &Bilevel<U, L>,
        x: &SVector<T, N>,
        y: &SVector<T, M>,
        k: u32,
    ) -> SVector<T, M>
    where
        U: Gradient<T, N, M>,
        L: Gradient<T, N, M>,
    {
        let (wu, wl) = self.dynamics.weights(k);
        let gl = problem.lower.grad_y(x, y) * wl;
        if self.dynamics.uses_upper() {
            gl + problem.upper.grad_y(x, y) * wu
        } else {
            gl
        }
    }

    /// One step `y_{k−1} → y_k`, returning `(ŷ_k, y_k)`: the point before projection is
    /// kept because the projection's Jacobian is evaluated there.
    #[inline(always)]
    pub fn step<U, L, const N: usize>(
        &self,
        problem: &Bilevel<U, L>,
        x: &SVector<T, N>,
        y: &SVector<T, M>,
        k: u32,
    ) -> (SVector<T, M>, SVector<T, M>)
    where
        U: Gradient<T, N, M>,
        L: Gradient<T, N, M>,
    {
        let y_hat = y - self.direction(problem, x, y, k);
        let y_next = self.projection.project(&y_hat);
        (y_hat, y_next)
    }

    /// Run the K steps from `y0` and return `y_K(x)`.
    ///
    /// `ul_iter` only labels the error if an iterate becomes non-finite.
    pub fn solve<U, L, const N: usize>(
        &self,
        problem: &Bilevel<U, L>,
        x: &SVector<T, N>,
        y0: &SVector<T, M>,
        ul_iter: u32,
    ) -> Result<SVector<T, M>, Error>
    where
        U: Gradient<T, N, M>,
        L: Gradient<T, N, M>,
    {
        let mut y = *y0;
        for k in 1..=self.steps {
            y = self.step(problem, x, &y, k).1;
            if !all_finite(&y) {
                return Err(Error::NonFinite {
                    stage: Stage::LowerIterate,
                    ul_iter,
                    ll_iter: k,
                });
            }
        }
        Ok(y)
    }
}
