//! Hypergradients: forward mode against central finite differences on random smooth
//! problems; dual-number derivatives against analytic ones.

use bda_kernel::prelude::*;
use bda_kernel::synthetic::{Eq40Lower, Eq40Upper, Example1Lower, Example1Upper};
use bda_kernel::{CentralDifference, HypergradientMethod};
use nalgebra::{SMatrix, SVector};
use proptest::prelude::*;

/// A random smooth bi-level problem: quadratic-plus-trigonometric upper level, strongly
/// convex lower level with a coupling term, so every derivative is non-trivial.
#[derive(Clone, Debug)]
struct RandomUpper<const N: usize, const M: usize> {
    a: SMatrix<f64, M, M>,
    b: SMatrix<f64, M, N>,
    c: SVector<f64, M>,
}
#[derive(Clone, Debug)]
struct RandomLower<const N: usize, const M: usize> {
    q: SMatrix<f64, M, M>,
    b: SMatrix<f64, M, N>,
}

impl<const N: usize, const M: usize> Smooth<N, M> for RandomUpper<N, M> {
    fn eval<S: Scalar>(&self, x: &SVector<S, N>, y: &SVector<S, M>) -> S {
        let k = |v: f64| S::from_f64(v);
        let mut s = S::zero();
        for i in 0..M {
            let mut bx = S::zero();
            for j in 0..N {
                bx += k(self.b[(i, j)]) * x[j];
            }
            s += (y[i] - k(self.c[i]) - bx.sin()).square();
            for j in 0..M {
                s += k(0.1 * self.a[(i, j)]) * y[i] * y[j];
            }
        }
        for j in 0..N {
            s += k(0.5) * (x[j] * y[j % M]).tanh();
        }
        s
    }
}

impl<const N: usize, const M: usize> Smooth<N, M> for RandomLower<N, M> {
    fn eval<S: Scalar>(&self, x: &SVector<S, N>, y: &SVector<S, M>) -> S {
        let k = |v: f64| S::from_f64(v);
        let mut s = S::zero();
        for i in 0..M {
            let mut qy = S::zero();
            for j in 0..M {
                qy += k(self.q[(i, j)]) * y[j];
            }
            let mut bx = S::zero();
            for j in 0..N {
                bx += k(self.b[(i, j)]) * x[j];
            }
            // ½ yᵀQy − yᵀ tanh(Bx) + small quartic: strongly convex in y.
            s += k(0.5) * y[i] * qy - y[i] * bx.tanh() + k(0.01) * y[i].powi(4);
        }
        s
    }
}

fn random_problem<const N: usize, const M: usize>(
    seed: &[f64],
) -> Bilevel<AutoDiff<RandomUpper<N, M>>, AutoDiff<RandomLower<N, M>>> {
    let mut it = seed.iter().cycle().copied();
    let mut next = move || it.next().unwrap();
    let a = SMatrix::<f64, M, M>::from_fn(|_, _| next());
    let b = SMatrix::<f64, M, N>::from_fn(|_, _| next());
    let c = SVector::<f64, M>::from_fn(|_, _| next());
    let r = SMatrix::<f64, M, M>::from_fn(|_, _| next());
    // Q = RᵀR/M + I: symmetric positive definite with eigenvalues in [1, ~2].
    let q = r.transpose() * r / (M as f64) + SMatrix::<f64, M, M>::identity();
    let b2 = SMatrix::<f64, M, N>::from_fn(|_, _| next());
    Bilevel::new(
        AutoDiff(RandomUpper { a, b, c }),
        AutoDiff(RandomLower { q, b: b2 }),
    )
}

fn lower(k: u32, projection: Projection<f64, 4>) -> LowerConfig<f64, 4> {
    LowerConfig {
        steps: k,
        dynamics: LowerDynamics::Aggregated {
            mu: 0.4,
            alpha: Schedule::Harmonic(0.8),
            beta: Beta::Schedule(Schedule::Constant(1.0)),
            s_u: 0.3,
            s_l: 0.3,
        },
        projection,
    }
}

