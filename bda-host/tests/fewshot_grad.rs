//! Gradient checks of the few-shot model against central finite differences (f64): the
//! head's hypergradient `∂φ_K/∂features` (through bda-kernel's `unrolled`), the conv4
//! backward pass on a tiny network, and the whole meta-gradient. Plus determinism across
//! thread counts.

use bda_host::fewshot::conv4::{Arch, Conv4};
use bda_host::fewshot::head::FeatureHead;
use bda_host::fewshot::train::{HeadConfig, Task, meta_gradient, task_hypergradient};
use bda_kernel::Method;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn cfg(method: Method) -> HeadConfig {
    HeadConfig {
        method,
        steps: 4,
        truncate: Some(2),
        lr: 0.5,
        mu: 0.5,
        alpha: 0.5,
        l2: 0.01,
    }
}

fn head(rng: &mut ChaCha8Rng, dim: usize) -> FeatureHead<f64> {
    let (ways, shots, queries) = (3, 2, 3);
    let lab = |per: usize| {
        (0..ways)
            .flat_map(|c| std::iter::repeat_n(c as u8, per))
            .collect::<Vec<_>>()
    };
    let _ = rng.random::<u8>();
    FeatureHead::new(dim, ways, lab(shots), lab(queries), 0.01)
}

#[test]
fn head_hypergradient_matches_finite_differences() {
    // T-RHG is not the gradient of φ_K (see the truncation test below).
    for method in [Method::Bda, Method::Rhg] {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let dim = 5;
        let mut h = head(&mut rng, dim);
        let x: Vec<f64> = (0..h.rows() * dim)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let c = cfg(method);
        let mut gx = vec![0.0; x.len()];
        task_hypergradient(&mut h, &x, &c, &mut gx).unwrap();
        let eps = 1e-5;
        let mut worst: f64 = 0.0;
        for i in 0..x.len() {
            let mut phi = |d: f64| {
                let mut xp = x.clone();
                xp[i] += d;
                let mut g = vec![0.0; x.len()];
                task_hypergradient(&mut h, &xp, &c, &mut g).unwrap().0
            };
            let fd = (phi(eps) - phi(-eps)) / (2.0 * eps);
            worst = worst.max((fd - gx[i]).abs());
        }
        let norm = gx.iter().map(|v| v.abs()).fold(0.0, f64::max);
        assert!(norm > 1e-3, "{method}: trivial gradient");
        assert!(
            worst < 1e-8,
            "{method}: max |FD − analytic| = {worst:e} (max |g| {norm:e})"
        );
    }
}

/// T-RHG's gradient is the exact gradient of `φ` through the last T steps with
/// `y_{K−T}` held fixed: check that against finite differences.
#[test]
fn trhg_is_the_gradient_through_the_last_t_steps() {
    use bda_kernel::backend::{LowerStep, unrolled};
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let dim = 4;
    let mut h = head(&mut rng, dim);
    let x: Vec<f64> = (0..h.rows() * dim)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let c = cfg(Method::Trhg); // K = 4, T = 2
    let mut gx = vec![0.0; x.len()];
    task_hypergradient(&mut h, &x, &c, &mut gx).unwrap();
    // y_{K−T} at the unperturbed x.
    let dynamics = c.dynamics::<f64>();
    let mut y = vec![0.0; h.y_len()];
    let mut next = y.clone();
    for k in 1..=2 {
        let (wu, wl) = dynamics.weights(k);
        h.lower_step(&x, &y, wu, wl, &mut next).unwrap();
        std::mem::swap(&mut y, &mut next);
    }
    let mut phi = |xp: &Vec<f64>| {
        let mut tape = vec![y.clone(); 3];
        let (mut adj, mut out, mut g) = (y.clone(), y.clone(), vec![0.0; x.len()]);
        unrolled(
            &mut h, xp, &y, &dynamics, 2, None, &mut tape, &mut adj, &mut g, &mut out,
        )
        .unwrap()
    };
    let eps = 1e-5;
    for i in 0..x.len() {
        let (mut xp, mut xm) = (x.clone(), x.clone());
        xp[i] += eps;
        xm[i] -= eps;
        let fd = (phi(&xp) - phi(&xm)) / (2.0 * eps);
        assert!(
            (fd - gx[i]).abs() < 1e-8,
            "coordinate {i}: FD {fd} vs T-RHG {}",
            gx[i]
        );
    }
}

#[test]
fn truncation_changes_the_gradient_but_full_truncation_is_rhg() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let dim = 4;
    let mut h = head(&mut rng, dim);
    let x: Vec<f64> = (0..h.rows() * dim)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let grad = |h: &mut FeatureHead<f64>, c: HeadConfig| {
        let mut g = vec![0.0; x.len()];
        task_hypergradient(h, &x, &c, &mut g).unwrap();
        g
    };
    let rhg = grad(&mut h, cfg(Method::Rhg));
    let t2 = grad(&mut h, cfg(Method::Trhg));
    let t4 = grad(
        &mut h,
        HeadConfig {
            truncate: Some(4),
            ..cfg(Method::Trhg)
        },
    );
    assert_ne!(rhg, t2);
    assert_eq!(rhg, t4);
}

