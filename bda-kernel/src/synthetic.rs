//! The papers' synthetic bi-level problems, with analytic derivatives (and [`Smooth`]
//! versions of the same formulas, so tests can compare against [`crate::AutoDiff`]).
//!
//! * [`icml_example1`]: ICML 2020 Example 1 / journal Remark 3, `x ∈ [−100, 100]`,
//!   `y ∈ R²`: `F = ½(x − y₂)² + ½(y₁ − 1)²`, `f = ½y₁² − x·y₁`. The lower level leaves `y₂`
//!   free; the solution is `x* = 1`, `y* = (1, 1)`.
//! * [`remark4`]: the same with the regulariser `½ε·y₂²` added to `f`: the lower level
//!   becomes strongly convex, and the solution moves to `x*(ε) = ½`, `y* = (½, 0)` for every
//!   `ε > 0` — regularising does not recover `x* = 1`.
//! * [`eq40`]: journal Eq. (40), `x, y, z ∈ Rⁿ`: `F = ‖x − z‖⁴ + ‖y − e‖⁴`,
//!   `f = ½‖y‖² − xᵀy`; the lower-level variable is `(y, z) ∈ R²ⁿ` and `z` is free.
//!   Solution `x* = y* = z* = e`.

use nalgebra::{SMatrix, SVector};

use crate::error::ConfigError;
use crate::problem::{Bilevel, Gradient, KnownSolution, Objective, SecondOrder, Smooth};
use crate::scalar::{Real, Scalar};

/// Implements [`Objective`] through the objective's [`Smooth::eval`], so the value has one
/// definition.
macro_rules! objective_via_smooth {
    ($ty:ty, $n:expr, $m:expr $(, const $c:ident)*) => {
        impl<T: Real $(, const $c: usize)*> Objective<T, { $n }, { $m }> for $ty {
            #[inline(always)]
            fn value(&self, x: &SVector<T, { $n }>, y: &SVector<T, { $m }>) -> T {
                Smooth::eval(self, x, y)
            }
        }
    };
}

// ---------------------------------------------------------------- ICML Example 1 / Remark 4

/// Example 1's `x`, `y` and `dy/dx` (the tangents of its second-order products).
type X<T> = SVector<T, 1>;
type Y<T> = SVector<T, 2>;
type Dy<T> = SMatrix<T, 2, 1>;

/// Upper level of ICML Example 1: `F(x, y) = ½(x − y₂)² + ½(y₁ − 1)²`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Example1Upper;

/// Lower level of ICML Example 1 and Remark 4: `f(x, y) = ½y₁² + ½ε·y₂² − x·y₁`
/// (`ε = 0` is Example 1).
#[derive(Clone, Copy, Debug, Default)]
pub struct Example1Lower<T> {
    /// Regularisation weight of `y₂` (0 for Example 1).
    pub eps: T,
}

impl Smooth<1, 2> for Example1Upper {
    fn eval<S: Scalar>(&self, x: &SVector<S, 1>, y: &SVector<S, 2>) -> S {
        let h = S::from_f64(0.5);
        h * (x[0] - y[1]).square() + h * (y[0] - S::one()).square()
    }
}
objective_via_smooth!(Example1Upper, 1, 2);

impl<T: Real> Gradient<T, 1, 2> for Example1Upper {
    #[inline(always)]
    fn grad_x(&self, x: &X<T>, y: &Y<T>) -> X<T> {
        SVector::from([x[0] - y[1]])
    }
    #[inline(always)]
    fn grad_y(&self, x: &X<T>, y: &Y<T>) -> Y<T> {
        SVector::from([y[0] - T::one(), y[1] - x[0]])
    }
}

impl<T: Real> SecondOrder<T, 1, 2> for Example1Upper {
    #[inline(always)]
    fn grad_y_tangent(&self, _: &X<T>, _: &Y<T>, z: &Dy<T>) -> Dy<T> {
        SMatrix::from([[z[0], z[1] - T::one()]])
    }
}

