//! Bad configuration and divergence are typed errors, never panics.

use bda_kernel::prelude::*;
use bda_kernel::synthetic::icml_example1;
use bda_kernel::{ConfigError, Error, Stage};
use nalgebra::{Vector1, Vector2};

fn solver() -> Solver<f64, 1, 2> {
    Solver {
        lower: LowerConfig {
            steps: 8,
            dynamics: LowerDynamics::bda(0.7, 0.2),
            projection: Projection::None,
        },
        upper: UpperConfig::new(0.5, 10),
    }
}

fn solve(
    s: &Solver<f64, 1, 2>,
    x0: f64,
    y0: [f64; 2],
) -> Result<bda_kernel::Outcome<f64, 1, 2>, Error> {
    s.solve(
        &icml_example1::<f64>(),
        &mut ForwardMode,
        &Vector1::new(x0),
        &Vector2::from(y0),
        &mut (),
    )
}

#[test]
fn bad_configuration_is_rejected_before_iterating() {
    let mut s = solver();
    s.lower.dynamics = LowerDynamics::Aggregated {
        mu: 1.5,
        alpha: Schedule::Harmonic(0.5),
        beta: Beta::Icml,
        s_u: 0.7,
        s_l: 0.2,
    };
    assert_eq!(
        solve(&s, 0.0, [0.0, 0.0]),
        Err(Error::Config(ConfigError::MuOutOfRange))
    );

    let mut s = solver();
    s.lower.dynamics = LowerDynamics::LowerOnly { s_l: 0.0 };
    assert_eq!(
        solve(&s, 0.0, [0.0, 0.0]),
        Err(Error::Config(ConfigError::NonPositiveStep("s_l")))
    );

    let mut s = solver();
    s.upper.lambda = -1.0;
    assert_eq!(
        solve(&s, 0.0, [0.0, 0.0]),
        Err(Error::Config(ConfigError::NonPositiveStep("lambda")))
    );

    let mut s = solver();
    s.upper.projection = Projection::cube(1.0, -1.0);
    assert_eq!(
        solve(&s, 0.0, [0.0, 0.0]),
        Err(Error::Config(ConfigError::EmptyBox(0)))
    );

    let mut s = solver();
    s.lower.steps = 0;
    assert_eq!(
        solve(&s, 0.0, [0.0, 0.0]),
        Err(Error::Config(ConfigError::ZeroSteps))
    );

    assert_eq!(
        solve(&solver(), f64::NAN, [0.0, 0.0]),
        Err(Error::Config(ConfigError::NonFiniteInput("x0")))
    );
    assert_eq!(
        solve(&solver(), 0.0, [0.0, f64::INFINITY]),
        Err(Error::Config(ConfigError::NonFiniteInput("y0")))
    );
}

#[test]
fn divergence_names_the_iteration() {
    // s_l = 3 > 2/L_f makes y₁ oscillate with growth factor 2 per step: overflow after
    // about a thousand steps, inside the first upper-level iteration.
    let mut s = solver();
    s.lower.steps = 5000;
    s.lower.dynamics = LowerDynamics::LowerOnly { s_l: 3.0 };
    let err = solve(&s, 1.0, [0.0, 0.0]).unwrap_err();
    match err {
        Error::NonFinite {
            stage,
            ul_iter,
            ll_iter,
        } => {
            assert_eq!(ul_iter, 0);
            assert!(matches!(stage, Stage::LowerIterate | Stage::Hypergradient));
            assert!((1000..1100).contains(&ll_iter), "ll_iter = {ll_iter}");
        }
        other => panic!("expected NonFinite, got {other:?}"),
    }
    let msg = format!("{err}");
    assert!(
        msg.contains("upper iteration 0") && msg.contains("lower step"),
        "{msg}"
    );
}

#[test]
fn upper_level_divergence_is_reported() {
    // λ far too large for φ_K: x grows geometrically without a box.
    let mut s = solver();
    s.upper.lambda = 1e3;
    s.upper.max_iters = 10_000;
    let err = solve(&s, 1.0, [0.0, 0.0]).unwrap_err();
    assert!(matches!(err, Error::NonFinite { .. }), "{err:?}");
}

#[test]
fn public_types_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Solver<f64, 1, 2>>();
    assert_send_sync::<Error>();
    assert_send_sync::<bda_kernel::Outcome<f32, 3, 4>>();
    assert_send_sync::<bda_kernel::Record<f32>>();
    assert_send_sync::<LowerDynamics<f32>>();
    assert_send_sync::<Projection<f64, 7>>();
}

#[test]
fn history_counts_rows_that_do_not_fit() {
    let problem = icml_example1::<f64>();
    let mut h: History<f64, 1, 2, 4> = History::with_reference(&problem);
    solver()
        .solve(
            &problem,
            &mut ForwardMode,
            &Vector1::new(0.0),
            &Vector2::new(0.0, 0.0),
            &mut h,
        )
        .unwrap();
    assert_eq!(h.records.len(), 4);
    assert_eq!(h.dropped, 7); // 10 iterations + the final row − 4 stored
    assert!(h.records[0].x_err.unwrap() > h.records[3].x_err.unwrap());
}
