//! Problem capabilities: what a method may ask of an objective `g(x, y)` with `x ∈ R^N`,
//! `y ∈ R^M`.
//!
//! One small trait per capability, as in argmin: an objective implements only what the
//! methods it is used with need, and each method says in its docs which capabilities it
//! requires. A bi-level problem is two objectives, [`Bilevel::upper`] (`F`) and
//! [`Bilevel::lower`] (`f`).
//!
//! There are two ways to provide the capabilities:
//! * write the objective once, generically over [`Scalar`], by implementing [`Smooth`] and
//!   wrap it in [`AutoDiff`]: gradients and second-derivative products come from
//!   forward-mode [`Dual`] numbers, exact to rounding;
//! * implement [`Objective`], [`Gradient`] and [`SecondOrder`] by hand (analytic
//!   derivatives), which is what the speed-critical paths and the bundled examples do.
//!   The tests check that both agree.

use nalgebra::{SMatrix, SVector};

use crate::scalar::{Dual, Real, Scalar};

/// Capability: evaluate `g(x, y)`.
pub trait Objective<T, const N: usize, const M: usize> {
    /// The value `g(x, y)`.
    fn value(&self, x: &SVector<T, N>, y: &SVector<T, M>) -> T;
}

/// Capability: first derivatives. Needed by every lower-level iteration (`∇_y`) and by the
/// hypergradient (`∇_x` of the upper objective).
pub trait Gradient<T, const N: usize, const M: usize> {
    /// `∇_x g(x, y)`.
    fn grad_x(&self, x: &SVector<T, N>, y: &SVector<T, M>) -> SVector<T, N>;
    /// `∇_y g(x, y)`.
    fn grad_y(&self, x: &SVector<T, N>, y: &SVector<T, M>) -> SVector<T, M>;
}

/// Capability: the second-derivative product forward-mode differentiation of the
/// lower-level iteration needs.
///
/// Given `Z = dy/dx` (an `M×N` Jacobian), returns the total derivative of `∇_y g(x, y(x))`:
/// `∇²_yx g + ∇²_yy g · Z`. Asking for the product rather than the two Hessian blocks lets
/// an implementation exploit structure (diagonal or low-rank Hessians) and lets [`AutoDiff`]
/// get it in `M·N` nested-dual evaluations instead of `M·(M+N)`.
pub trait SecondOrder<T, const N: usize, const M: usize> {
    /// `∇²_yx g(x, y) + ∇²_yy g(x, y) · z`.
    fn grad_y_tangent(
        &self,
        x: &SVector<T, N>,
        y: &SVector<T, M>,
        z: &SMatrix<T, M, N>,
    ) -> SMatrix<T, M, N>;
}

/// A bi-level problem: `min_x F(x, y)` subject to `y ∈ argmin_y f(x, y)`.
#[derive(Clone, Copy, Debug)]
pub struct Bilevel<U, L> {
    /// Upper-level objective `F`.
    pub upper: U,
    /// Lower-level objective `f`.
    pub lower: L,
}

impl<U, L> Bilevel<U, L> {
    /// Pair an upper and a lower objective.
    pub const fn new(upper: U, lower: L) -> Self {
        Bilevel { upper, lower }
    }
}

/// Capability: the known optimum of a bi-level problem, for the papers' error metrics.
pub trait KnownSolution<T, const N: usize, const M: usize> {
    /// The upper-level solution `x*`.
    fn x_star(&self) -> SVector<T, N>;
    /// The lower-level part of the solution `y*`.
    fn y_star(&self) -> SVector<T, M>;
    /// The optimal upper value `F* = F(x*, y*)`.
    fn upper_star(&self) -> T;
    /// `f*(x) = min_y f(x, y)`, so that `f(x, y) − f*(x)` measures lower-level optimality.
    fn lower_min(&self, x: &SVector<T, N>) -> T;
    /// `y*(x)`: of the lower-level solutions `S(x)`, the one best for the upper level,
    /// `argmin_{y ∈ S(x)} F(x, y)` (the journal's Fig. 3 measures `‖y_k − y*(x)‖`); `None`
    /// when not known. `φ*(x) = F(x, y*(x))` is the value function a method that finds
    /// the right lower-level solution descends.
    fn lower_best(&self, _x: &SVector<T, N>) -> Option<SVector<T, M>> {
        None
    }
}

