//! Hypergradient methods: `∇φ_K(x)` for `φ_K(x) = F(x, y_K(x))`, where `y_K(x)` is the
//! output of the K lower-level steps.
//!
//! [`ForwardMode`] is exact: it propagates the tangent `Z_k = dy_k/dx ∈ R^{M×N}` through every
//! step (projection Jacobian included),
//!
//! `Z_k = J_Proj(ŷ_k) · (Z_{k−1} − w_u (∇²_yx F + ∇²_yy F·Z_{k−1}) − w_l (∇²_yx f + ∇²_yy f·Z_{k−1}))`,
//!
//! from `Z_0 = 0` (the initial point does not depend on `x`), and returns
//! `∇φ_K(x) = ∇_x F(x, y_K) + Z_Kᵀ ∇_y F(x, y_K)`. Its memory is one `M×N` matrix,
//! whatever K: forward mode suits the kernel's small N. (At dataset scale, where N is in the
//! thousands, the dataset-scale engine ([`crate::backend`]) uses reverse mode instead.)
//!
//! [`Truncated`] is T-RHG's version: the tangent is propagated through the last T steps only.
//! [`CentralDifference`] is the derivative-free reference used to check both.

use nalgebra::{SMatrix, SVector};

use crate::error::{Error, Stage};
use crate::lower::{LowerConfig, all_finite};
use crate::observer::IterState;
use crate::problem::{Bilevel, Gradient, Objective, SecondOrder};
use crate::scalar::Real;

/// The result of one hypergradient evaluation.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct HyperGrad<T, const N: usize, const M: usize> {
    /// `y_K(x)`.
    pub y: SVector<T, M>,
    /// `∇φ_K(x)`.
    pub grad: SVector<T, N>,
    /// `φ_K(x) = F(x, y_K(x))`.
    pub upper: T,
}

impl<T: Copy, const N: usize, const M: usize> HyperGrad<T, N, M> {
    /// The observers' view of this evaluation at `x` (with `lower = f(x, y_K)` and
    /// `grad_norm = ‖∇φ_K(x)‖`).
    pub fn state<'a>(
        &'a self,
        iter: u32,
        x: &'a SVector<T, N>,
        lower: T,
        grad_norm: T,
    ) -> IterState<'a, T, N, M> {
        IterState {
            iter,
            x,
            y: &self.y,
            upper: self.upper,
            lower,
            grad: &self.grad,
            grad_norm,
        }
    }
}

/// A way to compute `∇φ_K(x)`.
///
/// ## Requirements on the problem
/// Stated by each implementation; the driver adds nothing beyond them.
pub trait HypergradientMethod<T, U, L, const N: usize, const M: usize> {
    /// Evaluate `y_K(x)`, `φ_K(x)` and `∇φ_K(x)` from the initial point `y0`.
    /// `ul_iter` only labels errors.
    fn hypergradient(
        &mut self,
        problem: &Bilevel<U, L>,
        lower: &LowerConfig<T, M>,
        x: &SVector<T, N>,
        y0: &SVector<T, M>,
        ul_iter: u32,
    ) -> Result<HyperGrad<T, N, M>, Error>;
}

/// Exact forward-mode differentiation through the K steps.
///
/// ## Requirements on the problem
/// `F`: [`Objective`], [`Gradient`], [`SecondOrder`]; `f`: [`Gradient`], [`SecondOrder`].
#[derive(Clone, Copy, Debug, Default)]
pub struct ForwardMode;

impl<T, U, L, const N: usize, const M: usize> HypergradientMethod<T, U, L, N, M> for ForwardMode
where
    T: Real,
    U: Objective<T, N, M> + Gradient<T, N, M> + SecondOrder<T, N, M>,
    L: Gradient<T, N, M> + SecondOrder<T, N, M>,
{
    fn hypergradient(
        &mut self,
        problem: &Bilevel<U, L>,
        lower: &LowerConfig<T, M>,
        x: &SVector<T, N>,
        y0: &SVector<T, M>,
        ul_iter: u32,
    ) -> Result<HyperGrad<T, N, M>, Error> {
        forward(problem, lower, x, y0, ul_iter, lower.steps)
    }
}

/// T-RHG's truncated hypergradient: exact differentiation through the last `last` of the K
/// steps only, the earlier ones taken as independent of `x`.
///
/// In forward mode the truncation is a late start: the tangent `Z` stays 0 until step
/// `K − last`, which gives the same vector as reverse mode stopped after `last` steps back.
/// `last ≥ K` is [`ForwardMode`].
///
/// ## Requirements on the problem
/// Those of [`ForwardMode`].
#[derive(Clone, Copy, Debug)]
pub struct Truncated {
    /// Steps differentiated through (the journal's T).
    pub last: u32,
}

