//! Winograd against the direct (im2col) convolution, to rounding in `f64`.

use super::super::ops::UNCAPPED;
use super::*;
use rand::{Rng, SeedableRng};

/// The direct 3×3 convolution (padding 1) of a chunk, the backbone's im2col path: the
/// reference.
fn im2col_conv<T: Float>(
    w: &[T],
    c_in: usize,
    ch: usize,
    s: usize,
) -> super::super::ConvChunk<'_, T> {
    super::super::ConvChunk {
        w,
        c_in,
        s,
        ch,
        u: None,
        cap: UNCAPPED,
    }
}

/// [`im2col_conv`] applied to the chunk `xc`.
fn direct<T: Float>(w: &[T], xc: &[T], c_in: usize, ch: usize, s: usize) -> Vec<T> {
    let mut z = Vec::new();
    im2col_conv(w, c_in, ch, s).run(xc, &mut Default::default(), &mut z);
    z
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Forward equals the direct convolution, and the backward pass is its adjoint:
/// `⟨dz, conv(w, x)⟩` differentiated in `w` and `x` (by linearity, `conv(dw, x)` and
/// `conv(w, dx)`), on even and odd sides and in groups of 1 image.
#[test]
fn winograd_is_the_direct_convolution_and_its_adjoint() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    for (s, c_in, ch, len, cap) in [
        (6, 3, 5, 3, UNCAPPED),
        (7, 4, 2, 2, 1),
        (1, 2, 3, 2, UNCAPPED),
        (4, 5, 4, 3, 2),
    ] {
        let hw = s * s;
        let w: Vec<f64> = (0..ch * c_in * 9)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let x: Vec<f64> = (0..c_in * len * hw)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let dz: Vec<f64> = (0..ch * len * hw)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let u = transform_weights(&w, ch, c_in);
        let conv = WinogradConv {
            u: &u,
            c_in,
            s,
            ch,
            cap,
        };
        let mut sc = Scratch::default();
        let mut z = vec![f64::NAN; ch * len * hw];
        conv.run_into(&x, &mut sc, &mut z);
        let zr = direct(&w, &x, c_in, ch, s);
        let err = z
            .iter()
            .zip(&zr)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(err < 1e-12, "s {s}: forward differs by {err:e}");
        let mut du = vec![0.0; XI * ch * c_in];
        let mut din = vec![0.0; x.len()];
        conv.backward(&x, &dz, &mut sc, &mut du, Some(&mut din));
        let dw = transform_weights_adjoint(&du, ch, c_in);
        // ⟨dz, conv(e, x)⟩ = dw·e for every direction e of the weights, and the same for x.
        let e: Vec<f64> = (0..w.len()).map(|_| rng.random_range(-1.0..1.0)).collect();
        let f: Vec<f64> = (0..x.len()).map(|_| rng.random_range(-1.0..1.0)).collect();
        let (lw, rw) = (dot(&dz, &direct(&e, &x, c_in, ch, s)), dot(&dw, &e));
        let (lx, rx) = (dot(&dz, &direct(&w, &f, c_in, ch, s)), dot(&din, &f));
        assert!(
            (lw - rw).abs() < 1e-10 * lw.abs().max(1.0),
            "s {s}: weights {lw} vs {rw}"
        );
        assert!(
            (lx - rx).abs() < 1e-10 * lx.abs().max(1.0),
            "s {s}: input {lx} vs {rx}"
        );
    }
}
