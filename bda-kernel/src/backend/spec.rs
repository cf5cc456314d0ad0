//! What a dataset-scale method computes, from the numbers a user gives: [`MethodConfig`]
//! (plain data, as a command line or a JSON file holds it) is checked once by
//! [`MethodConfig::build`] into a [`MethodSpec`], the only thing the engine
//! ([`super::Hypergrad`]) accepts. No consumer re-checks μ, α or K by hand.

use core::fmt;
use core::num::NonZeroU32;

use crate::error::ConfigError;
use crate::method::Method;
use crate::scalar::Real;
use crate::schedule::{Beta, LowerDynamics, Schedule};

/// The largest number of lower-level steps K a spec accepts (2²⁰). The unrolled methods keep
/// up to K + 1 lower-level iterates, so a larger K is far more likely a typo than a plan.
pub const MAX_STEPS: u32 = 1 << 20;

/// T-RHG's default truncation for K steps, `max(1, K/2)`: the papers' ratio (25 of 50, 100
/// of 200).
pub const fn default_truncate(steps: u32) -> u32 {
    if steps < 2 { 1 } else { steps / 2 }
}

/// The user-facing numbers of a dataset-scale method. μ, α, β and `s_u` only matter to the
/// aggregating methods (BDA, O-BDA), T only to T-RHG, the CG iterations only to IHG, ε only
/// to O-BDA; [`MethodConfig::build`] checks every number anyway (a bad value is a mistake
/// whichever method runs) except T, whose default follows K and which only T-RHG reads.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct MethodConfig<T> {
    /// The method.
    pub method: Method,
    /// Lower-level steps K (O-BDA takes one step per hypergradient and K to evaluate).
    pub steps: u32,
    /// T-RHG: back-propagate through the last T of the K steps; `None` takes `max(1, K/2)`,
    /// the papers' ratio (25 of 50, 100 of 200).
    pub truncate: Option<u32>,
    /// IHG: conjugate-gradient iterations.
    pub cg_iters: u32,
    /// O-BDA: the finite-difference step ε.
    pub fd_eps: T,
    /// μ ∈ (0, 1) of Eq. (9).
    pub mu: T,
    /// α_k, the weight of the upper-level direction.
    pub alpha: Schedule<T>,
    /// β_k, the weight of the lower-level direction.
    pub beta: Beta<T>,
    /// Step size `s_u` of the upper-level direction.
    pub s_u: T,
    /// Step size `s_l` of the lower-level direction (the only step of RHG, T-RHG, IHG).
    pub s_l: T,
    /// Start each lower-level run from the previous call's `y_K` instead of the given `y₀`
    /// (BOAT's `copy_last_param`). O-BDA always does: it is a single-loop method.
    pub warm_start: bool,
    /// RHG, T-RHG, BDA: keep only every c-th lower-level iterate for the reverse pass and
    /// recompute the others one segment at a time (reverse-mode checkpointing). About
    /// `T/c + c` iterates are kept instead of `T + 1`, at the cost of about one more
    /// forward pass. The hypergradient is the same, bit for bit, on a deterministic
    /// backend. `None`: keep every iterate.
    pub checkpoint_every: Option<u32>,
}

impl<T: Real> MethodConfig<T> {
    /// `method` with K steps of size `step` (`s_u = s_l = step`) and the papers' other
    /// defaults: μ = 0.5, α_k = 0.5/k, β_k = 1, T = K/2, 20 CG iterations, ε = 0.01, no warm
    /// start.
    pub fn new(method: Method, steps: u32, step: T) -> Self {
        MethodConfig {
            method,
            steps,
            truncate: None,
            cg_iters: 20,
            fd_eps: T::from_f64(1e-2),
            mu: T::from_f64(0.5),
            alpha: Schedule::Harmonic(T::from_f64(0.5)),
            beta: Beta::Schedule(Schedule::Constant(T::one())),
            s_u: step,
            s_l: step,
            warm_start: false,
            checkpoint_every: None,
        }
    }

