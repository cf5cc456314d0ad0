//! [`FixedBackend`]: a fixed-size [`Bilevel`] problem seen as a dataset-scale backend, so the
//! reverse-mode methods (RHG, T-RHG, BDA, IHG, O-BDA) run on it through [`super::Hypergrad`].
//!
//! It is how the kernel checks those methods against its exact forward mode, and how a
//! firmware-sized problem can use a method that forward mode does not have (IHG, O-BDA).
//! Buffers are `Vec`s of length `N` and `M` ([`HostBuffers`]); the products come from the
//! problem's capabilities, the Hessian blocks from [`SecondOrder::grad_y_tangent`]
//! (`H_yx + H_yy·Z` at `Z = 0` and at `Z = v·e₁ᵀ`).

use alloc::vec::Vec;
use core::convert::Infallible;
use core::marker::PhantomData;

use nalgebra::{SMatrix, SVector};

use super::{
    HostBuffers, Hypergrad, LowerHessian, LowerStep, MethodError, MethodSpec, Methods, StepAdjoint,
    UpperGradient,
};
use crate::problem::{Bilevel, Gradient, Objective, SecondOrder};
use crate::scalar::Real;

/// Shorthands for the trait impls: a buffer, and a product's (infallible) result.
type V<T> = Vec<T>;
type Io<R = ()> = Result<R, Infallible>;

/// A fixed-size problem `Bilevel<U, L>` with `x ∈ R^N`, `y ∈ R^M`, in scalar `T`, as a
/// backend with `Vec<T>` buffers (see the module docs).
#[derive(Debug)]
pub struct FixedBackend<'p, P, T, const N: usize, const M: usize> {
    problem: &'p P,
    _scalar: PhantomData<T>,
}

impl<'p, P, T, const N: usize, const M: usize> FixedBackend<'p, P, T, N, M> {
    /// Wrap `problem`.
    pub fn new(problem: &'p P) -> Self {
        FixedBackend {
            problem,
            _scalar: PhantomData,
        }
    }
}

fn sv<T: Real, const D: usize>(v: &[T]) -> SVector<T, D> {
    SVector::from_column_slice(v)
}

/// `(H_yx, H_yy·v)` of `g` at `(x, y)` from its tangent map `Z ↦ H_yx + H_yy·Z`.
fn blocks<T: Real, G: SecondOrder<T, N, M>, const N: usize, const M: usize>(
    g: &G,
    x: &SVector<T, N>,
    y: &SVector<T, M>,
    v: &SVector<T, M>,
) -> (SMatrix<T, M, N>, SVector<T, M>) {
    let h_yx = g.grad_y_tangent(x, y, &SMatrix::zeros());
    let mut z = SMatrix::<T, M, N>::zeros();
    z.set_column(0, v);
    let hv = g.grad_y_tangent(x, y, &z).column(0) - h_yx.column(0);
    (h_yx, hv)
}

/// `dst += s·src`.
fn add_scaled<T: Real>(dst: &mut [T], s: T, src: &[T]) {
    dst.iter_mut().zip(src).for_each(|(d, &v)| *d += s * v);
}

impl<P, T: Real, const N: usize, const M: usize> HostBuffers for FixedBackend<'_, P, T, N, M> {
    type Scalar = T;
    fn x_len(&self) -> usize {
        N
    }
    fn y_len(&self) -> usize {
        M
    }
}

impl<U, L, T, const N: usize, const M: usize> LowerStep for FixedBackend<'_, Bilevel<U, L>, T, N, M>
where
    T: Real,
    U: Gradient<T, N, M>,
    L: Gradient<T, N, M>,
{
    fn lower_step(&mut self, x: &V<T>, y: &V<T>, w_u: T, w_l: T, y_out: &mut V<T>) -> Io {
        let (x, y) = (sv::<T, N>(x), sv::<T, M>(y));
        let p = self.problem;
        let mut next = y - p.lower.grad_y(&x, &y) * w_l;
        if w_u != T::zero() {
            next -= p.upper.grad_y(&x, &y) * w_u;
        }
        y_out.copy_from_slice(next.as_slice());
        Ok(())
    }
}

