//! One block of the backbone — convolution, batch norm over the task's images, ReLU, 2×2
//! max-pool with ceil mode — forward, backward, and their tangents along a direction `v`
//! of the weights (the R-operator): the tangent forward pass carries `ż = v_W ⊛ x + W ⊛ ẋ`
//! through batch norm, and the tangent backward pass differentiates every product of the
//! backward pass once, so that the weights' tangent gradient is `∇²L·v`.
//!
//! Batch norm per channel, `m` entries: `x̂ = (z − μ)·ι` with `ι = (σ² + ε)^{-1/2}`,
//! `a = γx̂ + β`. Tangent: with `D = ι(ż − μ̇)` and `c = mean(x̂·D)`, `x̂̇ = D − c·x̂` and
//! `ι̇ = −c·ι`. Adjoint: `dz = γι(da − (Σda + x̂·Σda·x̂)/m)`; its tangent follows by the
//! product rule (`backward_tangent`).
//!
//! Maps are `[channel][image·s²]`; a pooled output records the map entry it took, or
//! [`OFF`] when the ReLU stopped it (no gradient flows).

use super::conv::{Conv, Scratch};
use crate::conv4::ops::bn_relu_pool;
use crate::linalg::Float;

/// The pooled output took no entry: the window's maximum was not positive.
pub(super) const OFF: u32 = u32::MAX;

/// One block's weights, or a direction in them.
#[derive(Clone, Copy)]
pub(super) struct Weights<'a, T> {
    /// `[ch][c_in·9]`.
    pub w: &'a [T],
    pub gamma: &'a [T],
    pub beta: &'a [T],
}

/// What the backward pass needs of the forward pass.
pub(super) struct Tape<T> {
    xhat: Vec<T>,
    /// `ι` per channel.
    inv: Vec<T>,
    /// Per pooled output, its map entry or [`OFF`].
    arg: Vec<u32>,
}

/// What the tangent backward pass needs of the tangent forward pass.
pub(super) struct TangentTape<T> {
    xhat_dot: Vec<T>,
    /// `c` per channel (`ι̇ = −c·ι`).
    c: Vec<T>,
}

/// `Σ_k f(k)` over a channel's `m` entries, in `f64`, with eight independent
/// accumulators (a fixed order; one chain of additions would wait on each).
fn sum(m: usize, f: impl Fn(usize) -> f64) -> f64 {
    let mut acc = [0.0f64; 8];
    let full = m / 8 * 8;
    for k in (0..full).step_by(8) {
        for (j, a) in acc.iter_mut().enumerate() {
            *a += f(k + j);
        }
    }
    (full..m).map(f).sum::<f64>() + acc.iter().sum::<f64>()
}

/// The forward pass: pooled output `[ch][n·so²]` and the tape.
pub(super) fn forward<T: Float>(
    conv: Conv,
    p: Weights<'_, T>,
    x: &[T],
    sc: &mut Scratch<T>,
) -> (Vec<T>, Tape<T>) {
    let Conv { ch, s, n, .. } = conv;
    let (hw, so) = (s * s, s.div_ceil(2));
    let m = n * hw;
    let mut xhat = vec![T::zero(); ch * m];
    conv.forward(p.w, x, false, &mut xhat, sc);
    let mut inv = vec![T::zero(); ch];
    for (o, row) in xhat.chunks_exact_mut(m).enumerate() {
        let mean = sum(m, |k| row[k].to_f64()) / m as f64;
        let var = sum(m, |k| (row[k].to_f64() - mean).powi(2)) / m as f64;
        let i = 1.0 / (var + bda_kernel::fewshot::BN_EPS).sqrt();
        let (mean, i) = (T::from_f64(mean), T::from_f64(i));
        row.iter_mut().for_each(|z| *z = (*z - mean) * i);
        inv[o] = i;
    }
    let q = so * so;
    let mut out = vec![T::zero(); ch * n * q];
    let mut arg = vec![OFF; out.len()];
    for (j, (o, a)) in out
        .chunks_exact_mut(q)
        .zip(arg.chunks_exact_mut(q))
        .enumerate()
    {
        // Map j = channel c's image i: its entries start at c·m + i·s².
        let (c, i) = (j / n, j % n);
        let base = c * m + i * hw;
        let affine = (p.gamma[c], p.beta[c]);
        bn_relu_pool(&xhat[base..base + hw], s, affine, o, a, base as u32);
        // A window whose maximum the ReLU stopped passes no gradient.
        for (v, k) in o.iter().zip(a.iter_mut()) {
            if *v <= T::zero() {
                *k = OFF;
            }
        }
    }
    (out, Tape { xhat, inv, arg })
}

