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

use std::time::Instant;

use bda_kernel::Termination;
use bda_kernel::prelude::*;
use bda_kernel::synthetic::{eq40, icml_example1, remark4};
use clap::ArgMatches;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::config::ReportHeader;
use crate::error::CliError;

pub mod args;
pub mod observe;
pub mod report;

pub use args::{Example, ScheduleKind, ToyArgs, ToyConfig, ToyMethod};
use args::{Settings, parse_point, parse_projection};
use observe::Recorder;
use report::{RunReport, ToyReport, print_table, write_plot};

/// Run `bda toy` (`matches`: the subcommand's, to tell which options were given).
pub fn run(args: &ToyArgs, matches: &ArgMatches) -> Result<(), CliError> {
    let c = args.out.configured(&args.run, matches, "toy")?;
    let settings = c.settings()?;
    if let Some(p) = &args.plot {
        let why = format!("--ul-iters {}", settings.ul_iters);
        crate::output::check_plot(p, settings.ul_iters.into(), &why)?;
    }
    let reports = solve_all(&c)?;
    // Written first, reported after the report if it fails.
    let late = args
        .plot
        .as_ref()
        .and_then(|path| write_plot(path, &reports).err());
    if args.out.json {
        let first = reports.first();
        let report = ToyReport {
            header: ReportHeader::new("toy", &c.resolved(&settings), None)?,
            example: first.map_or("", |r| r.example),
            n: first.map_or(1, |r| r.n),
            k: settings.k,
            seed: c.seed,
            runs: reports,
        };
        println!(
            "{}",
            serde_json::to_string(&report).map_err(|e| CliError::run(e.to_string()))?
        );
    } else {
        print_table(&reports, &settings);
        if let (Some(path), None) = (&args.plot, &late) {
            println!("plot written to {}", path.display());
        }
    }
    late.map_or(Ok(()), Err)
}

/// Solve the chosen example with the chosen method(s).
pub fn solve_all(args: &ToyConfig) -> Result<Vec<RunReport>, CliError> {
    let settings = args.settings()?;
    let methods = args.method.methods();
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
    args: &ToyConfig,
    settings: &Settings,
    methods: &[Method],
    problem: &Bilevel<U, L>,
    reference: &dyn KnownSolution<f64, N, M>,
    example: &'static str,
    n: usize,
    (l_upper, sigma): (f64, f64),
) -> Result<Vec<RunReport>, CliError>
where
    U: Objective<f64, N, M> + Gradient<f64, N, M> + SecondOrder<f64, N, M>,
    L: Objective<f64, N, M> + Gradient<f64, N, M> + SecondOrder<f64, N, M>,
{
    use bda_kernel::Truncated;
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
                ..UpperConfig::new(settings.ul_lr, settings.ul_iters)
            },
        };
        let mut history = Recorder {
            problem,
            reference,
            lower: &solver.lower,
            warm_start: settings.warm_start,
            trace_at: &args.ll_trace,
            iterates: args.record_iterates,
            // Every bundled example's free lower-level coordinates are its last M − N: y₂ of
            // Example 1 (N = 1, M = 2), z of Eq. (40) (M = 2N).
            free: N..M,
            y_start: y0,
            rows: Vec::new(),
            traces: Vec::new(),
        };
        let start = Instant::now();
        let solved = if method == Method::Trhg {
            let mut t = Truncated {
                last: settings.truncate,
            };
            solver.solve(problem, &mut t, &x0, &y0, &mut history)
        } else {
            solver.solve(problem, &mut ForwardMode, &x0, &y0, &mut history)
        };
        let out = solved.map_err(|e| match e {
            bda_kernel::Error::Config(c) => settings.error(c),
            other => CliError::run(format!("{example} with {method}: {other}")),
        })?;
        let seconds = start.elapsed().as_secs_f64();
        let (lower_gap, x_err, y_err) = history
            .rows
            .last()
            .map_or((f64::NAN, f64::NAN, f64::NAN), |r| {
                (r.lower_gap, r.x_err, r.y_err)
            });
        reports.push(RunReport {
            example,
            n,
            method: method.name(),
            k: settings.k,
            ul_iters: out.iters,
            x: out.x.iter().copied().collect(),
            y: out.y.iter().copied().collect(),
            upper: out.upper,
            lower_gap,
            x_err,
            y_err,
            grad_norm: out.grad_norm,
            termination: match out.termination {
                Termination::MaxIters => "max_iters",
                Termination::GradTol => "grad_tol",
                Termination::StepTol => "step_tol",
            },
            seconds,
            s_per_ul_iter: seconds / f64::from(out.iters.max(1)),
            truncate: (method == Method::Trhg).then_some(settings.truncate),
            history: history.rows,
            ll_history: history.traces,
        });
    }
    Ok(reports)
}