/// 9×9 images: 9 → 5 → 3 → 2 → 1 exercises the ceil-mode pools; 11 images span two chunks.
const TINY: Arch = Arch {
    channels: 3,
    side: 9,
    blocks: 4,
};

#[test]
fn conv4_backward_matches_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let n = 11;
    let params: Vec<f64> = TINY.init(&mut rng);
    let imgs: Vec<f64> = (0..n * TINY.pixels()).map(|_| rng.random()).collect();
    let r: Vec<f64> = (0..n * TINY.features())
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let loss = |p: &[f64]| {
        let (f, _) = Conv4 {
            arch: TINY,
            params: p,
        }
        .forward(&imgs, n);
        f.iter().zip(&r).map(|(a, b)| a * b).sum::<f64>()
    };
    let net = Conv4 {
        arch: TINY,
        params: &params,
    };
    let (_, tape) = net.forward(&imgs, n);
    let g = net.backward(&tape, &r);
    let eps = 1e-6;
    let mut worst: f64 = 0.0;
    for i in 0..params.len() {
        let mut p = params.clone();
        p[i] += eps;
        let lp = loss(&p);
        p[i] -= 2.0 * eps;
        let lm = loss(&p);
        let fd = (lp - lm) / (2.0 * eps);
        worst = worst.max((fd - g[i]).abs() / (1.0 + fd.abs()));
    }
    assert!(worst < 1e-6, "max relative error {worst:e}");
}

fn tasks(rng: &mut ChaCha8Rng, arch: Arch, count: usize) -> Vec<Task> {
    (0..count)
        .map(|_| Task::synthetic(3, 2, 2, arch.pixels(), rng))
        .collect()
}

#[test]
fn meta_gradient_matches_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let params: Vec<f64> = TINY.init(&mut rng);
    let ts = tasks(&mut rng, TINY, 3);
    for method in [Method::Bda, Method::Rhg] {
        let c = HeadConfig {
            lr: 1.0,
            ..cfg(method)
        };
        let g = meta_gradient(TINY, &params, &ts, &c).unwrap();
        let eps = 1e-6;
        let mut worst: f64 = 0.0;
        for i in (0..params.len()).step_by(7) {
            let mut p = params.clone();
            p[i] += eps;
            let lp = meta_gradient(TINY, &p, &ts, &c).unwrap().loss;
            p[i] -= 2.0 * eps;
            let lm = meta_gradient(TINY, &p, &ts, &c).unwrap().loss;
            let fd = (lp - lm) / (2.0 * eps);
            worst = worst.max((fd - g.grad[i]).abs() / (1e-3 + fd.abs()));
        }
        assert!(worst < 1e-5, "{method}: max relative error {worst:e}");
    }
}

#[test]
fn meta_gradient_is_the_same_on_one_and_two_threads() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let arch = Arch {
        channels: 4,
        side: 12,
        blocks: 4,
    };
    let params: Vec<f32> = arch.init(&mut rng);
    let ts = tasks(&mut rng, arch, 4);
    let c = cfg(Method::Bda);
    let run = |threads| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| meta_gradient(arch, &params, &ts, &c).unwrap())
    };
    let (a, b) = (run(1), run(2));
    assert_eq!(a.loss.to_bits(), b.loss.to_bits());
    assert!(
        a.grad
            .iter()
            .zip(&b.grad)
            .all(|(u, v)| u.to_bits() == v.to_bits())
    );
}

/// Reordering the images of a batch reorders their features (batch-norm statistics do not
/// depend on the order): no image's features leak into another's slot across chunks.
#[test]
fn conv4_features_follow_their_images() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let arch = Arch {
        channels: 3,
        side: 28,
        blocks: 4,
    };
    let n = 19;
    let params: Vec<f64> = arch.init(&mut rng);
    let d = arch.pixels();
    let imgs: Vec<f64> = (0..n * d).map(|_| rng.random()).collect();
    let perm: Vec<usize> = (0..n).map(|i| (i * 7 + 3) % n).collect();
    let permuted: Vec<f64> = perm
        .iter()
        .flat_map(|&i| imgs[i * d..(i + 1) * d].to_vec())
        .collect();
    let net = Conv4 {
        arch,
        params: &params,
    };
    let (f, _) = net.forward(&imgs, n);
    let (g, _) = net.forward(&permuted, n);
    let nf = arch.features();
    assert_eq!(nf, 12);
    for (j, &i) in perm.iter().enumerate() {
        for k in 0..nf {
            assert!(
                (f[i * nf + k] - g[j * nf + k]).abs() < 1e-9,
                "image {i} feature {k}"
            );
        }
    }
}