    /// The same numbers in another scalar type (a command keeps `f64`, a backend may compute
    /// in `f32`).
    pub fn cast<U: Real>(&self) -> MethodConfig<U> {
        let c = |v: T| U::from_f64(v.to_f64());
        MethodConfig {
            method: self.method,
            steps: self.steps,
            truncate: self.truncate,
            cg_iters: self.cg_iters,
            fd_eps: c(self.fd_eps),
            mu: c(self.mu),
            alpha: self.alpha.cast(),
            beta: self.beta.cast(),
            s_u: c(self.s_u),
            s_l: c(self.s_l),
            warm_start: self.warm_start,
            checkpoint_every: self.checkpoint_every,
        }
    }

    /// The same numbers for another method.
    pub fn with_method(self, method: Method) -> Self {
        MethodConfig { method, ..self }
    }

    /// T as T-RHG uses it: the given value, or [`default_truncate`]`(K)`.
    pub fn effective_truncate(&self) -> u32 {
        self.truncate.unwrap_or(default_truncate(self.steps))
    }

    /// Check the numbers (see the type's docs); the error names the parameter.
    pub fn build(&self) -> Result<MethodSpec<T>, SpecError> {
        let k = self.steps;
        if k == 0 {
            return Err(SpecError::new(
                Param::Steps,
                0.0,
                "at least one lower-level step",
            ));
        }
        if k > MAX_STEPS {
            return Err(SpecError::new(
                Param::Steps,
                f64::from(k),
                "at most 1048576 lower-level steps",
            ));
        }
        let m = self.method;
        let truncate = self.effective_truncate();
        if m == Method::Trhg && !(1..=k).contains(&truncate) {
            return Err(
                SpecError::new(Param::Truncate, f64::from(truncate), "must lie in 1..=K")
                    .with_bound(k),
            );
        }
        if self.checkpoint_every == Some(0) {
            return Err(SpecError::new(
                Param::CheckpointEvery,
                0.0,
                "must be at least 1 (every iterate kept)",
            ));
        }
        if self.cg_iters == 0 {
            return Err(SpecError::new(
                Param::CgIters,
                0.0,
                "at least one CG iteration",
            ));
        }
        positive(Param::FdEps, self.fd_eps)?;
        // Every Eq. (9) number is checked, whichever method runs (a bad value is a mistake
        // either way), by the dynamics' own check: one definition of the admissible ranges.
        let all = Method::Bda.dynamics(self.mu, self.alpha, self.beta, self.s_u, self.s_l);
        all.validate().map_err(|e| self.dynamics_error(e))?;
        let dynamics = if m.aggregates() {
            all
        } else {
            LowerDynamics::LowerOnly { s_l: self.s_l }
        };
        Ok(MethodSpec {
            config: *self,
            truncate,
            dynamics,
        })
    }
}

fn positive<T: Real>(param: Param, v: T) -> Result<(), SpecError> {
    if v.is_finite() && v > T::zero() {
        Ok(())
    } else {
        Err(SpecError::new(
            param,
            v.to_f64(),
            "must be positive and finite",
        ))
    }
}

/// The parameter, value and reason of a schedule's failed check.
fn schedule_error<T: Real>(param: Param, s: &Schedule<T>) -> SpecError {
    match *s {
        Schedule::Constant(c) | Schedule::Harmonic(c) => {
            SpecError::new(param, c.to_f64(), "must be finite and non-negative")
        }
        Schedule::Proposition1 { gamma, .. } => SpecError::new(
            param,
            gamma.to_f64(),
            "Proposition 1 needs γ ∈ (0, 1], β ∈ [0, 1), ε ∈ (0, 1)",
        ),
    }
}

