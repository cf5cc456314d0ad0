//! `bda toy`: the papers' synthetic problems, solved with bda-kernel.
//!
//! Examples and their defaults (each flag overrides):
//!
//! | `--example` | problem | K | UL iters | λ | s_u | s_l | μ | α_k | β_k | warm start |
//! |---|---|---|---|---|---|---|---|---|---|---|
//! | `icml` | ICML Example 1 | 64 | 300 | 0.5 | 0.7 | 0.2 | 0.5 | 1/k | ICML | no |
//! | `tpami` | journal Eq. (40), `--n` | 20 | 1000 | 0.005 | 0.01 | 0.5 | 0.5 | 0.5/k | 1 | yes |
//! | `remark4` | Remark 4, `--eps` | ⌈30/(s_l ε)⌉ | 300 | 0.5 | 0.7 | 0.9 | 0.5 | 1/k | ICML | no |
//!
//! `icml`'s weights are those of the ICML paper's figures (`μα_k = 0.5/k` with the ICML
//! β, i.e. Eq. (10) with aggregation `0.5/k`, `s_u = 0.7`, `s_l = 0.2`). For `tpami` the
//! journal's `s_u = s_l = 0.1` diverge from `y₀ = 0` (the Hessian of `‖y − e‖⁴` there has
//! norm 600 for n = 50), hence the smaller `s_u` and `λ`; with the papers' restart of the
//! lower level from `y₀` at every upper iteration, K = 20 steps cannot move `z` far enough
//! and BDA stops at `‖x − e‖/√n ≈ 0.25`, so `tpami` warm-starts by default
//! (`--no-warm-start` for the restart).

use std::path::PathBuf;
use std::time::Instant;

use bda_kernel::prelude::*;
use bda_kernel::synthetic::{eq40, icml_example1, remark4};
use bda_kernel::{IterState, Record, Termination};
use clap::ValueEnum;
use nalgebra::SVector;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::error::CliError;
use crate::plot::{self, Panel, Series};

/// Which synthetic problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Example {
    /// ICML 2020 Example 1 (x ∈ [−100, 100], y ∈ R²): x* = 1, y* = (1, 1).
    Icml,
    /// Journal Eq. (40) with x, y, z ∈ R^n: x* = y* = z* = e.
    Tpami,
    /// Journal Remark 4: Example 1 with a regularised lower level; x*(ε) = 1/2.
    Remark4,
}

/// Which methods to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ToyMethod {
    /// Bi-level Descent Aggregation (Eq. 9 lower-level steps).
    Bda,
    /// Classical lower-level-only dynamics (RHG), exact hypergradient.
    Rhg,
    /// Both, on one chart.
    Both,
}

/// The α_k schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
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
    /// Lower-level steps K per upper iteration.
    #[arg(long = "K", visible_alias = "k")]
    pub k: Option<u32>,
    /// Upper-level iterations.
    #[arg(long)]
    pub ul_iters: Option<u32>,
    /// Upper-level step size λ.
    #[arg(long, allow_hyphen_values = true)]
    pub lambda: Option<f64>,
    /// Initial x: one value for all coordinates, a comma list, or `random` (uniform in
    /// [−2, 3] per coordinate, drawn with `--seed`).
    #[arg(long, default_value = "0", allow_hyphen_values = true)]
    pub x0: String,
    /// Initial y: like `--x0`.
    #[arg(long, default_value = "0", allow_hyphen_values = true)]
    pub y0: String,
    /// Aggregation weight μ ∈ (0, 1).
    #[arg(long, allow_hyphen_values = true)]
    pub mu: Option<f64>,
    /// α₀ of the α_k schedule (γ for `--schedule prop1`).
    #[arg(long, allow_hyphen_values = true)]
    pub alpha: Option<f64>,
    /// The α_k schedule.
    #[arg(long, value_enum)]
    pub schedule: Option<ScheduleKind>,
    /// β_k: a constant, or `icml` for β_k = (1 − μα_k)/(1 − μ).
    #[arg(long, allow_hyphen_values = true)]
    pub beta: Option<String>,
    /// Upper-level step size s_u of the aggregated direction.
    #[arg(long, allow_hyphen_values = true)]
    pub su: Option<f64>,
    /// Lower-level step size s_l.
    #[arg(long, allow_hyphen_values = true)]
    pub sl: Option<f64>,
    /// Projection of y: `none`, `box:LO,HI` or `ball:RADIUS` (centred at 0).
    #[arg(long, default_value = "none")]
    pub proj_y: String,
    /// Warm-start each K-step run from the previous y_K (default: on for tpami only).
    #[arg(long, overrides_with = "no_warm_start")]
    pub warm_start: bool,
    /// Restart each K-step run from y0 (the papers' scheme).
    #[arg(long, overrides_with = "warm_start")]
    pub no_warm_start: bool,
    /// Seed for `random` initial points.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print JSON (one object per method and line) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Write the convergence curves (|F−F*|, |f−f*|, ‖x−x*‖, ‖y−y*‖) to this SVG file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