fn rel_err<const N: usize>(a: &SVector<f64, N>, b: &SVector<f64, N>) -> f64 {
    (a - b).norm() / b.norm().max(1e-12)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// ∇φ_K from forward mode matches central differences to 1e-6 (relative), with and
    /// without an active ball projection (whose Jacobian is smooth away from the sphere).
    #[test]
    fn forward_mode_matches_central_differences(
        seed in proptest::collection::vec(-1.0f64..1.0, 64),
        x in proptest::array::uniform3(-1.0f64..1.0),
        k in 1u32..25,
        radius in prop_oneof![Just(f64::INFINITY), 0.3f64..2.0],
    ) {
        let problem = random_problem::<3, 4>(&seed);
        let projection = if radius.is_finite() {
            Projection::Ball { center: SVector::<f64, 4>::repeat(0.1), radius }
        } else {
            Projection::None
        };
        let cfg = lower(k, projection);
        let x = SVector::<f64, 3>::from(x);
        let y0 = SVector::<f64, 4>::new(0.2, -0.1, 0.0, 0.3);
        let fwd = ForwardMode.hypergradient(&problem, &cfg, &x, &y0, 0).unwrap();
        let fd = CentralDifference { h: 1e-5 }.hypergradient(&problem, &cfg, &x, &y0, 0).unwrap();
        // Skip the measure-zero event of an iterate within h of the sphere, where the
        // projection is not differentiable and differences straddle the kink.
        let near_kink = radius.is_finite() && {
            let mut y = y0;
            let mut close = false;
            for step in 1..=k {
                let (y_hat, y_next) = cfg.step(&problem, &x, &y, step);
                let d = (y_hat - SVector::<f64, 4>::repeat(0.1)).norm();
                close |= (d - radius).abs() < 1e-3;
                y = y_next;
            }
            close
        };
        prop_assume!(!near_kink);
        let err = rel_err(&fwd.grad, &fd.grad);
        prop_assert!(err < 1e-6, "relative error {err:e}: forward {:?} vs FD {:?}", fwd.grad, fd.grad);
        prop_assert_eq!(fwd.y, fd.y);
    }

    /// Projections are idempotent and non-expansive.
    #[test]
    fn projections_are_idempotent_and_non_expansive(
        a in proptest::array::uniform4(-5.0f64..5.0),
        b in proptest::array::uniform4(-5.0f64..5.0),
        r in 0.0f64..3.0,
    ) {
        let sets = [
            Projection::cube(-1.0, 2.0),
            Projection::Ball { center: SVector::<f64, 4>::new(0.5, 0.0, -0.5, 1.0), radius: r },
        ];
        let (a, b) = (SVector::<f64, 4>::from(a), SVector::<f64, 4>::from(b));
        for p in sets {
            let pa = p.project(&a);
            prop_assert!((p.project(&pa) - pa).norm() < 1e-12);
            prop_assert!((pa - p.project(&b)).norm() <= (a - b).norm() + 1e-12);
        }
    }
}

#[test]
fn forward_mode_through_an_active_box_matches_finite_differences() {
    let problem = random_problem::<3, 4>(&[0.3, -0.7, 0.1, 0.9, -0.4, 0.25, 0.6, -0.2, 0.05]);
    let cfg = lower(12, Projection::cube(-0.25, 0.25));
    let x = SVector::<f64, 3>::new(0.4, -0.9, 0.7);
    let y0 = SVector::<f64, 4>::zeros();
    let fwd = ForwardMode
        .hypergradient(&problem, &cfg, &x, &y0, 0)
        .unwrap();
    let fd = CentralDifference { h: 1e-6 }
        .hypergradient(&problem, &cfg, &x, &y0, 0)
        .unwrap();
    let clamped = fwd.y.iter().filter(|v| v.abs() == 0.25).count();
    assert!(clamped > 0, "the box should be active: y = {:?}", fwd.y);
    assert!(
        rel_err(&fwd.grad, &fd.grad) < 1e-6,
        "{:?} vs {:?}",
        fwd.grad,
        fd.grad
    );
}

/// Analytic derivatives of the bundled problems agree with dual numbers.
#[test]
fn analytic_derivatives_agree_with_dual_numbers() {
    fn check<P, const N: usize, const M: usize>(p: &P, x: SVector<f64, N>, y: SVector<f64, M>)
    where
        P: Smooth<N, M>
            + Gradient<f64, N, M>
            + SecondOrder<f64, N, M>
            + Objective<f64, N, M>
            + Clone,
    {
        let auto = AutoDiff(p.clone());
        let z = SMatrix::<f64, M, N>::from_fn(|i, j| 0.1 * (i as f64) - 0.3 * (j as f64) + 0.2);
        assert!((p.value(&x, &y) - auto.value(&x, &y)).abs() < 1e-12);
        assert!((p.grad_x(&x, &y) - auto.grad_x(&x, &y)).norm() < 1e-10);
        assert!((p.grad_y(&x, &y) - auto.grad_y(&x, &y)).norm() < 1e-10);
        let (a, b) = (
            p.grad_y_tangent(&x, &y, &z),
            auto.grad_y_tangent(&x, &y, &z),
        );
        assert!((a - b).norm() < 1e-9 * (1.0 + b.norm()), "{a} vs {b}");
    }
    let (x1, y1) = (
        SVector::<f64, 1>::new(0.7),
        SVector::<f64, 2>::new(-0.3, 1.9),
    );
    check(&Example1Upper, x1, y1);
    check(&Example1Lower { eps: 0.25 }, x1, y1);
    let x5 = SVector::<f64, 5>::from_fn(|i, _| 0.3 * i as f64 - 0.5);
    let y10 = SVector::<f64, 10>::from_fn(|i, _| 0.2 * (i as f64).sin() + 0.4);
    check(&Eq40Upper::<5, 10>, x5, y10);
    check(&Eq40Lower::<5, 10>, x5, y10);
}

