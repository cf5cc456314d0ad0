//! Scalars: the arithmetic every objective is written in.
//!
//! Objectives are written once, generically over [`Scalar`], so the same code runs on `f32`,
//! `f64` and on [`Dual`] numbers (which is how the kernel gets exact derivatives without a
//! tape or an allocator). [`Real`] is the subset the solvers themselves run on: plain machine
//! floats.
//!
//! # Elementary functions
//! By default every elementary function goes through [`libm`] (correctly rounded or within
//! 1 ulp for the functions used here). With the `micromath` feature, `f32` uses micromath's
//! fast approximations where they are usable. Worst-case relative errors measured against
//! libm (and re-checked by the test `micromath_error_bounds`):
//!
//! | function | with `micromath` | max relative error |
//! |---|---|---|
//! | `sqrt` | `F32Ext::sqrt` (a bit trick, ~5 % alone) + two Newton steps here; `sqrt(0) = 0` | 1.5e-6 on [1e-3, 1e3] |
//! | `exp`  | `F32Ext::exp` | 2.4e-3 on [−10, 10] |
//! | `ln`   | libm (micromath's `ln` is off by up to 0.12 absolute on [1e-3, 1e3]) | 1 ulp |
//! | `sin`, `cos`, `tanh` | libm | 1 ulp |
//!
//! That is ample for solvers whose stopping tolerances are ≥ 1e-2, and wrong for hypergradient
//! checks against finite differences: keep `f64` (always libm) for those.

use core::fmt::Debug;
use core::ops::{Add, AddAssign, Div, DivAssign, Mul, MulAssign, Neg, Sub, SubAssign};

/// Arithmetic an objective may use. Implemented by `f32`, `f64` and [`Dual<T>`] for any
/// `T: Scalar` (so duals nest: `Dual<Dual<f64>>` carries second derivatives).
pub trait Scalar:
    nalgebra::Scalar
    + Copy
    + Debug
    + PartialOrd
    + num_traits::Zero
    + num_traits::One
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
{
    /// Lift a constant (derivative parts zero).
    fn from_f64(v: f64) -> Self;
    /// The value part, rounded to `f64` (for comparisons and reports).
    fn to_f64(self) -> f64;
    /// Square root.
    fn sqrt(self) -> Self;
    /// Natural exponential.
    fn exp(self) -> Self;
    /// Natural logarithm.
    fn ln(self) -> Self;
    /// Sine.
    fn sin(self) -> Self;
    /// Cosine.
    fn cos(self) -> Self;
    /// Hyperbolic tangent.
    fn tanh(self) -> Self;
    /// Integer power by repeated squaring (exact derivative rule, no `ln`).
    fn powi(self, n: i32) -> Self {
        let mut base = self;
        let mut e = n.unsigned_abs();
        let mut acc = Self::one();
        while e > 0 {
            if e & 1 == 1 {
                acc *= base;
            }
            base = base * base;
            e >>= 1;
        }
        if n < 0 { Self::one() / acc } else { acc }
    }
    /// `self²`.
    #[inline(always)]
    fn square(self) -> Self {
        self * self
    }
}

/// Machine floats the solvers run on: a [`Scalar`] that is its own value type.
pub trait Real: Scalar + nalgebra::ClosedAddAssign + nalgebra::ClosedMulAssign {
    /// Machine epsilon.
    const EPSILON: Self;
    /// `true` unless NaN or ±∞.
    fn is_finite(self) -> bool;
    /// Absolute value.
    fn abs(self) -> Self;
    /// Larger of two values (NaN-propagating is not needed: inputs are checked finite).
    fn max(self, other: Self) -> Self {
        if self > other { self } else { other }
    }
    /// Smaller of two values.
    fn min(self, other: Self) -> Self {
        if self < other { self } else { other }
    }
}

