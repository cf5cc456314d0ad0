//! The f64 reference of data hyper-cleaning (`hyperclean::HypercleanReference`) against central finite
//! differences: gradients, Hessian–vector product, mixed derivative, step adjoint = transposed
//! step Jacobian, and every method's hypergradient through the engine (RHG, BDA: `φ_K`;
//! T-RHG: `φ_K` with the first K−T steps frozen at the base `x`; IHG: `φ_K` at large K where
//! the lower level has converged; O-BDA: `φ_1`, which its finite-difference formula
//! approximates). The fast backends of `bda-cpu` and `bda-gpu` are tested against this
//! reference.

use bda_kernel::Method;
use bda_kernel::backend::{
    Backend, Hypergrad, LowerHessian, LowerStep, MethodConfig, StepAdjoint, UpperGradient,
};
use bda_kernel::hyperclean::HypercleanReference;
use bda_testkit::fd::{check_method, check_methods};
use bda_testkit::instance::Problem;
use bda_testkit::{Rng, rel_err};

const H: f64 = 1e-5;

/// Softmax regression and a network with 5 hidden ReLU units.
const HIDDEN: [usize; 2] = [0, 5];

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(a, b)| a * b).sum()
}

fn shifted(v: &[f64], e: &[f64], h: f64) -> Vec<f64> {
    v.iter().zip(e).map(|(v, e)| v + h * e).collect()
}

fn rand(r: &mut Rng, n: usize, s: f64) -> Vec<f64> {
    (0..n).map(|_| r.range(-s, s) as f64).collect()
}

struct Setup {
    p: Problem,
    x: Vec<f64>,
    y: Vec<f64>,
}

/// The instance with `hidden` ReLU units (0: softmax regression).
fn setup(hidden: usize) -> Setup {
    let p = Problem::random(7, 6, 3, 17, 11, 0.05).with_hidden(hidden);
    p.data().validate().unwrap();
    let mut r = Rng::new(99);
    let x = rand(&mut r, p.train_labels.len(), 2.0);
    let y = rand(&mut r, p.data().y_len(), 0.5);
    Setup { p, x, y }
}

fn close(fd: f64, exact: f64) {
    assert!(
        (fd - exact).abs() <= 1e-6 * (1.0 + exact.abs()),
        "finite difference {fd} vs {exact}"
    );
}

#[test]
fn gradients_match_finite_differences() {
    for hidden in HIDDEN {
        let Setup { p, x, y } = setup(hidden);
        let mut b = HypercleanReference::new(&p.data());
        let mut r = Rng::new(5);
        let e = rand(&mut r, b.y_len(), 1.0);
        let ex = rand(&mut r, b.x_len(), 1.0);

        let mut gf = vec![0.0; b.y_len()];
        b.lower_grad(&x, &y, &mut gf);
        let fd = (b.lower_value(&x, &shifted(&y, &e, H)) - b.lower_value(&x, &shifted(&y, &e, -H)))
            / (2.0 * H);
        close(fd, dot(&gf, &e));

        let mut gy = vec![0.0; b.y_len()];
        let mut gx = vec![0.0; b.x_len()];
        let value = b.upper_grad(&x, &y, &mut gy, &mut gx, 1.0).unwrap();
        assert!((value - b.upper_value(&y)).abs() < 1e-15);
        assert!(gx.iter().all(|&g| g == 0.0), "F does not depend on x");
        assert!(!b.upper_depends_on_x());
        let fd =
            (b.upper_value(&shifted(&y, &e, H)) - b.upper_value(&shifted(&y, &e, -H))) / (2.0 * H);
        close(fd, dot(&gy, &e));

        let mut gx = vec![0.0; b.x_len()];
        b.lower_grad_x(&x, &y, 1.0, &mut gx).unwrap();
        let fd = (b.lower_value(&shifted(&x, &ex, H), &y)
            - b.lower_value(&shifted(&x, &ex, -H), &y))
            / (2.0 * H);
        close(fd, dot(&gx, &ex));
    }
}