/// The settings after defaults are applied.
#[derive(Clone, Debug, Serialize)]
struct Settings {
    #[serde(skip)]
    k: u32,
    #[serde(rename = "ul_iters_max")]
    ul_iters: u32,
    lambda: f64,
    mu: f64,
    alpha: f64,
    schedule: &'static str,
    beta: String,
    su: f64,
    sl: f64,
    warm_start: bool,
}

/// One method's result, as printed by `--json`.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    /// Problem name.
    pub example: &'static str,
    /// Dimension n (tpami) or 1.
    pub n: usize,
    /// `bda` or `rhg`.
    pub method: &'static str,
    /// Lower-level steps.
    #[serde(rename = "K")]
    pub k: u32,
    /// Upper-level iterations performed.
    pub ul_iters: u32,
    /// Final x.
    pub x: Vec<f64>,
    /// y_K(x) at the final x.
    pub y: Vec<f64>,
    /// F(x, y).
    pub upper: f64,
    /// f(x, y) − f*(x).
    pub lower_gap: f64,
    /// ‖x − x*‖.
    pub x_err: f64,
    /// ‖y − y*‖.
    pub y_err: f64,
    /// ‖∇φ_K(x)‖ at the final x.
    pub grad_norm: f64,
    /// Why the loop stopped.
    pub termination: &'static str,
    /// Wall-clock seconds of the solve.
    pub seconds: f64,
    /// Seed used for random starts.
    pub seed: u64,
    #[serde(flatten)]
    settings: Settings,
    /// Per-iteration metrics (only kept for plots; not serialised).
    #[serde(skip)]
    pub history: Vec<Record<f64>>,
}

/// Records every iteration (the host has an allocator; the kernel's `History` is bounded).
struct VecHistory<'r, const N: usize, const M: usize> {
    reference: &'r dyn Reference<f64, N, M>,
    rows: Vec<Record<f64>>,
}

impl<const N: usize, const M: usize> Observer<f64, N, M> for VecHistory<'_, N, M> {
    fn observe_iter(&mut self, s: &IterState<'_, f64, N, M>) {
        self.rows.push(Record::of(s, Some(self.reference)));
    }
    fn observe_final(&mut self, s: &IterState<'_, f64, N, M>) {
        self.rows.push(Record::of(s, Some(self.reference)));
    }
}