/// The tangent forward pass along `v` (and the input's tangent `x_dot`, `None` for the
/// images): the pooled output's tangent and the tangent tape.
pub(super) fn forward_tangent<T: Float>(
    conv: Conv,
    (p, v): (Weights<'_, T>, Weights<'_, T>),
    x: &[T],
    x_dot: Option<&[T]>,
    tape: &Tape<T>,
    sc: &mut Scratch<T>,
) -> (Vec<T>, TangentTape<T>) {
    let Conv { ch, s, n, .. } = conv;
    let m = n * s * s;
    let mut d = vec![T::zero(); ch * m];
    conv.forward(v.w, x, false, &mut d, sc);
    if let Some(x_dot) = x_dot {
        conv.forward(p.w, x_dot, true, &mut d, sc);
    }
    let mut c = vec![T::zero(); ch];
    for (o, row) in d.chunks_exact_mut(m).enumerate() {
        let xh = &tape.xhat[o * m..][..m];
        let mu_dot = T::from_f64(sum(m, |k| row[k].to_f64()) / m as f64);
        row.iter_mut()
            .for_each(|z| *z = (*z - mu_dot) * tape.inv[o]);
        let co = T::from_f64(sum(m, |k| (xh[k] * row[k]).to_f64()) / m as f64);
        row.iter_mut().zip(xh).for_each(|(z, &h)| *z -= co * h);
        c[o] = co;
    }
    let per = tape.arg.len() / ch;
    let out = tape
        .arg
        .iter()
        .enumerate()
        .map(|(j, &k)| {
            if k == OFF {
                return T::zero();
            }
            let (o, k) = (j / per, k as usize);
            v.gamma[o] * tape.xhat[k] + p.gamma[o] * d[k] + v.beta[o]
        })
        .collect();
    (out, TangentTape { xhat_dot: d, c })
}

/// The gradient at the map entries: each pooled output's gradient routed to its entry.
fn unpool<T: Float>(tape: &Tape<T>, dp: &[T]) -> Vec<T> {
    let mut da = vec![T::zero(); tape.xhat.len()];
    for (&k, &g) in tape.arg.iter().zip(dp) {
        if k != OFF {
            da[k as usize] = g;
        }
    }
    da
}

/// The gradient at the convolution's output from the pooled output's gradient `dp`
/// (through the pool, the ReLU and batch norm), adding γ's and β's gradients into `g`
/// when given.
fn conv_grad<T: Float>(
    conv: Conv,
    gamma: &[T],
    tape: &Tape<T>,
    dp: &[T],
    mut g: Option<(&mut [T], &mut [T])>,
) -> Vec<T> {
    let m = conv.n * conv.s * conv.s;
    let mut dz = unpool(tape, dp);
    for (o, row) in dz.chunks_exact_mut(m).enumerate() {
        let xh = &tape.xhat[o * m..][..m];
        let sd = sum(m, |k| row[k].to_f64());
        let sdx = sum(m, |k| (row[k] * xh[k]).to_f64());
        if let Some((gg, gb)) = g.as_mut() {
            gg[o] += T::from_f64(sdx);
            gb[o] += T::from_f64(sd);
        }
        let k0 = gamma[o] * tape.inv[o];
        let (sd, sdx) = (T::from_f64(sd / m as f64), T::from_f64(sdx / m as f64));
        row.iter_mut()
            .zip(xh)
            .for_each(|(d, &h)| *d = k0 * (*d - sd - h * sdx));
    }
    dz
}