impl<T: Real> Smooth<1, 2> for Example1Lower<T> {
    fn eval<S: Scalar>(&self, x: &SVector<S, 1>, y: &SVector<S, 2>) -> S {
        let h = S::from_f64(0.5);
        h * y[0].square() + h * S::from_f64(self.eps.to_f64()) * y[1].square() - x[0] * y[0]
    }
}

impl<T: Real> Objective<T, 1, 2> for Example1Lower<T> {
    #[inline(always)]
    fn value(&self, x: &X<T>, y: &Y<T>) -> T {
        let h = T::from_f64(0.5);
        h * y[0].square() + h * self.eps * y[1].square() - x[0] * y[0]
    }
}

impl<T: Real> Gradient<T, 1, 2> for Example1Lower<T> {
    #[inline(always)]
    fn grad_x(&self, _x: &X<T>, y: &Y<T>) -> X<T> {
        SVector::from([-y[0]])
    }
    #[inline(always)]
    fn grad_y(&self, x: &X<T>, y: &Y<T>) -> Y<T> {
        SVector::from([y[0] - x[0], self.eps * y[1]])
    }
}

impl<T: Real> SecondOrder<T, 1, 2> for Example1Lower<T> {
    #[inline(always)]
    fn grad_y_tangent(&self, _: &X<T>, _: &Y<T>, z: &Dy<T>) -> Dy<T> {
        SMatrix::from([[z[0] - T::one(), self.eps * z[1]]])
    }
}

/// ICML Example 1 (the counter-example).
pub type Example1<T> = Bilevel<Example1Upper, Example1Lower<T>>;

/// ICML 2020 Example 1: `x* = 1`, `y* = (1, 1)`.
pub fn icml_example1<T: Real>() -> Example1<T> {
    Bilevel::new(Example1Upper, Example1Lower { eps: T::zero() })
}

/// Journal Remark 4: Example 1 with `½ε·y₂²` added to the lower level (`ε > 0`).
pub fn remark4<T: Real>(eps: T) -> Result<Example1<T>, ConfigError> {
    if !(eps.is_finite() && eps > T::zero()) {
        return Err(ConfigError::NonPositiveStep("eps"));
    }
    Ok(Bilevel::new(Example1Upper, Example1Lower { eps }))
}

impl<T: Real> KnownSolution<T, 1, 2> for Example1<T> {
    fn x_star(&self) -> X<T> {
        if self.lower.eps > T::zero() {
            SVector::from([T::from_f64(0.5)])
        } else {
            SVector::from([T::one()])
        }
    }
    fn y_star(&self) -> Y<T> {
        if self.lower.eps > T::zero() {
            SVector::from([T::from_f64(0.5), T::zero()])
        } else {
            SVector::from([T::one(), T::one()])
        }
    }
    fn upper_star(&self) -> T {
        self.upper.value(&self.x_star(), &self.y_star())
    }
    fn lower_min(&self, x: &X<T>) -> T {
        // min over y₁ of ½y₁² − x·y₁ is −½x² (y₁ = x); the y₂ term is minimised at 0.
        -T::from_f64(0.5) * x[0].square()
    }
    fn lower_best(&self, x: &X<T>) -> Option<Y<T>> {
        // S(x) = {(x, y₂)}: y₂ is free (and then best at y₂ = x) unless ε > 0 pins it to 0.
        let y2 = if self.lower.eps > T::zero() {
            T::zero()
        } else {
            x[0]
        };
        Some(SVector::from([x[0], y2]))
    }
}

// ---------------------------------------------------------------- Journal Eq. (40)

/// Upper level of journal Eq. (40): `F(x, (y, z)) = ‖x − z‖⁴ + ‖y − e‖⁴`, `M = 2N`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Eq40Upper<const N: usize, const M: usize>;

/// Lower level of journal Eq. (40): `f(x, (y, z)) = ½‖y‖² − xᵀy`, `M = 2N`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Eq40Lower<const N: usize, const M: usize>;

