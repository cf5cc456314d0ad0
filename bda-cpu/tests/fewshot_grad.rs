//! Gradient checks of the few-shot model against central finite differences (f64): the
//! head's hypergradient `∂φ_K/∂features` through the kernel's engine (the central check of
//! `bda_testkit::fd`), the conv4 backward pass on a tiny network, and the whole
//! meta-gradient. Plus determinism across thread counts.

use bda_cpu::conv4::{Conv4, init_params};
use bda_cpu::fewshot::meta_gradient;
use bda_kernel::backend::{Hypergrad, MethodConfig};
use bda_kernel::fewshot::{Batch, Conv4Shape, FeatureHead, HeadProcedure, Task};
use bda_kernel::{Method, Real};
use bda_testkit::fd::check_method;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// K = 4 steps of size 0.5, T = 2, μ = α = 0.5.
fn config(method: Method) -> MethodConfig<f64> {
    MethodConfig {
        truncate: Some(2),
        ..MethodConfig::new(method, 4, 0.5)
    }
}

fn procedure<T: Real>(method: Method, step: f64) -> HeadProcedure<T> {
    let spec = MethodConfig {
        s_u: step,
        s_l: step,
        ..config(method)
    }
    .build()
    .unwrap();
    HeadProcedure {
        spec: spec.cast().unwrap(),
        l2: T::from_f64(0.01),
        network: None,
    }
}

/// A 3-way head with 2 support and 3 query images per class and `dim` features, and random
/// features for it.
fn head_and_features(seed: u64, dim: usize) -> (FeatureHead<f64>, Vec<f64>) {
    let (ways, shots, queries) = (3, 2, 3);
    let lab = |per: usize| {
        (0..ways)
            .flat_map(|c| std::iter::repeat_n(c as u8, per))
            .collect::<Vec<_>>()
    };
    let h = FeatureHead::new(dim, ways, lab(shots), lab(queries), 0.01);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let x = (0..h.rows() * dim)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    (h, x)
}

#[test]
fn head_hypergradients_match_finite_differences() {
    // BDA and RHG: the gradient of φ_K; T-RHG: the gradient through the last T steps with
    // y_{K−T} held fixed.
    for method in [Method::Bda, Method::Rhg, Method::Trhg] {
        let (h, x) = head_and_features(1, 5);
        let y0 = vec![0.0; h.y_len()];
        let (g, err) = check_method(
            || h.clone(),
            Hypergrad::unrolled,
            &config(method),
            &x,
            &y0,
            1e-5,
            x.len(),
        );
        assert!(
            g.iter().any(|v| v.abs() > 1e-3),
            "{method}: trivial gradient"
        );
        assert!(err < 1e-8, "{method}: rel err {err:e}");
    }
}

#[test]
fn truncation_changes_the_gradient_but_full_truncation_is_rhg() {
    let (h, x) = head_and_features(2, 4);
    let grad = |c: MethodConfig<f64>| {
        let mut h = h.clone();
        let mut hg = Hypergrad::unrolled(&mut h, c.build().unwrap()).unwrap();
        let (y0, mut y, mut g) = (
            vec![0.0; h.y_len()],
            vec![0.0; h.y_len()],
            vec![0.0; x.len()],
        );
        hg.hypergradient(&mut h, &x, &y0, &mut g, &mut y).unwrap();
        g
    };
    let rhg = grad(config(Method::Rhg));
    let t2 = grad(config(Method::Trhg));
    let t4 = grad(MethodConfig {
        truncate: Some(4),
        ..config(Method::Trhg)
    });
    assert_ne!(rhg, t2);
    assert_eq!(rhg, t4);
}

/// 9×9 images: 9 → 5 → 3 → 2 → 1 exercises the ceil-mode pools; 11 images span two chunks.
const TINY: Conv4Shape = Conv4Shape {
    channels: 3,
    in_channels: 1,
    side: 9,
    blocks: 4,
};

