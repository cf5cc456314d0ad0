//! The engine of the dataset-scale methods (`bda_kernel::backend::Hypergrad`) on a fixed-size
//! problem seen as a backend (`FixedBackend`), checked against the kernel's exact forward
//! mode and against central finite differences: this validates the one definition of each
//! method independently of any CPU or GPU math backend.

use bda_kernel::backend::{
    Backend, FixedBackend, Hypergrad, MethodConfig, MethodError, MethodSpec, Methods,
};
use bda_kernel::fewshot::FeatureHead;
use bda_kernel::prelude::*;
use bda_kernel::{HypergradientMethod, Method};
use bda_testkit::fd::check_methods;
use nalgebra::{SMatrix, SVector};

const N: usize = 3;
const M: usize = 4;

/// F = ‖y − Ax‖² + ¼Σ sin(x_i y_i), f = ½ yᵀQy − yᵀ tanh(Bx) + (1/50)Σ y⁴: smooth, f
/// strongly convex in y.
struct Up {
    a: SMatrix<f64, M, N>,
}
struct Lo {
    q: SMatrix<f64, M, M>,
    b: SMatrix<f64, M, N>,
}
impl Smooth<N, M> for Up {
    fn eval<S: Scalar>(&self, x: &SVector<S, N>, y: &SVector<S, M>) -> S {
        let mut s = S::zero();
        for i in 0..M {
            let mut ax = S::zero();
            for j in 0..N {
                ax += S::from_f64(self.a[(i, j)]) * x[j];
            }
            s += (y[i] - ax).square();
        }
        for i in 0..N {
            s += S::from_f64(0.25) * (x[i] * y[i]).sin();
        }
        s
    }
}
impl Smooth<N, M> for Lo {
    fn eval<S: Scalar>(&self, x: &SVector<S, N>, y: &SVector<S, M>) -> S {
        let mut s = S::zero();
        for i in 0..M {
            let mut qy = S::zero();
            for j in 0..M {
                qy += S::from_f64(self.q[(i, j)]) * y[j];
            }
            let mut bx = S::zero();
            for j in 0..N {
                bx += S::from_f64(self.b[(i, j)]) * x[j];
            }
            s += S::from_f64(0.5) * y[i] * qy - y[i] * bx.tanh() + S::from_f64(0.02) * y[i].powi(4);
        }
        s
    }
}

type Problem = Bilevel<AutoDiff<Up>, AutoDiff<Lo>>;

fn problem() -> Problem {
    let a = SMatrix::<f64, M, N>::from_fn(|i, j| ((i * 3 + j) as f64 * 0.7).sin());
    let b = SMatrix::<f64, M, N>::from_fn(|i, j| ((i + 5 * j) as f64 * 0.3).cos());
    let r = SMatrix::<f64, M, M>::from_fn(|i, j| ((i * 7 + j * 2) as f64 * 0.45).sin());
    let q = r.transpose() * r / 4.0 + SMatrix::identity();
    Bilevel::new(AutoDiff(Up { a }), AutoDiff(Lo { q, b }))
}

type Fixed<'p> = FixedBackend<'p, Problem, f64, N, M>;

fn x0() -> Vec<f64> {
    vec![0.4, -0.3, 0.8]
}
fn y0() -> Vec<f64> {
    vec![0.1, 0.0, -0.2, 0.3]
}

/// BDA with μ = 0.4, α_k = 0.9/k, β = 1, s_u = 0.2, s_l = 0.4; `method` picks the others.
fn config(method: Method, steps: u32) -> MethodConfig<f64> {
    MethodConfig {
        mu: 0.4,
        alpha: Schedule::Harmonic(0.9),
        s_u: 0.2,
        ..MethodConfig::new(method, steps, 0.4)
    }
}

fn spec(method: Method, steps: u32) -> MethodSpec<f64> {
    config(method, steps).build().unwrap()
}