/// Journal Eq. (40) with `x ∈ R^N` and lower-level variable `(y, z) ∈ R^M`.
pub type Eq40<const N: usize, const M: usize> = Bilevel<Eq40Upper<N, M>, Eq40Lower<N, M>>;

/// Journal Eq. (40). `M` must equal `2N` (const generics cannot say so on stable Rust).
pub fn eq40<const N: usize, const M: usize>() -> Result<Eq40<N, M>, ConfigError> {
    if M != 2 * N || N == 0 {
        return Err(ConfigError::DimensionMismatch);
    }
    Ok(Bilevel::new(Eq40Upper, Eq40Lower))
}

/// `H(u)·Z` for the Hessian `H(u) = 4‖u‖²I + 8uuᵀ` of `‖u‖⁴`, without forming `H`.
#[inline(always)]
fn quartic_hess_times<T: Real, const N: usize, const C: usize>(
    u: &SVector<T, N>,
    z: &SMatrix<T, N, C>,
) -> SMatrix<T, N, C> {
    let four = T::from_f64(4.0);
    let eight = T::from_f64(8.0);
    let utz = u.transpose() * z;
    z * (four * u.dot(u)) + u * (utz * eight)
}

impl<const N: usize, const M: usize> Smooth<N, M> for Eq40Upper<N, M> {
    fn eval<S: Scalar>(&self, x: &SVector<S, N>, y: &SVector<S, M>) -> S {
        let (mut a, mut b) = (S::zero(), S::zero());
        for i in 0..N {
            a += (x[i] - y[N + i]).square();
            b += (y[i] - S::one()).square();
        }
        a * a + b * b
    }
}
objective_via_smooth!(Eq40Upper<N, M>, N, M, const N, const M);

impl<T: Real, const N: usize, const M: usize> Gradient<T, N, M> for Eq40Upper<N, M> {
    #[inline(always)]
    fn grad_x(&self, x: &SVector<T, N>, y: &SVector<T, M>) -> SVector<T, N> {
        let v = x - y.fixed_rows::<N>(N);
        v * (T::from_f64(4.0) * v.dot(&v))
    }
    #[inline(always)]
    fn grad_y(&self, x: &SVector<T, N>, y: &SVector<T, M>) -> SVector<T, M> {
        let four = T::from_f64(4.0);
        let u = y.fixed_rows::<N>(0) - SVector::<T, N>::repeat(T::one());
        let v = y.fixed_rows::<N>(N) - x;
        let mut g = SVector::<T, M>::zeros();
        g.fixed_rows_mut::<N>(0)
            .copy_from(&(u * (four * u.dot(&u))));
        g.fixed_rows_mut::<N>(N)
            .copy_from(&(v * (four * v.dot(&v))));
        g
    }
}

impl<T: Real, const N: usize, const M: usize> SecondOrder<T, N, M> for Eq40Upper<N, M> {
    fn grad_y_tangent(
        &self,
        x: &SVector<T, N>,
        y: &SVector<T, M>,
        z: &SMatrix<T, M, N>,
    ) -> SMatrix<T, M, N> {
        let u = y.fixed_rows::<N>(0) - SVector::<T, N>::repeat(T::one());
        let v = y.fixed_rows::<N>(N) - x;
        let z_y: SMatrix<T, N, N> = z.fixed_rows::<N>(0).into_owned();
        let z_z: SMatrix<T, N, N> =
            z.fixed_rows::<N>(N).into_owned() - SMatrix::<T, N, N>::identity();
        let mut out = SMatrix::<T, M, N>::zeros();
        out.fixed_rows_mut::<N>(0)
            .copy_from(&quartic_hess_times(&u, &z_y));
        out.fixed_rows_mut::<N>(N)
            .copy_from(&quartic_hess_times(&v, &z_z));
        out
    }
}