#[test]
fn conv4_backward_matches_finite_differences() {
    // Grey input: block 0's convolution (9 multiply-adds per output) is recomputed, the
    // others are stored; RGB input: all are stored; 4 channels: wider stored blocks, run
    // forward in the Winograd domain (odd sides: padded tiles); 4 channels on 20×20
    // (20 → 10 → 5 → 3 → 2): block 1's backward pass in the Winograd domain too.
    for arch in [
        TINY,
        Conv4Shape {
            in_channels: 3,
            ..TINY
        },
        Conv4Shape {
            channels: 4,
            ..TINY
        },
        Conv4Shape {
            channels: 4,
            side: 20,
            ..TINY
        },
    ] {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let n = 11;
        let params: Vec<f64> = init_params(&arch, &mut rng);
        let imgs: Vec<f64> = (0..n * arch.pixels()).map(|_| rng.random()).collect();
        let r: Vec<f64> = (0..n * arch.features())
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let loss = |p: &[f64]| {
            let (f, _) = Conv4 { arch, params: p }.forward(&imgs, n);
            f.iter().zip(&r).map(|(a, b)| a * b).sum::<f64>()
        };
        let net = Conv4 {
            arch,
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
        assert!(worst < 1e-6, "{arch:?}: max relative error {worst:e}");
    }
}

/// RGB input (channel-major images): keeping only channel 2's weights in block 0 gives the
/// features of the one-channel network on the images' third planes. A mixed-up layout
/// (channels or images interleaved wrongly, across the two chunks of 11 images) fails.
#[test]
fn rgb_input_is_channel_major() {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let rgb = Conv4Shape {
        in_channels: 3,
        ..TINY
    };
    let grey = TINY;
    let n = 11;
    let mut p3: Vec<f64> = init_params(&rgb, &mut rng);
    let (w3, g3, _) = rgb.offsets(0);
    let (w1, g1, _) = grey.offsets(0);
    let mut p1 = vec![0.0; grey.num_params()];
    for co in 0..rgb.channels {
        for ci in 0..3 {
            for k in 0..9 {
                let v = &mut p3[w3 + co * 27 + ci * 9 + k];
                if ci == 2 {
                    p1[w1 + co * 9 + k] = *v;
                } else {
                    *v = 0.0;
                }
            }
        }
    }
    p1[g1..].copy_from_slice(&p3[g3..]);
    let imgs: Vec<f64> = (0..n * rgb.pixels()).map(|_| rng.random()).collect();
    let plane = grey.pixels();
    let blue: Vec<f64> = imgs
        .chunks_exact(rgb.pixels())
        .flat_map(|img| img[2 * plane..].to_vec())
        .collect();
    let (f3, _) = Conv4 {
        arch: rgb,
        params: &p3,
    }
    .forward(&imgs, n);
    let (f1, _) = Conv4 {
        arch: grey,
        params: &p1,
    }
    .forward(&blue, n);
    let worst = f3
        .iter()
        .zip(&f1)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(worst < 1e-12, "max difference {worst:e}");
}

/// `count` 3-way tasks of 2 support and 2 query random images per class.
fn tasks(rng: &mut ChaCha8Rng, arch: Conv4Shape, count: usize) -> Vec<Task> {
    let labels = vec![0, 0, 1, 1, 2, 2];
    let mut images = || -> Vec<f32> { (0..6 * arch.pixels()).map(|_| rng.random()).collect() };
    (0..count)
        .map(|_| Task {
            ways: 3,
            support: images(),
            support_labels: labels.clone(),
            query: images(),
            query_labels: labels.clone(),
        })
        .collect()
}

#[test]
fn meta_gradient_matches_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let params: Vec<f64> = init_params(&TINY, &mut rng);
    let ts = tasks(&mut rng, TINY, 3);
    for method in [Method::Bda, Method::Rhg] {
        let c = procedure(method, 1.0);
        let at = |params: &[f64]| {
            let batch = Batch {
                shape: TINY,
                params,
                tasks: &ts,
                head: &c,
            };
            meta_gradient(batch).unwrap()
        };
        let g = at(&params);
        let eps = 1e-6;
        let mut worst: f64 = 0.0;
        for i in (0..params.len()).step_by(7) {
            let mut p = params.clone();
            p[i] += eps;
            let lp = at(&p).loss;
            p[i] -= 2.0 * eps;
            let lm = at(&p).loss;
            let fd = (lp - lm) / (2.0 * eps);
            worst = worst.max((fd - g.grad[i]).abs() / (1e-3 + fd.abs()));
        }
        assert!(worst < 1e-5, "{method}: max relative error {worst:e}");
    }
}

#[test]
fn meta_gradient_is_the_same_on_one_and_two_threads() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let arch = Conv4Shape {
        channels: 4,
        in_channels: 1,
        side: 12,
        blocks: 4,
    };
    let params: Vec<f32> = init_params(&arch, &mut rng);
    let ts = tasks(&mut rng, arch, 4);
    let c = procedure(Method::Bda, 0.5);
    let batch = Batch {
        shape: arch,
        params: &params,
        tasks: &ts,
        head: &c,
    };
    let run = |threads| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| meta_gradient(batch).unwrap())
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
    let arch = Conv4Shape {
        channels: 3,
        in_channels: 1,
        side: 28,
        blocks: 4,
    };
    let n = 19;
    let params: Vec<f64> = init_params(&arch, &mut rng);
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
