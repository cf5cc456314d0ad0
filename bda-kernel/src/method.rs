//! The names of the hypergradient methods, shared by the kernel, the host CLI and the GPU
//! backend so that a method means the same thing everywhere.

use core::fmt;
use core::str::FromStr;

use crate::scalar::Real;
use crate::schedule::{Beta, LowerDynamics, Schedule};

/// A gradient-based bi-level method, named as in the journal paper's Table 2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Method {
    /// Bi-level Descent Aggregation: Eq. (9) lower-level steps, exact hypergradient.
    Bda,
    /// Reverse (here: any exact) hypergradient through K plain lower-level steps.
    Rhg,
    /// Truncated RHG: back-propagate through the last T of the K steps only.
    Trhg,
    /// Implicit hypergradient: solve the lower-level Hessian system (conjugate gradient).
    Ihg,
    /// One-stage BDA (journal §7.3): K = 1 with a finite-difference hypergradient.
    Obda,
}

impl Method {
    /// Every method, in the order of the papers' tables.
    pub const ALL: [Method; 5] = [
        Method::Ihg,
        Method::Rhg,
        Method::Trhg,
        Method::Obda,
        Method::Bda,
    ];

    /// The command-line name (`bda`, `rhg`, `trhg`, `ihg`, `obda`).
    pub const fn name(self) -> &'static str {
        match self {
            Method::Bda => "bda",
            Method::Rhg => "rhg",
            Method::Trhg => "trhg",
            Method::Ihg => "ihg",
            Method::Obda => "obda",
        }
    }

    /// Whether the lower-level steps aggregate the upper-level direction (Eq. 9).
    pub const fn aggregates(self) -> bool {
        matches!(self, Method::Bda | Method::Obda)
    }

    /// The lower-level dynamics of this method: Eq. (9) with the given parameters for the
    /// aggregating methods, plain `s_l` gradient steps on `f` for the others.
    pub fn dynamics<T: Real>(
        self,
        mu: T,
        alpha: Schedule<T>,
        beta: Beta<T>,
        s_u: T,
        s_l: T,
    ) -> LowerDynamics<T> {
        if self.aggregates() {
            LowerDynamics::Aggregated {
                mu,
                alpha,
                beta,
                s_u,
                s_l,
            }
        } else {
            LowerDynamics::LowerOnly { s_l }
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The name was none of `bda`, `rhg`, `trhg`, `ihg`, `obda`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownMethod;

impl fmt::Display for UnknownMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("unknown method (expected one of: bda, rhg, trhg, ihg, obda)")
    }
}

impl FromStr for Method {
    type Err = UnknownMethod;
    fn from_str(s: &str) -> Result<Self, UnknownMethod> {
        Method::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(s))
            .ok_or(UnknownMethod)
    }
}
