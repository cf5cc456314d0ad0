//! Gradient checks of data hyper-cleaning.
//!
//! * Every method's hypergradient on the `f64` reference backend against central finite
//!   differences of the function it differentiates (RHG, BDA: `φ_K`; T-RHG: `φ_K` with the
//!   first K−T steps frozen at the base `x`; IHG: `φ_K` at large K where the lower level has
//!   converged; O-BDA: `φ_1`, which its finite-difference formula approximates).
//! * The fast `f32` backend against the reference, primitive by primitive, for both kernel
//!   choices, and its determinism across thread counts.

use bda_host::hyperclean::HostData;
use bda_host::hyperclean::cpu::HypercleanCpu;
use bda_host::hyperclean::simd::Kernels;
use bda_kernel::Method;
use bda_kernel::backend::{
    Backend, Hypergrad, LowerHessian, LowerStep, MethodConfig, StepAdjoint, UpperGradient,
};
use bda_kernel::hyperclean::{HypercleanData, HypercleanReference};
use bda_testkit::fd::{check_method, check_methods};
use bda_testkit::rel_err32;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn tiny(n_train: usize, dim: usize, classes: usize, seed: u64) -> HostData {
    HostData::synthetic(n_train, n_train / 2 + 3, 5, dim, classes, 0.5, seed)
}

/// `h` with every pixel below 0.5 set to 0: images with a background, so that the fast
/// backend's all-zero blocks (skipped) and its reordering of the samples take part.
fn with_background(mut h: HostData) -> HostData {
    for v in h
        .train
        .x
        .iter_mut()
        .chain(&mut h.val.x)
        .chain(&mut h.test.x)
    {
        if *v < 0.5 {
            *v = 0.0;
        }
    }
    h
}

fn problem(h: &HostData, lambda: f32) -> HypercleanData<'_> {
    h.problem(lambda)
}

fn randn(n: usize, scale: f64, rng: &mut ChaCha8Rng) -> Vec<f64> {
    (0..n)
        .map(|_| scale * (rng.random::<f64>() * 2.0 - 1.0))
        .collect()
}

#[test]
fn every_method_matches_finite_differences_on_the_reference() {
    let h = tiny(14, 5, 3, 1);
    let p = problem(&h, 1e-2);
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let x = randn(h.train.labels.len(), 1.0, &mut rng);
    let y0 = vec![0.0; p.y_len()];
    let make = || HypercleanReference::new(&p);
    let base = MethodConfig {
        truncate: Some(3),
        fd_eps: 1e-4,
        ..MethodConfig::new(Method::Bda, 7, 0.8)
    };
    let cases =
        [Method::Rhg, Method::Bda, Method::Trhg, Method::Obda].map(|m| (base.with_method(m), 1e-6));
    check_methods(make, Hypergrad::new, &cases, &x, &y0, 1e-5, x.len());
}

