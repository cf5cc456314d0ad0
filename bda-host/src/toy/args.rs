//! The options of `bda toy`: its configuration (recorded in every report, read back by
//! `--config`) and its output options.

use std::path::PathBuf;

use bda_kernel::ConfigError;
use bda_kernel::backend::default_truncate;
use bda_kernel::prelude::*;
use clap::ValueEnum;
use nalgebra::SVector;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::config::OutputArgs;
use crate::error::CliError;

/// Which synthetic problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Example {
    /// ICML 2020 Example 1 (x ∈ [−100, 100], y ∈ R²): x* = 1, y* = (1, 1).
    Icml,
    /// Journal Eq. (40) with x, y, z ∈ R^n: x* = y* = z* = e.
    Tpami,
    /// Journal Remark 4: Example 1 with a regularised lower level; x*(ε) = 1/2.
    Remark4,
}

/// Which methods to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ToyMethod {
    /// Bi-level Descent Aggregation (Eq. 9 lower-level steps).
    Bda,
    /// Classical lower-level-only dynamics (RHG), exact hypergradient.
    Rhg,
    /// Truncated RHG: RHG's steps, differentiated through the last `--truncate` only.
    Trhg,
    /// BDA and RHG, on one chart.
    Both,
    /// BDA, RHG and T-RHG.
    All,
}

impl ToyMethod {
    /// The methods run, in this order.
    pub fn methods(self) -> &'static [Method] {
        match self {
            ToyMethod::Bda => &[Method::Bda],
            ToyMethod::Rhg => &[Method::Rhg],
            ToyMethod::Trhg => &[Method::Trhg],
            ToyMethod::Both => &[Method::Bda, Method::Rhg],
            ToyMethod::All => &[Method::Bda, Method::Rhg, Method::Trhg],
        }
    }
}

/// The α_k schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    /// α_k = alpha / k.
    Harmonic,
    /// α_k = alpha.
    Constant,
    /// ICML Proposition 1: min{2γ/(k(1−β)), 1−ε} with γ = alpha, ε = 0.1, β from s_u and
    /// the problem's constants.
    Prop1,
}

/// Arguments of `bda toy`.
#[derive(clap::Args, Debug)]
pub struct ToyArgs {
    /// What is computed.
    #[command(flatten)]
    pub run: ToyConfig,
    /// What is printed.
    #[command(flatten)]
    pub out: OutputArgs,
    /// Write the convergence curves (|F−F*|, |f−f*|, ‖x−x*‖, ‖y−y*‖) to this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
}

/// The configuration of a `bda toy` run; options left out take the example's defaults
/// (a report records the values used).
#[derive(clap::Args, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToyConfig {
    /// The problem.
    #[arg(long, value_enum, default_value_t = Example::Icml)]
    pub example: Example,
    /// Dimension n of `--example tpami` (one of 1, 2, 3, 5, 10, 20, 50, 100).
    #[arg(long, default_value_t = 50)]
    pub n: usize,
    /// Regularisation ε of `--example remark4` (> 0).
    #[arg(long, default_value_t = 0.1, allow_hyphen_values = true)]
    pub eps: f64,
    /// Method(s) to run.
    #[arg(long, value_enum, default_value_t = ToyMethod::Both)]
    pub method: ToyMethod,
    /// Lower-level steps K per upper iteration [default: the example's: icml and remark4
    /// 64, tpami 20].
    #[arg(id = "K", long = "K", visible_alias = "k")]
    #[serde(rename = "K")]
    pub k: Option<u32>,
    /// Upper-level iterations [default: the example's: icml and remark4 300, tpami 1000].
    #[arg(long)]
    pub ul_iters: Option<u32>,
    /// Upper-level step size λ (the papers' name; `--lambda` is an alias) [default: the
    /// example's: icml and remark4 0.5, tpami 0.005].
    #[arg(long, visible_alias = "lambda", allow_hyphen_values = true)]
    pub ul_lr: Option<f64>,
    /// Initial x: one value for all coordinates, a comma list, or `random` (uniform in
    /// [−2, 3] per coordinate, drawn with `--seed`).
    #[arg(long, default_value = "0", allow_hyphen_values = true)]
    pub x0: String,
    /// Initial y: like `--x0`.
    #[arg(long, default_value = "0", allow_hyphen_values = true)]
    pub y0: String,
    /// Aggregation weight μ ∈ (0, 1) [default: 0.5].
    #[arg(long, allow_hyphen_values = true)]
    pub mu: Option<f64>,
    /// α₀ of the α_k schedule (γ for `--schedule prop1`) [default: the example's: icml and
    /// remark4 1, tpami 0.5].
    #[arg(long, allow_hyphen_values = true)]
    pub alpha: Option<f64>,
    /// The α_k schedule [default: harmonic].
    #[arg(long, value_enum)]
    pub schedule: Option<ScheduleKind>,
    /// β_k: a constant, or `icml` for β_k = (1 − μα_k)/(1 − μ) [default: the example's:
    /// icml and remark4 `icml`, tpami 1].
    #[arg(long, allow_hyphen_values = true)]
    pub beta: Option<String>,
    /// Upper-level step size s_u of the aggregated direction [default: the example's: icml
    /// and remark4 0.7, tpami 0.01].
    #[arg(long, allow_hyphen_values = true)]
    pub su: Option<f64>,
    /// Lower-level step size s_l [default: the example's: icml and remark4 0.2, tpami 0.5].
    #[arg(long, allow_hyphen_values = true)]
    pub sl: Option<f64>,
    /// Projection of y: `none`, `box:LO,HI` or `ball:RADIUS` (centred at 0).
    #[arg(long, default_value = "none")]
    pub proj_y: String,
    /// Warm-start each K-step run from the previous y_K [default: on for tpami only].
    #[arg(long, overrides_with = "no_warm_start")]
    #[serde(skip)]
    pub warm_start: bool,
    /// Restart each K-step run from y0 (the papers' scheme).
    #[arg(long, overrides_with = "warm_start")]
    #[serde(skip)]
    pub no_warm_start: bool,
    /// Whether K-step runs are warm-started, as a report records it (`--warm-start` and
    /// `--no-warm-start` set it on the command line).
    #[arg(skip)]
    #[serde(rename = "warm_start", default)]
    pub warm: Option<bool>,
    /// Seed for `random` initial points.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// T of T-RHG: the last T of the K steps are differentiated through [default: K/2].
    #[arg(long, value_name = "T")]
    pub truncate: Option<u32>,
    /// Record the K lower-level steps at these upper iterations (each run's `ll_history`:
    /// F, f − f*, ‖y_k − y*‖ and ‖y_k − y*(x)‖ for k = 0..K), e.g. `0,5,20`.
    #[arg(long, value_delimiter = ',', value_name = "T,...")]
    #[serde(default)]
    pub ll_trace: Vec<u32>,
    /// Add the iterates `x` and `y_K(x)` to every history row (the path of a run).
    #[arg(long)]
    #[serde(default)]
    pub record_iterates: bool,
}

