//! The shapes of a hyper-cleaning instance on the device, and the host image of its feature
//! matrix (see the layout in the parent module's docs).

use bda_kernel::hyperclean::{Classifier, HypercleanData};

use crate::GpuError;

/// Shapes of an instance (all validated to fit the 32-bit indices of the kernels and cuBLAS).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Dims {
    pub(crate) d: usize,
    pub(crate) c: usize,
    pub(crate) n_tr: usize,
    pub(crate) n_val: usize,
    pub(crate) n_all: usize,
    /// Row stride of `feats`: `d + 1` rounded up to a multiple of 4 (16-byte rows).
    pub(crate) ld: usize,
    /// `(d + 1)·c`.
    pub(crate) y_len: usize,
    /// `d·c`: the `W` part of a `y` buffer.
    pub(crate) n_w: usize,
    pub(crate) lambda: f32,
}

impl Dims {
    pub(crate) fn of(data: &HypercleanData<'_>) -> Result<Self, GpuError> {
        if data.classifier != Classifier::Linear {
            return Err(GpuError::Data(
                "this backend computes softmax regression; HypercleanMlpGpu computes the network",
            ));
        }
        Self::features(data)
    }

    /// The shapes of the features and samples (what the network's backend shares; `y_len`
    /// and `n_w` are softmax regression's), checked like [`Dims::of`].
    pub(crate) fn features(data: &HypercleanData<'_>) -> Result<Self, GpuError> {
        let (d, c) = (data.dim, data.classes);
        let (n_tr, n_val) = (data.n_train(), data.n_val());
        let n_all = n_tr
            .checked_add(n_val)
            .ok_or(GpuError::TooLarge("sample count"))?;
        let ld = (d + 1).div_ceil(4) * 4;
        let dims = Dims {
            d,
            c,
            n_tr,
            n_val,
            n_all,
            ld,
            y_len: (d + 1) * c,
            n_w: d * c,
            lambda: data.lambda,
        };
        let fits = |v: Option<usize>| v.is_some_and(|v| v <= i32::MAX as usize);
        if !fits(n_all.checked_mul(ld)) {
            return Err(GpuError::TooLarge("feature matrix"));
        }
        if !fits(n_all.checked_mul(2 * c)) || !fits((d + 1).checked_mul(2 * c)) {
            return Err(GpuError::TooLarge("logit matrix"));
        }
        Ok(dims)
    }

    /// Host image of `feats`: rows `[u_i | 1 | 0 …]`, training then validation.
    pub(crate) fn pack_features(&self, data: &HypercleanData<'_>) -> Vec<f32> {
        let mut out = vec![0.0f32; self.n_all * self.ld];
        let rows = data
            .train_x
            .chunks_exact(self.d)
            .chain(data.val_x.chunks_exact(self.d));
        for (dst, src) in out.chunks_exact_mut(self.ld).zip(rows) {
            dst[..self.d].copy_from_slice(src);
            dst[self.d] = 1.0;
        }
        out
    }

    /// The labels of every row, training then validation (the order of `feats`).
    pub(crate) fn labels(data: &HypercleanData<'_>) -> Vec<u8> {
        data.train_labels
            .iter()
            .chain(data.val_labels)
            .copied()
            .collect()
    }

    /// The rows a step with weights `(w_u, w_l)` touches: training rows only when `w_l ≠ 0`,
    /// validation rows only when `w_u ≠ 0` (they are contiguous, so a range).
    pub(crate) fn rows(&self, w_u: f32, w_l: f32) -> (usize, usize) {
        let r0 = if w_l == 0.0 { self.n_tr } else { 0 };
        let r1 = if w_u == 0.0 { self.n_tr } else { self.n_all };
        (r0, r1.max(r0))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A 3-feature, 2-class instance over the given rows (λ = 0.1).
    pub(crate) fn data<'a>(
        train_x: &'a [f32],
        train_labels: &'a [u8],
        val_x: &'a [f32],
        val_labels: &'a [u8],
    ) -> HypercleanData<'a> {
        HypercleanData {
            dim: 3,
            classes: 2,
            classifier: Classifier::Linear,
            train_x,
            train_labels,
            val_x,
            val_labels,
            lambda: 0.1,
        }
    }

    #[test]
    fn feature_rows_carry_the_bias_column() {
        let (tx, vx) = ([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [7.0, 8.0, 9.0]);
        let data = data(&tx, &[0, 1], &vx, &[1]);
        let dims = Dims::of(&data).unwrap();
        assert_eq!((dims.ld, dims.n_all, dims.y_len, dims.n_w), (4, 3, 8, 6));
        assert_eq!(
            dims.pack_features(&data),
            [1., 2., 3., 1., 4., 5., 6., 1., 7., 8., 9., 1.]
        );
        let wide = HypercleanData {
            dim: 4,
            train_x: &[0.5; 8],
            val_x: &[0.25; 4],
            ..data
        };
        let dims = Dims::of(&wide).unwrap();
        assert_eq!(dims.ld, 8);
        assert_eq!(
            &dims.pack_features(&wide)[..8],
            &[0.5, 0.5, 0.5, 0.5, 1.0, 0.0, 0.0, 0.0]
        );
    }

    #[test]
    fn rows_in_use() {
        let (tx, vx) = ([0.0; 6], [0.0; 9]);
        let dims = Dims::of(&data(&tx, &[0, 1], &vx, &[1, 0, 1])).unwrap();
        assert_eq!(dims.rows(0.0, 1.0), (0, 2));
        assert_eq!(dims.rows(0.5, 1.0), (0, 5));
        assert_eq!(dims.rows(0.5, 0.0), (2, 5));
        assert_eq!(dims.rows(0.0, 0.0), (2, 2));
    }
}
