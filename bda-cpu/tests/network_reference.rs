//! The kernel's whole-network reference (`bda_kernel::fewshot::Network`, the lower level of
//! the MAML family) against the CPU backbone in `f64` (`conv4::Conv4<f64>` with a linear head
//! written out here): the same loss and the same gradient of every weight, grey and RGB, odd
//! sides (ceil-mode pools). This pins the reference's layout and conventions to the
//! backbone the commands train.

use bda_cpu::conv4::Conv4;
use bda_kernel::fewshot::{Conv4Shape, Network};
use bda_testkit::instance::network_weights;
use bda_testkit::{Rng, rel_err};

fn check(shape: Conv4Shape, seed: u64) {
    let ways = 3;
    let net = Network { shape, ways };
    let mut r = Rng::new(seed);
    let y = network_weights(&net, &mut r);
    let labels: Vec<u8> = (0..7).map(|i| (i % ways) as u8).collect();
    let n = labels.len();
    let images: Vec<f64> = (0..n * shape.pixels())
        .map(|_| f64::from(r.range(0.0, 1.0)))
        .collect();
    let mut want = vec![0.0; y.len()];
    let want_loss = net.loss_grad(&y, &images, &labels, Some(&mut want));

    // The CPU backbone, then the head: logits = F·Wᵀ + b, mean cross-entropy.
    let np = shape.num_params();
    let conv = Conv4 {
        arch: shape,
        params: &y[..np],
    };
    let (feats, tape) = conv.forward(&images, n);
    let reference = Network::features(&shape, &y[..np], &images, n);
    assert!(rel_err(&feats, &reference) < 1e-13, "features");
    let nf = shape.features();
    let (w, b) = y[np..].split_at(ways * nf);
    let mut loss = 0.0;
    let mut got = vec![0.0; y.len()];
    let mut dfeats = vec![0.0; n * nf];
    for (i, &label) in labels.iter().enumerate() {
        let f = &feats[i * nf..(i + 1) * nf];
        let z: Vec<f64> = (0..ways)
            .map(|k| (0..nf).map(|j| w[k * nf + j] * f[j]).sum::<f64>() + b[k])
            .collect();
        let top = z.iter().cloned().fold(f64::MIN, f64::max);
        let s: f64 = z.iter().map(|v| (v - top).exp()).sum();
        loss += (s.ln() + top - z[label as usize]) / n as f64;
        for k in 0..ways {
            let g = ((z[k] - top).exp() / s - f64::from(u8::from(k == label as usize))) / n as f64;
            got[np + ways * nf + k] += g;
            for j in 0..nf {
                got[np + k * nf + j] += g * f[j];
                dfeats[i * nf + j] += g * w[k * nf + j];
            }
        }
    }
    got[..np].copy_from_slice(&conv.backward(&tape, &dfeats));
    println!("{shape:?}: loss {loss} (reference {want_loss})");
    assert!((loss - want_loss).abs() < 1e-12 * want_loss.abs());
    let e = rel_err(&got, &want);
    println!("{shape:?}: gradient against the reference {e:.2e}");
    assert!(e < 1e-10, "{e:.3e}");
}

#[test]
fn the_reference_network_is_the_cpu_backbone_with_a_head() {
    check(
        Conv4Shape {
            channels: 4,
            in_channels: 1,
            side: 9,
            blocks: 3,
        },
        1,
    );
    check(
        Conv4Shape {
            channels: 3,
            in_channels: 3,
            side: 6,
            blocks: 2,
        },
        2,
    );
}
