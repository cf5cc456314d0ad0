//! Step-size and aggregation schedules of the lower-level iteration (journal Eq. 9).
//!
//! One lower-level step is
//! `y ← Proj_Y(y − (μ·α_k·s_u·∇_y F + (1−μ)·β_k·s_l·∇_y f))`; [`LowerDynamics::weights`]
//! turns `(μ, α_k, β_k, s_u, s_l)` into the two weights `(w_u, w_l)` multiplying the
//! gradients, which is all the iteration itself needs.
//!
//! Indexing: the papers write `α_k = α₀/k, k = 1, …, K` (journal §8.1). The step that
//! produces `y_k` from `y_{k−1}` uses index `k ≥ 1`.

use crate::error::ConfigError;
use crate::scalar::Real;

/// A scalar sequence `a_k`, `k = 1, 2, …`.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Schedule<T> {
    /// `a_k = c` for all k.
    Constant(T),
    /// `a_k = a₀ / k` (the papers' adaptive choice, e.g. `0.5/k`).
    Harmonic(T),
    /// ICML 2020 Proposition 1: `a_k = min{2γ / (k(1−β)), 1−ε}` with `γ ∈ (0, 1]`,
    /// `ε ∈ (0, 1)`, `β ∈ [0, 1)`; see [`StepSizes::from_constants`] for `β`.
    Proposition1 {
        /// `γ ∈ (0, 1]`.
        gamma: T,
        /// `β = sqrt(1 − 2 s_u σ L_F / (σ + L_F))`.
        beta: T,
        /// `ε ∈ (0, 1)`: caps the sequence at `1 − ε`.
        eps: T,
    },
}

impl<T: Real> Schedule<T> {
    /// The value `a_k` for `k ≥ 1`.
    #[inline(always)]
    pub fn at(&self, k: u32) -> T {
        match *self {
            Schedule::Constant(c) => c,
            Schedule::Harmonic(a0) => a0 / T::from_f64(k as f64),
            Schedule::Proposition1 { gamma, beta, eps } => {
                let two = T::from_f64(2.0);
                let raw = two * gamma / (T::from_f64(k as f64) * (T::one() - beta));
                raw.min(T::one() - eps)
            }
        }
    }

    /// The same schedule in another scalar type.
    pub fn cast<U: Real>(&self) -> Schedule<U> {
        let c = |v: T| U::from_f64(v.to_f64());
        match *self {
            Schedule::Constant(v) => Schedule::Constant(c(v)),
            Schedule::Harmonic(v) => Schedule::Harmonic(c(v)),
            Schedule::Proposition1 { gamma, beta, eps } => Schedule::Proposition1 {
                gamma: c(gamma),
                beta: c(beta),
                eps: c(eps),
            },
        }
    }

    /// Check the parameters: finite, and within the ranges the papers' theory admits.
    pub fn validate(&self, name: &'static str) -> Result<(), ConfigError> {
        let ok = match *self {
            Schedule::Constant(c) | Schedule::Harmonic(c) => c.is_finite() && c >= T::zero(),
            Schedule::Proposition1 { gamma, beta, eps } => {
                gamma.is_finite()
                    && beta.is_finite()
                    && eps.is_finite()
                    && gamma > T::zero()
                    && gamma <= T::one()
                    && beta >= T::zero()
                    && beta < T::one()
                    && eps > T::zero()
                    && eps < T::one()
            }
        };
        if ok {
            Ok(())
        } else {
            Err(ConfigError::BadSchedule(name))
        }
    }
}

/// How `β_k` is chosen.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Beta<T> {
    /// An explicit schedule (the journal's experiments use `β_k ≡ 1`).
    Schedule(Schedule<T>),
    /// `β_k = (1 − μα_k)/(1 − μ)`: the ICML 2020 Eq. (10) scheme, whose two weights
    /// `μα_k` and `1 − μα_k` sum to one.
    Icml,
}

impl<T: Real> Beta<T> {
    /// The same choice in another scalar type.
    pub fn cast<U: Real>(&self) -> Beta<U> {
        match self {
            Beta::Schedule(s) => Beta::Schedule(s.cast()),
            Beta::Icml => Beta::Icml,
        }
    }
}

