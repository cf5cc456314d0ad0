//! The CPU hyper-cleaning backends against the `f64` reference
//! (`bda_kernel::hyperclean::HypercleanReference`), primitive by primitive, for both kernel
//! choices and both classifiers, and their determinism across thread counts.

use bda_cpu::hyperclean::simd::Kernels;
use bda_cpu::hyperclean::{CpuClassifier, HypercleanCpu, Linear, Mlp};
use bda_kernel::backend::{LowerHessian, LowerStep, StepAdjoint, UpperGradient};
use bda_kernel::hyperclean::HypercleanReference;
use bda_testkit::instance::Problem;
use bda_testkit::rel_err32;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn randn(n: usize, scale: f64, rng: &mut ChaCha8Rng) -> Vec<f64> {
    (0..n)
        .map(|_| scale * (rng.random::<f64>() * 2.0 - 1.0))
        .collect()
}

fn f32v(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

fn check_primitives(classes: usize, kern: Kernels) {
    check_primitives_hidden::<Linear>(classes, kern, 0);
}

fn check_primitives_hidden<C: CpuClassifier>(classes: usize, kern: Kernels, hidden: usize) {
    for background in [false, true] {
        check_primitives_cache::<C>(classes, kern, true, background, hidden);
        check_primitives_cache::<C>(classes, kern, false, background, hidden);
    }
}

fn check_primitives_cache<C: CpuClassifier>(
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
        Problem::clustered(11 + classes as u64, dim, classes, 301, 45, 1e-3).with_hidden(hidden);
    if background {
        h = h.with_background();
    }
    let p = h.data();
    let mut r = HypercleanReference::new(&p);
    let mut c = HypercleanCpu::<C>::with_kernels(&p, kern).unwrap();
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
    let n = h.n_tr();
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
    check_primitives_hidden::<Mlp>(10, Kernels::Portable, 7);
    check_primitives_hidden::<Mlp>(3, Kernels::Avx2, 4);
    check_primitives_hidden::<Mlp>(10, Kernels::Avx2, 5);
}

#[test]
fn fast_backend_is_deterministic_across_thread_counts() {
    deterministic_across_thread_counts::<Linear>(0);
}

#[test]
fn mlp_backend_is_deterministic_across_thread_counts() {
    // 700 rows: 6 chunks of 128; 300 pixels: 6 blocks of ∇W₁'s rows.
    deterministic_across_thread_counts::<Mlp>(6);
}

fn deterministic_across_thread_counts<C: CpuClassifier>(hidden: usize) {
    let h = Problem::clustered(21, 31, 10, 700, 300, 1e-3)
        .with_hidden(hidden)
        .with_background();
    let p = h.data();
    let mut rng = ChaCha8Rng::seed_from_u64(22);
    let x = f32v(&randn(h.n_tr(), 2.0, &mut rng));
    let y = f32v(&randn(p.y_len(), 0.5, &mut rng));
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut c = HypercleanCpu::<C>::new(&p).unwrap();
            let yc = c.y_from(&y);
            let mut out = c.y_from(&y);
            c.lower_step(&x, &yc, 0.2, 0.7, &mut out).unwrap();
            let mut a = c.y_from(&y);
            let mut gx = vec![0.0f32; x.len()];
            c.step_adjoint(&x, &yc, 0.2, 0.7, &mut a, &mut gx).unwrap();
            (out.as_slice().to_vec(), a.as_slice().to_vec(), gx)
        })
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
    send::<HypercleanCpu<Linear>>();
    sync::<HypercleanCpu<Linear>>();
    send::<HypercleanCpu<Mlp>>();
    sync::<HypercleanCpu<Mlp>>();
    send::<HypercleanReference>();
    sync::<HypercleanReference>();
    // a `y` buffer fills its softmax cache through `&self` (a `RefCell`): Send, not Sync
    send::<bda_cpu::hyperclean::CpuY>();
    send::<bda_cpu::hyperclean::packed::Packed>();
    sync::<bda_cpu::hyperclean::packed::Packed>();
}