/// An objective written once, generically over the scalar type.
///
/// Implement this and wrap the value in [`AutoDiff`] to obtain [`Objective`], [`Gradient`]
/// and [`SecondOrder`] for `f32` and `f64`, exact up to rounding.
///
/// ```
/// use bda_kernel::problem::{AutoDiff, Gradient, Smooth};
/// use bda_kernel::scalar::Scalar;
/// use nalgebra::{SVector, Vector1, Vector2};
///
/// /// f(x, y) = ½ y₁² − x y₁  (ICML Example 1, lower level)
/// struct Lower;
/// impl Smooth<1, 2> for Lower {
///     fn eval<S: Scalar>(&self, x: &SVector<S, 1>, y: &SVector<S, 2>) -> S {
///         S::from_f64(0.5) * y[0] * y[0] - x[0] * y[0]
///     }
/// }
/// let g = AutoDiff(Lower).grad_y(&Vector1::new(2.0_f64), &Vector2::new(0.5, 7.0));
/// assert_eq!(g, Vector2::new(-1.5, 0.0));
/// ```
pub trait Smooth<const N: usize, const M: usize> {
    /// `g(x, y)` for any scalar type.
    fn eval<S: Scalar>(&self, x: &SVector<S, N>, y: &SVector<S, M>) -> S;
}

/// Derivatives of a [`Smooth`] objective by forward-mode dual numbers.
///
/// Costs: a gradient is `N + M` evaluations on [`Dual<T>`]; [`SecondOrder::grad_y_tangent`]
/// is `M·N` evaluations on `Dual<Dual<T>>`. Analytic implementations are faster (see the
/// `kernel` benchmark); this one is exact and needs no derivation.
#[derive(Clone, Copy, Debug, Default)]
pub struct AutoDiff<P>(pub P);

#[inline(always)]
fn lift<T: Scalar, const D: usize>(v: &SVector<T, D>) -> SVector<Dual<T>, D> {
    v.map(Dual::constant)
}

impl<T: Real, P: Smooth<N, M>, const N: usize, const M: usize> Objective<T, N, M> for AutoDiff<P> {
    fn value(&self, x: &SVector<T, N>, y: &SVector<T, M>) -> T {
        self.0.eval(x, y)
    }
}

impl<T: Real, P: Smooth<N, M>, const N: usize, const M: usize> Gradient<T, N, M> for AutoDiff<P> {
    fn grad_x(&self, x: &SVector<T, N>, y: &SVector<T, M>) -> SVector<T, N> {
        let mut xd = lift(x);
        let yd = lift(y);
        SVector::from_fn(|i, _| {
            xd[i].eps = T::one();
            let d = self.0.eval(&xd, &yd).eps;
            xd[i].eps = T::zero();
            d
        })
    }

    fn grad_y(&self, x: &SVector<T, N>, y: &SVector<T, M>) -> SVector<T, M> {
        let xd = lift(x);
        let mut yd = lift(y);
        SVector::from_fn(|i, _| {
            yd[i].eps = T::one();
            let d = self.0.eval(&xd, &yd).eps;
            yd[i].eps = T::zero();
            d
        })
    }
}

impl<T: Real, P: Smooth<N, M>, const N: usize, const M: usize> SecondOrder<T, N, M>
    for AutoDiff<P>
{
    fn grad_y_tangent(
        &self,
        x: &SVector<T, N>,
        y: &SVector<T, M>,
        z: &SMatrix<T, M, N>,
    ) -> SMatrix<T, M, N> {
        // Inner tangent: the coordinate e_i of y whose gradient entry we want.
        // Outer tangent: the direction (e_j, Z[:, j]) in (x, y)-space along which it changes.
        let mut xd: SVector<Dual<Dual<T>>, N> = x.map(|v| Dual::constant(Dual::constant(v)));
        let mut yd: SVector<Dual<Dual<T>>, M> = y.map(|v| Dual::constant(Dual::constant(v)));
        let mut out = SMatrix::<T, M, N>::zeros();
        for j in 0..N {
            xd[j].eps = Dual::constant(T::one());
            for r in 0..M {
                yd[r].eps = Dual::constant(z[(r, j)]);
            }
            for i in 0..M {
                yd[i].re.eps = T::one();
                out[(i, j)] = self.0.eval(&xd, &yd).eps.eps;
                yd[i].re.eps = T::zero();
            }
            xd[j].eps = Dual::constant(T::zero());
        }
        out
    }
}