/// The settings after the example's defaults are applied.
#[derive(Clone, Debug)]
pub(super) struct Settings {
    pub(super) k: u32,
    pub(super) ul_iters: u32,
    pub(super) ul_lr: f64,
    pub(super) mu: f64,
    pub(super) alpha: f64,
    pub(super) schedule: ScheduleKind,
    pub(super) beta: String,
    pub(super) su: f64,
    pub(super) sl: f64,
    pub(super) warm_start: bool,
    pub(super) truncate: u32,
}

impl ToyConfig {
    /// The example's defaults, overridden by the options given.
    pub(super) fn settings(&self) -> Result<Settings, CliError> {
        let (k, ul, lambda, su, sl, alpha, beta, warm) = match self.example {
            Example::Icml => (64, 300, 0.5, 0.7, 0.2, 1.0, "icml", false),
            Example::Tpami => (20, 1000, 0.005, 0.01, 0.5, 0.5, "1", true),
            Example::Remark4 => {
                if !(self.eps.is_finite() && self.eps > 0.0) {
                    return Err(CliError::input(format!(
                        "--eps: must be positive, got {}",
                        self.eps
                    )));
                }
                let sl = self.sl.unwrap_or(0.9);
                let k = (30.0 / (sl * self.eps)).ceil().clamp(1.0, 1e7) as u32;
                (k, 300, 0.5, 0.7, sl, 1.0, "icml", false)
            }
        };
        let schedule = self.schedule.unwrap_or(ScheduleKind::Harmonic);
        let warm_start = if self.warm_start {
            true
        } else if self.no_warm_start {
            false
        } else {
            self.warm.unwrap_or(warm)
        };
        let k = self.k.unwrap_or(k);
        let ul_iters = self.ul_iters.unwrap_or(ul);
        let truncate = self.truncate.unwrap_or(default_truncate(k));
        if k > 0 && (truncate == 0 || truncate > k) {
            return Err(CliError::input(format!(
                "--truncate {truncate}: must lie in 1..=K (K = {k})"
            )));
        }
        if let Some(t) = self.ll_trace.iter().find(|&&t| t > ul_iters) {
            return Err(CliError::input(format!(
                "--ll-trace {t}: after the last upper iteration (--ul-iters {ul_iters})"
            )));
        }
        Ok(Settings {
            k,
            ul_iters,
            ul_lr: self.ul_lr.unwrap_or(lambda),
            mu: self.mu.unwrap_or(0.5),
            alpha: self.alpha.unwrap_or(alpha),
            schedule,
            beta: self.beta.clone().unwrap_or_else(|| beta.to_string()),
            su: self.su.unwrap_or(su),
            sl: self.sl.unwrap_or(sl),
            warm_start,
            truncate,
        })
    }

    /// The configuration with every default written out: what a report records.
    pub(super) fn resolved(&self, s: &Settings) -> ToyConfig {
        ToyConfig {
            k: Some(s.k),
            ul_iters: Some(s.ul_iters),
            ul_lr: Some(s.ul_lr),
            mu: Some(s.mu),
            alpha: Some(s.alpha),
            schedule: Some(s.schedule),
            beta: Some(s.beta.clone()),
            su: Some(s.su),
            sl: Some(s.sl),
            warm_start: false,
            no_warm_start: false,
            warm: Some(s.warm_start),
            truncate: Some(s.truncate),
            n: match self.example {
                Example::Tpami => self.n,
                Example::Icml | Example::Remark4 => 1,
            },
            ..self.clone()
        }
    }
}

