//! The hyper-cleaning network on CUDA (`HypercleanMlpGpu`): every primitive against the f64
//! reference `HypercleanReference` with a hidden layer, and every method's hypergradient
//! through the engine (with and without checkpoints, T = K and T < K). Skips without a CUDA device (fails with `BDA_REQUIRE_CUDA`), and runs once more on
//! the CPU stand-ins of `tests/fake_cuda` (`all_mlp_tests_on_a_fake_device`), as `gpu.rs`.

use bda_gpu::{GpuDevice, GpuVec, HypercleanMlpGpu};
use bda_kernel::Method;
use bda_kernel::backend::{
    Backend, Hypergrad, LowerHessian, LowerStep, MethodConfig, StepAdjoint, UpperGradient,
};
use bda_kernel::hyperclean::HypercleanReference;
use bda_testkit::instance::Problem;
use bda_testkit::{Rng, cuda, cxx, rel_err};

/// Relative error allowed between f32 on the device and the f64 reference: 1e-5 on the
/// stand-in device (largest seen: 6.6e-7, O-BDA aside), 1e-3 on a GPU until measured there.
fn tol() -> f64 {
    cuda::tolerance(1e-5, 1e-3)
}

/// O-BDA, an f32 finite difference with ε = 0.01 (4.9e-5 on the stand-in): 1e-4, and 1e-2 on
/// a GPU until measured.
fn tol_fd() -> f64 {
    cuda::tolerance(1e-4, 1e-2)
}

fn problem() -> Problem {
    // d + 1 = 46 and H + 1 = 8 + 1: padded row strides on both layers.
    Problem::random(77, 45, 7, 300, 170, 0.01).with_hidden(8)
}

fn open(p: &Problem) -> Option<HypercleanMlpGpu> {
    let dev = cuda::or_skip(GpuDevice::open(cuda::ordinal()))?;
    let gpu = HypercleanMlpGpu::new(&dev, &p.data()).expect("upload the instance");
    gpu.warm_up().expect("compile and load the kernels");
    println!("{}", gpu.info());
    Some(gpu)
}

fn rand(r: &mut Rng, n: usize, s: f64) -> Vec<f64> {
    (0..n).map(|_| r.range(-s, s) as f64).collect()
}

fn up(g: &mut HypercleanMlpGpu, v: &[f64], y: bool) -> GpuVec {
    let h: Vec<f32> = v.iter().map(|&v| v as f32).collect();
    if y {
        let mut b = g.new_y().unwrap();
        g.upload_y(&h, &mut b).unwrap();
        b
    } else {
        let mut b = g.new_x().unwrap();
        g.upload_x(&h, &mut b).unwrap();
        b
    }
}

fn down(g: &mut HypercleanMlpGpu, b: &GpuVec, y: bool) -> Vec<f64> {
    let n = if y { g.y_len() } else { g.x_len() };
    let mut h = vec![0.0f32; n];
    if y {
        g.download_y(b, &mut h).unwrap();
    } else {
        g.download_x(b, &mut h).unwrap();
    }
    h.into_iter().map(f64::from).collect()
}

fn agree(what: &str, got: &[f64], want: &[f64]) {
    agree_within(what, got, want, tol());
}

fn agree_within(what: &str, got: &[f64], want: &[f64], tol: f64) {
    let e = rel_err(got, want);
    println!("{what}: relative error {e:.2e}");
    assert!(e < tol, "{what}: relative error {e:.3e} ≥ {tol:.0e}");
}

fn minus(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(a, b)| a - b).collect()
}