/// The lower-level dynamics: which descent directions a step combines and with what weights.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum LowerDynamics<T> {
    /// Journal Eq. (9): aggregate `∇_y F` and `∇_y f`.
    Aggregated {
        /// `μ ∈ (0, 1)`.
        mu: T,
        /// `α_k`, the weight of the upper-level direction.
        alpha: Schedule<T>,
        /// `β_k`, the weight of the lower-level direction.
        beta: Beta<T>,
        /// Upper-level step size `s_u > 0`.
        s_u: T,
        /// Lower-level step size `s_l > 0`.
        s_l: T,
    },
    /// Classical gradient descent on `f` alone, `y ← Proj_Y(y − s_l ∇_y f)`: the dynamics
    /// of RHG/T-RHG. It equals `Aggregated` with `α_k ≡ 0` and [`Beta::Icml`], but skips
    /// the evaluation of `∇_y F`.
    LowerOnly {
        /// Lower-level step size `s_l > 0`.
        s_l: T,
    },
}

impl<T: Real> LowerDynamics<T> {
    /// The papers' BDA defaults for given step sizes: `μ = 0.5`, `α_k = 0.5/k`, `β_k = 1`.
    pub fn bda(s_u: T, s_l: T) -> Self {
        LowerDynamics::Aggregated {
            mu: T::from_f64(0.5),
            alpha: Schedule::Harmonic(T::from_f64(0.5)),
            beta: Beta::Schedule(Schedule::Constant(T::one())),
            s_u,
            s_l,
        }
    }

    /// `(w_u, w_l)` for step `k ≥ 1`: `y ← Proj(y − (w_u ∇_y F + w_l ∇_y f))`.
    #[inline(always)]
    pub fn weights(&self, k: u32) -> (T, T) {
        match *self {
            LowerDynamics::Aggregated {
                mu,
                alpha,
                beta,
                s_u,
                s_l,
            } => {
                let a = alpha.at(k);
                let one = T::one();
                let b = match beta {
                    Beta::Schedule(s) => s.at(k),
                    Beta::Icml => (one - mu * a) / (one - mu),
                };
                (mu * a * s_u, (one - mu) * b * s_l)
            }
            LowerDynamics::LowerOnly { s_l } => (T::zero(), s_l),
        }
    }

    /// Whether the upper-level direction takes part (and `∇_y F` must be evaluated).
    #[inline(always)]
    pub fn uses_upper(&self) -> bool {
        matches!(self, LowerDynamics::Aggregated { .. })
    }

    /// Check μ, the step sizes and the schedules.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = |v: T, name| {
            if v.is_finite() && v > T::zero() {
                Ok(())
            } else {
                Err(ConfigError::NonPositiveStep(name))
            }
        };
        match *self {
            LowerDynamics::Aggregated {
                mu,
                alpha,
                beta,
                s_u,
                s_l,
            } => {
                if !(mu.is_finite() && mu > T::zero() && mu < T::one()) {
                    return Err(ConfigError::MuOutOfRange);
                }
                positive(s_u, "s_u")?;
                positive(s_l, "s_l")?;
                alpha.validate("alpha")?;
                if let Beta::Schedule(b) = beta {
                    b.validate("beta")?;
                }
                Ok(())
            }
            LowerDynamics::LowerOnly { s_l } => positive(s_l, "s_l"),
        }
    }
}

/// Step sizes derived from the problem's constants, as in ICML Proposition 1.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct StepSizes<T> {
    /// `s_u = 2/(L_F + σ)`, the largest admissible upper-level step.
    pub s_u: T,
    /// `s_l = 1/L_f`, the largest admissible lower-level step.
    pub s_l: T,
    /// `β = sqrt(1 − 2 s_u σ L_F/(σ + L_F))`, for [`Schedule::Proposition1`].
    pub beta: T,
}

