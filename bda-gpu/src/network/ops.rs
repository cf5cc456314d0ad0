//! The GEMMs of the whole network on the device: a block's convolution and its two adjoints
//! over the im2col matrix of the set's images, and the head's products. Each takes `β` so
//! that a tangent's two terms (`v_W ⊛ x + W ⊛ ẋ`, `hᵀ·F + gᵀ·Ḟ`, …) add into one output.

use cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut};

use crate::conv4::launch_chunk;
use crate::gemm::RowMajor;
use crate::kernels::Kernel;
use crate::{GpuDevice, GpuError};
use bda_kernel::fewshot::{Conv4Shape, Network};

/// Block `l`'s convolution on a set of `n` images: `c_in → ch` channels of side `s`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Conv {
    c_in: usize,
    ch: usize,
    s: usize,
    n: usize,
}

impl Conv {
    pub(super) fn of(a: &Conv4Shape, n: usize, l: usize) -> Conv {
        Conv {
            c_in: a.c_in(l),
            ch: a.channels,
            s: a.side_at(l),
            n,
        }
    }

    /// Columns of the im2col matrix (`n·s²`).
    fn cols(&self) -> usize {
        self.n * self.s * self.s
    }

    /// `Z ← W·cols + βZ` (`W`: `ch × c_in·9`, `Z`: `[ch][n·s²]`).
    pub(super) fn forward(
        &self,
        dev: &GpuDevice,
        w: &impl DevicePtr<f32>,
        cols: &CudaSlice<f32>,
        beta: f32,
        z: &mut impl DevicePtrMut<f32>,
    ) -> Result<(), GpuError> {
        let p = RowMajor::new(self.ch, self.cols(), self.c_in * 9);
        dev.gemm(p, 1.0, w, cols, beta, z)
    }

    /// `G_W ← dZ·colsᵀ + βG_W`.
    pub(super) fn weight_grad(
        &self,
        dev: &GpuDevice,
        dz: &CudaSlice<f32>,
        cols: &CudaSlice<f32>,
        beta: f32,
        gw: &mut impl DevicePtrMut<f32>,
    ) -> Result<(), GpuError> {
        let k = self.cols();
        let p = RowMajor {
            trans_b: true,
            ldb: k,
            ..RowMajor::new(self.ch, self.c_in * 9, k)
        };
        dev.gemm(p, 1.0, dz, cols, beta, gw)
    }

    /// `cols ← Wᵀ·dZ + β·cols` (the input's gradient before [`Conv::col2im`]).
    pub(super) fn input_grad(
        &self,
        dev: &GpuDevice,
        w: &impl DevicePtr<f32>,
        dz: &CudaSlice<f32>,
        beta: f32,
        cols: &mut CudaSlice<f32>,
    ) -> Result<(), GpuError> {
        let p = RowMajor {
            trans_a: true,
            lda: self.c_in * 9,
            ..RowMajor::new(self.c_in * 9, self.cols(), self.ch)
        };
        dev.gemm(p, 1.0, w, dz, beta, cols)
    }

    /// `din ← col2im(cols)`: the input maps' gradient.
    pub(super) fn col2im(
        &self,
        dev: &GpuDevice,
        cols: &CudaSlice<f32>,
        din: &mut CudaSlice<f32>,
    ) -> Result<(), GpuError> {
        let dims = [self.c_in, self.n, self.s, 0, self.n];
        launch_chunk(dev, Kernel::Col2im, cols, din, dims)
    }
}

/// The linear head on `n` feature rows: `W` (`N × d`, row-major) at weight `at`, then `b`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Head {
    n: usize,
    d: usize,
    ways: usize,
    at: usize,
}

impl Head {
    pub(super) fn of(net: &Network, n: usize) -> Head {
        Head {
            n,
            d: net.shape.features(),
            ways: net.ways,
            at: net.shape.num_params(),
        }
    }

    /// `Z ← F·Wᵀ + βZ` into columns `[col, col + N)` of the rows of `z2` (`n × 2N`).
    pub(super) fn logits(
        &self,
        dev: &GpuDevice,
        feats: &CudaSlice<f32>,
        w: &impl DevicePtr<f32>,
        beta: f32,
        z2: &mut CudaSlice<f32>,
        col: usize,
    ) -> Result<(), GpuError> {
        let p = RowMajor {
            trans_b: true,
            ldb: self.d,
            ldc: 2 * self.ways,
            ..RowMajor::new(self.n, self.ways, self.d)
        };
        dev.gemm(p, 1.0, feats, w, beta, &mut z2.slice_mut(col..))
    }

    /// The head's weights' part of a gradient: `∂W = gᵀ·F (+ g₂ᵀ·F₂)`, `∂b = Σ_rows g`,
    /// written into `gout` at the head's offset.
    pub(super) fn param_grad(
        &self,
        dev: &GpuDevice,
        (g, feats): (&CudaSlice<f32>, &CudaSlice<f32>),
        second: Option<(&CudaSlice<f32>, &CudaSlice<f32>)>,
        ones: &CudaSlice<f32>,
        gout: &mut CudaSlice<f32>,
    ) -> Result<(), GpuError> {
        let (n, d, ways, at) = (self.n, self.d, self.ways, self.at);
        let p = RowMajor {
            trans_a: true,
            lda: ways,
            ..RowMajor::new(ways, d, n)
        };
        let mut gw = gout.slice_mut(at..at + ways * d);
        dev.gemm(p, 1.0, g, feats, 0.0, &mut gw)?;
        if let Some((g2, f2)) = second {
            dev.gemm(p, 1.0, g2, f2, 1.0, &mut gw)?;
        }
        let mut gb = gout.slice_mut(at + ways * d..at + ways * (d + 1));
        dev.gemm(RowMajor::new(1, ways, n), 1.0, ones, g, 0.0, &mut gb)
    }

    /// `dF ← g·W + β·dF` (`n × d`).
    pub(super) fn feature_grad(
        &self,
        dev: &GpuDevice,
        g: &CudaSlice<f32>,
        w: &impl DevicePtr<f32>,
        beta: f32,
        dfeats: &mut CudaSlice<f32>,
    ) -> Result<(), GpuError> {
        let p = RowMajor::new(self.n, self.d, self.ways);
        dev.gemm(p, 1.0, g, w, beta, dfeats)
    }
}
