//! Winograd against the direct (im2col) convolution: to rounding in `f64` on small shapes,
//! and in `f32` at a layer's real size.

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
        conv.backward(&x, &dz, &mut sc, Some(&mut du), Some(&mut din));
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

/// `max |a − b|` over `max |r|`: an error relative to the reference's largest value.
fn rel_err<A: Float, B: Float>(a: &[A], b: &[B], r: &[f64]) -> f64 {
    let scale = r.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let diff = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (x.to_f64() - y.to_f64()).abs())
        .fold(0.0, f64::max);
    diff / scale
}

/// Forward output, weight gradient and input gradient of one convolution.
type Outputs<T> = [Vec<T>; 3];

/// The im2col path's forward and backward passes on the chunk `x` with output gradient `dz`.
fn by_im2col<T: Float>(w: &[T], x: &[T], dz: &[T], dims: (usize, usize, usize)) -> Outputs<T> {
    let (c_in, ch, s) = dims;
    let conv = im2col_conv(w, c_in, ch, s);
    let mut sc = Default::default();
    let mut z = Vec::new();
    conv.run(x, &mut sc, &mut z);
    let mut din = vec![T::zero(); x.len()];
    let dw = conv.backward(x, dz, &mut sc, Some(&mut din));
    [z, dw, din]
}

/// `f32` at the sizes where the backbone runs Winograd with 64 channels in and 64 out:
/// 14 × 14 (Omniglot's block 1), 21 × 21 (block 2 on MiniImageNet at 64 channels; odd, so
/// with padded tiles) and 28 × 28 (two groups of images there). Three images of ReLU-like
/// inputs (half zeros, the rest in (0, 1)), PyTorch's initial weights, output gradients in
/// ±1. Forward output, weight gradient and input gradient are compared with the direct
/// convolution in `f64` of the same `f32` values and with the im2col path in `f32`,
/// relative to the largest reference value.
///
/// Measured (seed 21), largest over the three sizes: Winograd against `f64` (im2col
/// against `f64` in brackets), then Winograd against im2col: forward 3.2e-7 (3.7e-7),
/// 5.2e-7; weight gradient 5.8e-7 (3.1e-7), 6.3e-7; input gradient 3.8e-7 (1.9e-7),
/// 4.4e-7. The bounds in `F32_BOUNDS` are 1.3 to 1.4 times those (`f32` rounds to 6e-8
/// relative; a sum of 576 products loses a few units of it).
#[test]
fn winograd_in_f32_at_64_channels_is_the_im2col_convolution() {
    const F32_BOUNDS: [(f64, f64); 3] = [(4.5e-7, 7e-7), (8e-7, 8.5e-7), (5e-7, 6e-7)];
    let names = ["forward", "weight gradient", "input gradient"];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(21);
    let (c_in, ch, len) = (64, 64, 3);
    for s in [14, 21, 28] {
        let hw = s * s;
        let bound = 1.0 / ((c_in * 9) as f32).sqrt();
        let w: Vec<f32> = (0..ch * c_in * 9)
            .map(|_| rng.random_range(-bound..bound))
            .collect();
        let x: Vec<f32> = (0..c_in * len * hw)
            .map(|_| rng.random_range(-1.0f32..1.0).max(0.0))
            .collect();
        let dz: Vec<f32> = (0..ch * len * hw)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect();
        let wide = |v: &[f32]| v.iter().map(|&a| a as f64).collect::<Vec<f64>>();
        let reference = by_im2col(&wide(&w), &wide(&x), &wide(&dz), (c_in, ch, s));
        let im2col = by_im2col(&w, &x, &dz, (c_in, ch, s));
        let u = transform_weights(&w, ch, c_in);
        let conv = WinogradConv {
            u: &u,
            c_in,
            s,
            ch,
            cap: UNCAPPED,
        };
        let mut sc = Scratch::default();
        let mut z = vec![f32::NAN; ch * len * hw];
        conv.run_into(&x, &mut sc, &mut z);
        let mut du = vec![0.0f32; XI * ch * c_in];
        let mut din = vec![0.0f32; x.len()];
        conv.backward(&x, &dz, &mut sc, Some(&mut du), Some(&mut din));
        let winograd = [z, transform_weights_adjoint(&du, ch, c_in), din];
        for k in 0..3 {
            let r = &reference[k];
            let exact = rel_err(&winograd[k], r, r);
            let apart = rel_err(&winograd[k], &im2col[k], r);
            let im2col_exact = rel_err(&im2col[k], r, r);
            let (b_exact, b_apart) = F32_BOUNDS[k];
            assert!(
                exact <= b_exact && apart <= b_apart,
                "{s}×{s}, {}: Winograd {exact:.1e} from f64 (im2col {im2col_exact:.1e}), {apart:.1e} from im2col",
                names[k]
            );
        }
    }
}
