//! Agreement of every CUDA primitive (and of the kernel's methods run on it through the
//! engine, `Hypergrad`) with the f64 reference `bda_kernel::hyperclean::HypercleanReference`,
//! on random data (`bda_testkit::instance`). Each test prints `skipped: <reason>` and returns
//! when no CUDA device is usable — or fails with the reason when `BDA_REQUIRE_CUDA` is set (the
//! GPU kit sets it on the device machine; `bda_testkit::cuda`); when one is, a failure to use
//! it is a failure. `BDA_GPU_TEST_ORDINAL` picks the device (default 0).
//!
//! `all_tests_on_a_fake_device` runs this file's other tests once more in a child process whose
//! CUDA libraries are the CPU stand-ins of `tests/fake_cuda` (built with the host C++
//! compiler): on a machine without a GPU that exercises everything but the device itself —
//! cudarc calls, launch arguments, GEMM mapping and extents, row ranges, the kernels' arithmetic.

use bda_gpu::{GpuDevice, GpuError, GpuVec, HypercleanGpu};
use bda_kernel::Method;
use bda_kernel::backend::{
    Backend, Hypergrad, LowerHessian, LowerStep, MethodConfig, StepAdjoint, UpperGradient,
};
use bda_kernel::hyperclean::HypercleanReference;
use bda_testkit::instance::Problem;
use bda_testkit::{Rng, cuda, cxx, rel_err};

/// Relative error allowed between a primitive or a method in f32 on the GPU and the f64
/// reference: on the stand-in device the largest seen is 1.3e-6 (`lower_step(0.3, 0) y_out −
/// y`), the methods 2.4e-7, so 1e-5; on a GPU 1e-3 until measured there.
fn tol() -> f64 {
    cuda::tolerance(1e-5, 1e-3)
}

/// IHG (f32 conjugate gradient) and O-BDA (an f32 finite difference with ε = 0.01): 2.0e-7
/// and 1.0e-5 on the stand-in, so 1e-4; 1e-2 on a GPU until measured.
fn tol_cg_fd() -> f64 {
    cuda::tolerance(1e-4, 1e-2)
}

fn problem() -> Problem {
    // d + 1 = 46 is not a multiple of 4: exercises the padded row stride.
    Problem::random(2024, 45, 7, 300, 170, 0.01)
}

fn open(p: &Problem) -> Option<HypercleanGpu> {
    let dev = cuda::or_skip(GpuDevice::open(cuda::ordinal()))?;
    let gpu = HypercleanGpu::new(&dev, &p.data()).expect("upload the instance");
    gpu.warm_up().expect("compile and load the kernels");
    println!("{}", gpu.info());
    Some(gpu)
}

/// Random values rounded to f32 (so that both sides see identical inputs), as f64.
fn rand(r: &mut Rng, n: usize, s: f64) -> Vec<f64> {
    (0..n).map(|_| r.range(-s, s) as f64).collect()
}

fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&v| v as f32).collect()
}

fn up_x(g: &mut HypercleanGpu, v: &[f64]) -> GpuVec {
    let mut b = g.new_x().unwrap();
    g.upload_x(&f32s(v), &mut b).unwrap();
    b
}

fn up_y(g: &mut HypercleanGpu, v: &[f64]) -> GpuVec {
    let mut b = g.new_y().unwrap();
    g.upload_y(&f32s(v), &mut b).unwrap();
    b
}

fn down_x(g: &mut HypercleanGpu, b: &GpuVec) -> Vec<f64> {
    let mut h = vec![0.0f32; g.x_len()];
    g.download_x(b, &mut h).unwrap();
    h.into_iter().map(f64::from).collect()
}

fn down_y(g: &mut HypercleanGpu, b: &GpuVec) -> Vec<f64> {
    let mut h = vec![0.0f32; g.y_len()];
    g.download_y(b, &mut h).unwrap();
    h.into_iter().map(f64::from).collect()
}

fn minus(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(a, b)| a - b).collect()
}

fn agree(what: &str, got: &[f64], want: &[f64], tol: f64) {
    let e = rel_err(got, want);
    println!("{what}: relative error {e:.2e}");
    assert!(e < tol, "{what}: relative error {e:.3e} ≥ {tol:.0e}");
}