macro_rules! real_impl {
    ($t:ty, $sqrt:expr, $exp:expr, $ln:expr, $sin:path, $cos:path, $tanh:path) => {
        impl Scalar for $t {
            #[inline(always)]
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                $sqrt(self)
            }
            #[inline(always)]
            fn exp(self) -> Self {
                $exp(self)
            }
            #[inline(always)]
            fn ln(self) -> Self {
                $ln(self)
            }
            #[inline(always)]
            fn sin(self) -> Self {
                $sin(self)
            }
            #[inline(always)]
            fn cos(self) -> Self {
                $cos(self)
            }
            #[inline(always)]
            fn tanh(self) -> Self {
                $tanh(self)
            }
        }
        impl Real for $t {
            const EPSILON: Self = <$t>::EPSILON;
            #[inline(always)]
            fn is_finite(self) -> bool {
                <$t>::is_finite(self)
            }
            #[inline(always)]
            fn abs(self) -> Self {
                if self < 0.0 { -self } else { self }
            }
        }
    };
}

real_impl!(
    f64,
    libm::sqrt,
    libm::exp,
    libm::log,
    libm::sin,
    libm::cos,
    libm::tanh
);

#[cfg(not(feature = "micromath"))]
real_impl!(
    f32,
    libm::sqrtf,
    libm::expf,
    libm::logf,
    libm::sinf,
    libm::cosf,
    libm::tanhf
);

/// micromath's `sqrt` is a bare exponent-halving bit trick (up to ~5 % error, and
/// `sqrt(0) ≠ 0`); two Newton steps bring it to a few ulp for the price of two divisions.
#[cfg(feature = "micromath")]
#[inline(always)]
fn fast_sqrt(v: f32) -> f32 {
    if v <= 0.0 {
        return if v == 0.0 { 0.0 } else { f32::NAN };
    }
    let s = micromath::F32Ext::sqrt(v);
    let s = 0.5 * (s + v / s);
    0.5 * (s + v / s)
}

#[cfg(feature = "micromath")]
real_impl!(
    f32,
    fast_sqrt,
    |v: f32| micromath::F32Ext::exp(v),
    libm::logf,
    libm::sinf,
    libm::cosf,
    libm::tanhf
);

/// A dual number `re + eps·ε` with `ε² = 0`: evaluating `g(x + ε·v)` yields `g(x)` and the
/// directional derivative `g'(x)·v` exactly (no truncation error, unlike finite differences).
///
/// Nesting gives second derivatives: for `Dual<Dual<T>>` seeded with directions `u` (inner)
/// and `v` (outer), the `eps.eps` part is `uᵀ ∇²g v`.
#[derive(Clone, Copy, Debug, Default, PartialEq, PartialOrd)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Dual<T> {
    /// Value part.
    pub re: T,
    /// Derivative (tangent) part.
    pub eps: T,
}

impl<T: Scalar> Dual<T> {
    /// A variable: value `re`, tangent `eps`.
    #[inline(always)]
    pub fn new(re: T, eps: T) -> Self {
        Dual { re, eps }
    }
    /// A constant: tangent zero.
    #[inline(always)]
    pub fn constant(re: T) -> Self {
        Dual { re, eps: T::zero() }
    }
}

impl<T: Scalar> Add for Dual<T> {
    type Output = Self;
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        Dual::new(self.re + o.re, self.eps + o.eps)
    }
}
impl<T: Scalar> Sub for Dual<T> {
    type Output = Self;
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        Dual::new(self.re - o.re, self.eps - o.eps)
    }
}
impl<T: Scalar> Mul for Dual<T> {
    type Output = Self;
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        Dual::new(self.re * o.re, self.re * o.eps + self.eps * o.re)
    }
}
impl<T: Scalar> Div for Dual<T> {
    type Output = Self;
    #[inline(always)]
    fn div(self, o: Self) -> Self {
        let inv = T::one() / o.re;
        let q = self.re * inv;
        Dual::new(q, (self.eps - q * o.eps) * inv)
    }
}
impl<T: Scalar> Neg for Dual<T> {
    type Output = Self;
    #[inline(always)]
    fn neg(self) -> Self {
        Dual::new(-self.re, -self.eps)
    }
}
macro_rules! assign_op {
    ($tr:ident, $f:ident, $op:tt) => {
        impl<T: Scalar> $tr for Dual<T> {
            #[inline(always)]
            fn $f(&mut self, o: Self) {
                *self = *self $op o;
            }
        }
    };
}
assign_op!(AddAssign, add_assign, +);
assign_op!(SubAssign, sub_assign, -);
assign_op!(MulAssign, mul_assign, *);
assign_op!(DivAssign, div_assign, /);