impl<T: Real> StepSizes<T> {
    /// From `L_F` (Lipschitz constant of `∇_y F`), `L_f` (of `∇_y f`) and `σ` (strong
    /// convexity modulus of `F(x, ·)`), all positive with `σ ≤ L_F`.
    pub fn from_constants(l_upper: T, l_lower: T, sigma: T) -> Result<Self, ConfigError> {
        for (v, name) in [(l_upper, "L_F"), (l_lower, "L_f"), (sigma, "sigma")] {
            if !(v.is_finite() && v > T::zero()) {
                return Err(ConfigError::NonPositiveStep(name));
            }
        }
        if sigma > l_upper {
            return Err(ConfigError::BadSchedule("sigma must not exceed L_F"));
        }
        let two = T::from_f64(2.0);
        let s_u = two / (l_upper + sigma);
        let s_l = T::one() / l_lower;
        let inner = T::one() - two * s_u * sigma * l_upper / (sigma + l_upper);
        // inner = ((L_F − σ)/(L_F + σ))² ≥ 0 analytically; clamp the rounding.
        let beta = inner.max(T::zero()).sqrt();
        Ok(StepSizes { s_u, s_l, beta })
    }

    /// The Proposition 1 schedule `α_k = min{2γ/(k(1−β)), 1−ε}` for these step sizes.
    pub fn proposition1(&self, gamma: T, eps: T) -> Schedule<T> {
        Schedule::Proposition1 {
            gamma,
            beta: self.beta,
            eps,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn harmonic_and_proposition1_values() {
        assert_eq!(Schedule::Harmonic(0.5_f64).at(4), 0.125);
        let p = Schedule::Proposition1 {
            gamma: 1.0_f64,
            beta: 0.0,
            eps: 0.1,
        };
        assert_eq!(p.at(1), 0.9); // capped at 1 − ε
        assert_eq!(p.at(4), 0.5); // 2γ/(k(1−β))
    }

    #[test]
    fn icml_beta_makes_weights_a_convex_combination() {
        let d = LowerDynamics::Aggregated {
            mu: 0.3_f64,
            alpha: Schedule::Harmonic(1.0),
            beta: Beta::Icml,
            s_u: 1.0,
            s_l: 1.0,
        };
        for k in 1..10 {
            let (wu, wl) = d.weights(k);
            assert!((wu + wl - 1.0).abs() < 1e-15);
        }
    }

    #[test]
    fn alpha_zero_with_icml_beta_is_lower_only() {
        let agg = LowerDynamics::Aggregated {
            mu: 0.7_f64,
            alpha: Schedule::Constant(0.0),
            beta: Beta::Icml,
            s_u: 0.3,
            s_l: 0.2,
        };
        let plain = LowerDynamics::LowerOnly { s_l: 0.2 };
        for k in 1..5 {
            let (a, b) = (agg.weights(k), plain.weights(k));
            assert_eq!(a.0, b.0);
            assert!((a.1 - b.1).abs() < 1e-15);
        }
    }

    #[test]
    fn bad_configs_are_typed_errors() {
        let mut d = LowerDynamics::bda(0.1_f64, 0.1);
        if let LowerDynamics::Aggregated { mu, .. } = &mut d {
            *mu = 1.0;
        }
        assert_eq!(d.validate(), Err(ConfigError::MuOutOfRange));
        assert_eq!(
            LowerDynamics::bda(-0.1_f64, 0.1).validate(),
            Err(ConfigError::NonPositiveStep("s_u"))
        );
        assert_eq!(
            LowerDynamics::LowerOnly { s_l: f64::NAN }.validate(),
            Err(ConfigError::NonPositiveStep("s_l"))
        );
        let p = Schedule::Proposition1 {
            gamma: 2.0_f64,
            beta: 0.0,
            eps: 0.1,
        };
        assert!(p.validate("alpha").is_err());
    }

    #[test]
    fn step_sizes_from_constants() {
        let s = StepSizes::from_constants(1.0_f64, 1.0, 1.0).unwrap();
        assert_eq!((s.s_u, s.s_l, s.beta), (1.0, 1.0, 0.0));
        let s = StepSizes::from_constants(3.0_f64, 2.0, 1.0).unwrap();
        assert!((s.beta - 0.5).abs() < 1e-15); // (L−σ)/(L+σ)
        assert!(StepSizes::from_constants(1.0_f64, 1.0, 2.0).is_err());
    }
}