/// Exact forward mode through the spec's K steps: (∇φ_K, φ_K).
fn forward(p: &Problem, spec: &MethodSpec<f64>) -> (Vec<f64>, f64) {
    let cfg = LowerConfig {
        steps: spec.steps(),
        dynamics: *spec.dynamics(),
        projection: Projection::None,
    };
    let hg = ForwardMode
        .hypergradient(
            p,
            &cfg,
            &SVector::from_column_slice(&x0()),
            &SVector::from_column_slice(&y0()),
            0,
        )
        .unwrap();
    (hg.grad.as_slice().to_vec(), hg.upper)
}

/// (∇φ, φ, y) from the engine.
fn engine(b: &mut Fixed<'_>, spec: MethodSpec<f64>) -> (Vec<f64>, f64, Vec<f64>) {
    let mut hg = Hypergrad::new(b, spec).unwrap();
    let (mut gx, mut y) = (b.new_x().unwrap(), b.new_y().unwrap());
    let phi = hg.hypergradient(b, &x0(), &y0(), &mut gx, &mut y).unwrap();
    (gx, phi, y)
}

fn close(a: &[f64], b: &[f64], tol: f64) -> bool {
    let d: f64 = a
        .iter()
        .zip(b)
        .map(|(a, b)| (a - b).powi(2))
        .sum::<f64>()
        .sqrt();
    let n: f64 = b.iter().map(|v| v * v).sum::<f64>().sqrt();
    d <= tol * n.max(1e-12)
}

#[test]
fn reverse_mode_equals_forward_mode_for_bda_and_rhg() {
    let p = problem();
    let mut b = Fixed::new(&p);
    for method in [Method::Bda, Method::Rhg] {
        for steps in [1, 2, 7, 30] {
            let s = spec(method, steps);
            let (want, up) = forward(&p, &s);
            let (got, up2, _) = engine(&mut b, s);
            assert!(
                close(&got, &want, 1e-12),
                "{method} K={steps}: {got:?} vs {want:?}"
            );
            assert!((up - up2).abs() < 1e-14);
        }
    }
}

#[test]
fn truncation_to_k_steps_is_the_full_hypergradient() {
    let p = problem();
    let mut b = Fixed::new(&p);
    let full = forward(&p, &spec(Method::Rhg, 9)).0;
    let trhg = MethodConfig {
        truncate: Some(9),
        ..config(Method::Trhg, 9)
    };
    assert!(close(
        &engine(&mut b, trhg.build().unwrap()).0,
        &full,
        1e-12
    ));
}

#[test]
fn every_method_matches_finite_differences_of_what_it_differentiates() {
    let p = problem();
    let make = || Fixed::new(&p);
    let cases: [(MethodConfig<f64>, f64); 7] = [
        (config(Method::Rhg, 9), 1e-8),
        (config(Method::Bda, 9), 1e-8),
        (
            MethodConfig {
                truncate: Some(1),
                ..config(Method::Trhg, 9)
            },
            1e-8,
        ),
        (
            MethodConfig {
                truncate: Some(4),
                ..config(Method::Trhg, 9)
            },
            1e-8,
        ),
        (config(Method::Trhg, 9), 1e-8),
        // IHG approximates ∇φ_K once y_K has converged.
        (config(Method::Ihg, 400), 1e-7),
        // O-BDA's central difference in y has an O(ε²) error.
        (
            MethodConfig {
                fd_eps: 1e-4,
                ..config(Method::Obda, 50)
            },
            1e-7,
        ),
    ];
    check_methods(make, Hypergrad::new, &cases, &x0(), &y0(), 1e-6, N);
}

#[test]
fn implicit_matches_forward_mode_once_the_lower_level_has_converged() {
    let p = problem();
    let mut b = Fixed::new(&p);
    let s = spec(Method::Ihg, 400);
    let (want, _) = forward(&p, &spec(Method::Rhg, 400));
    let mut hg = Hypergrad::new(&mut b, s).unwrap();
    let (mut gx, mut y) = (b.new_x().unwrap(), b.new_y().unwrap());
    hg.hypergradient(&mut b, &x0(), &y0(), &mut gx, &mut y)
        .unwrap();
    assert!(close(&gx, &want, 1e-8), "{gx:?} vs {want:?}");
    let cg = hg.cg_report();
    assert!(cg.iters >= 1 && cg.iters <= 20, "{cg:?}");
    assert!(cg.relative_residual < 1e-6, "{cg:?}");
    assert_eq!(cg.non_positive_curvature, None);
}

