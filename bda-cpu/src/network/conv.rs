//! The three products of a 3×3 convolution (padding 1, no bias) on one task's maps, in the
//! layout `[channel][image·s²]`: output, weight gradient and input gradient, each as
//! im2col + GEMM over groups of images whose columns fit the cache (the backbone's
//! [`group_size`]). The tangent passes of [`super::block`] call them twice each, once per
//! term of the product rule.

use crate::conv4::ops::{UNCAPPED, col2im, group_size, groups, im2col};
use crate::linalg::{Float, gemm};

/// One convolution's geometry: `c_in → ch` channels on `n` maps of `s × s`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Conv {
    pub c_in: usize,
    pub ch: usize,
    pub s: usize,
    pub n: usize,
}

impl Conv {
    fn hw(&self) -> usize {
        self.s * self.s
    }
    fn kk(&self) -> usize {
        self.c_in * 9
    }
    /// `(i0, g)` of each group of images.
    fn groups<T>(&self) -> impl Iterator<Item = (usize, usize)> + use<T> {
        groups(self.n, group_size::<T>(self.kk(), self.hw(), UNCAPPED))
    }

    /// `z ← beta·z + W ⊛ x` (`w`: `[ch][c_in·9]`, `x`: `[c_in][n·s²]`, `z`: `[ch][n·s²]`).
    pub fn forward<T: Float>(&self, w: &[T], x: &[T], beta: T, z: &mut [T], cols: &mut Vec<T>) {
        let (hw, kk, cols_n) = (self.hw(), self.kk(), self.n * self.hw());
        for (i0, g) in self.groups::<T>() {
            cols.resize(kk * g * hw, T::zero());
            im2col(x, self.c_in, self.n, self.s, (i0, g), cols);
            #[rustfmt::skip]
            gemm(self.ch, kk, g * hw, T::one(), w, kk, 1, cols, g * hw, 1,
                 beta, &mut z[i0 * hw..], cols_n, 1);
        }
    }

    /// `gw += dz ⋆ x`: the weight gradient for output gradient `dz` and input `x`.
    pub fn weight_grad<T: Float>(&self, dz: &[T], x: &[T], gw: &mut [T], cols: &mut Vec<T>) {
        let (hw, kk, cols_n) = (self.hw(), self.kk(), self.n * self.hw());
        for (i0, g) in self.groups::<T>() {
            cols.resize(kk * g * hw, T::zero());
            im2col(x, self.c_in, self.n, self.s, (i0, g), cols);
            #[rustfmt::skip]
            gemm(self.ch, g * hw, kk, T::one(), &dz[i0 * hw..], cols_n, 1, cols, 1, g * hw,
                 T::one(), gw, kk, 1);
        }
    }

    /// `dx += Wᵀ ⊛ dz`: the input gradient.
    pub fn input_grad<T: Float>(&self, w: &[T], dz: &[T], dx: &mut [T], cols: &mut Vec<T>) {
        let (hw, kk, cols_n) = (self.hw(), self.kk(), self.n * self.hw());
        for (i0, g) in self.groups::<T>() {
            cols.resize(kk * g * hw, T::zero());
            #[rustfmt::skip]
            gemm(kk, self.ch, g * hw, T::one(), w, 1, kk, &dz[i0 * hw..], cols_n, 1,
                 T::zero(), cols, g * hw, 1);
            col2im(cols, self.c_in, self.n, self.s, (i0, g), dx);
        }
    }
}