/// The backward pass from the pooled output's gradient `dp`: adds the weights' gradients
/// into `g` (`w`, `gamma`, `beta` slices of the whole gradient) when given, and returns the
/// input's gradient when `input` is set.
pub(super) fn backward<T: Float>(
    conv: Conv,
    p: Weights<'_, T>,
    (x, tape): (&[T], &Tape<T>),
    dp: &[T],
    g: Option<(&mut [T], &mut [T], &mut [T])>,
    input: bool,
    sc: &mut Scratch<T>,
) -> Option<Vec<T>> {
    let (gw, gbn) = match g {
        Some((w, gamma, beta)) => (Some(w), Some((gamma, beta))),
        None => (None, None),
    };
    let dz = conv_grad(conv, p.gamma, tape, dp, gbn);
    if let Some(gw) = gw {
        conv.weight_grad(&dz, x, gw, sc);
    }
    input.then(|| {
        let mut dx = vec![T::zero(); conv.c_in * conv.n * conv.s * conv.s];
        conv.input_grad(p.w, &dz, &mut dx, sc);
        dx
    })
}

/// The tangent of [`backward`] along `v`, from the pooled output's gradient `dp` (the
/// primal pass's) and its tangent `dp_dot`: adds the weights' tangent gradients into `g`
/// and returns the tangent of the input's gradient for a block with an input tangent
/// (every block but the first; the input's gradient itself is the primal pass's `dp` of
/// the block below).
pub(super) fn backward_tangent<T: Float>(
    conv: Conv,
    (p, v): (Weights<'_, T>, Weights<'_, T>),
    (x, x_dot): (&[T], Option<&[T]>),
    (tape, tt): (&Tape<T>, &TangentTape<T>),
    (dp, dp_dot): (&[T], &[T]),
    g: (&mut [T], &mut [T], &mut [T]),
    sc: &mut Scratch<T>,
) -> Option<Vec<T>> {
    let m = conv.n * conv.s * conv.s;
    let mut dz = unpool(tape, dp);
    let mut dz_dot = unpool(tape, dp_dot);
    for o in 0..conv.ch {
        let (xh, xd) = (&tape.xhat[o * m..][..m], &tt.xhat_dot[o * m..][..m]);
        let (da, dd) = (&mut dz[o * m..][..m], &mut dz_dot[o * m..][..m]);
        let sd = sum(m, |k| da[k].to_f64());
        let sdx = sum(m, |k| (da[k] * xh[k]).to_f64());
        let sd_dot = sum(m, |k| dd[k].to_f64());
        let sdx_dot = sum(m, |k| (dd[k] * xh[k] + da[k] * xd[k]).to_f64());
        g.1[o] += T::from_f64(sdx_dot);
        g.2[o] += T::from_f64(sd_dot);
        let inv = tape.inv[o];
        let k0 = p.gamma[o] * inv;
        let k0_dot = v.gamma[o] * inv - p.gamma[o] * inv * tt.c[o];
        let mean = |s: f64| T::from_f64(s / m as f64);
        let (sd, sdx, sd_dot, sdx_dot) = (mean(sd), mean(sdx), mean(sd_dot), mean(sdx_dot));
        for k in 0..m {
            let r = da[k] - sd - xh[k] * sdx;
            dd[k] = k0_dot * r + k0 * (dd[k] - sd_dot - xd[k] * sdx - xh[k] * sdx_dot);
            da[k] = k0 * r;
        }
    }
    conv.weight_grad(&dz_dot, x, g.0, sc);
    let x_dot = x_dot?;
    conv.weight_grad(&dz, x_dot, g.0, sc);
    let mut dx_dot = vec![T::zero(); conv.c_in * m];
    conv.input_grad(v.w, &dz, &mut dx_dot, sc);
    conv.input_grad(p.w, &dz_dot, &mut dx_dot, sc);
    Some(dx_dot)
}
