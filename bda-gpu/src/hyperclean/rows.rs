//! The launches of the per-row softmax kernels (`kernels/softmax.cu`), shared by both
//! hyper-cleaning backends: the linear one reads logits straight from `X̃·Ỹ`, the network
//! from its second layer; the rows' arithmetic is the same.

use cudarc::driver::{CudaSlice, PushKernelArg};

use super::dims::Dims;
use crate::kernels::Kernel;
use crate::launch::{i32_of, per_row, push};
use crate::{GpuDevice, GpuError, GpuVec};

/// The inputs every row kernel reads: logits `z`, labels, the sample logits `x`.
pub(super) struct RowInputs<'a> {
    pub(super) dims: Dims,
    pub(super) z: &'a CudaSlice<f32>,
    pub(super) labels: &'a CudaSlice<u8>,
    pub(super) x: &'a GpuVec,
}

impl RowInputs<'_> {
    /// `xent_grad_rows` over `[r0, r1)` with logits of row stride `ldz`: `ω(p − e)` into
    /// `g`, the cross-entropies into `ce`; `ω` is `a_tr·σ(x_i)` on training rows and `a_val`
    /// on validation rows.
    pub(super) fn xent_grad(
        &self,
        dev: &GpuDevice,
        (r0, r1): (usize, usize),
        ldz: usize,
        (a_tr, a_val): (f32, f32),
        (g, ce): (&mut CudaSlice<f32>, &mut CudaSlice<f32>),
    ) -> Result<(), GpuError> {
        let f = dev.kernel(Kernel::XentGradRows)?;
        let d = self.dims;
        let ints = [d.n_tr, r0, r1, d.c].map(i32_of);
        let ldz = i32_of(ldz);
        let weights = [a_tr, a_val];
        let mut l = dev.stream().launch_builder(&f);
        l.arg(self.z).arg(&ldz).arg(self.labels).arg(&self.x.0);
        push(&mut l, &ints);
        push(&mut l, &weights);
        l.arg(g).arg(ce);
        // SAFETY: matches `xent_grad_rows`; rows < n_all, z holds n_all·ldz entries (the
        // backends allocate n_all·2c ≥ n_all·ldz), x: n_tr.
        unsafe { l.launch(per_row(r1 - r0)) }?;
        Ok(())
    }

    /// `hvp_rows` over `[r0, r1)` with `[z | t]` pairs (row stride `2c`): the weighted
    /// softmax-Jacobian row terms into `h`, and `gx_scale` times the mixed term into `gx`
    /// when given (else `dummy`, never written).
    pub(super) fn hvp(
        &self,
        dev: &GpuDevice,
        (r0, r1): (usize, usize),
        (a_tr, a_val): (f32, f32),
        h: &mut CudaSlice<f32>,
        gx: Option<(&mut GpuVec, f32)>,
        dummy: &mut CudaSlice<f32>,
    ) -> Result<(), GpuError> {
        let f = dev.kernel(Kernel::HvpRows)?;
        let ints = [self.dims.n_tr, r0, r1, self.dims.c].map(i32_of);
        let weights = [a_tr, a_val];
        let (gx_buf, gx_scale) = match gx {
            Some((g, s)) => (&mut g.0, s),
            None => (dummy, 0.0f32),
        };
        let mut l = dev.stream().launch_builder(&f);
        l.arg(self.z).arg(self.labels).arg(&self.x.0);
        push(&mut l, &ints);
        push(&mut l, &weights);
        l.arg(h).arg(gx_buf).arg(&gx_scale);
        // SAFETY: matches `hvp_rows`; gx has n_tr entries or gx_scale = 0 (never written).
        unsafe { l.launch(per_row(r1 - r0)) }?;
        Ok(())
    }
}