impl<T: Real> MethodConfig<T> {
    /// [`LowerDynamics::validate`]'s error as the parameter it is about, with its value.
    fn dynamics_error(&self, e: ConfigError) -> SpecError {
        match e {
            ConfigError::MuOutOfRange => {
                SpecError::new(Param::Mu, self.mu.to_f64(), "must lie in (0, 1)")
            }
            ConfigError::NonPositiveStep("s_u") => SpecError::new(
                Param::StepUpper,
                self.s_u.to_f64(),
                "must be positive and finite",
            ),
            ConfigError::BadSchedule("alpha") => schedule_error(Param::Alpha, &self.alpha),
            ConfigError::BadSchedule(_) => match &self.beta {
                Beta::Schedule(b) => schedule_error(Param::Beta, b),
                Beta::Icml => SpecError::new(Param::Beta, 0.0, "out of range"),
            },
            _ => SpecError::new(
                Param::StepLower,
                self.s_l.to_f64(),
                "must be positive and finite",
            ),
        }
    }
}

/// A checked method: the engine's input. Built only by [`MethodConfig::build`].
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct MethodSpec<T> {
    config: MethodConfig<T>,
    truncate: u32,
    dynamics: LowerDynamics<T>,
}

impl<T: Real> MethodSpec<T> {
    /// The same method in another scalar type (a command checks its numbers in `f64`, a
    /// backend may compute in `f32`), checked again: a number may not fit (`1e300` in `f32`).
    pub fn cast<U: Real>(&self) -> Result<MethodSpec<U>, SpecError> {
        self.config.cast::<U>().build()
    }

    /// The numbers it was built from.
    pub fn config(&self) -> &MethodConfig<T> {
        &self.config
    }
    /// The method.
    pub fn method(&self) -> Method {
        self.config.method
    }
    /// Lower-level steps K.
    pub fn steps(&self) -> u32 {
        self.config.steps
    }
    /// T of T-RHG (`None` for every other method: they back-propagate through all K steps
    /// or do not unroll at all).
    pub fn truncate(&self) -> Option<u32> {
        (self.config.method == Method::Trhg).then_some(self.truncate)
    }
    /// CG iterations of IHG.
    pub fn cg_iters(&self) -> u32 {
        self.config.cg_iters
    }
    /// ε of O-BDA.
    pub fn fd_eps(&self) -> T {
        self.config.fd_eps
    }
    /// The Eq. (9) weights of the lower-level steps (`LowerOnly` unless the method aggregates).
    pub fn dynamics(&self) -> &LowerDynamics<T> {
        &self.dynamics
    }
    /// Whether each lower-level run starts from the previous `y` (always for O-BDA).
    pub fn warm_start(&self) -> bool {
        self.config.warm_start || self.config.method == Method::Obda
    }
    /// Lower-level steps of one hypergradient: 1 for O-BDA, K otherwise.
    pub fn steps_per_hypergradient(&self) -> u32 {
        if self.config.method == Method::Obda {
            1
        } else {
            self.config.steps
        }
    }
    /// The lower-level states the reverse pass revisits: T for T-RHG, K for RHG and BDA,
    /// 0 for the methods that do not unroll.
    pub fn kept_steps(&self) -> u32 {
        match self.config.method {
            Method::Rhg | Method::Bda => self.config.steps,
            Method::Trhg => self.truncate.min(self.config.steps),
            Method::Ihg | Method::Obda => 0,
        }
    }

    /// The checkpoint stride c of the reverse pass (`None`: every state kept).
    pub fn checkpoint_every(&self) -> Option<u32> {
        self.config.checkpoint_every
    }

    /// The same method keeping only every `every`-th state for the reverse pass (`None`:
    /// every state); a command sets it once it knows how much memory a state takes. The
    /// hypergradient does not change.
    pub fn with_checkpoints(self, every: Option<NonZeroU32>) -> Self {
        MethodSpec {
            config: MethodConfig {
                checkpoint_every: every.map(NonZeroU32::get),
                ..self.config
            },
            ..self
        }
    }

    /// The `y` buffers the unrolled methods keep for their reverse pass: the T (T-RHG) or
    /// K states revisited plus one for `y_K`; with checkpoints every c ≥ 2 states, the
    /// `⌈T/c⌉` checkpoints plus `max(c − 1, 2)` for a recomputed segment (and the forward
    /// pass); 0 for IHG and O-BDA.
    pub fn tape_len(&self) -> usize {
        match self.kept_steps() as usize {
            0 => 0,
            kept => {
                let c = self.config.checkpoint_every.unwrap_or(1);
                kept.div_ceil(c as usize) + segment_len(c)
            }
        }
    }

