//! The papers' synthetic claims, reproduced with the kernel.

use bda_kernel::prelude::*;
use bda_kernel::synthetic::{eq40, icml_example1, remark4};
use bda_kernel::{Outcome, Termination};
use nalgebra::{SVector, Vector1, Vector2};

/// BDA as in the papers' Figure 1–2 setting (ICML: s_u = 0.7, s_l = 0.2), with the
/// Proposition 1 aggregation schedule (β = 0 since σ = L_F = 1 for Example 1).
fn bda_solver(k: u32, iters: u32) -> Solver<f64, 1, 2> {
    let steps = StepSizes::from_constants(1.0, 1.0, 1.0).unwrap();
    Solver {
        lower: LowerConfig {
            steps: k,
            dynamics: LowerDynamics::Aggregated {
                mu: 0.5,
                alpha: steps.proposition1(1.0, 0.1),
                beta: Beta::Icml,
                s_u: 0.7,
                s_l: 0.2,
            },
            projection: Projection::None,
        },
        upper: UpperConfig {
            projection: Projection::cube(-100.0, 100.0),
            ..UpperConfig::new(0.5, iters)
        },
    }
}

fn lower_only_solver(k: u32, iters: u32) -> Solver<f64, 1, 2> {
    Solver {
        lower: LowerConfig {
            steps: k,
            dynamics: LowerDynamics::LowerOnly { s_l: 0.2 },
            projection: Projection::None,
        },
        upper: UpperConfig {
            projection: Projection::cube(-100.0, 100.0),
            ..UpperConfig::new(0.5, iters)
        },
    }
}

fn run(solver: &Solver<f64, 1, 2>, y0: [f64; 2]) -> Outcome<f64, 1, 2> {
    let problem = icml_example1::<f64>();
    solver
        .solve(
            &problem,
            &mut ForwardMode,
            &Vector1::new(0.0),
            &Vector2::from(y0),
            &mut (),
        )
        .expect("solve")
}

#[test]
fn icml_example1_bda_reaches_the_true_solution_from_both_starts() {
    for y0 in [[0.0, 0.0], [2.0, 2.0]] {
        let out = run(&bda_solver(256, 400), y0);
        let x_err = (out.x[0] - 1.0).abs();
        let y_err = (out.y - Vector2::new(1.0, 1.0)).norm();
        println!(
            "BDA K=256 y0={y0:?}: x = {:.5}, y = ({:.5}, {:.5})",
            out.x[0], out.y[0], out.y[1]
        );
        assert!(x_err < 0.05, "x = {} from y0 = {y0:?}", out.x[0]);
        assert!(y_err < 0.1, "y = {:?} from y0 = {y0:?}", out.y);
    }
}

#[test]
fn icml_example1_lower_only_dynamics_converge_to_the_wrong_points_whatever_k() {
    // The counter-example: with y2 never moved by the lower level, x* = 1/2 from y2 = 0 and
    // x* = 3/2 from y2 = 2 (φ_K(x) = ½(x − y2)² + ½(a_K x − 1)², a_K → 1).
    for k in [16, 64, 256] {
        for (y0, want) in [([0.0, 0.0], 0.5), ([2.0, 2.0], 1.5)] {
            let out = run(&lower_only_solver(k, 500), y0);
            println!("LL-only K={k} y0={y0:?}: x = {:.5}", out.x[0]);
            assert!(
                (out.x[0] - want).abs() < 1e-3,
                "K={k} y0={y0:?}: x = {}",
                out.x[0]
            );
            assert_eq!(out.y[1], y0[1], "the lower level never moves y2");
        }
    }
}

#[test]
fn remark4_regularised_lower_level_gives_x_one_half() {
    // A strongly convex lower level (ε > 0) makes the lower-level solution unique and moves
    // the bi-level solution to x*(ε) = 1/2 for every ε, however small.
    for eps in [1.0, 0.1, 0.01] {
        let problem = remark4::<f64>(eps).unwrap();
        // y₂ contracts by (1 − s_l ε) per step: take K so that the lower level converges.
        let k = (30.0 / (0.9 * eps)) as u32;
        let mut solver = lower_only_solver(k, 300);
        solver.lower.dynamics = LowerDynamics::LowerOnly { s_l: 0.9 };
        let out = solver
            .solve(
                &problem,
                &mut ForwardMode,
                &Vector1::new(3.0),
                &Vector2::new(0.0, 1.0),
                &mut (),
            )
            .unwrap();
        println!(
            "Remark 4 eps={eps}: x = {:.6}, y = ({:.6}, {:.6})",
            out.x[0], out.y[0], out.y[1]
        );
        assert!((out.x[0] - 0.5).abs() < 1e-3, "eps={eps}: x = {}", out.x[0]);
    }
}