fn parse_point<const D: usize>(
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

fn parse_projection<const M: usize>(text: &str) -> Result<Projection<f64, M>, CliError> {
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

impl ToyArgs {
    fn settings(&self) -> Result<Settings, CliError> {
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
        let schedule = match self.schedule.unwrap_or(ScheduleKind::Harmonic) {
            ScheduleKind::Harmonic => "harmonic",
            ScheduleKind::Constant => "constant",
            ScheduleKind::Prop1 => "prop1",
        };
        let warm_start = if self.warm_start {
            true
        } else if self.no_warm_start {
            false
        } else {
            warm
        };
        Ok(Settings {
            k: self.k.unwrap_or(k),
            ul_iters: self.ul_iters.unwrap_or(ul),
            lambda: self.lambda.unwrap_or(lambda),
            mu: self.mu.unwrap_or(0.5),
            alpha: self.alpha.unwrap_or(alpha),
            schedule,
            beta: self.beta.clone().unwrap_or_else(|| beta.to_string()),
            su: self.su.unwrap_or(su),
            sl: self.sl.unwrap_or(sl),
            warm_start,
        })
    }
}

impl Settings {
    fn dynamics(
        &self,
        method: Method,
        l_upper: f64,
        sigma: f64,
    ) -> Result<LowerDynamics<f64>, CliError> {
        let alpha = match self.schedule {
            "constant" => Schedule::Constant(self.alpha),
            "prop1" => {
                // β of Proposition 1 for the chosen s_u: sqrt(1 − 2 s_u σ L_F/(σ + L_F)).
                let inner = 1.0 - 2.0 * self.su * sigma * l_upper / (sigma + l_upper);
                Schedule::Proposition1 {
                    gamma: self.alpha,
                    beta: inner.max(0.0).sqrt(),
                    eps: 0.1,
                }
            }
            _ => Schedule::Harmonic(self.alpha),
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
        d.validate()
            .map_err(|e| CliError::input(format!("invalid lower-level settings: {e}")))?;
        Ok(d)
    }
}

/// Run `bda toy`.
pub fn run(args: &ToyArgs) -> Result<(), CliError> {
    let reports = solve_all(args)?;
    if args.json {
        for r in &reports {
            println!(
                "{}",
                serde_json::to_string(r).map_err(|e| CliError::run(e.to_string()))?
            );
        }
    } else {
        print_table(&reports);
    }
    if let Some(path) = &args.plot {
        write_plot(path, &reports)?;
        if !args.json {
            println!("plot written to {}", path.display());
        }
    }
    Ok(())
}

/// Solve the chosen example with the chosen method(s).
pub fn solve_all(args: &ToyArgs) -> Result<Vec<RunReport>, CliError> {
    let settings = args.settings()?;
    let methods: &[Method] = match args.method {
        ToyMethod::Bda => &[Method::Bda],
        ToyMethod::Rhg => &[Method::Rhg],
        ToyMethod::Both => &[Method::Bda, Method::Rhg],
    };
    match args.example {
        Example::Icml => {
            let p = icml_example1::<f64>();
            run_methods::<_, _, 1, 2>(args, &settings, methods, &p, &p, "icml", 1, (1.0, 1.0))
        }
        Example::Remark4 => {
            let p = remark4::<f64>(args.eps).map_err(|e| CliError::input(format!("--eps: {e}")))?;
            run_methods::<_, _, 1, 2>(args, &settings, methods, &p, &p, "remark4", 1, (1.0, 1.0))
        }
        Example::Tpami => {
            macro_rules! dims {
                ($($n:literal => $m:literal),*) => {
                    match args.n {
                        $($n => {
                            let p = eq40::<$n, $m>().map_err(|e| CliError::input(format!("--n: {e}")))?;
                            // L_F and σ of ‖y − e‖⁴ are not global; the Prop. 1 β uses 1, 1.
                            run_methods::<_, _, $n, $m>(args, &settings, methods, &p, &p, "tpami", $n, (1.0, 1.0))
                        })*
                        n => Err(CliError::input(format!(
                            "--n: {n} is not compiled in; choose one of 1, 2, 3, 5, 10, 20, 50, 100"
                        ))),
                    }
                };
            }
            dims!(1 => 2, 2 => 4, 3 => 6, 5 => 10, 10 => 20, 20 => 40, 50 => 100, 100 => 200)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn run_methods<U, L, const N: usize, const M: usize>(
    args: &ToyArgs,
    settings: &Settings,
    methods: &[Method],
    problem: &Bilevel<U, L>,
    reference: &dyn Reference<f64, N, M>,
    example: &'static str,
    n: usize,
    (l_upper, sigma): (f64, f64),
) -> Result<Vec<RunReport>, CliError>
where
    U: Objective<f64, N, M> + Gradient<f64, N, M> + SecondOrder<f64, N, M>,
    L: Objective<f64, N, M> + Gradient<f64, N, M> + SecondOrder<f64, N, M>,
{
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let x0 = parse_point::<N>("--x0", &args.x0, &mut rng)?;
    let y0 = parse_point::<M>("--y0", &args.y0, &mut rng)?;
    let projection = parse_projection::<M>(&args.proj_y)?;
    let mut reports = Vec::new();
    for &method in methods {
        let solver = Solver {
            lower: LowerConfig {
                steps: settings.k,
                dynamics: settings.dynamics(method, l_upper, sigma)?,
                projection,
            },
            upper: UpperConfig {
                projection: Projection::cube(-100.0, 100.0),
                warm_start: settings.warm_start,
                ..UpperConfig::new(settings.lambda, settings.ul_iters)
            },
        };
        let mut history = VecHistory {
            reference,
            rows: Vec::new(),
        };
        let start = Instant::now();
        let out = solver
            .solve(problem, &mut ForwardMode, &x0, &y0, &mut history)
            .map_err(|e| match e {
                bda_kernel::Error::Config(c) => CliError::input(format!("invalid settings: {c}")),
                other => CliError::run(format!("{example} with {method}: {other}")),
            })?;
        let seconds = start.elapsed().as_secs_f64();
        let last = *history
            .rows
            .last()
            .expect("the final state is always observed");
        reports.push(RunReport {
            example,
            n,
            method: method.name(),
            k: settings.k,
            ul_iters: out.iters,
            x: out.x.iter().copied().collect(),
            y: out.y.iter().copied().collect(),
            upper: out.upper,
            lower_gap: last.lower_gap.unwrap_or(f64::NAN),
            x_err: last.x_err.unwrap_or(f64::NAN),
            y_err: last.y_err.unwrap_or(f64::NAN),
            grad_norm: out.grad_norm,
            termination: match out.termination {
                Termination::MaxIters => "max_iters",
                Termination::GradTol => "grad_tol",
                Termination::StepTol => "step_tol",
            },
            seconds,
            seed: args.seed,
            settings: settings.clone(),
            history: history.rows,
        });
    }
    Ok(reports)
}

fn fmt_vec(v: &[f64]) -> String {
    if v.len() <= 4 {
        let parts: Vec<String> = v.iter().map(|x| format!("{x:.4}")).collect();
        format!("({})", parts.join(", "))
    } else {
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let (lo, hi) = v
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
                (a.min(x), b.max(x))
            });
        format!(
            "[{} values: mean {mean:.4}, min {lo:.4}, max {hi:.4}]",
            v.len()
        )
    }
}

fn print_table(reports: &[RunReport]) {
    let Some(first) = reports.first() else { return };
    println!(
        "bda toy --example {} (n = {}, K = {}, λ = {}, s_u = {}, s_l = {}, μ = {}, α₀ = {} {}, β = {}, warm start: {})",
        first.example,
        first.n,
        first.k,
        first.settings.lambda,
        first.settings.su,
        first.settings.sl,
        first.settings.mu,
        first.settings.alpha,
        first.settings.schedule,
        first.settings.beta,
        first.settings.warm_start
    );
    println!(
        "{:<6} {:>8} {:>12} {:>12} {:>12} {:>12} {:>10}  x / y",
        "method", "UL iters", "F", "f − f*", "‖x − x*‖", "‖y − y*‖", "seconds"
    );
    for r in reports {
        println!(
            "{:<6} {:>8} {:>12.4e} {:>12.4e} {:>12.4e} {:>12.4e} {:>10.4}  x = {}, y = {}",
            r.method,
            r.ul_iters,
            r.upper,
            r.lower_gap,
            r.x_err,
            r.y_err,
            r.seconds,
            fmt_vec(&r.x),
            fmt_vec(&r.y)
        );
    }
}

fn write_plot(path: &std::path::Path, reports: &[RunReport]) -> Result<(), CliError> {
    type Metric = fn(&Record<f64>) -> Option<f64>;
    let metrics: [(&str, Metric); 4] = [
        ("|F − F*|", |r| r.upper_gap),
        ("|f − f*|", |r| r.lower_gap.map(f64::abs)),
        ("‖x − x*‖", |r| r.x_err),
        ("‖y − y*‖", |r| r.y_err),
    ];
    let panels: Vec<Panel> = metrics
        .iter()
        .map(|(title, get)| Panel {
            title: title.to_string(),
            x_label: "UL iteration".into(),
            y_log: true,
            series: reports
                .iter()
                .map(|r| Series {
                    name: format!("{} (K={})", r.method.to_uppercase(), r.k),
                    points: r
                        .history
                        .iter()
                        .filter_map(|h| get(h).map(|v| (h.iter as f64, v)))
                        .collect(),
                })
                .collect(),
        })
        .collect();
    let title = match reports.first() {
        Some(r) if r.example == "tpami" => format!("journal Eq. (40), n = {}", r.n),
        Some(r) if r.example == "remark4" => "journal Remark 4".to_string(),
        _ => "ICML Example 1".to_string(),
    };
    plot::write_svg(path, &title, &panels, 2)
}