    /// The same K and `s_l` with plain lower-level steps and no warm start: the procedure
    /// that fits `y` to the lower level alone (e.g. few-shot evaluation, which may not look
    /// at the query labels that `∇_y F` uses).
    pub fn lower_only(&self) -> MethodSpec<T> {
        MethodSpec {
            config: MethodConfig {
                warm_start: false,
                ..self.config.with_method(Method::Rhg)
            },
            truncate: self.truncate,
            dynamics: LowerDynamics::LowerOnly {
                s_l: self.config.s_l,
            },
        }
    }
}

/// The buffers after the checkpoints of the unrolled methods with stride `every`: one for `y_K`
/// when every state is kept, else `max(every − 1, 2)` (a segment's recomputed states, and
/// the forward pass's alternation).
pub(crate) const fn segment_len(every: u32) -> usize {
    match every {
        0 | 1 => 1,
        c if c < 3 => 2,
        c => c as usize - 1,
    }
}

/// A parameter of [`MethodConfig`], for error messages (a command line maps it to its flag).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Param {
    /// K.
    Steps,
    /// T.
    Truncate,
    /// CG iterations.
    CgIters,
    /// O-BDA's ε.
    FdEps,
    /// μ.
    Mu,
    /// α.
    Alpha,
    /// β.
    Beta,
    /// `s_u`.
    StepUpper,
    /// `s_l`.
    StepLower,
    /// The checkpoint stride c.
    CheckpointEvery,
}

impl Param {
    /// The name in messages: `K`, `T`, `cg_iters`, `fd_eps`, `mu`, `alpha`, `beta`, `s_u`, `s_l`.
    pub const fn name(self) -> &'static str {
        match self {
            Param::Steps => "K",
            Param::Truncate => "T",
            Param::CgIters => "cg_iters",
            Param::FdEps => "fd_eps",
            Param::Mu => "mu",
            Param::Alpha => "alpha",
            Param::Beta => "beta",
            Param::StepUpper => "s_u",
            Param::StepLower => "s_l",
            Param::CheckpointEvery => "checkpoint_every",
        }
    }
}

/// Which number of a [`MethodConfig`] is wrong, its value and why.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SpecError {
    /// The parameter.
    pub param: Param,
    /// Its value.
    pub value: f64,
    /// What it must be.
    pub reason: &'static str,
    /// K, where the reason refers to it.
    pub bound: Option<u32>,
}

impl SpecError {
    fn new(param: Param, value: f64, reason: &'static str) -> Self {
        SpecError {
            param,
            value,
            reason,
            bound: None,
        }
    }

    fn with_bound(self, k: u32) -> Self {
        SpecError {
            bound: Some(k),
            ..self
        }
    }

    /// The message with the parameter called `name` (a command line passes its flag):
    /// `--truncate 30: must lie in 1..=K (K = 10)`.
    pub fn describe<'a>(&'a self, name: &'a str) -> DescribeSpecError<'a> {
        DescribeSpecError { err: self, name }
    }
}

/// [`SpecError::describe`]'s display.
pub struct DescribeSpecError<'a> {
    err: &'a SpecError,
    name: &'a str,
}

impl fmt::Display for DescribeSpecError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = self.err;
        write!(f, "{} {}: {}", self.name, e.value, e.reason)?;
        if let Some(k) = e.bound {
            write!(f, " (K = {k})")?;
        }
        Ok(())
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.describe(self.param.name()).fmt(f)
    }
}