struct Inputs {
    x: Vec<f64>,
    y: Vec<f64>,
    a: Vec<f64>,
    gx: Vec<f64>,
}

fn inputs(p: &Problem, seed: u64) -> Inputs {
    let mut r = Rng::new(seed);
    Inputs {
        x: rand(&mut r, p.n_tr(), 2.0),
        y: rand(&mut r, p.y_len(), 0.3),
        a: rand(&mut r, p.y_len(), 1.0),
        gx: rand(&mut r, p.n_tr(), 0.01),
    }
}

#[test]
fn vector_operations() {
    let p = problem();
    let Some(mut g) = open(&p) else { return };
    let mut cpu = HypercleanReference::new(&p.data());
    let Inputs { y, a, x, .. } = inputs(&p, 1);
    let (yb, ab) = (up_y(&mut g, &y), up_y(&mut g, &a));
    assert_eq!(down_y(&mut g, &yb), y, "upload/download round trip");
    let xb = up_x(&mut g, &x);
    assert_eq!(down_x(&mut g, &xb), x);
    let fresh = g.new_y().unwrap();
    assert!(down_y(&mut g, &fresh).iter().all(|&v| v == 0.0));

    let mut c = g.new_y().unwrap();
    g.copy_y(&yb, &mut c).unwrap();
    assert_eq!(down_y(&mut g, &c), y);
    g.axpy_y(-0.75, &ab, &mut c).unwrap();
    let want: Vec<f64> = y.iter().zip(&a).map(|(y, a)| y - 0.75 * a).collect();
    agree("axpy_y", &down_y(&mut g, &c), &want, 1e-6);
    g.scale_y(1.5, &mut c).unwrap();
    let want: Vec<f64> = want.iter().map(|v| 1.5 * v).collect();
    agree("scale_y", &down_y(&mut g, &c), &want, 1e-6);

    let dot = g.dot_y(&yb, &ab).unwrap() as f64;
    let want = cpu.dot_y(&y, &a).unwrap();
    assert!(
        (dot - want).abs() < 1e-5 * (1.0 + want.abs()),
        "dot_y {dot} vs {want}"
    );

    assert!(g.y_is_finite(&yb).unwrap());
    let mut bad = y.clone();
    bad[p.y_len() - 1] = f64::NAN;
    let mut badb = up_y(&mut g, &bad);
    assert!(!g.y_is_finite(&badb).unwrap());
    bad[p.y_len() - 1] = 0.0;
    bad[3] = f64::INFINITY;
    g.upload_y(&f32s(&bad), &mut badb).unwrap();
    assert!(!g.y_is_finite(&badb).unwrap());
    g.zero_y(&mut badb).unwrap();
    assert!(
        down_y(&mut g, &badb).iter().all(|&v| v == 0.0),
        "zero_y zeroes, infinity included"
    );

    let mut xb = xb;
    g.zero_x(&mut xb).unwrap();
    assert!(down_x(&mut g, &xb).iter().all(|&v| v == 0.0));
}

#[test]
fn lower_step_agrees() {
    let p = problem();
    let Some(mut g) = open(&p) else { return };
    let mut cpu = HypercleanReference::new(&p.data());
    let Inputs { x, y, .. } = inputs(&p, 2);
    let (xb, yb) = (up_x(&mut g, &x), up_y(&mut g, &y));
    for (w_u, w_l) in [(0.0, 0.7), (0.3, 0.7), (0.3, 0.0), (0.0, 0.0)] {
        let mut out = g.new_y().unwrap();
        g.lower_step(&xb, &yb, w_u as f32, w_l as f32, &mut out)
            .unwrap();
        let mut want = vec![0.0; p.y_len()];
        cpu.lower_step(&x, &y, w_u, w_l, &mut want).unwrap();
        let got = down_y(&mut g, &out);
        agree(
            &format!("lower_step({w_u}, {w_l}) y_out"),
            &got,
            &want,
            tol(),
        );
        if (w_u, w_l) != (0.0, 0.0) {
            agree(
                &format!("lower_step({w_u}, {w_l}) y_out − y"),
                &minus(&got, &y),
                &minus(&want, &y),
                tol(),
            );
        }
    }
}