/// The dual-number path and the analytic path give the same hypergradient.
#[test]
fn dual_and_analytic_hypergradients_agree() {
    let analytic = Bilevel::new(Eq40Upper::<5, 10>, Eq40Lower::<5, 10>);
    let auto = Bilevel::new(AutoDiff(Eq40Upper::<5, 10>), AutoDiff(Eq40Lower::<5, 10>));
    let cfg = LowerConfig {
        steps: 15,
        dynamics: LowerDynamics::bda(0.1, 0.1),
        projection: Projection::<f64, 10>::cube(-2.0, 2.0),
    };
    let x = SVector::<f64, 5>::new(0.3, -0.2, 0.5, 1.5, 0.0);
    let y0 = SVector::<f64, 10>::repeat(0.1);
    let a = ForwardMode
        .hypergradient(&analytic, &cfg, &x, &y0, 0)
        .unwrap();
    let b = ForwardMode.hypergradient(&auto, &cfg, &x, &y0, 0).unwrap();
    assert!(rel_err(&a.grad, &b.grad) < 1e-12);
    assert!((a.y - b.y).norm() < 1e-12);
}

#[test]
fn f32_hypergradient_is_close_to_f64() {
    let p64 = bda_kernel::synthetic::icml_example1::<f64>();
    let p32 = bda_kernel::synthetic::icml_example1::<f32>();
    let c64 = LowerConfig {
        steps: 32,
        dynamics: LowerDynamics::bda(0.7, 0.2),
        projection: Projection::None,
    };
    let c32 = LowerConfig {
        steps: 32,
        dynamics: LowerDynamics::bda(0.7f32, 0.2),
        projection: Projection::None,
    };
    let g64 = ForwardMode
        .hypergradient(
            &p64,
            &c64,
            &SVector::from([0.3]),
            &SVector::from([0.0, 2.0]),
            0,
        )
        .unwrap();
    let g32 = ForwardMode
        .hypergradient(
            &p32,
            &c32,
            &SVector::from([0.3f32]),
            &SVector::from([0.0f32, 2.0]),
            0,
        )
        .unwrap();
    assert!((g64.grad[0] - g32.grad[0] as f64).abs() < 1e-5 * g64.grad[0].abs().max(1.0));
}

/// T-RHG's truncation: the derivative of `F(x, y_K)` with the first `K − T` steps frozen at
/// the current `x`, checked by central differences of exactly that map; `T ≥ K` is the full
/// hypergradient.
#[test]
fn truncated_forward_mode_differentiates_the_last_steps_only() {
    use bda_kernel::Truncated;
    let problem = random_problem::<3, 4>(&[0.3, -0.7, 0.1, 0.9, -0.4, 0.25, 0.6, -0.2, 0.05]);
    let cfg = lower(10, Projection::cube(-0.25, 0.25));
    let x = SVector::<f64, 3>::new(0.4, -0.9, 0.7);
    let y0 = SVector::<f64, 4>::new(0.1, -0.2, 0.0, 0.2);
    for last in [1, 4, 9] {
        let t = Truncated { last }
            .hypergradient(&problem, &cfg, &x, &y0, 0)
            .unwrap();
        let mut frozen = y0;
        for k in 1..=cfg.steps - last {
            frozen = cfg.step(&problem, &x, &frozen, k).1;
        }
        let phi = |xp: &SVector<f64, 3>| {
            let mut y = frozen;
            for k in cfg.steps - last + 1..=cfg.steps {
                y = cfg.step(&problem, xp, &y, k).1;
            }
            problem.upper.value(xp, &y)
        };
        let h = 1e-6;
        let fd = SVector::<f64, 3>::from_fn(|i, _| {
            let (mut p, mut m) = (x, x);
            p[i] += h;
            m[i] -= h;
            (phi(&p) - phi(&m)) / (2.0 * h)
        });
        assert!(
            rel_err(&t.grad, &fd) < 1e-6,
            "T = {last}: {:?} vs {fd:?}",
            t.grad
        );
        let full = ForwardMode
            .hypergradient(&problem, &cfg, &x, &y0, 0)
            .unwrap();
        assert_eq!(t.y, full.y, "the same y_K whatever T");
        assert!(
            rel_err(&t.grad, &full.grad) > 1e-3,
            "T = {last} should differ"
        );
    }
    let whole = Truncated { last: 10 }
        .hypergradient(&problem, &cfg, &x, &y0, 0)
        .unwrap();
    let full = ForwardMode
        .hypergradient(&problem, &cfg, &x, &y0, 0)
        .unwrap();
    assert_eq!(whole, full);
}