impl<T: Scalar> num_traits::Zero for Dual<T> {
    fn zero() -> Self {
        Dual::constant(T::zero())
    }
    fn is_zero(&self) -> bool {
        self.re.is_zero() && self.eps.is_zero()
    }
}
impl<T: Scalar> num_traits::One for Dual<T> {
    fn one() -> Self {
        Dual::constant(T::one())
    }
}

impl<T: Scalar> Scalar for Dual<T> {
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        Dual::constant(T::from_f64(v))
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self.re.to_f64()
    }
    #[inline(always)]
    fn sqrt(self) -> Self {
        let s = self.re.sqrt();
        Dual::new(s, self.eps / (s + s))
    }
    #[inline(always)]
    fn exp(self) -> Self {
        let e = self.re.exp();
        Dual::new(e, self.eps * e)
    }
    #[inline(always)]
    fn ln(self) -> Self {
        Dual::new(self.re.ln(), self.eps / self.re)
    }
    #[inline(always)]
    fn sin(self) -> Self {
        Dual::new(self.re.sin(), self.eps * self.re.cos())
    }
    #[inline(always)]
    fn cos(self) -> Self {
        Dual::new(self.re.cos(), -(self.eps * self.re.sin()))
    }
    #[inline(always)]
    fn tanh(self) -> Self {
        let t = self.re.tanh();
        Dual::new(t, self.eps * (T::one() - t * t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dual_derivatives_of_elementary_functions() {
        let x = Dual::new(0.7_f64, 1.0);
        let cases: [(Dual<f64>, f64); 6] = [
            (x.sqrt(), 0.5 / libm::sqrt(0.7)),
            (x.exp(), libm::exp(0.7)),
            (x.ln(), 1.0 / 0.7),
            (x.sin(), libm::cos(0.7)),
            (x.cos(), -libm::sin(0.7)),
            (x.powi(-3), -3.0 * libm::pow(0.7, -4.0)),
        ];
        for (d, want) in cases {
            assert!((d.eps - want).abs() < 1e-12, "{d:?} vs {want}");
        }
        let t = x.tanh();
        assert!((t.eps - (1.0 - libm::tanh(0.7).powi(2))).abs() < 1e-12);
    }

    #[test]
    fn nested_duals_give_second_derivatives() {
        // g(a, b) = a²·b + exp(a·b); ∂²g/∂a∂b = 2a + exp(ab)(1 + ab).
        let (a0, b0) = (0.3_f64, -1.2);
        let a = Dual::new(Dual::new(a0, 1.0), Dual::constant(0.0));
        let b = Dual::new(Dual::constant(b0), Dual::constant(1.0));
        let g = a * a * b + (a * b).exp();
        let want = 2.0 * a0 + libm::exp(a0 * b0) * (1.0 + a0 * b0);
        assert!((g.eps.eps - want).abs() < 1e-12);
    }

    #[cfg(feature = "micromath")]
    #[test]
    fn micromath_error_bounds() {
        const SQRT_MAX_ERROR: f32 = 2e-6;
        const EXP_MAX_ERROR: f32 = 2.5e-3;
        let rel = |a: f32, b: f32| ((a - b) / b).abs();
        assert_eq!(Scalar::sqrt(0.0f32), 0.0);
        for i in 0..20_000 {
            let t = i as f32 / 20_000.0;
            let v = libm::powf(10.0, -3.0 + 6.0 * t);
            assert!(
                rel(Scalar::sqrt(v), libm::sqrtf(v)) < SQRT_MAX_ERROR,
                "sqrt({v})"
            );
            let e = -10.0 + 20.0 * t;
            assert!(
                rel(Scalar::exp(e), libm::expf(e)) < EXP_MAX_ERROR,
                "exp({e})"
            );
            assert_eq!(Scalar::ln(v), libm::logf(v));
        }
    }
}
