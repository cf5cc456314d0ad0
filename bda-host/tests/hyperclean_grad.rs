//! Gradient checks of data hyper-cleaning.
//!
//! * Every method's hypergradient on the `f64` reference backend against central finite
//!   differences of the function it differentiates (RHG, BDA: `φ_K`; T-RHG: `φ_K` with the
//!   first K−T steps frozen at the base `x`; IHG: `φ_K` at large K where the lower level has
//!   converged; O-BDA: `φ_1`, which its finite-difference formula approximates).
//! * The fast `f32` backend against the reference, primitive by primitive, for both kernel
//!   choices, and its determinism across thread counts.

use bda_host::hyperclean::HostData;
use bda_host::hyperclean::cpu::{Cpu, Kernels};
use bda_kernel::backend::{
    self, Backend, CgScratch, LowerHessian, LowerStep, OneStageScratch, StepAdjoint, UpperGradient,
};
use bda_kernel::hyperclean::{HypercleanData, Reference};
use bda_kernel::{Beta, LowerDynamics, Schedule};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn tiny(n_train: usize, dim: usize, classes: usize, seed: u64) -> HostData {
    HostData::synthetic(n_train, n_train / 2 + 3, 5, dim, classes, 0.5, seed)
}

/// `h` with every pixel below 0.5 set to 0: images with a background, so that the fast
/// backend's all-zero blocks (skipped) and its reordering of the samples take part.
fn with_background(mut h: HostData) -> HostData {
    for v in h
        .train_x
        .iter_mut()
        .chain(&mut h.val_x)
        .chain(&mut h.test_x)
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

fn bda_dyn(s: f64) -> LowerDynamics<f64> {
    LowerDynamics::Aggregated {
        mu: 0.5,
        alpha: Schedule::Harmonic(0.5),
        beta: Beta::Schedule(Schedule::Constant(1.0)),
        s_u: s,
        s_l: s,
    }
}

/// `φ_K(x)` and its gradient by `unrolled`.
fn unrolled_val_grad(
    b: &mut Reference<'_>,
    x: &[f64],
    y0: &[f64],
    dynamics: &LowerDynamics<f64>,
    k: u32,
    truncate: Option<u32>,
) -> (f64, Vec<f64>) {
    let mut tape: Vec<Vec<f64>> = (0..backend::tape_len(k, truncate))
        .map(|_| b.new_y().unwrap())
        .collect();
    let mut adj = b.new_y().unwrap();
    let mut gx = b.new_x().unwrap();
    let mut y_out = b.new_y().unwrap();
    let f = backend::unrolled(
        b,
        &x.to_vec(),
        &y0.to_vec(),
        dynamics,
        k,
        truncate,
        &mut tape,
        &mut adj,
        &mut gx,
        &mut y_out,
    )
    .unwrap();
    (f, gx)
}

fn fd_check(name: &str, grad: &[f64], f: impl Fn(&[f64]) -> f64, x: &[f64], eps: f64, tol: f64) {
    fd_check_first(name, grad, f, x, eps, tol, x.len())
}

/// Checks the first `coords` coordinates.
fn fd_check_first(
    name: &str,
    grad: &[f64],
    f: impl Fn(&[f64]) -> f64,
    x: &[f64],
    eps: f64,
    tol: f64,
    coords: usize,
) {
    let scale = grad.iter().fold(0.0f64, |m, g| m.max(g.abs()));
    assert!(scale > 0.0, "{name}: zero gradient");
    for i in 0..coords.min(x.len()) {
        let mut xp = x.to_vec();
        let mut xm = x.to_vec();
        xp[i] += eps;
        xm[i] -= eps;
        let fd = (f(&xp) - f(&xm)) / (2.0 * eps);
        let err = (fd - grad[i]).abs() / scale;
        assert!(
            err < tol,
            "{name}: coordinate {i}: analytic {} vs FD {fd} (rel err {err:e})",
            grad[i]
        );
    }
}

#[test]
fn rhg_and_bda_match_finite_differences() {
    let h = tiny(14, 5, 3, 1);
    let p = problem(&h, 1e-2);
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let x = randn(h.train_labels.len(), 1.0, &mut rng);
    let y0 = vec![0.0; p.y_len()];
    for (name, dynamics) in [
        ("rhg", LowerDynamics::LowerOnly { s_l: 0.8 }),
        ("bda", bda_dyn(0.8)),
    ] {
        let mut b = Reference::new(&p);
        let (_, g) = unrolled_val_grad(&mut b, &x, &y0, &dynamics, 6, None);
        let f =
            |xx: &[f64]| unrolled_val_grad(&mut Reference::new(&p), xx, &y0, &dynamics, 6, None).0;
        fd_check(name, &g, f, &x, 1e-5, 1e-6);
    }
}

#[test]
fn trhg_matches_its_truncated_definition() {
    let h = tiny(12, 4, 3, 3);
    let p = problem(&h, 1e-2);
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let x = randn(h.train_labels.len(), 1.0, &mut rng);
    let dynamics = LowerDynamics::LowerOnly { s_l: 0.8 };
    let (k, t) = (7u32, 3u32);
    let mut b = Reference::new(&p);
    let (_, g) = unrolled_val_grad(&mut b, &x, &vec![0.0; p.y_len()], &dynamics, k, Some(t));
    // ψ(x') = F(y_K) where y_{K−T} is computed with the base x (frozen) and the last T
    // steps use x': dψ/dx' at x' = x is the T-RHG gradient.
    let mut y_frozen = vec![0.0; p.y_len()];
    let mut tmp = vec![0.0; p.y_len()];
    for step in 1..=(k - t) {
        let (wu, wl) = dynamics.weights(step);
        b.lower_step(&x, &y_frozen, wu, wl, &mut tmp).unwrap();
        std::mem::swap(&mut y_frozen, &mut tmp);
    }
    let psi = |xx: &[f64]| {
        let mut b = Reference::new(&p);
        let mut y = y_frozen.clone();
        let mut tmp = y.clone();
        for step in (k - t + 1)..=k {
            let (wu, wl) = dynamics.weights(step);
            b.lower_step(&xx.to_vec(), &y, wu, wl, &mut tmp).unwrap();
            std::mem::swap(&mut y, &mut tmp);
        }
        b.upper_value(&y)
    };
    fd_check("trhg", &g, psi, &x, 1e-5, 1e-6);
}

#[test]
fn ihg_matches_finite_differences_at_a_converged_lower_level() {
    // Many more samples than parameters and random labels: the lower level has a
    // minimiser (up to the class-shift null space that gradient steps never enter).
    let h = HostData::synthetic(60, 30, 5, 2, 3, 0.9, 5);
    let p = problem(&h, 1e-2);
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let x = randn(h.train_labels.len(), 0.5, &mut rng);
    let dynamics = LowerDynamics::LowerOnly { s_l: 4.0 };
    let k = 2500;
    let mut b = Reference::new(&p);
    let mut cg = CgScratch {
        r: b.new_y().unwrap(),
        p: b.new_y().unwrap(),
        hp: b.new_y().unwrap(),
        v: b.new_y().unwrap(),
    };
    let mut gx = b.new_x().unwrap();
    let mut y = b.new_y().unwrap();
    let y0 = b.new_y().unwrap();
    backend::implicit(&mut b, &x, &y0, &dynamics, k, 200, &mut cg, &mut gx, &mut y).unwrap();
    // the lower level has converged
    let mut gy = b.new_y().unwrap();
    b.lower_step(&x, &y, 0.0, 1.0, &mut gy).unwrap();
    let res: f64 = y
        .iter()
        .zip(&gy)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(res < 1e-9, "lower level not converged: ‖∇f‖∞ = {res:e}");
    let f =
        |xx: &[f64]| unrolled_val_grad(&mut Reference::new(&p), xx, &y0, &dynamics, k, Some(0)).0;
    fd_check_first("ihg", &gx, f, &x, 1e-4, 1e-5, 6);
}

#[test]
fn obda_matches_the_exact_one_step_hypergradient() {
    let h = tiny(12, 4, 3, 7);
    let p = problem(&h, 1e-2);
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let x = randn(h.train_labels.len(), 1.0, &mut rng);
    let y0 = randn(p.y_len(), 0.3, &mut rng); // warm start, as in training
    let dynamics = bda_dyn(0.8);
    let mut b = Reference::new(&p);
    let mut s = OneStageScratch {
        g: b.new_y().unwrap(),
        h: b.new_y().unwrap(),
        sink: b.new_y().unwrap(),
    };
    let mut gx = b.new_x().unwrap();
    let mut y1 = b.new_y().unwrap();
    backend::one_stage(&mut b, &x, &y0, &dynamics, 1e-4, &mut s, &mut gx, &mut y1).unwrap();
    let f = |xx: &[f64]| unrolled_val_grad(&mut Reference::new(&p), xx, &y0, &dynamics, 1, None).0;
    fd_check("obda", &gx, f, &x, 1e-5, 1e-6);
}

/// Max |a − b| / max |b|.
fn rel(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1e-30f64, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .map(|(a, b)| (f64::from(*a) - b).abs())
        .fold(0.0, f64::max)
        / scale
}

fn f32v(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

fn check_primitives(classes: usize, kern: Kernels) {
    for background in [false, true] {
        check_primitives_cache(classes, kern, true, background);
        check_primitives_cache(classes, kern, false, background);
    }
}

fn check_primitives_cache(classes: usize, kern: Kernels, cache: bool, background: bool) {
    // > 1 chunk of 256 samples and a partial group of 8
    let mut h = HostData::synthetic(301, 45, 5, 19, classes, 0.5, 11 + classes as u64);
    if background {
        h = with_background(h);
    }
    let p = problem(&h, 1e-3);
    let mut r = Reference::new(&p);
    let mut c = Cpu::with_kernels(&p, kern).unwrap();
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
    let n = h.train_labels.len();
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
            rel(o32.as_slice(), &o64) < tol,
            "lower_step {wu}: {}",
            rel(o32.as_slice(), &o64)
        );

        for fresh in [false, true] {
            let mut a64 = v.clone();
            let mut a32 = c.y_from(&v32);
            let mut g64 = randn(n, 1.0, &mut rng);
            let mut g32 = f32v(&g64);
            r.step_adjoint(&x, &y, wu, wl, &mut a64, &mut g64).unwrap();
            let yy = if fresh { c.y_from(&y32) } else { yc.clone() };
            c.step_adjoint(&x32, &yy, wu as f32, wl as f32, &mut a32, &mut g32)
                .unwrap();
            assert!(
                rel(a32.as_slice(), &a64) < tol,
                "step_adjoint a: {}",
                rel(a32.as_slice(), &a64)
            );
            assert!(
                rel(&g32, &g64) < tol,
                "step_adjoint gx: {}",
                rel(&g32, &g64)
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
        rel(gy32.as_slice(), &gy64) < tol,
        "upper_grad: {}",
        rel(gy32.as_slice(), &gy64)
    );
    assert!(gx32.iter().all(|&g| g == 0.0), "F does not depend on x");

    let mut h64 = vec![0.0; p.y_len()];
    let mut h32 = c.y_from(&zeros);
    r.lower_hvp(&x, &y, &v, &mut h64).unwrap();
    c.lower_hvp(&x32, &c.y_from(&y32), &vc, &mut h32).unwrap();
    assert!(
        rel(h32.as_slice(), &h64) < tol,
        "lower_hvp: {}",
        rel(h32.as_slice(), &h64)
    );

    let base = randn(n, 1.0, &mut rng);
    let (mut m64, mut m32) = (base.clone(), f32v(&base));
    r.lower_mixed_vjp(&x, &y, &v, -0.7, &mut m64).unwrap();
    c.lower_mixed_vjp(&x32, &yc, &vc, -0.7, &mut m32).unwrap();
    let d64: Vec<f64> = m64.iter().zip(&base).map(|(a, b)| a - b).collect();
    let d32: Vec<f32> = m32.iter().zip(&base).map(|(a, b)| a - *b as f32).collect();
    assert!(
        rel(&d32, &d64) < 1e-3,
        "lower_mixed_vjp: {}",
        rel(&d32, &d64)
    );

    let (mut q64, mut q32) = (vec![0.0; n], vec![0.0f32; n]);
    r.lower_grad_x(&x, &y, 0.9, &mut q64).unwrap();
    c.lower_grad_x(&x32, &yc, 0.9, &mut q32).unwrap();
    assert!(rel(&q32, &q64) < tol, "lower_grad_x: {}", rel(&q32, &q64));
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
fn fast_backend_is_deterministic_across_thread_counts() {
    let h = with_background(HostData::synthetic(700, 300, 5, 31, 10, 0.5, 21));
    let p = problem(&h, 1e-3);
    let mut rng = ChaCha8Rng::seed_from_u64(22);
    let x = f32v(&randn(h.train_labels.len(), 2.0, &mut rng));
    let y = f32v(&randn(p.y_len(), 0.5, &mut rng));
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut c = Cpu::new(&p).unwrap();
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
    send::<Cpu>();
    sync::<Cpu>();
    send::<Reference>();
    sync::<Reference>();
    // a `y` buffer fills its softmax cache through `&self` (a `RefCell`): Send, not Sync
    send::<bda_host::hyperclean::cpu::CpuY>();
    send::<bda_host::hyperclean::cpu::Packed>();
    sync::<bda_host::hyperclean::cpu::Packed>();
}
