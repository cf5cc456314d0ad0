//! The three products of a 3×3 convolution (padding 1, no bias) on one task's maps, in the
//! layout `[channel][image·s²]`: output, weight gradient and input gradient. The paths are
//! the backbone's: Winograd F(2×2, 3×3) forward for at least `WINOGRAD_MIN_C_IN` input
//! channels and backward on maps at least `WINOGRAD_BACKWARD_MIN_SIDE` wide, im2col + GEMM
//! otherwise (the measurements behind both thresholds are in `conv4`). The tangent passes
//! of [`super::block`] call these products once per term of the product rule.

use crate::conv4::ops::{UNCAPPED, col2im, group_size, groups, im2col};
use crate::conv4::winograd::{
    Scratch as WinoScratch, WinogradConv, transform_weights, transform_weights_adjoint,
};
use crate::conv4::{WINOGRAD_BACKWARD_MIN_SIDE, WINOGRAD_MIN_C_IN};
use crate::linalg::{Float, gemm};

/// One convolution's geometry: `c_in → ch` channels on `n` maps of `s × s`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Conv {
    pub c_in: usize,
    pub ch: usize,
    pub s: usize,
    pub n: usize,
}

/// One pass's scratch for the products: im2col's columns, the Winograd transforms, an
/// output to add from, and the weights already taken to the Winograd domain in this pass.
#[derive(Default)]
pub(super) struct Scratch<T> {
    cols: Vec<T>,
    wino: WinoScratch<T>,
    out: Vec<T>,
    memo: Transforms<T>,
}

/// Weights already taken to the Winograd domain in this pass, by the `(address, length)`
/// of their slice. A pass borrows the weights and the direction for its whole length, so
/// an address names one content while the scratch lives (a scratch never outlives its
/// pass).
#[derive(Default)]
struct Transforms<T>(Vec<((usize, usize), Vec<T>)>);

impl<T: Float> Transforms<T> {
    /// `w` (`[ch][c_in·9]`) in the Winograd domain: transformed once per pass (a pass uses
    /// a block's weights up to four times, and the direction twice).
    fn get(&mut self, w: &[T], ch: usize, c_in: usize) -> &[T] {
        let key = (w.as_ptr() as usize, w.len());
        let at = match self.0.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                self.0.push((key, transform_weights(w, ch, c_in)));
                self.0.len() - 1
            }
        };
        &self.0[at].1
    }
}

impl Conv {
    fn hw(&self) -> usize {
        self.s * self.s
    }
    fn kk(&self) -> usize {
        self.c_in * 9
    }
    /// `(i0, g)` of each im2col group of images.
    fn groups<T>(&self) -> impl Iterator<Item = (usize, usize)> + use<T> {
        groups(self.n, group_size::<T>(self.kk(), self.hw(), UNCAPPED))
    }
    fn winograd_forward(&self) -> bool {
        self.c_in >= WINOGRAD_MIN_C_IN
    }
    fn winograd_backward(&self) -> bool {
        self.winograd_forward() && self.s >= WINOGRAD_BACKWARD_MIN_SIDE
    }
    fn winograd<'u, T>(&self, u: &'u [T]) -> WinogradConv<'u, T> {
        WinogradConv {
            u,
            c_in: self.c_in,
            s: self.s,
            ch: self.ch,
            cap: UNCAPPED,
        }
    }

    /// `z ← W ⊛ x`, or `z += W ⊛ x` with `add` (`w`: `[ch][c_in·9]`, `x`: `[c_in][n·s²]`,
    /// `z`: `[ch][n·s²]`).
    pub fn forward<T: Float>(&self, w: &[T], x: &[T], add: bool, z: &mut [T], sc: &mut Scratch<T>) {
        if self.winograd_forward() {
            let Scratch {
                wino, out, memo, ..
            } = sc;
            let wc = self.winograd(memo.get(w, self.ch, self.c_in));
            if add {
                out.resize(z.len(), T::zero());
                wc.run_into(x, wino, out);
                z.iter_mut().zip(out.iter()).for_each(|(z, &v)| *z += v);
            } else {
                wc.run_into(x, wino, z);
            }
            return;
        }
        let (hw, kk, cols_n) = (self.hw(), self.kk(), self.n * self.hw());
        let beta = if add { T::one() } else { T::zero() };
        for (i0, g) in self.groups::<T>() {
            sc.cols.resize(kk * g * hw, T::zero());
            im2col(x, self.c_in, self.n, self.s, (i0, g), &mut sc.cols);
            #[rustfmt::skip]
            gemm(self.ch, kk, g * hw, T::one(), w, kk, 1, &sc.cols, g * hw, 1,
                 beta, &mut z[i0 * hw..], cols_n, 1);
        }
    }

    /// `gw += dz ⋆ x`: the weight gradient for output gradient `dz` and input `x`.
    pub fn weight_grad<T: Float>(&self, dz: &[T], x: &[T], gw: &mut [T], sc: &mut Scratch<T>) {
        if self.winograd_backward() {
            let mut du = vec![T::zero(); 16 * self.ch * self.c_in];
            self.winograd(&[])
                .backward(x, dz, &mut sc.wino, Some(&mut du), None);
            let dw = transform_weights_adjoint(&du, self.ch, self.c_in);
            gw.iter_mut().zip(&dw).for_each(|(g, &d)| *g += d);
            return;
        }
        let (hw, kk, cols_n) = (self.hw(), self.kk(), self.n * self.hw());
        for (i0, g) in self.groups::<T>() {
            sc.cols.resize(kk * g * hw, T::zero());
            im2col(x, self.c_in, self.n, self.s, (i0, g), &mut sc.cols);
            #[rustfmt::skip]
            gemm(self.ch, g * hw, kk, T::one(), &dz[i0 * hw..], cols_n, 1, &sc.cols, 1, g * hw,
                 T::one(), gw, kk, 1);
        }
    }

    /// `dx += Wᵀ ⊛ dz`: the input gradient.
    pub fn input_grad<T: Float>(&self, w: &[T], dz: &[T], dx: &mut [T], sc: &mut Scratch<T>) {
        if self.winograd_backward() {
            let Scratch { wino, memo, .. } = sc;
            let u = memo.get(w, self.ch, self.c_in);
            self.winograd(u).backward(&[], dz, wino, None, Some(dx));
            return;
        }
        let (hw, kk, cols_n) = (self.hw(), self.kk(), self.n * self.hw());
        for (i0, g) in self.groups::<T>() {
            sc.cols.resize(kk * g * hw, T::zero());
            #[rustfmt::skip]
            gemm(kk, self.ch, g * hw, T::one(), w, 1, kk, &dz[i0 * hw..], cols_n, 1,
                 T::zero(), &mut sc.cols, g * hw, 1);
            col2im(&sc.cols, self.c_in, self.n, self.s, (i0, g), dx);
        }
    }
}
