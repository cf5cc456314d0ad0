//! Central finite differences, and [`check_method`]: the one check of a method's hypergradient
//! that every backend's tests use.
//!
//! Each method differentiates a function of `x` that can be evaluated through the engine's
//! forward solve ([`Hypergrad::solve_lower`]), so the check needs no method-specific code in
//! the tests:
//!
//! | method | function whose gradient it returns |
//! |---|---|
//! | RHG, BDA | `φ_K(x) = F(x, y_K(x))`, exactly |
//! | T-RHG | `ψ(x') = F(x', y_K)` with `y_{K−T}` frozen at the base `x` and the last T steps at `x'` |
//! | IHG | `φ_K` approximately; exactly only as K and the CG iterations grow (the tolerance says how close) |
//! | O-BDA | `φ₁(x) = F(x, y₁(x))` (one aggregated step), up to its finite-difference ε |

use std::fmt::Debug;

use bda_kernel::Method;
use bda_kernel::backend::{
    Backend, Hypergrad, LowerStep, MethodConfig, MethodError, MethodSpec, UpperGradient,
};

/// `(f(x + h·e_i) − f(x − h·e_i)) / 2h` for the first `coords` coordinates.
pub fn central_diff(f: impl Fn(&[f64]) -> f64, x: &[f64], h: f64, coords: usize) -> Vec<f64> {
    (0..coords.min(x.len()))
        .map(|i| {
            let (mut xp, mut xm) = (x.to_vec(), x.to_vec());
            xp[i] += h;
            xm[i] -= h;
            (f(&xp) - f(&xm)) / (2.0 * h)
        })
        .collect()
}

/// `max_i |fd_i − g_i| / max_j |g_j|` over the coordinates `fd` covers; panics if the
/// gradient is zero (a check that cannot fail is no check).
pub fn fd_error(grad: &[f64], fd: &[f64]) -> f64 {
    let scale = grad.iter().fold(0.0f64, |m, g| m.max(g.abs()));
    assert!(scale > 0.0, "zero gradient: nothing to compare");
    fd.iter()
        .zip(grad)
        .fold(0.0f64, |m, (d, g)| m.max((d - g).abs()))
        / scale
}

/// An `f64` backend with `Vec` buffers, the kind a reference is written as.
pub trait F64Backend:
    LowerStep + UpperGradient + Backend<T = f64, X = Vec<f64>, Y = Vec<f64>, Error: Debug>
{
}

impl<B> F64Backend for B where
    B: LowerStep + UpperGradient + Backend<T = f64, X = Vec<f64>, Y = Vec<f64>, Error: Debug>
{
}

/// How the engine is built for the backend: [`Hypergrad::new`] (all methods) or
/// [`Hypergrad::unrolled`] (RHG, T-RHG, BDA on a backend without `LowerHessian`).
pub type Build<B> =
    fn(&mut B, MethodSpec<f64>) -> Result<Hypergrad<B>, MethodError<<B as Backend>::Error>>;

/// `F(x, ·)` after the forward solve of `spec` from `y0`.
pub fn solve_value<B: F64Backend>(
    b: &mut B,
    build: Build<B>,
    spec: MethodSpec<f64>,
    x: &[f64],
    y0: &[f64],
) -> (f64, Vec<f64>) {
    let mut hg = build(b, spec).expect("build the engine");
    let mut y = b.new_y().expect("allocate y");
    let v = hg
        .solve_lower(b, &x.to_vec(), &y0.to_vec(), &mut y)
        .expect("forward solve");
    (v, y)
}

/// The method's hypergradient at `x` from `y0`, and the relative error of central differences
/// (step `h`, the first `coords` coordinates) of the function it differentiates (see the
/// module docs). `make` builds a fresh backend for each evaluation.
pub fn check_method<B: F64Backend>(
    make: impl Fn() -> B,
    build: Build<B>,
    cfg: &MethodConfig<f64>,
    x: &[f64],
    y0: &[f64],
    h: f64,
    coords: usize,
) -> (Vec<f64>, f64) {
    let spec = cfg.build().expect("a valid method config");
    let mut b = make();
    let mut hg = build(&mut b, spec).expect("build the engine");
    let mut gx = b.new_x().expect("allocate gx");
    let mut y = b.new_y().expect("allocate y");
    hg.hypergradient(&mut b, &x.to_vec(), &y0.to_vec(), &mut gx, &mut y)
        .expect("hypergradient");
    let plain = |c: MethodConfig<f64>| c.with_method(Method::Rhg).build().expect("valid");
    let fd = match cfg.method {
        Method::Rhg | Method::Bda | Method::Ihg => central_diff(
            |xx| solve_value(&mut make(), build, spec, xx, y0).0,
            x,
            h,
            coords,
        ),
        Method::Trhg => {
            let t = spec.truncate().expect("T-RHG truncates");
            let frozen = if cfg.steps > t {
                let head = plain(MethodConfig {
                    steps: cfg.steps - t,
                    ..*cfg
                });
                solve_value(&mut make(), build, head, x, y0).1
            } else {
                y0.to_vec()
            };
            let tail = plain(MethodConfig { steps: t, ..*cfg });
            central_diff(
                |xx| solve_value(&mut make(), build, tail, xx, &frozen).0,
                x,
                h,
                coords,
            )
        }
        Method::Obda => {
            let one = MethodConfig { steps: 1, ..*cfg }.build().expect("valid");
            central_diff(
                |xx| solve_value(&mut make(), build, one, xx, y0).0,
                x,
                h,
                coords,
            )
        }
    };
    let err = fd_error(&gx, &fd);
    (gx, err)
}

/// [`check_method`] for each `(config, tolerance)`: the relative error must be below the
/// tolerance (each is printed, for `--nocapture`).
pub fn check_methods<B: F64Backend>(
    make: impl Fn() -> B,
    build: Build<B>,
    cases: &[(MethodConfig<f64>, f64)],
    x: &[f64],
    y0: &[f64],
    h: f64,
    coords: usize,
) {
    for (cfg, tol) in cases {
        let (_, err) = check_method(&make, build, cfg, x, y0, h, coords);
        let name = cfg.method.name();
        println!(
            "{name} (K = {}): relative error {err:.1e} (tolerance {tol:.0e})",
            cfg.steps
        );
        assert!(err < *tol, "{name}: relative error {err:e} ≥ {tol:e}");
    }
}