#[test]
fn ihg_matches_finite_differences_at_a_converged_lower_level() {
    // Many more samples than parameters and random labels: the lower level has a
    // minimiser (up to the class-shift null space that gradient steps never enter).
    let h = HostData::synthetic(60, 30, 5, 2, 3, 0.9, 5);
    let p = problem(&h, 1e-2);
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let x = randn(h.train.labels.len(), 0.5, &mut rng);
    let cfg = MethodConfig {
        cg_iters: 200,
        ..MethodConfig::new(Method::Ihg, 2500, 4.0)
    };
    let y0 = vec![0.0; p.y_len()];
    // The lower level has converged at K = 2500.
    let mut b = HypercleanReference::new(&p);
    let (_, y) =
        bda_testkit::fd::solve_value(&mut b, Hypergrad::new, cfg.build().unwrap(), &x, &y0);
    let mut next = b.new_y().unwrap();
    b.lower_step(&x, &y, 0.0, 1.0, &mut next).unwrap();
    let res = y
        .iter()
        .zip(&next)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(res < 1e-9, "lower level not converged: ‖∇f‖∞ = {res:e}");
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

fn f32v(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

fn check_primitives(classes: usize, kern: Kernels) {
    check_primitives_hidden(classes, kern, 0);
}

fn check_primitives_hidden(classes: usize, kern: Kernels, hidden: usize) {
    for background in [false, true] {
        check_primitives_cache(classes, kern, true, background, hidden);
        check_primitives_cache(classes, kern, false, background, hidden);
    }
}

fn check_primitives_cache(
    classes: usize,
    kern: Kernels,
    cache: bool,
    background: bool,
    hidden: usize,
) {
    // > 1 chunk of 256 samples (of 128 rows for the network) and a partial group of 8;
    // for the network windows of 6 pixels with the last one of 4 (310 = 51·6 + 4) or 3
    // (309, odd `hidden`), split into several tasks of `Uᵀ·G`.
    let dim = if hidden > 0 { 310 - hidden % 2 } else { 19 };
    let mut h =
        HostData::synthetic(301, 45, 5, dim, classes, 0.5, 11 + classes as u64).with_hidden(hidden);
    if background {
        h = with_background(h);
    }
    let p = problem(&h, 1e-3);
    let mut r = HypercleanReference::new(&p);
    let mut c = HypercleanCpu::with_kernels(&p, kern).unwrap();
    c.set_prob_cache(cache);
    let (dt, dv) = c.block_density();
    if background {
        // The skipping is exercised: some blocks are zero, not all.
        assert!(
            dt < 0.95 && dv < 0.95 && dt > 0.05,
            "block density {dt} {dv}"
        );
    } else {
        assert_eq!((dt, dv), (1.0, 1.0));
    }
    if kern == Kernels::Avx2 && Kernels::detect(classes) != Kernels::Avx2 {
        eprintln!("AVX2+FMA not available: checking the portable kernels only");
    }
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let n = h.train.labels.len();
    let x = randn(n, 2.0, &mut rng);
    let y = randn(p.y_len(), 0.5, &mut rng);
    let v = randn(p.y_len(), 0.5, &mut rng);
    let (x32, y32, v32) = (f32v(&x), f32v(&y), f32v(&v));
    // One `y` buffer for all calls: the first lower_step fills its softmax cache, the
    // later calls use it; `fresh` checks the path without a cache.
    let yc = c.y_from(&y32);
    let vc = c.y_from(&v32);
    let zeros = vec![0.0f32; p.y_len()];
    let tol = 2e-5;

    for (wu, wl) in [(0.0, 0.7), (0.3, 0.7)] {
        let mut o64 = vec![0.0; p.y_len()];
        let mut o32 = c.y_from(&zeros);
        r.lower_step(&x, &y, wu, wl, &mut o64).unwrap();
        c.lower_step(&x32, &yc, wu as f32, wl as f32, &mut o32)
            .unwrap();
        assert!(
            rel_err32(o32.as_slice(), &o64) < tol,
            "lower_step {wu}: {}",
            rel_err32(o32.as_slice(), &o64)
        );

        for fresh in [false, true] {
            let mut a64 = v.clone();
            let mut a32 = c.y_from(&v32);
            let mut g64 = randn(n, 1.0, &mut rng);
            let mut g32 = f32v(&g64);
            r.step_adjoint(&x, &y, wu, wl, &mut a64, &mut g64).unwrap();
            let yy = if fresh { c.y_from(&y32) } else { yc.clone() };
            // The last reverse step: the same `gx`, bit for bit, without the Hessian.
            let mut gl32 = g32.clone();
            let yl = if fresh { c.y_from(&y32) } else { yc.clone() };
            c.step_adjoint_last(
                &x32,
                &yl,
                wu as f32,
                wl as f32,
                &mut c.y_from(&v32),
                &mut gl32,
            )
            .unwrap();
            c.step_adjoint(&x32, &yy, wu as f32, wl as f32, &mut a32, &mut g32)
                .unwrap();
            assert_eq!(gl32, g32, "step_adjoint_last gx");
            assert!(
                rel_err32(a32.as_slice(), &a64) < tol,
                "step_adjoint a: {}",
                rel_err32(a32.as_slice(), &a64)
            );
            assert!(
                rel_err32(&g32, &g64) < tol,
                "step_adjoint gx: {}",
                rel_err32(&g32, &g64)
            );
        }
    }
    let mut gy64 = vec![0.0; p.y_len()];
    let mut gy32 = c.y_from(&zeros);
    let mut gx64 = vec![0.0; n];
    let mut gx32 = vec![0.0f32; n];
    let f64v = r.upper_grad(&x, &y, &mut gy64, &mut gx64, 1.0).unwrap();
    let f32v_ = c.upper_grad(&x32, &yc, &mut gy32, &mut gx32, 1.0).unwrap();
    assert!(
        (f64::from(f32v_) - f64v).abs() / f64v.abs() < tol,
        "upper value {f32v_} vs {f64v}"
    );
    assert!(
        rel_err32(gy32.as_slice(), &gy64) < tol,
        "upper_grad: {}",
        rel_err32(gy32.as_slice(), &gy64)
    );
    assert!(gx32.iter().all(|&g| g == 0.0), "F does not depend on x");

    let mut h64 = vec![0.0; p.y_len()];
    let mut h32 = c.y_from(&zeros);
    r.lower_hvp(&x, &y, &v, &mut h64).unwrap();
    c.lower_hvp(&x32, &c.y_from(&y32), &vc, &mut h32).unwrap();
    assert!(
        rel_err32(h32.as_slice(), &h64) < tol,
        "lower_hvp: {}",
        rel_err32(h32.as_slice(), &h64)
    );

    let base = randn(n, 1.0, &mut rng);
    let (mut m64, mut m32) = (base.clone(), f32v(&base));
    r.lower_mixed_vjp(&x, &y, &v, -0.7, &mut m64).unwrap();
    c.lower_mixed_vjp(&x32, &yc, &vc, -0.7, &mut m32).unwrap();
    let d64: Vec<f64> = m64.iter().zip(&base).map(|(a, b)| a - b).collect();
    let d32: Vec<f32> = m32.iter().zip(&base).map(|(a, b)| a - *b as f32).collect();
    assert!(
        rel_err32(&d32, &d64) < 1e-3,
        "lower_mixed_vjp: {}",
        rel_err32(&d32, &d64)
    );

    let (mut q64, mut q32) = (vec![0.0; n], vec![0.0f32; n]);
    r.lower_grad_x(&x, &y, 0.9, &mut q64).unwrap();
    c.lower_grad_x(&x32, &yc, 0.9, &mut q32).unwrap();
    assert!(
        rel_err32(&q32, &q64) < tol,
        "lower_grad_x: {}",
        rel_err32(&q32, &q64)
    );
}

#[test]
fn fast_backend_matches_reference_avx2() {
    check_primitives(10, Kernels::Avx2);
}

#[test]
fn fast_backend_matches_reference_portable() {
    check_primitives(10, Kernels::Portable);
    check_primitives(3, Kernels::Portable);
}

#[test]
fn mlp_backend_matches_reference() {
    // Both kernel choices: the network's passes do not use them, the packing does.
    check_primitives_hidden(10, Kernels::Portable, 7);
    check_primitives_hidden(3, Kernels::Avx2, 4);
    check_primitives_hidden(10, Kernels::Avx2, 5);
}

#[test]
fn fast_backend_is_deterministic_across_thread_counts() {
    deterministic_across_thread_counts(0);
}

#[test]
fn mlp_backend_is_deterministic_across_thread_counts() {
    // 700 rows: 6 chunks of 128; 300 pixels: 6 blocks of ∇W₁'s rows.
    deterministic_across_thread_counts(6);
}

fn deterministic_across_thread_counts(hidden: usize) {
    let h = with_background(HostData::synthetic(700, 300, 5, 31, 10, 0.5, 21)).with_hidden(hidden);
    let p = problem(&h, 1e-3);
    let mut rng = ChaCha8Rng::seed_from_u64(22);
    let x = f32v(&randn(h.train.labels.len(), 2.0, &mut rng));
    let y = f32v(&randn(p.y_len(), 0.5, &mut rng));
    let run = |threads: usize| {
        bda_host::threads::install(threads, || {
            let mut c = HypercleanCpu::new(&p).unwrap();
            let yc = c.y_from(&y);
            let mut out = c.y_from(&y);
            c.lower_step(&x, &yc, 0.2, 0.7, &mut out).unwrap();
            let mut a = c.y_from(&y);
            let mut gx = vec![0.0f32; x.len()];
            c.step_adjoint(&x, &yc, 0.2, 0.7, &mut a, &mut gx).unwrap();
            Ok((out.as_slice().to_vec(), a.as_slice().to_vec(), gx))
        })
        .unwrap()
    };
    let one = run(1);
    for t in [2, 3, 5] {
        assert_eq!(run(t), one, "{t} threads differ from 1 thread");
    }
}

#[test]
fn public_types_are_send_and_sync_where_expected() {
    fn send<T: Send>() {}
    fn sync<T: Sync>() {}
    send::<HypercleanCpu>();
    sync::<HypercleanCpu>();
    send::<HypercleanReference>();
    sync::<HypercleanReference>();
    // a `y` buffer fills its softmax cache through `&self` (a `RefCell`): Send, not Sync
    send::<bda_host::hyperclean::cpu::CpuY>();
    send::<bda_host::hyperclean::packed::Packed>();
    sync::<bda_host::hyperclean::packed::Packed>();
}