impl<T, U, L, const N: usize, const M: usize> HypergradientMethod<T, U, L, N, M> for Truncated
where
    T: Real,
    U: Objective<T, N, M> + Gradient<T, N, M> + SecondOrder<T, N, M>,
    L: Gradient<T, N, M> + SecondOrder<T, N, M>,
{
    fn hypergradient(
        &mut self,
        problem: &Bilevel<U, L>,
        lower: &LowerConfig<T, M>,
        x: &SVector<T, N>,
        y0: &SVector<T, M>,
        ul_iter: u32,
    ) -> Result<HyperGrad<T, N, M>, Error> {
        forward(problem, lower, x, y0, ul_iter, self.last)
    }
}

/// The K steps from `y0` with the tangent propagated through the last `tangent_steps` of
/// them, and the hypergradient it gives.
fn forward<T, U, L, const N: usize, const M: usize>(
    problem: &Bilevel<U, L>,
    lower: &LowerConfig<T, M>,
    x: &SVector<T, N>,
    y0: &SVector<T, M>,
    ul_iter: u32,
    tangent_steps: u32,
) -> Result<HyperGrad<T, N, M>, Error>
where
    T: Real,
    U: Objective<T, N, M> + Gradient<T, N, M> + SecondOrder<T, N, M>,
    L: Gradient<T, N, M> + SecondOrder<T, N, M>,
{
    let mut y = *y0;
    let mut z = SMatrix::<T, M, N>::zeros();
    let uses_upper = lower.dynamics.uses_upper();
    let first_tangent = lower.steps.saturating_sub(tangent_steps) + 1;
    for k in 1..=lower.steps {
        let (wu, wl) = lower.dynamics.weights(k);
        if k < first_tangent {
            y = lower.step(problem, x, &y, k).1;
        } else {
            // Tangent first: it needs the derivatives at y_{k−1}.
            let mut dz = problem.lower.grad_y_tangent(x, &y, &z) * wl;
            if uses_upper {
                dz += problem.upper.grad_y_tangent(x, &y, &z) * wu;
            }
            let (y_hat, y_next) = lower.step(problem, x, &y, k);
            z -= dz;
            lower.projection.jacobian_apply(&y_hat, &mut z);
            y = y_next;
        }
        if !all_finite(&y) {
            return Err(Error::NonFinite {
                stage: Stage::LowerIterate,
                ul_iter,
                ll_iter: k,
            });
        }
        if !all_finite(&z) {
            return Err(Error::NonFinite {
                stage: Stage::Hypergradient,
                ul_iter,
                ll_iter: k,
            });
        }
    }
    let grad = problem.upper.grad_x(x, &y) + z.transpose() * problem.upper.grad_y(x, &y);
    let upper = problem.upper.value(x, &y);
    if !all_finite(&grad) || !upper.is_finite() {
        return Err(Error::NonFinite {
            stage: Stage::Hypergradient,
            ul_iter,
            ll_iter: 0,
        });
    }
    Ok(HyperGrad { y, grad, upper })
}

/// Central finite differences of `φ_K`: `2N + 1` runs of the K steps, error `O(h²)`.
/// A derivative-free reference for testing; not meant for production use.
///
/// ## Requirements on the problem
/// `F`: [`Objective`], [`Gradient`]; `f`: [`Gradient`].
#[derive(Clone, Copy, Debug)]
pub struct CentralDifference<T> {
    /// Step `h` (relative to `max(1, |x_i|)`).
    pub h: T,
}

impl<T, U, L, const N: usize, const M: usize> HypergradientMethod<T, U, L, N, M>
    for CentralDifference<T>
where
    T: Real,
    U: Objective<T, N, M> + Gradient<T, N, M>,
    L: Gradient<T, N, M>,
{
    fn hypergradient(
        &mut self,
        problem: &Bilevel<U, L>,
        lower: &LowerConfig<T, M>,
        x: &SVector<T, N>,
        y0: &SVector<T, M>,
        ul_iter: u32,
    ) -> Result<HyperGrad<T, N, M>, Error> {
        let phi = |xp: &SVector<T, N>| -> Result<T, Error> {
            let y = lower.solve(problem, xp, y0, ul_iter)?;
            Ok(problem.upper.value(xp, &y))
        };
        let mut grad = SVector::<T, N>::zeros();
        for i in 0..N {
            let h = self.h * x[i].abs().max(T::one());
            let mut xp = *x;
            xp[i] = x[i] + h;
            let fp = phi(&xp)?;
            xp[i] = x[i] - h;
            let fm = phi(&xp)?;
            grad[i] = (fp - fm) / (h + h);
        }
        let y = lower.solve(problem, x, y0, ul_iter)?;
        Ok(HyperGrad {
            y,
            grad,
            upper: problem.upper.value(x, &y),
        })
    }
}