/// Journal Eq. (40), n = 50: BDA approaches x* = y* = z* = e, RHG does not.
///
/// Settings differ from the journal's §8.1 (`s_u = s_l = 0.1`) where those diverge: at
/// `y₀ = 0` the Hessian of `‖y − e‖⁴` has norm `12‖y − e‖² = 600`, so the upper-level
/// weight `μα₁s_u` must stay below `2/600`; we take `s_u = 0.01`, `s_l = 0.5`, and
/// `λ = 0.005` because `φ_K` is quartic too.
fn eq40_run(
    dynamics: LowerDynamics<f64>,
    warm_start: bool,
) -> (
    bda_kernel::Outcome<f64, 50, 100>,
    History<'static, f64, 50, 100, 1024>,
) {
    const N: usize = 50;
    const M: usize = 100;
    static PROBLEM: std::sync::OnceLock<bda_kernel::synthetic::Eq40<50, 100>> =
        std::sync::OnceLock::new();
    let problem = PROBLEM.get_or_init(|| eq40::<N, M>().unwrap());
    let solver = Solver {
        lower: LowerConfig {
            steps: 20,
            dynamics,
            projection: Projection::None,
        },
        upper: UpperConfig {
            projection: Projection::cube(-100.0, 100.0),
            warm_start,
            ..UpperConfig::new(0.005, 1000)
        },
    };
    let mut hist = History::with_reference(problem);
    let out = solver
        .solve(
            problem,
            &mut ForwardMode,
            &SVector::zeros(),
            &SVector::zeros(),
            &mut hist,
        )
        .unwrap();
    (out, hist)
}

#[test]
fn eq40_bda_approaches_e_and_rhg_does_not() {
    let bda = LowerDynamics::Aggregated {
        mu: 0.5,
        alpha: Schedule::Harmonic(0.5),
        beta: Beta::Schedule(Schedule::Constant(1.0)),
        s_u: 0.01,
        s_l: 0.5,
    };
    let rhg = LowerDynamics::LowerOnly { s_l: 0.5 };
    let errs = |o: &bda_kernel::Outcome<f64, 50, 100>| {
        let ex = (o.x - SVector::<f64, 50>::repeat(1.0)).norm() / 50f64.sqrt();
        let ey = (o.y - SVector::<f64, 100>::repeat(1.0)).norm() / 100f64.sqrt();
        (ex, ey)
    };
    println!("Eq.(40) n=50, K=20, 1000 UL iterations; errors are RMS per coordinate:");
    let mut rows = Vec::new();
    for (name, dynamics) in [("BDA", bda), ("RHG", rhg)] {
        for warm in [true, false] {
            let (out, hist) = eq40_run(dynamics, warm);
            let (ex, ey) = errs(&out);
            println!(
                "  {name} warm_start={warm}: ‖x−e‖/√n = {ex:.4}, ‖(y,z)−e‖/√2n = {ey:.4}, F = {:.3e}",
                out.upper
            );
            assert_eq!(hist.records.len(), 1001);
            let last = hist.records.last().unwrap();
            assert!((last.x_err.unwrap() - ex * 50f64.sqrt()).abs() < 1e-9);
            rows.push((name, warm, ex, ey));
        }
    }
    // BDA with warm-started lower-level iterates reaches e.
    assert!(rows[0].2 < 0.05 && rows[0].3 < 0.06, "{rows:?}");
    // Restarting from (y, z) = 0 each time, K = 20 steps cannot carry z far enough: BDA
    // stops short, but still well ahead of RHG.
    assert!(rows[1].2 < 0.3, "{rows:?}");
    // RHG never moves z, so it converges to argmin ‖x‖⁴ + ‖x − e‖⁴ = e/2 either way.
    for r in &rows[2..] {
        assert!((r.2 - 0.5).abs() < 0.01, "{rows:?}");
    }
}

#[test]
fn bda_converges_faster_with_more_lower_steps() {
    // ICML Figure 2: BDA improves with K.
    let errs: Vec<f64> = [8, 64, 256]
        .iter()
        .map(|&k| (run(&bda_solver(k, 200), [0.0, 0.0]).x[0] - 1.0).abs())
        .collect();
    println!("BDA |x − 1| after 200 UL iterations for K = 8, 64, 256: {errs:?}");
    assert!(errs[0] > errs[1] && errs[1] > errs[2], "{errs:?}");
}

#[test]
fn terminates_on_gradient_tolerance() {
    let mut s = bda_solver(64, 10_000);
    s.upper.grad_tol = 1e-8;
    let out = run(&s, [0.0, 0.0]);
    assert_eq!(out.termination, Termination::GradTol);
    assert!(out.iters < 10_000);
    assert!(out.grad_norm <= 1e-8);
}