#[test]
fn lower_step_is_a_gradient_step() {
    for hidden in HIDDEN {
        let Setup { p, x, y } = setup(hidden);
        let mut b = HypercleanReference::new(&p.data());
        let (mut gf, mut gu) = (vec![0.0; b.y_len()], vec![0.0; b.y_len()]);
        b.lower_grad(&x, &y, &mut gf);
        b.upper_grad_y(&y, &mut gu);
        let (w_u, w_l) = (0.3, 0.7);
        let mut out = vec![0.0; b.y_len()];
        b.lower_step(&x, &y, w_u, w_l, &mut out).unwrap();
        let want: Vec<f64> = (0..y.len())
            .map(|i| y[i] - (w_u * gu[i] + w_l * gf[i]))
            .collect();
        assert!(rel_err(&out, &want) < 1e-14, "{}", rel_err(&out, &want));
        // zero weights: y unchanged
        b.lower_step(&x, &y, 0.0, 0.0, &mut out).unwrap();
        assert_eq!(out, y);
    }
}

#[test]
fn second_derivatives_match_finite_differences() {
    for hidden in HIDDEN {
        let Setup { p, x, y } = setup(hidden);
        let mut b = HypercleanReference::new(&p.data());
        let mut r = Rng::new(6);
        let v = rand(&mut r, b.y_len(), 1.0);
        let ex = rand(&mut r, b.x_len(), 1.0);
        let grad_f = |b: &HypercleanReference<'_>, x: &[f64], y: &[f64]| {
            let mut g = vec![0.0; b.y_len()];
            b.lower_grad(x, y, &mut g);
            g
        };
        // ∇²f·v against differences of ∇f along v.
        let mut hv = vec![0.0; b.y_len()];
        b.lower_hvp(&x, &y, &v, &mut hv).unwrap();
        let (gp, gm) = (
            grad_f(&b, &x, &shifted(&y, &v, H)),
            grad_f(&b, &x, &shifted(&y, &v, -H)),
        );
        let fd: Vec<f64> = gp
            .iter()
            .zip(&gm)
            .map(|(p, m)| (p - m) / (2.0 * H))
            .collect();
        assert!(rel_err(&hv, &fd) < 1e-6, "{}", rel_err(&hv, &fd));
        // (∂²_{xy} f)ᵀ·v against differences of ⟨∇_y f, v⟩ along x.
        let mut gx = vec![0.0; b.x_len()];
        b.lower_mixed_vjp(&x, &y, &v, 1.0, &mut gx).unwrap();
        let fd = (dot(&grad_f(&b, &shifted(&x, &ex, H), &y), &v)
            - dot(&grad_f(&b, &shifted(&x, &ex, -H), &y), &v))
            / (2.0 * H);
        close(fd, dot(&gx, &ex));
    }
}

#[test]
fn step_adjoint_is_the_transposed_step_jacobian() {
    for hidden in HIDDEN {
        let Setup { p, x, y } = setup(hidden);
        let mut b = HypercleanReference::new(&p.data());
        let mut r = Rng::new(8);
        let a0 = rand(&mut r, b.y_len(), 1.0);
        let e = rand(&mut r, b.y_len(), 1.0);
        let ex = rand(&mut r, b.x_len(), 1.0);
        let (w_u, w_l) = (0.3, 0.7);
        let step = |b: &mut HypercleanReference<'_>, x: &[f64], y: &[f64]| {
            let mut out = vec![0.0; b.y_len()];
            b.lower_step(&x.to_vec(), &y.to_vec(), w_u, w_l, &mut out)
                .unwrap();
            out
        };
        let mut a = a0.clone();
        let gx0 = rand(&mut r, b.x_len(), 1.0);
        let mut gx = gx0.clone();
        b.step_adjoint(&x, &y, w_u, w_l, &mut a, &mut gx).unwrap();
        // ⟨a_new, e⟩ = ⟨a, ∂step/∂y · e⟩
        let (sp, sm) = (
            step(&mut b, &x, &shifted(&y, &e, H)),
            step(&mut b, &x, &shifted(&y, &e, -H)),
        );
        let jy: Vec<f64> = sp
            .iter()
            .zip(&sm)
            .map(|(p, m)| (p - m) / (2.0 * H))
            .collect();
        close(dot(&a0, &jy), dot(&a, &e));
        // ⟨gx_new − gx, ex⟩ = ⟨a, ∂step/∂x · ex⟩
        let (sp, sm) = (
            step(&mut b, &shifted(&x, &ex, H), &y),
            step(&mut b, &shifted(&x, &ex, -H), &y),
        );
        let jx: Vec<f64> = sp
            .iter()
            .zip(&sm)
            .map(|(p, m)| (p - m) / (2.0 * H))
            .collect();
        let dgx: Vec<f64> = gx.iter().zip(&gx0).map(|(g, g0)| g - g0).collect();
        close(dot(&a0, &jx), dot(&dgx, &ex));
    }
}