#[test]
fn upper_grad_agrees() {
    let p = problem();
    let Some(mut g) = open(&p) else { return };
    let mut cpu = HypercleanReference::new(&p.data());
    let Inputs { x, y, gx, .. } = inputs(&p, 3);
    let (xb, yb, mut gxb) = (up_x(&mut g, &x), up_y(&mut g, &y), up_x(&mut g, &gx));
    let mut gy = g.new_y().unwrap();
    let value = g.upper_grad(&xb, &yb, &mut gy, &mut gxb, 1.0).unwrap() as f64;
    let (mut want_gy, mut want_gx) = (vec![0.0; p.y_len()], gx.clone());
    let want = cpu
        .upper_grad(&x, &y, &mut want_gy, &mut want_gx, 1.0)
        .unwrap();
    assert!(
        (value - want).abs() < tol() * want.abs(),
        "F: {value} vs {want}"
    );
    agree("upper_grad gy", &down_y(&mut g, &gy), &want_gy, tol());
    assert_eq!(down_x(&mut g, &gxb), gx, "F does not depend on x");
}

#[test]
fn step_adjoint_agrees() {
    let p = problem();
    let Some(mut g) = open(&p) else { return };
    let mut cpu = HypercleanReference::new(&p.data());
    let Inputs { x, y, a, gx } = inputs(&p, 4);
    let (xb, yb) = (up_x(&mut g, &x), up_y(&mut g, &y));
    for (w_u, w_l) in [(0.0, 0.7), (0.3, 0.7), (0.3, 0.0)] {
        let (mut ab, mut gxb) = (up_y(&mut g, &a), up_x(&mut g, &gx));
        g.step_adjoint(&xb, &yb, w_u as f32, w_l as f32, &mut ab, &mut gxb)
            .unwrap();
        let (mut want_a, mut want_gx) = (a.clone(), gx.clone());
        cpu.step_adjoint(&x, &y, w_u, w_l, &mut want_a, &mut want_gx)
            .unwrap();
        let (got_a, got_gx) = (down_y(&mut g, &ab), down_x(&mut g, &gxb));
        agree(
            &format!("step_adjoint({w_u}, {w_l}) a − a₀"),
            &minus(&got_a, &a),
            &minus(&want_a, &a),
            tol(),
        );
        if w_l != 0.0 {
            agree(
                &format!("step_adjoint({w_u}, {w_l}) gx − gx₀"),
                &minus(&got_gx, &gx),
                &minus(&want_gx, &gx),
                tol(),
            );
        } else {
            assert_eq!(got_gx, gx, "no lower weight: gx untouched");
        }
    }
}

#[test]
fn lower_hessian_agrees() {
    let p = problem();
    let Some(mut g) = open(&p) else { return };
    let mut cpu = HypercleanReference::new(&p.data());
    let Inputs { x, y, a: v, gx } = inputs(&p, 5);
    let (xb, yb, vb) = (up_x(&mut g, &x), up_y(&mut g, &y), up_y(&mut g, &v));

    let mut out = up_y(&mut g, &v); // overwritten (β = 0), stale contents must not leak in
    g.lower_hvp(&xb, &yb, &vb, &mut out).unwrap();
    let mut want = vec![0.0; p.y_len()];
    cpu.lower_hvp(&x, &y, &v, &mut want).unwrap();
    agree("lower_hvp", &down_y(&mut g, &out), &want, tol());

    let mut gxb = up_x(&mut g, &gx);
    g.lower_mixed_vjp(&xb, &yb, &vb, -0.8, &mut gxb).unwrap();
    let mut want = gx.clone();
    cpu.lower_mixed_vjp(&x, &y, &v, -0.8, &mut want).unwrap();
    agree(
        "lower_mixed_vjp",
        &minus(&down_x(&mut g, &gxb), &gx),
        &minus(&want, &gx),
        tol(),
    );

    let mut gxb = up_x(&mut g, &gx);
    g.lower_grad_x(&xb, &yb, 0.6, &mut gxb).unwrap();
    let mut want = gx.clone();
    cpu.lower_grad_x(&x, &y, 0.6, &mut want).unwrap();
    agree(
        "lower_grad_x",
        &minus(&down_x(&mut g, &gxb), &gx),
        &minus(&want, &gx),
        tol(),
    );
}