impl<const N: usize, const M: usize> Smooth<N, M> for Eq40Lower<N, M> {
    fn eval<S: Scalar>(&self, x: &SVector<S, N>, y: &SVector<S, M>) -> S {
        let h = S::from_f64(0.5);
        let mut s = S::zero();
        for i in 0..N {
            s += h * y[i].square() - x[i] * y[i];
        }
        s
    }
}
objective_via_smooth!(Eq40Lower<N, M>, N, M, const N, const M);

impl<T: Real, const N: usize, const M: usize> Gradient<T, N, M> for Eq40Lower<N, M> {
    #[inline(always)]
    fn grad_x(&self, _x: &SVector<T, N>, y: &SVector<T, M>) -> SVector<T, N> {
        -y.fixed_rows::<N>(0)
    }
    #[inline(always)]
    fn grad_y(&self, x: &SVector<T, N>, y: &SVector<T, M>) -> SVector<T, M> {
        let mut g = SVector::<T, M>::zeros();
        g.fixed_rows_mut::<N>(0)
            .copy_from(&(y.fixed_rows::<N>(0) - x));
        g
    }
}

impl<T: Real, const N: usize, const M: usize> SecondOrder<T, N, M> for Eq40Lower<N, M> {
    fn grad_y_tangent(
        &self,
        _x: &SVector<T, N>,
        _y: &SVector<T, M>,
        z: &SMatrix<T, M, N>,
    ) -> SMatrix<T, M, N> {
        let mut out = SMatrix::<T, M, N>::zeros();
        out.fixed_rows_mut::<N>(0)
            .copy_from(&(z.fixed_rows::<N>(0) - SMatrix::<T, N, N>::identity()));
        out
    }
}

impl<T: Real, const N: usize, const M: usize> KnownSolution<T, N, M> for Eq40<N, M> {
    fn x_star(&self) -> SVector<T, N> {
        SVector::repeat(T::one())
    }
    fn y_star(&self) -> SVector<T, M> {
        SVector::repeat(T::one())
    }
    fn upper_star(&self) -> T {
        T::zero()
    }
    fn lower_min(&self, x: &SVector<T, N>) -> T {
        -T::from_f64(0.5) * x.dot(x)
    }
    fn lower_best(&self, x: &SVector<T, N>) -> Option<SVector<T, M>> {
        // S(x) = {(x, z)}: z is free, and F(x, (x, z)) is least at z = x.
        let mut y = SVector::<T, M>::zeros();
        y.fixed_rows_mut::<N>(0).copy_from(x);
        y.fixed_rows_mut::<N>(N).copy_from(x);
        Some(y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `y*(x)` solves the lower level and is no worse for `F` than other lower-level
    /// solutions; at `x*` it is `y*`.
    #[test]
    fn best_lower_solutions_are_solutions_and_best() {
        let p = icml_example1::<f64>();
        for x in [-1.5, 0.0, 0.7, 2.0] {
            let x = SVector::from([x]);
            let best = p.lower_best(&x).unwrap();
            assert!((p.lower.value(&x, &best) - p.lower_min(&x)).abs() < 1e-12);
            for y2 in [-1.0, 0.0, 0.5, 3.0] {
                let other = SVector::from([x[0], y2]);
                assert!(p.upper.value(&x, &best) <= p.upper.value(&x, &other));
            }
        }
        assert_eq!(p.lower_best(&p.x_star()).unwrap(), p.y_star());
        let r = remark4::<f64>(0.1).unwrap();
        assert_eq!(r.lower_best(&r.x_star()).unwrap(), r.y_star());
        let e = eq40::<3, 6>().unwrap();
        let x = SVector::<f64, 3>::new(0.2, -1.0, 1.5);
        let best = e.lower_best(&x).unwrap();
        assert!((e.lower.value(&x, &best) - e.lower_min(&x)).abs() < 1e-12);
        let mut other = best;
        other[4] += 0.3;
        assert!(e.upper.value(&x, &best) < e.upper.value(&x, &other));
        let (xs, ys): (SVector<f64, 3>, SVector<f64, 6>) = (e.x_star(), e.y_star());
        assert_eq!(e.lower_best(&xs).unwrap(), ys);
    }
}
