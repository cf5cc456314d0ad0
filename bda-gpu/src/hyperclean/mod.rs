//! The hyper-cleaning problem ([`bda_kernel::hyperclean`]) on a CUDA device: the math
//! primitives of [`bda_kernel::backend`], nothing else (the methods' loops stay in the kernel's
//! engine). This file holds the device data and their upload, `dims.rs` the shapes and the
//! host image of the features, `products.rs` the capability traits.
//!
//! # Layout on the device
//!
//! * `feats`: training rows, then validation rows, each row `[u_i (d floats) | 1 | 0 …]` with
//!   row stride `ld = round_up(d + 1, 4)`. The constant-one column makes a `y` buffer — `W`
//!   row-major then `b`, i.e. a row-major `(d+1)×c` matrix `Ỹ = [W; bᵀ]` — multiply as a whole:
//!   logits `Z = X̃·Ỹ` and gradient `X̃ᵀ·G` are one GEMM each, bias included.
//! * One buffer for all rows lets one GEMM pair serve both levels: a lower step with `w_u ≠ 0`
//!   runs over training *and* validation rows at once, each row weighted in the fused kernel
//!   (`w_l σ(x_i)/n_tr` on training rows, `w_u/n_val` on validation rows).
//!
//! # One lower step (`w_u ≠ 0`)
//!
//! 1. `masked_scale_copy`: `y_out ← y`, times `1 − 2λw_u` on `W` (the regulariser's gradient);
//! 2. GEMM `Z ← X̃·Ỹ` over the rows in use;
//! 3. `xent_grad_rows`: softmax, cross-entropy and `G_i = ω_i (p_i − e_{v_i})`, one thread per row;
//! 4. GEMM `y_out ← y_out − X̃ᵀ·G`.
//!
//! All scalars are kernel or GEMM arguments: a step never waits for the device.

mod dims;
mod mlp;
mod products;
mod rows;
mod split;

pub use mlp::{HypercleanMlp, HypercleanMlpGpu};

use std::sync::Arc;

use bda_kernel::collective::Collective;
use bda_kernel::hyperclean::HypercleanData;
use cudarc::driver::CudaSlice;

use crate::probe::guard;
use crate::{GpuDevice, GpuError, OnDevice};
use dims::Dims;
use rows::RowBufs;
use split::{RowSplit, Splittable};

pub use split::CHUNK_ROWS;

/// The device data and scratch of one hyper-cleaning instance (see the module docs); used as
/// [`HypercleanGpu`].
#[derive(Debug)]
pub struct Hyperclean {
    dims: Dims,
    /// `n_all × ld` augmented features (see the module docs).
    feats: CudaSlice<f32>,
    /// Labels, logits, row terms, cross-entropies of every row.
    rows: RowBufs,
    /// `(d+1) × 2c` packed `[Ỹ | A]`.
    ya: CudaSlice<f32>,
    /// This rank's share of the rows, when split over ranks.
    split: Option<RowSplit>,
}

impl Splittable for Hyperclean {
    fn split_mut(&mut self) -> &mut Option<RowSplit> {
        &mut self.split
    }
}

/// Data hyper-cleaning (softmax regression with per-sample weights `σ(x_i)`) on one CUDA
/// device, implementing [`Backend`](bda_kernel::backend::Backend),
/// [`LowerStep`](bda_kernel::backend::LowerStep),
/// [`UpperGradient`](bda_kernel::backend::UpperGradient),
/// [`StepAdjoint`](bda_kernel::backend::StepAdjoint) and
/// [`LowerHessian`](bda_kernel::backend::LowerHessian) with `T = f32` and `X = Y =`
/// [`crate::GpuVec`].
///
/// The data are uploaded once by [`HypercleanGpu::new`]. Every operation is queued on the
/// device's stream; only `upper_grad` (the value `F`), `dot_y`, `y_is_finite` and the downloads
/// wait for the device.
pub type HypercleanGpu = OnDevice<Hyperclean>;

impl HypercleanGpu {
    /// Checks `data` and uploads it to the opened device. The kernels are compiled on first
    /// use; call [`OnDevice::warm_up`] to do it now.
    pub fn new(dev: &GpuDevice, data: &HypercleanData<'_>) -> Result<Self, GpuError> {
        data.validate().map_err(GpuError::Data)?;
        let dims = Dims::of(data)?;
        guard(|| {
            let stream = dev.stream();
            let feats = stream.clone_htod(&dims.pack_features(data))?;
            let p = Hyperclean {
                dims,
                feats,
                rows: RowBufs::new(dev, dims, data)?,
                ya: stream.alloc_zeros(dims.y_len * 2)?,
                split: None,
            };
            let backend = OnDevice::with_problem(dev, dims.n_tr, dims.y_len, p)?;
            dev.synchronize()?;
            Ok(backend)
        })
    }

    /// Device bytes held by the uploaded data and the scratch buffers (not counting `x`/`y`
    /// buffers, the CUDA context and cuBLAS' workspace).
    pub fn resident_bytes(&self) -> usize {
        let p = &self.p;
        [&p.feats, &p.ya]
            .iter()
            .map(|b| b.num_bytes())
            .sum::<usize>()
            + p.rows.num_bytes()
            + p.split.as_ref().map_or(0, RowSplit::num_bytes)
            + self.scratch.num_bytes()
    }

    /// This backend as one of the ranks of `comm`, every rank holding the same data: each
    /// product passes over this rank's chunks of [`CHUNK_ROWS`] rows and the ranks' results
    /// are put together in chunk order, so that every rank gets the same bits whatever the
    /// number of ranks (see the crate README). With one rank the products still run chunk by
    /// chunk, which gives other bits than the whole-set GEMMs of a plain backend.
    ///
    /// Every rank must call the same products in the same order (they are collective).
    pub fn with_ranks(mut self, comm: Arc<dyn Collective>) -> Result<Self, GpuError> {
        let d = self.p.dims;
        self.p.split = Some(RowSplit::new(&self.dev, comm, d.n_tr, d.n_all, d.y_len)?);
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::dims::tests::data;
    use super::*;
    use crate::{DeviceInfo, GpuVec};

    #[test]
    fn new_without_cuda_is_an_error_not_a_panic() {
        let (tx, vx) = ([0.0; 6], [0.0; 3]);
        let d = data(&tx, &[0, 1], &vx, &[1]);
        let dev = match GpuDevice::open(0) {
            Ok(dev) => dev,
            Err(e) => {
                assert!(!e.to_string().contains('\n'));
                return;
            }
        };
        let gpu = HypercleanGpu::new(&dev, &d).unwrap();
        eprintln!("CUDA present: {}", gpu.info());
        // Bad data are reported before anything is uploaded.
        let bad = HypercleanData {
            val_labels: &[5],
            ..d
        };
        assert_eq!(
            HypercleanGpu::new(&dev, &bad).unwrap_err(),
            GpuError::Data("a label is not below the number of classes")
        );
    }

    #[test]
    fn public_types_are_send_and_sync() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<GpuDevice>();
        send_sync::<HypercleanGpu>();
        send_sync::<GpuVec>();
        send_sync::<GpuError>();
        send_sync::<DeviceInfo>();
    }
}