#[test]
fn every_method_matches_finite_differences_on_the_reference() {
    for hidden in HIDDEN {
        let Setup { p, x, y } = setup(hidden);
        let data = p.data();
        // From 0 the network's hidden layer is dead (ReLU'(0) = 0): start from y instead.
        let y0 = if hidden == 0 {
            vec![0.0; p.y_len()]
        } else {
            y.clone()
        };
        let make = || HypercleanReference::new(&data);
        let base = MethodConfig {
            fd_eps: 1e-4,
            ..MethodConfig::new(Method::Bda, 12, 0.8)
        };
        let cases = [Method::Rhg, Method::Bda, Method::Trhg, Method::Obda]
            .map(|m| (base.with_method(m), 1e-6));
        check_methods(make, Hypergrad::new, &cases, &x, &y0, H, 8);
    }
}

#[test]
fn reference_is_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<HypercleanReference<'static>>();
}

/// `y` is a stationary point of the lower level: one gradient step of size 1 moves it by
/// less than 1e-9 in every entry.
fn assert_converged(b: &mut HypercleanReference<'_>, x: &[f64], y: &[f64]) {
    let mut next = b.new_y().unwrap();
    b.lower_step(&x.to_vec(), &y.to_vec(), 0.0, 1.0, &mut next)
        .unwrap();
    let res = y
        .iter()
        .zip(&next)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(res < 1e-9, "lower level not converged: ‖∇f‖∞ = {res:e}");
}

#[test]
fn ihg_matches_finite_differences_at_a_converged_lower_level() {
    // Many more samples than parameters and random labels: the lower level has a
    // minimiser (up to the class-shift null space that gradient steps never enter).
    let h = Problem::clustered(5, 2, 3, 60, 30, 1e-2);
    let p = h.data();
    let x = rand(&mut Rng::new(6), h.n_tr(), 0.5);
    let cfg = MethodConfig {
        cg_iters: 200,
        ..MethodConfig::new(Method::Ihg, 2500, 4.0)
    };
    let y0 = vec![0.0; p.y_len()];
    // The lower level has converged at K = 2500.
    let mut b = HypercleanReference::new(&p);
    let (_, y) =
        bda_testkit::fd::solve_value(&mut b, Hypergrad::new, cfg.build().unwrap(), &x, &y0);
    assert_converged(&mut b, &x, &y);
    let (_, err) = check_method(
        || HypercleanReference::new(&p),
        Hypergrad::new,
        &cfg,
        &x,
        &y0,
        1e-4,
        6,
    );
    assert!(err < 1e-5, "ihg: rel err {err:e}");
}

/// IHG on the network, at a converged lower level: the lower-level Hessian there is
/// singular — a hidden unit that no training sample activates has weights of exactly zero
/// curvature, while `∇_y F` (with its regulariser) has components along them — so the
/// system IHG solves has no solution, conjugate gradient meets a direction of zero curvature
/// and stops, and the result is not the hypergradient (measured: 92 % away from central
/// differences of φ_K, CG stopping at iteration 18 with the residual 1.7e6 times ‖∇_y F‖). The engine must say so rather than return it silently: the CG report
/// (which `bda hyperclean` records per upper iteration as `negative_curvature_at` and
/// `curvature`) names the iteration and a curvature of zero up to rounding.
#[test]
fn ihg_on_the_network_reports_the_singular_lower_level_hessian() {
    let h = Problem::clustered(5, 2, 3, 60, 30, 1e-2).with_hidden(4);
    let p = h.data();
    let x = rand(&mut Rng::new(6), h.n_tr(), 0.5);
    // From 0 every hidden unit is dead: start from a random point.
    let y0 = rand(&mut Rng::new(8), p.y_len(), 0.5);
    let cfg = MethodConfig {
        cg_iters: 300,
        ..MethodConfig::new(Method::Ihg, 6000, 2.0)
    };
    let mut b = HypercleanReference::new(&p);
    let mut hg = Hypergrad::new(&mut b, cfg.build().unwrap()).unwrap();
    let (mut gx, mut y) = (b.new_x().unwrap(), b.new_y().unwrap());
    hg.hypergradient(&mut b, &x, &y0, &mut gx, &mut y).unwrap();
    assert_converged(&mut b, &x, &y);
    let report = *hg.cg_report();
    let (at, curvature) = report
        .non_positive_curvature
        .expect("CG must report the flat direction");
    assert!(at < cfg.cg_iters, "{report:?}");
    assert!(curvature.abs() < 1e-12, "{report:?}");
}