impl<U, L, T, const N: usize, const M: usize> UpperGradient
    for FixedBackend<'_, Bilevel<U, L>, T, N, M>
where
    T: Real,
    U: Objective<T, N, M> + Gradient<T, N, M>,
{
    fn upper_grad(&mut self, x: &V<T>, y: &V<T>, gy: &mut V<T>, gx: &mut V<T>, s: T) -> Io<T> {
        let (xs, ys) = (sv::<T, N>(x), sv::<T, M>(y));
        let u = &self.problem.upper;
        gy.copy_from_slice(u.grad_y(&xs, &ys).as_slice());
        add_scaled(gx, s, u.grad_x(&xs, &ys).as_slice());
        Ok(u.value(&xs, &ys))
    }
}

impl<U, L, T, const N: usize, const M: usize> StepAdjoint
    for FixedBackend<'_, Bilevel<U, L>, T, N, M>
where
    T: Real,
    U: Gradient<T, N, M> + SecondOrder<T, N, M>,
    L: Gradient<T, N, M> + SecondOrder<T, N, M>,
{
    fn step_adjoint(&mut self, x: &V<T>, y: &V<T>, wu: T, wl: T, a: &mut V<T>, g: &mut V<T>) -> Io {
        let (xs, ys, av) = (sv::<T, N>(x), sv::<T, M>(y), sv::<T, M>(a));
        let (fyx, fv) = blocks(&self.problem.upper, &xs, &ys, &av);
        let (lyx, lv) = blocks(&self.problem.lower, &xs, &ys, &av);
        let dx = (fyx * wu + lyx * wl).transpose() * av;
        add_scaled(g, -T::one(), dx.as_slice());
        let next = av - fv * wu - lv * wl;
        a.copy_from_slice(next.as_slice());
        Ok(())
    }
}

/// Every method, where the problem's second derivatives give the Hessian products.
impl<P, T: Real, const N: usize, const M: usize> Methods for FixedBackend<'_, P, T, N, M>
where
    Self: LowerStep + UpperGradient + StepAdjoint + LowerHessian,
{
    fn hypergrad(
        &mut self,
        spec: MethodSpec<Self::T>,
    ) -> Result<Hypergrad<Self>, MethodError<Self::Error>> {
        Hypergrad::new(self, spec)
    }
}

impl<U, L, T, const N: usize, const M: usize> LowerHessian
    for FixedBackend<'_, Bilevel<U, L>, T, N, M>
where
    T: Real,
    U: Gradient<T, N, M>,
    L: Gradient<T, N, M> + SecondOrder<T, N, M>,
{
    fn lower_hvp(&mut self, x: &V<T>, y: &V<T>, v: &V<T>, out: &mut V<T>) -> Io {
        let (_, hv) = blocks(&self.problem.lower, &sv::<T, N>(x), &sv(y), &sv(v));
        out.copy_from_slice(hv.as_slice());
        Ok(())
    }

    fn lower_mixed_vjp(&mut self, x: &V<T>, y: &V<T>, v: &V<T>, scale: T, gx: &mut V<T>) -> Io {
        let vs = sv::<T, M>(v);
        let (hyx, _) = blocks(&self.problem.lower, &sv::<T, N>(x), &sv(y), &vs);
        add_scaled(gx, scale, (hyx.transpose() * vs).as_slice());
        Ok(())
    }

    fn lower_grad_x(&mut self, x: &V<T>, y: &V<T>, scale: T, gx: &mut V<T>) -> Io {
        let g = self.problem.lower.grad_x(&sv::<T, N>(x), &sv::<T, M>(y));
        add_scaled(gx, scale, g.as_slice());
        Ok(())
    }
}
