//! Typed errors. The kernel never panics on bad configuration or numeric trouble: it says
//! what was wrong and, for divergence, at which upper- and lower-level iteration.

use core::fmt;

/// What is wrong with a configuration. Checked once, before any iteration runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ConfigError {
    /// The aggregation weight μ must lie strictly between 0 and 1.
    MuOutOfRange,
    /// A step size or rate (named) is zero, negative or not finite.
    NonPositiveStep(&'static str),
    /// A schedule parameter (named) is outside its admissible range.
    BadSchedule(&'static str),
    /// A box has `lo > hi` in the given coordinate.
    EmptyBox(usize),
    /// A ball has a negative or non-finite radius.
    BadBall,
    /// An input vector or parameter (named) contains NaN or ±∞.
    NonFiniteInput(&'static str),
    /// The number of lower-level steps K must be at least 1.
    ZeroSteps,
    /// A problem's dimensions do not fit together (e.g. Eq. (40) needs `M = 2N`).
    DimensionMismatch,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::MuOutOfRange => write!(f, "mu must lie in (0, 1)"),
            ConfigError::NonPositiveStep(name) => write!(f, "{name} must be positive and finite"),
            ConfigError::BadSchedule(what) => write!(f, "schedule parameter out of range: {what}"),
            ConfigError::EmptyBox(i) => write!(f, "box is empty in coordinate {i} (lo > hi)"),
            ConfigError::BadBall => write!(f, "ball radius must be non-negative and finite"),
            ConfigError::NonFiniteInput(name) => write!(f, "{name} contains NaN or infinity"),
            ConfigError::ZeroSteps => write!(f, "K (lower-level steps) must be at least 1"),
            ConfigError::DimensionMismatch => write!(f, "problem dimensions do not fit together"),
        }
    }
}

/// Where a non-finite value first appeared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Stage {
    /// The lower-level iterate `y_k` (Eq. 9).
    LowerIterate,
    /// The tangent `Z_k = dy_k/dx` or the hypergradient `∇φ_K(x)`.
    Hypergradient,
    /// The upper-level iterate `x` or the upper objective value.
    UpperIterate,
}

/// Every way a kernel call can fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Error {
    /// The configuration was rejected before iterating.
    Config(ConfigError),
    /// An iterate became NaN or infinite (divergence: step sizes too large for the
    /// problem's Lipschitz constants, or an objective that is not defined there).
    NonFinite {
        /// Which quantity went bad.
        stage: Stage,
        /// Upper-level iteration (0-based) during which it happened.
        ul_iter: u32,
        /// Lower-level step (1-based, `k` of `y_k`); 0 when not inside the K loop.
        ll_iter: u32,
    },
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Error::Config(e)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(e) => write!(f, "invalid configuration: {e}"),
            Error::NonFinite {
                stage,
                ul_iter,
                ll_iter,
            } => {
                let what = match stage {
                    Stage::LowerIterate => "lower-level iterate y",
                    Stage::Hypergradient => "hypergradient",
                    Stage::UpperIterate => "upper-level iterate x",
                };
                write!(
                    f,
                    "{what} became non-finite at upper iteration {ul_iter}, lower step {ll_iter} \
                     (diverging: reduce the step sizes)"
                )
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ConfigError {}
#[cfg(feature = "std")]
impl std::error::Error for Error {}
