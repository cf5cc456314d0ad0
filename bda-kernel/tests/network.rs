//! The whole few-shot network as one function of every weight (`fewshot::Network`): its
//! gradient against central differences of the loss, its Hessian–vector products (the
//! reverse pass on dual numbers) against central differences of the gradient, and their
//! symmetry, in `f64` on small shapes — grey and RGB, odd sides (ceil-mode pools), one and
//! three blocks.

use bda_kernel::fewshot::{Conv4Shape, Network};
use bda_testkit::fd::central_diff;
use bda_testkit::instance::network_weights;
use bda_testkit::{Rng, rel_err};

fn shapes() -> [Conv4Shape; 2] {
    [
        Conv4Shape {
            channels: 3,
            in_channels: 1,
            side: 7,
            blocks: 3,
        },
        Conv4Shape {
            channels: 2,
            in_channels: 3,
            side: 5,
            blocks: 1,
        },
    ]
}

/// Weights like an initialised network (γ near 1), images in [0, 1], 3 ways × 2 images.
fn instance(shape: Conv4Shape, seed: u64) -> (Network, Vec<f64>, Vec<f64>, Vec<u8>) {
    let net = Network { shape, ways: 3 };
    let mut r = Rng::new(seed);
    let y = network_weights(&net, &mut r);
    let labels: Vec<u8> = (0..6).map(|i| (i % 3) as u8).collect();
    let images = (0..labels.len() * shape.pixels())
        .map(|_| f64::from(r.range(0.0, 1.0)))
        .collect();
    (net, y, images, labels)
}

fn grad(net: &Network, y: &[f64], images: &[f64], labels: &[u8]) -> Vec<f64> {
    let mut g = vec![0.0; y.len()];
    net.loss_grad(y, images, labels, Some(&mut g));
    g
}

#[test]
fn the_gradient_matches_central_differences() {
    for shape in shapes() {
        let (net, y, images, labels) = instance(shape, 1);
        let g = grad(&net, &y, &images, &labels);
        let fd = central_diff(
            |y| net.loss_grad(y, &images, &labels, None),
            &y,
            1e-6,
            y.len(),
        );
        let e = rel_err(&g, &fd);
        println!("{shape:?}: gradient against central differences {e:.2e}");
        assert!(e < 1e-7, "{e:.3e}");
    }
}

#[test]
fn hessian_vector_products_match_differences_of_the_gradient() {
    for shape in shapes() {
        let (net, y, images, labels) = instance(shape, 2);
        let mut r = Rng::new(3);
        let v: Vec<f64> = y.iter().map(|_| f64::from(r.range(-1.0, 1.0))).collect();
        let hv = net.hvp(&y, &v, &images, &labels);
        // (∇f(y + hv) − ∇f(y − hv)) / 2h
        let h = 1e-5;
        let at = |s: f64| -> Vec<f64> {
            let ys: Vec<f64> = y.iter().zip(&v).map(|(y, v)| y + s * v).collect();
            grad(&net, &ys, &images, &labels)
        };
        let (up, down) = (at(h), at(-h));
        let fd: Vec<f64> = up
            .iter()
            .zip(&down)
            .map(|(u, d)| (u - d) / (2.0 * h))
            .collect();
        let e = rel_err(&hv, &fd);
        println!("{shape:?}: H·v against differences of the gradient {e:.2e}");
        assert!(e < 1e-6, "{e:.3e}");
        // The dual pass leaves the gradient itself unchanged.
        assert!(hv.iter().any(|&x| x != 0.0));
    }
}

#[test]
fn the_hessian_is_symmetric() {
    for shape in shapes() {
        let (net, y, images, labels) = instance(shape, 4);
        let mut r = Rng::new(5);
        let u: Vec<f64> = y.iter().map(|_| f64::from(r.range(-1.0, 1.0))).collect();
        let v: Vec<f64> = y.iter().map(|_| f64::from(r.range(-1.0, 1.0))).collect();
        let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(a, b)| a * b).sum::<f64>();
        let (hu, hv) = (
            net.hvp(&y, &u, &images, &labels),
            net.hvp(&y, &v, &images, &labels),
        );
        let (a, b) = (dot(&u, &hv), dot(&v, &hu));
        println!("{shape:?}: uᵀHv = {a:.12}, vᵀHu = {b:.12}");
        assert!((a - b).abs() < 1e-10 * a.abs().max(1.0));
    }
}