impl Settings {
    /// The lower-level dynamics of `method` (checked).
    pub(super) fn dynamics(
        &self,
        method: Method,
        l_upper: f64,
        sigma: f64,
    ) -> Result<LowerDynamics<f64>, CliError> {
        let alpha = match self.schedule {
            ScheduleKind::Constant => Schedule::Constant(self.alpha),
            ScheduleKind::Prop1 => {
                // β of Proposition 1 for the chosen s_u: sqrt(1 − 2 s_u σ L_F/(σ + L_F)).
                let inner = 1.0 - 2.0 * self.su * sigma * l_upper / (sigma + l_upper);
                Schedule::Proposition1 {
                    gamma: self.alpha,
                    beta: inner.max(0.0).sqrt(),
                    eps: 0.1,
                }
            }
            ScheduleKind::Harmonic => Schedule::Harmonic(self.alpha),
        };
        let beta = if self.beta.trim() == "icml" {
            Beta::Icml
        } else {
            let b: f64 = self.beta.trim().parse().map_err(|_| {
                CliError::input(format!(
                    "--beta: expected a number or `icml`, got `{}`",
                    self.beta
                ))
            })?;
            Beta::Schedule(Schedule::Constant(b))
        };
        let d = method.dynamics(self.mu, alpha, beta, self.su, self.sl);
        d.validate().map_err(|e| self.error(e))?;
        Ok(d)
    }

    /// A bad setting as the one-line error naming its flag.
    pub(super) fn error(&self, e: ConfigError) -> CliError {
        let (flag, value) = match e {
            ConfigError::MuOutOfRange => ("--mu", self.mu.to_string()),
            ConfigError::NonPositiveStep("s_u") => ("--su", self.su.to_string()),
            ConfigError::NonPositiveStep("s_l") => ("--sl", self.sl.to_string()),
            ConfigError::NonPositiveStep("lambda") => ("--ul-lr", self.ul_lr.to_string()),
            ConfigError::BadSchedule("alpha") => ("--alpha", self.alpha.to_string()),
            ConfigError::BadSchedule(_) => ("--beta", self.beta.clone()),
            ConfigError::ZeroSteps => ("--K", self.k.to_string()),
            e => return CliError::input(format!("invalid settings: {e}")),
        };
        let why = match e {
            ConfigError::MuOutOfRange => "must lie in (0, 1)",
            ConfigError::ZeroSteps => "at least one lower-level step",
            ConfigError::BadSchedule(_) => "out of the schedule's range",
            _ => "must be positive and finite",
        };
        CliError::input(format!("{flag} {value}: {why}"))
    }
}

pub(super) fn parse_point<const D: usize>(
    flag: &str,
    text: &str,
    rng: &mut ChaCha8Rng,
) -> Result<SVector<f64, D>, CliError> {
    if text.trim() == "random" {
        return Ok(SVector::from_fn(|_, _| rng.random_range(-2.0..3.0)));
    }
    let vals: Result<Vec<f64>, _> = text.split(',').map(|s| s.trim().parse::<f64>()).collect();
    let vals = vals.map_err(|_| {
        CliError::input(format!(
            "{flag}: expected a number, a comma list or `random`, got `{text}`"
        ))
    })?;
    if vals.iter().any(|v| !v.is_finite()) {
        return Err(CliError::input(format!(
            "{flag}: values must be finite, got `{text}`"
        )));
    }
    match vals.len() {
        1 => Ok(SVector::repeat(vals[0])),
        n if n == D => Ok(SVector::from_column_slice(&vals)),
        n if D == 1 => Err(CliError::input(format!(
            "{flag}: expected 1 value, got {n}"
        ))),
        n => Err(CliError::input(format!(
            "{flag}: expected 1 or {D} values, got {n}"
        ))),
    }
}

pub(super) fn parse_projection<const M: usize>(text: &str) -> Result<Projection<f64, M>, CliError> {
    let bad = || {
        CliError::input(format!(
            "--proj-y: expected `none`, `box:LO,HI` or `ball:RADIUS`, got `{text}`"
        ))
    };
    let t = text.trim();
    if t == "none" {
        return Ok(Projection::None);
    }
    if let Some(rest) = t.strip_prefix("box:") {
        let (lo, hi) = rest.split_once(',').ok_or_else(bad)?;
        let (lo, hi): (f64, f64) = (
            lo.trim().parse().map_err(|_| bad())?,
            hi.trim().parse().map_err(|_| bad())?,
        );
        return Ok(Projection::cube(lo, hi));
    }
    if let Some(r) = t.strip_prefix("ball:") {
        let radius: f64 = r.trim().parse().map_err(|_| bad())?;
        return Ok(Projection::Ball {
            center: SVector::zeros(),
            radius,
        });
    }
    Err(bad())
}
