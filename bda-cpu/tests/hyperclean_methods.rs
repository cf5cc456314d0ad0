//! Whole methods on the production CPU hyper-cleaning backend against the `f64` reference:
//! every method × {softmax regression, network} × {full tape, checkpoints} × {T = K, T < K},
//! on data of several chunks, through the same engine (`Hypergrad`) the CLI uses. The
//! primitives are checked one by one in `hyperclean_grad.rs`; this is where a misplaced call
//! (say, the last-step adjoint at another step) or a wrong buffer between them would show.

use bda_cpu::hyperclean::{CpuClassifier, HypercleanCpu, Linear, Mlp};
use bda_kernel::Method;
use bda_kernel::backend::{Backend, Hypergrad, MethodConfig, Methods};
use bda_kernel::hyperclean::HypercleanReference;
use bda_testkit::instance::Problem;
use bda_testkit::rel_err32;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// K of every run; T < K is 3.
const K: u32 = 6;

/// Relative error (max-norm) of the f32 hypergradient against the f64 one, and of φ and
/// y_K. Measured on these instances: at most 4e-7 for RHG, T-RHG, BDA and IHG; the bound is
/// 1e-5. (A 0.1 % error in the mixed term of the last reverse step alone moves the
/// network's hypergradient by 8e-5.)
const TOL: f64 = 1e-5;

/// O-BDA's bound: its hypergradient is a finite difference with ε = 0.01, which f32 rounds
/// to 2.5e-5 here.
const TOL_OBDA: f64 = 1e-4;

/// IHG's conjugate-gradient iterations on softmax regression. Its lower-level Hessian is
/// singular (the softmax does not change when a constant is added to every class's
/// scores, and f carries no regulariser), so CG does not converge there: with 20 iterations
/// the f64 hypergradient itself changes by 70 % with 5 more, and f32 rounding departs from
/// it by 8e-2 from 10 iterations on (4e-7 up to 5). The comparison is made where both
/// compute the same thing; the network (whose Hessian CG handles) runs the default 20.
const IHG_CG_LINEAR: u32 = 5;

struct Run {
    phi: f64,
    grad: Vec<f64>,
    y: Vec<f64>,
}

fn problem(hidden: usize) -> Problem {
    // 600 training rows: three chunks of 256 rows (softmax regression), five of 128 (the
    // network), the last partial.
    Problem::clustered(5, 23, 4, 600, 40, 1e-3).with_hidden(hidden)
}

fn point(p: &Problem, seed: u64) -> (Vec<f64>, Vec<f64>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut r = |n: usize, s: f64| -> Vec<f64> {
        (0..n)
            .map(|_| s * (rng.random::<f64>() * 2.0 - 1.0))
            .collect()
    };
    let x = r(p.n_tr(), 2.0);
    let y0 = r(p.data().y_len(), 0.3);
    (x, y0)
}

fn reference(p: &Problem, cfg: &MethodConfig<f64>, x: &[f64], y0: &[f64]) -> Run {
    let data = p.data();
    let mut b = HypercleanReference::new(&data);
    let mut hg = Hypergrad::new(&mut b, cfg.build().unwrap()).unwrap();
    let (mut gx, mut y) = (b.new_x().unwrap(), b.new_y().unwrap());
    let phi = hg
        .hypergradient(&mut b, &x.to_vec(), &y0.to_vec(), &mut gx, &mut y)
        .unwrap();
    Run { phi, grad: gx, y }
}