#[cfg(feature = "std")]
impl std::error::Error for SpecError {}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::string::ToString;

    use super::*;

    #[test]
    fn defaults_build_for_every_method() {
        for m in Method::ALL {
            let spec = MethodConfig::new(m, 50, 0.1_f64).build().unwrap();
            assert_eq!(spec.steps(), 50);
            assert_eq!(spec.dynamics().uses_upper(), m.aggregates());
        }
    }

    #[test]
    fn truncation_defaults_to_half_of_k() {
        let c = MethodConfig::new(Method::Trhg, 10, 0.1_f64);
        assert_eq!(c.build().unwrap().truncate(), Some(5));
        assert_eq!(c.build().unwrap().tape_len(), 6);
        let one = MethodConfig::new(Method::Trhg, 1, 0.1_f64).build().unwrap();
        assert_eq!(one.truncate(), Some(1));
        // Only T-RHG truncates, and only T-RHG checks T.
        let bda = MethodConfig {
            truncate: Some(99),
            ..MethodConfig::new(Method::Bda, 10, 0.1_f64)
        };
        assert_eq!(bda.build().unwrap().truncate(), None);
        let e = bda.with_method(Method::Trhg).build().unwrap_err();
        assert_eq!((e.param, e.bound), (Param::Truncate, Some(10)));
        assert_eq!(
            e.describe("--truncate").to_string(),
            "--truncate 99: must lie in 1..=K (K = 10)"
        );
    }

    #[test]
    fn each_bad_number_is_named() {
        let base = MethodConfig::new(Method::Bda, 10, 0.1_f64);
        let cases: [(MethodConfig<f64>, Param); 8] = [
            (MethodConfig { steps: 0, ..base }, Param::Steps),
            (
                MethodConfig {
                    steps: MAX_STEPS + 1,
                    ..base
                },
                Param::Steps,
            ),
            (MethodConfig { mu: 1.0, ..base }, Param::Mu),
            (
                MethodConfig {
                    mu: f64::NAN,
                    ..base
                },
                Param::Mu,
            ),
            (MethodConfig { s_u: 0.0, ..base }, Param::StepUpper),
            (MethodConfig { s_l: -1.0, ..base }, Param::StepLower),
            (
                MethodConfig {
                    alpha: Schedule::Harmonic(-1.0),
                    ..base
                },
                Param::Alpha,
            ),
            (
                MethodConfig {
                    beta: Beta::Schedule(Schedule::Constant(f64::INFINITY)),
                    ..base
                },
                Param::Beta,
            ),
        ];
        for (c, p) in cases {
            assert_eq!(c.build().unwrap_err().param, p, "{c:?}");
        }
        let ihg = MethodConfig {
            cg_iters: 0,
            ..base.with_method(Method::Ihg)
        };
        assert_eq!(ihg.build().unwrap_err().param, Param::CgIters);
        let obda = MethodConfig {
            fd_eps: 0.0,
            ..base.with_method(Method::Obda)
        };
        assert_eq!(obda.build().unwrap_err().param, Param::FdEps);
        // RHG does not use μ, but a bad μ is still a mistake worth naming.
        let rhg = MethodConfig {
            mu: 7.0,
            ..base.with_method(Method::Rhg)
        };
        assert_eq!(rhg.build().unwrap_err().param, Param::Mu);
        assert_eq!(
            MethodConfig { mu: 1.5, ..base }
                .build()
                .unwrap_err()
                .to_string(),
            "mu 1.5: must lie in (0, 1)"
        );
    }

    #[test]
    fn lower_only_keeps_k_and_the_lower_step() {
        let spec = MethodConfig {
            warm_start: true,
            ..MethodConfig::new(Method::Bda, 7, 0.3_f64)
        }
        .build()
        .unwrap();
        let ev = spec.lower_only();
        assert_eq!(ev.steps(), 7);
        assert!(!ev.warm_start());
        assert_eq!(ev.dynamics().weights(3), (0.0, 0.3));
        assert_eq!(ev.method(), Method::Rhg);
    }

    #[test]
    fn obda_is_single_loop() {
        let s = MethodConfig::new(Method::Obda, 50, 0.1_f64)
            .build()
            .unwrap();
        assert!(s.warm_start());
        assert_eq!(s.steps_per_hypergradient(), 1);
        assert_eq!(s.tape_len(), 0);
    }
}