#[test]
fn methods_agree() {
    let p = problem();
    let Some(mut g) = open(&p) else { return };
    let mut cpu = HypercleanReference::new(&p.data());
    let Inputs { x, .. } = inputs(&p, 6);
    let xb = up_x(&mut g, &x);
    let y0 = vec![0.0; p.y_len()];
    let y0b = up_y(&mut g, &y0);
    let k = 20;
    // BDA with s_u = 0.5, s_l = 0.8 and the papers' μ, α_k, β_k; RHG and T-RHG (T = 5) with
    // s_l = 0.8.
    let bda = MethodConfig {
        s_u: 0.5,
        ..MethodConfig::new(Method::Bda, k, 0.8f64)
    };
    let rhg = MethodConfig::new(Method::Rhg, k, 0.8f64);
    let trhg = MethodConfig {
        truncate: Some(5),
        ..rhg.with_method(Method::Trhg)
    };
    let checkpointed = |c: MethodConfig<f64>| MethodConfig {
        checkpoint_every: Some(3),
        ..c
    };
    let t_equal_k = MethodConfig {
        truncate: Some(k),
        ..trhg
    };
    for (name, cfg) in [
        ("BDA", bda),
        ("RHG", rhg),
        ("T-RHG", trhg),
        ("T-RHG T = K", t_equal_k),
        ("BDA, checkpoints every 3", checkpointed(bda)),
        ("RHG, checkpoints every 3", checkpointed(rhg)),
        ("T-RHG, checkpoints every 3", checkpointed(trhg)),
    ] {
        let r = run_both(&mut g, &mut cpu, &cfg, &xb, &x, &y0b, &y0);
        assert!(
            (r.phi - r.phi64).abs() < tol() * r.phi64.abs(),
            "{name} φ: {} vs {}",
            r.phi,
            r.phi64
        );
        agree(&format!("{name} y_K"), &r.y, &r.y64, tol());
        agree(&format!("{name} hypergradient"), &r.gx, &r.gx64, tol());
    }

    // IHG: conjugate gradient in f32 against f64 drifts more than one primitive does.
    let ihg = MethodConfig {
        cg_iters: 5,
        ..MethodConfig::new(Method::Ihg, k, 0.8f64)
    };
    let r = run_both(&mut g, &mut cpu, &ihg, &xb, &x, &y0b, &y0);
    assert!(
        (r.phi - r.phi64).abs() < tol() * r.phi64.abs(),
        "IHG φ: {} vs {}",
        r.phi,
        r.phi64
    );
    agree("IHG hypergradient", &r.gx, &r.gx64, tol_cg_fd());

    // O-BDA: a finite difference on both sides; ε large enough for f32. One stage from y₁.
    let obda = MethodConfig {
        s_u: 0.5,
        fd_eps: 0.05,
        ..MethodConfig::new(Method::Obda, k, 0.8f64)
    };
    let y1 = inputs(&p, 7).y;
    let y1b = up_y(&mut g, &y1);
    let r = run_both(&mut g, &mut cpu, &obda, &xb, &x, &y1b, &y1);
    assert!(
        (r.phi - r.phi64).abs() < tol() * r.phi64.abs(),
        "O-BDA φ: {} vs {}",
        r.phi,
        r.phi64
    );
    agree("O-BDA hypergradient", &r.gx, &r.gx64, tol_cg_fd());
}

/// One hypergradient of `cfg` on the device (in f32) and on the reference (in f64).
struct Both {
    phi: f64,
    phi64: f64,
    y: Vec<f64>,
    y64: Vec<f64>,
    gx: Vec<f64>,
    gx64: Vec<f64>,
}