#[test]
fn one_stage_matches_the_exact_one_step_hypergradient() {
    let p = problem();
    let mut b = Fixed::new(&p);
    let (want, up) = forward(&p, &spec(Method::Bda, 1));
    let obda = MethodConfig {
        fd_eps: 1e-4,
        ..config(Method::Obda, 50)
    };
    let (got, up2, _) = engine(&mut b, obda.build().unwrap());
    assert!((up - up2).abs() < 1e-14);
    assert!(close(&got, &want, 1e-7), "{got:?} vs {want:?}");
}

#[test]
fn solve_lower_is_the_forward_pass_of_the_hypergradient() {
    let p = problem();
    let mut b = Fixed::new(&p);
    for method in Method::ALL {
        let s = spec(method, 6);
        let (_, _, y_hg) = engine(
            &mut b,
            spec(Method::Bda, 6)
                .config()
                .with_method(method)
                .build()
                .unwrap(),
        );
        let mut hg = Hypergrad::new(&mut b, s).unwrap();
        let mut y = b.new_y().unwrap();
        let f = hg.solve_lower(&mut b, &x0(), &y0(), &mut y).unwrap();
        // O-BDA's hypergradient takes one step; its solve, K.
        let k = if method == Method::Obda { 6 } else { s.steps() };
        let (_, want_f) = forward(
            &p,
            &MethodConfig {
                steps: k,
                ..*s.config()
            }
            .build()
            .unwrap(),
        );
        assert!((f - want_f).abs() < 1e-14, "{method}: {f} vs {want_f}");
        if method != Method::Obda {
            assert_eq!(y, y_hg, "{method}");
        }
    }
}

#[test]
fn warm_start_continues_from_the_previous_iterate() {
    let p = problem();
    let mut b = Fixed::new(&p);
    let warm = MethodConfig {
        warm_start: true,
        ..config(Method::Rhg, 5)
    };
    let mut hg = Hypergrad::new(&mut b, warm.build().unwrap()).unwrap();
    let (mut gx, mut y) = (b.new_x().unwrap(), b.new_y().unwrap());
    hg.hypergradient(&mut b, &x0(), &y0(), &mut gx, &mut y)
        .unwrap();
    // The second call ignores y0: 5 more steps from y_5 are y_10.
    let zeros = vec![0.0; M];
    hg.hypergradient(&mut b, &x0(), &zeros, &mut gx, &mut y)
        .unwrap();
    let (_, _, y10) = engine(&mut b, spec(Method::Rhg, 10));
    assert!(close(&y, &y10, 1e-14), "{y:?} vs {y10:?}");
    // After a reset the given y0 is used again.
    hg.reset_warm_start();
    hg.hypergradient(&mut b, &x0(), &y0(), &mut gx, &mut y)
        .unwrap();
    let (_, _, y5) = engine(&mut b, spec(Method::Rhg, 5));
    assert_eq!(y, y5);
}

#[test]
fn a_backend_without_hessians_gets_the_unrolled_methods_only() {
    let p = problem();
    let mut b = Fixed::new(&p);
    for method in [Method::Rhg, Method::Trhg, Method::Bda] {
        assert!(Hypergrad::unrolled(&mut b, spec(method, 4)).is_ok());
    }
    for method in [Method::Ihg, Method::Obda] {
        let e = Hypergrad::unrolled(&mut b, spec(method, 4)).err();
        assert_eq!(e, Some(MethodError::Unsupported { method }));
        assert!(e.unwrap().to_string().contains("Hessian"));
    }
}

#[test]
fn each_backend_names_the_methods_it_runs() {
    // With Hessian products: all five.
    let p = problem();
    let mut b = Fixed::new(&p);
    for method in Method::ALL {
        assert!(b.hypergrad(spec(method, 4)).is_ok(), "{method:?}");
    }
    // The few-shot head has none: the unrolled methods, and one line for the others.
    let mut head = FeatureHead::new(2, 2, vec![0, 1], vec![1], 0.0);
    for method in Method::ALL {
        let r = head.hypergrad(spec(method, 4));
        match method {
            Method::Ihg | Method::Obda => {
                let e = r.err().unwrap();
                assert_eq!(e, MethodError::Unsupported { method });
                assert!(!e.to_string().contains('\n'));
            }
            _ => assert!(r.is_ok(), "{method:?}"),
        }
    }
}