fn cpu<C: CpuClassifier>(p: &Problem, cfg: &MethodConfig<f64>, x: &[f64], y0: &[f64]) -> Run {
    let data = p.data();
    let mut b = HypercleanCpu::<C>::new(&data).unwrap();
    let spec = cfg.cast::<f32>().build().unwrap();
    let mut hg = b.hypergrad(spec).unwrap();
    let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    let y32: Vec<f32> = y0.iter().map(|&v| v as f32).collect();
    let y0 = b.y_from(&y32);
    let (mut gx, mut y) = (b.new_x().unwrap(), b.new_y().unwrap());
    let phi = hg
        .hypergradient(&mut b, &x32, &y0, &mut gx, &mut y)
        .unwrap();
    let mut host = vec![0.0f32; data.y_len()];
    b.download_y(&y, &mut host).unwrap();
    let widen = |v: &[f32]| v.iter().map(|&v| f64::from(v)).collect();
    Run {
        phi: f64::from(phi),
        grad: widen(&gx),
        y: widen(&host),
    }
}

/// Every configuration of one classifier; returns the largest hypergradient error seen.
fn check<C: CpuClassifier>(hidden: usize, step: f64) -> f64 {
    let p = problem(hidden);
    let (x, y0) = point(&p, 3 + hidden as u64);
    let mut worst: f64 = 0.0;
    for method in Method::ALL {
        let truncations: &[Option<u32>] = match method {
            Method::Trhg => &[Some(K), Some(3)],
            _ => &[None],
        };
        let checkpoints: &[Option<u32>] = match method {
            Method::Rhg | Method::Trhg | Method::Bda => &[None, Some(2)],
            _ => &[None],
        };
        for &truncate in truncations {
            for &checkpoint_every in checkpoints {
                let cfg = MethodConfig {
                    truncate,
                    checkpoint_every,
                    cg_iters: if hidden == 0 { IHG_CG_LINEAR } else { 20 },
                    ..MethodConfig::new(method, K, step)
                };
                let want = reference(&p, &cfg, &x, &y0);
                let got = cpu::<C>(&p, &cfg, &x, &y0);
                let what =
                    format!("{method} hidden {hidden} T {truncate:?} c {checkpoint_every:?}");
                let grad32: Vec<f32> = got.grad.iter().map(|&v| v as f32).collect();
                let e = rel_err32(&grad32, &want.grad);
                let tol = if method == Method::Obda {
                    TOL_OBDA
                } else {
                    TOL
                };
                assert!(e < tol, "{what}: hypergradient error {e:.2e}");
                let y32: Vec<f32> = got.y.iter().map(|&v| v as f32).collect();
                assert!(rel_err32(&y32, &want.y) < TOL, "{what}: y error");
                assert!(
                    (got.phi - want.phi).abs() <= TOL * want.phi.abs(),
                    "{what}: φ {} vs {}",
                    got.phi,
                    want.phi
                );
                eprintln!("{what}: hypergradient error {e:.2e}");
                worst = worst.max(e);
            }
        }
    }
    worst
}

#[test]
fn every_method_on_softmax_regression_matches_the_reference() {
    let worst = check::<Linear>(0, 0.5);
    eprintln!("softmax regression: worst hypergradient error {worst:.2e}");
}

#[test]
fn every_method_on_the_network_matches_the_reference() {
    let worst = check::<Mlp>(16, 0.5);
    eprintln!("network: worst hypergradient error {worst:.2e}");
}

/// T-RHG with T < K differs from RHG (so the truncation is really exercised), and a full
/// truncation is RHG.
#[test]
fn truncation_changes_the_hypergradient_and_t_equal_k_is_rhg() {
    let p = problem(0);
    let (x, y0) = point(&p, 3);
    let rhg = cpu::<Linear>(&p, &MethodConfig::new(Method::Rhg, K, 0.5), &x, &y0);
    let t = |t: u32| MethodConfig {
        truncate: Some(t),
        ..MethodConfig::new(Method::Trhg, K, 0.5)
    };
    let full = cpu::<Linear>(&p, &t(K), &x, &y0);
    assert_eq!(full.grad, rhg.grad);
    let short = cpu::<Linear>(&p, &t(3), &x, &y0);
    let short32: Vec<f32> = short.grad.iter().map(|&v| v as f32).collect();
    assert!(rel_err32(&short32, &rhg.grad) > 1e-2);
}