#[test]
fn every_primitive_agrees_with_the_reference() {
    let p = problem();
    let Some(mut g) = open(&p) else { return };
    let mut r = HypercleanReference::new(&p.data());
    let mut rng = Rng::new(5);
    let x = rand(&mut rng, p.n_tr(), 2.0);
    let y = rand(&mut rng, p.y_len(), 0.4);
    let v = rand(&mut rng, p.y_len(), 1.0);
    let gx0 = rand(&mut rng, p.n_tr(), 0.01);
    let (xb, yb, vb) = (
        up(&mut g, &x, false),
        up(&mut g, &y, true),
        up(&mut g, &v, true),
    );

    for (w_u, w_l) in [(0.0, 0.7), (0.3, 0.7), (0.3, 0.0)] {
        let mut out = g.new_y().unwrap();
        g.lower_step(&xb, &yb, w_u as f32, w_l as f32, &mut out)
            .unwrap();
        let mut want = vec![0.0; p.y_len()];
        r.lower_step(&x, &y, w_u, w_l, &mut want).unwrap();
        let got = down(&mut g, &out, true);
        agree(
            &format!("lower_step({w_u}, {w_l}) − y"),
            &minus(&got, &y),
            &minus(&want, &y),
        );

        let mut ab = up(&mut g, &v, true);
        let mut gxb = up(&mut g, &gx0, false);
        g.step_adjoint(&xb, &yb, w_u as f32, w_l as f32, &mut ab, &mut gxb)
            .unwrap();
        let (mut a, mut gx) = (v.clone(), gx0.clone());
        r.step_adjoint(&x, &y, w_u, w_l, &mut a, &mut gx).unwrap();
        agree(
            &format!("step_adjoint({w_u}, {w_l}) a − v"),
            &minus(&down(&mut g, &ab, true), &v),
            &minus(&a, &v),
        );
        if w_l != 0.0 {
            agree(
                &format!("step_adjoint({w_u}, {w_l}) gx"),
                &minus(&down(&mut g, &gxb, false), &gx0),
                &minus(&gx, &gx0),
            );
        }
    }

    let (mut gy, mut gxb) = (g.new_y().unwrap(), up(&mut g, &gx0, false));
    let f = g.upper_grad(&xb, &yb, &mut gy, &mut gxb, 1.0).unwrap() as f64;
    let (mut want_gy, mut want_gx) = (vec![0.0; p.y_len()], gx0.clone());
    let want = r
        .upper_grad(&x, &y, &mut want_gy, &mut want_gx, 1.0)
        .unwrap();
    assert!((f - want).abs() < tol() * want.abs(), "F: {f} vs {want}");
    agree("upper_grad gy", &down(&mut g, &gy, true), &want_gy);

    let mut hv = g.new_y().unwrap();
    g.lower_hvp(&xb, &yb, &vb, &mut hv).unwrap();
    let mut want = vec![0.0; p.y_len()];
    r.lower_hvp(&x, &y, &v, &mut want).unwrap();
    agree("lower_hvp", &down(&mut g, &hv, true), &want);

    let mut gxb = up(&mut g, &gx0, false);
    g.lower_mixed_vjp(&xb, &yb, &vb, -0.7, &mut gxb).unwrap();
    let mut want = gx0.clone();
    r.lower_mixed_vjp(&x, &y, &v, -0.7, &mut want).unwrap();
    agree(
        "lower_mixed_vjp",
        &minus(&down(&mut g, &gxb, false), &gx0),
        &minus(&want, &gx0),
    );

    let mut gxb = up(&mut g, &gx0, false);
    g.lower_grad_x(&xb, &yb, 0.9, &mut gxb).unwrap();
    let mut want = gx0.clone();
    r.lower_grad_x(&x, &y, 0.9, &mut want).unwrap();
    agree(
        "lower_grad_x",
        &minus(&down(&mut g, &gxb, false), &gx0),
        &minus(&want, &gx0),
    );
}

#[test]
fn every_method_agrees_through_the_engine() {
    let p = problem();
    let Some(mut g) = open(&p) else { return };
    let mut r = HypercleanReference::new(&p.data());
    let mut rng = Rng::new(6);
    let x = rand(&mut rng, p.n_tr(), 1.0);
    let y0 = rand(&mut rng, p.y_len(), 0.3);
    let (xb, y0b) = (up(&mut g, &x, false), up(&mut g, &y0, true));
    for method in Method::ALL {
        let unrolled = matches!(method, Method::Rhg | Method::Trhg | Method::Bda);
        let truncations: &[Option<u32>] = match method {
            Method::Trhg => &[Some(6), Some(3)],
            _ => &[None],
        };
        let checkpoints: &[Option<u32>] = if unrolled { &[None, Some(2)] } else { &[None] };
        for &truncate in truncations {
            for &checkpoint_every in checkpoints {
                let cfg = MethodConfig {
                    truncate,
                    checkpoint_every,
                    ..MethodConfig::new(method, 6, 0.5)
                };
                let what = format!("{method} T {truncate:?} checkpoints {checkpoint_every:?}");
                let mut hr = Hypergrad::new(&mut r, cfg.build().unwrap()).unwrap();
                let (mut gx, mut y) = (vec![0.0; p.n_tr()], vec![0.0; p.y_len()]);
                let phi = hr.hypergradient(&mut r, &x, &y0, &mut gx, &mut y).unwrap();
                let spec = cfg.cast::<f32>().build().unwrap();
                let mut hg = Hypergrad::new(&mut g, spec).unwrap();
                let (mut gxb, mut yb) = (g.new_x().unwrap(), g.new_y().unwrap());
                let phi_g = hg
                    .hypergradient(&mut g, &xb, &y0b, &mut gxb, &mut yb)
                    .unwrap() as f64;
                let t = if method == Method::Obda {
                    tol_fd()
                } else {
                    tol()
                };
                assert!(
                    (phi_g - phi).abs() < t * phi.abs(),
                    "{what}: φ {phi_g} vs {phi}"
                );
                agree_within(&format!("{what} ∇φ"), &down(&mut g, &gxb, false), &gx, t);
                agree_within(&format!("{what} y"), &down(&mut g, &yb, true), &y, t);
            }
        }
    }
}

#[test]
fn all_mlp_tests_on_a_fake_device() {
    cxx::run_on_fake_device(
        env!("CARGO_TARGET_TMPDIR"),
        "fake_cuda_mlp",
        "all_mlp_tests_on_a_fake_device",
    );
}