fn run_both(
    g: &mut HypercleanGpu,
    cpu: &mut HypercleanReference,
    cfg: &MethodConfig<f64>,
    xb: &GpuVec,
    x: &[f64],
    y0b: &GpuVec,
    y0: &[f64],
) -> Both {
    let spec32 = cfg.cast::<f32>().build().expect("a valid method");
    let mut hg = Hypergrad::new(g, spec32).expect("allocate the method's buffers");
    let (mut gx, mut y_out) = (g.new_x().unwrap(), g.new_y().unwrap());
    let phi = hg.hypergradient(g, xb, y0b, &mut gx, &mut y_out).unwrap();

    let mut hg64 = Hypergrad::new(cpu, cfg.build().expect("a valid method")).unwrap();
    let (mut gx64, mut y64) = (cpu.new_x().unwrap(), cpu.new_y().unwrap());
    let phi64 = hg64
        .hypergradient(cpu, &x.to_vec(), &y0.to_vec(), &mut gx64, &mut y64)
        .unwrap();
    Both {
        phi: f64::from(phi),
        phi64,
        y: down_y(g, &y_out),
        y64,
        gx: down_x(g, &gx),
        gx64,
    }
}

#[test]
fn wrong_shapes_are_errors() {
    let p = problem();
    let Some(mut g) = open(&p) else { return };
    let (x, y) = (g.new_x().unwrap(), g.new_y().unwrap());
    let mut out = g.new_y().unwrap();
    // An x-shaped buffer where a y is expected.
    let err = g.lower_step(&x, &x, 0.0, 1.0, &mut out).unwrap_err();
    assert!(
        matches!(err, GpuError::Shape { expected, got, .. } if expected == p.y_len() && got == p.n_tr()),
        "{err}"
    );
    let err = g.upload_y(&[0.0; 3], &mut out).unwrap_err();
    assert!(matches!(err, GpuError::Shape { .. }), "{err}");
    let mut small = vec![0.0f32; 2];
    assert!(g.download_y(&y, &mut small).is_err());
    // Inconsistent data are an error, before anything is uploaded.
    let mut bad = problem();
    bad.val_labels[0] = 7;
    assert_eq!(
        HypercleanGpu::new(g.device(), &bad.data()).unwrap_err(),
        GpuError::Data("a label is not below the number of classes")
    );
}

/// Two backends built on one device share its stream, modules and cuBLAS handle: their
/// interleaved work gives what each gives alone.
#[test]
fn backends_share_one_device() {
    let p = problem();
    let Some(mut g) = open(&p) else { return };
    let q = Problem::random(7, 12, 3, 40, 30, 0.05);
    let mut h = HypercleanGpu::new(g.device(), &q.data()).expect("a second backend");
    let (mut cpu_p, mut cpu_q) = (
        HypercleanReference::new(&p.data()),
        HypercleanReference::new(&q.data()),
    );
    let (ip, iq) = (inputs(&p, 8), inputs(&q, 9));
    let (xp, yp) = (up_x(&mut g, &ip.x), up_y(&mut g, &ip.y));
    let (xq, yq) = (up_x(&mut h, &iq.x), up_y(&mut h, &iq.y));
    let (mut op, mut oq) = (g.new_y().unwrap(), h.new_y().unwrap());
    g.lower_step(&xp, &yp, 0.3, 0.7, &mut op).unwrap();
    h.lower_step(&xq, &yq, 0.3, 0.7, &mut oq).unwrap();
    let (mut wp, mut wq) = (vec![0.0; p.y_len()], vec![0.0; q.y_len()]);
    cpu_p.lower_step(&ip.x, &ip.y, 0.3, 0.7, &mut wp).unwrap();
    cpu_q.lower_step(&iq.x, &iq.y, 0.3, 0.7, &mut wq).unwrap();
    let got_q = down_y(&mut h, &oq);
    drop(h); // the device stays open for the first backend
    agree("first backend's step", &down_y(&mut g, &op), &wp, tol());
    agree("second backend's step", &got_q, &wq, tol());
}

/// With `BDA_REQUIRE_CUDA` set, a test that finds no usable device fails with the reason
/// instead of skipping (checked in a child process asked for a device that does not exist).
#[test]
fn a_required_device_that_is_missing_fails() {
    cuda::assert_required_fails("backends_share_one_device");
}

/// This file's tests once more on the CPU stand-ins of the CUDA libraries (see the module docs).
#[test]
fn all_tests_on_a_fake_device() {
    cxx::run_on_fake_device(
        env!("CARGO_TARGET_TMPDIR"),
        "fake_cuda",
        "all_tests_on_a_fake_device",
    );
}
