//! The checks every command's options share: one definition of "positive and finite", and
//! one table from a method parameter ([`Param`]) to the flag that sets it, so a bad number
//! is reported with the flag the user typed, whichever command it came from.

use bda_kernel::backend::{Param, SpecError};

use crate::error::CliError;

/// `v` is positive and finite, or the one-line error `--{flag} {v}: must be positive and
/// finite`.
pub fn positive(flag: &str, v: f64) -> Result<(), CliError> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(CliError::input(format!(
            "--{flag} {v}: must be positive and finite"
        )))
    }
}

/// How a command names the step sizes of Eq. (9): `--su`/`--sl` with `--ll-lr` as their
/// default (hyper-cleaning), or `--ll-lr` alone (few-shot, where `s_u = s_l`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepFlags {
    /// `--su`, `--sl`, both defaulting to `--ll-lr`.
    Separate,
    /// `--ll-lr` for both.
    Shared,
}

/// The flag that sets `param`.
pub fn flag(param: Param, steps: StepFlags) -> &'static str {
    match (param, steps) {
        (Param::Steps, _) => "--K",
        (Param::Truncate, _) => "--truncate",
        (Param::CgIters, _) => "--cg-iters",
        (Param::FdEps, _) => "--fd-eps",
        (Param::Mu, _) => "--mu",
        (Param::Alpha, _) => "--alpha",
        (Param::Beta, _) => "--beta",
        (Param::CheckpointEvery, _) => "--checkpoint-every",
        (Param::StepUpper, StepFlags::Separate) => "--su (or --ll-lr)",
        (Param::StepLower, StepFlags::Separate) => "--sl (or --ll-lr)",
        (Param::StepUpper | Param::StepLower, StepFlags::Shared) => "--ll-lr",
    }
}

/// A method's bad number as the one-line error naming its flag (exit 2).
pub fn spec_error(e: SpecError, steps: StepFlags) -> CliError {
    CliError::input(e.describe(flag(e.param, steps)).to_string())
}

#[cfg(test)]
mod tests {
    use bda_kernel::Method;
    use bda_kernel::backend::MethodConfig;

    use super::*;

    #[test]
    fn bad_numbers_name_their_flags() {
        let base = MethodConfig::new(Method::Trhg, 10, 0.1_f64);
        let e = MethodConfig {
            truncate: Some(30),
            ..base
        }
        .build()
        .unwrap_err();
        assert_eq!(
            spec_error(e, StepFlags::Shared).to_string(),
            "--truncate 30: must lie in 1..=K (K = 10)"
        );
        let e = MethodConfig { s_l: -1.0, ..base }.build().unwrap_err();
        assert!(
            spec_error(e, StepFlags::Shared)
                .to_string()
                .starts_with("--ll-lr -1:")
        );
        assert!(
            spec_error(e, StepFlags::Separate)
                .to_string()
                .starts_with("--sl (or --ll-lr) -1:")
        );
        assert_eq!(
            positive("ul-lr", 0.0).unwrap_err().to_string(),
            "--ul-lr 0: must be positive and finite"
        );
        assert!(positive("ul-lr", f64::NAN).is_err() && positive("ul-lr", 1e-9).is_ok());
    }
}