#[test]
fn checkpointed_reverse_pass_is_bit_identical() {
    let p = problem();
    let mut b = Fixed::new(&p);
    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for method in [Method::Rhg, Method::Bda, Method::Trhg] {
        for steps in [1, 2, 3, 7, 10, 16] {
            let truncations: &[u32] = if method == Method::Trhg {
                &[1, 3, 16]
            } else {
                &[1]
            };
            for &t in truncations {
                let base = MethodConfig {
                    truncate: Some(t.min(steps)),
                    ..config(method, steps)
                };
                let (want_g, want_phi, want_y) = engine(&mut b, base.build().unwrap());
                for every in 1..=steps + 2 {
                    let cfg = MethodConfig {
                        checkpoint_every: Some(every),
                        ..base
                    };
                    let spec = cfg.build().unwrap();
                    let (g, phi, y) = engine(&mut b, spec);
                    let what = format!("{method:?} K={steps} T={t} c={every}");
                    assert_eq!(bits(&g), bits(&want_g), "{what}");
                    assert_eq!(phi.to_bits(), want_phi.to_bits(), "{what}");
                    assert_eq!(bits(&y), bits(&want_y), "{what}");
                }
            }
        }
    }
    // Fewer kept iterates: K = 16 with c = 4 keeps 4 checkpoints and a segment of 3.
    let full = config(Method::Bda, 16).build().unwrap();
    let ck = MethodConfig {
        checkpoint_every: Some(4),
        ..config(Method::Bda, 16)
    };
    assert_eq!((full.tape_len(), ck.build().unwrap().tape_len()), (17, 7));
    let zero = MethodConfig {
        checkpoint_every: Some(0),
        ..ck
    };
    assert!(zero.build().is_err());
}

/// The first lower step whose iterate is not finite, by plain iteration.
fn first_non_finite(p: &Problem, s_l: f64, steps: u32) -> u32 {
    let cfg = LowerConfig {
        steps: 1,
        dynamics: LowerDynamics::LowerOnly { s_l },
        projection: Projection::None,
    };
    let x = SVector::<f64, N>::from_column_slice(&x0());
    let mut y = SVector::<f64, M>::from_column_slice(&y0());
    for k in 1..=steps {
        y = cfg.step(p, &x, &y, k).1;
        if y.iter().any(|v| !v.is_finite()) {
            return k;
        }
    }
    panic!("no divergence in {steps} steps")
}

#[test]
fn divergence_is_located_at_its_lower_step() {
    let p = problem();
    let mut b = Fixed::new(&p);
    let want = first_non_finite(&p, 5.0, 400);
    for cfg in [
        MethodConfig::new(Method::Rhg, 400, 5.0),
        MethodConfig {
            truncate: Some(3),
            ..MethodConfig::new(Method::Trhg, 400, 5.0)
        },
        MethodConfig::new(Method::Ihg, 400, 5.0),
        MethodConfig {
            checkpoint_every: Some(20),
            ..MethodConfig::new(Method::Rhg, 400, 5.0)
        },
    ] {
        let mut hg = Hypergrad::new(&mut b, cfg.build().unwrap()).unwrap();
        let (mut gx, mut y) = (b.new_x().unwrap(), b.new_y().unwrap());
        let r = hg.hypergradient(&mut b, &x0(), &y0(), &mut gx, &mut y);
        assert_eq!(
            r,
            Err(MethodError::NonFinite { ll_iter: want }),
            "{:?}",
            cfg.method
        );
        let r = hg.solve_lower(&mut b, &x0(), &y0(), &mut y);
        assert_eq!(r, Err(MethodError::NonFinite { ll_iter: want }));
    }
}

#[test]
fn the_engine_is_send_and_sync_when_its_backend_is() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Hypergrad<Fixed<'static>>>();
    send_sync::<MethodSpec<f32>>();
}
