//! The per-row buffers and launches of the softmax kernels (`kernels/softmax.cu`), shared by
//! both hyper-cleaning backends: the linear one reads logits straight from `X̃·Ỹ`, the
//! network from its second layer; the rows' arithmetic is the same.

use bda_kernel::hyperclean::HypercleanData;
use cudarc::driver::{CudaSlice, PushKernelArg};

use super::dims::Dims;
use crate::kernels::Kernel;
use crate::launch::{i32_of, per_row, push};
use crate::{GpuDevice, GpuError, GpuVec};

/// What the row kernels read and write, for every row (training then validation).
#[derive(Debug)]
pub(super) struct RowBufs {
    dims: Dims,
    /// `n_all` labels.
    pub(super) labels: CudaSlice<u8>,
    /// `n_all × 2c` logits (row stride `c`, or `2c` for `[z | t]` pairs).
    pub(super) z: CudaSlice<f32>,
    /// `n_all × c` per-row gradient / HVP terms.
    pub(super) g: CudaSlice<f32>,
    /// `n_all` cross-entropies.
    pub(super) ce: CudaSlice<f32>,
    /// Stands for "no gx" in `hvp` (never written: its scale is 0 then).
    dummy: CudaSlice<f32>,
}

impl RowBufs {
    /// The buffers of `data`'s rows on `dev`, labels uploaded.
    pub(super) fn new(
        dev: &GpuDevice,
        dims: Dims,
        data: &HypercleanData<'_>,
    ) -> Result<Self, GpuError> {
        let stream = dev.stream();
        Ok(RowBufs {
            dims,
            labels: stream.clone_htod(&Dims::labels(data))?,
            z: stream.alloc_zeros(dims.n_all * 2 * dims.c)?,
            g: stream.alloc_zeros(dims.n_all * dims.c)?,
            ce: stream.alloc_zeros(dims.n_all)?,
            dummy: stream.alloc_zeros(1)?,
        })
    }

    /// Device bytes held.
    pub(super) fn num_bytes(&self) -> usize {
        [&self.z, &self.g, &self.ce, &self.dummy]
            .iter()
            .map(|b| b.num_bytes())
            .sum::<usize>()
            + self.labels.num_bytes()
    }

    /// `xent_grad_rows` over `[r0, r1)` with logits of row stride `ldz`: `ω(p − e)` into
    /// `g` (or into `other`, when given), the cross-entropies into `ce`; `ω` is
    /// `a_tr·σ(x_i)` on training rows and `a_val` on validation rows.
    pub(super) fn xent_grad(
        &mut self,
        dev: &GpuDevice,
        x: &GpuVec,
        (r0, r1): (usize, usize),
        ldz: usize,
        (a_tr, a_val): (f32, f32),
        other: Option<&mut CudaSlice<f32>>,
    ) -> Result<(), GpuError> {
        let f = dev.kernel(Kernel::XentGradRows)?;
        let d = self.dims;
        let ints = [d.n_tr, r0, r1, d.c].map(i32_of);
        let ldz = i32_of(ldz);
        let weights = [a_tr, a_val];
        let g = other.unwrap_or(&mut self.g);
        let mut l = dev.stream().launch_builder(&f);
        l.arg(&self.z).arg(&ldz).arg(&self.labels).arg(&x.0);
        push(&mut l, &ints);
        push(&mut l, &weights);
        l.arg(g).arg(&mut self.ce);
        // SAFETY: matches `xent_grad_rows`; rows < n_all, z holds n_all·2c ≥ n_all·ldz
        // entries, x: n_tr.
        unsafe { l.launch(per_row(r1 - r0)) }?;
        Ok(())
    }

    /// `hvp_rows` over `[r0, r1)` with `[z | t]` pairs (row stride `2c`): the weighted
    /// softmax-Jacobian row terms into `g`, and `gx_scale` times the mixed term into `gx`
    /// when given.
    pub(super) fn hvp(
        &mut self,
        dev: &GpuDevice,
        x: &GpuVec,
        (r0, r1): (usize, usize),
        (a_tr, a_val): (f32, f32),
        gx: Option<(&mut GpuVec, f32)>,
    ) -> Result<(), GpuError> {
        let f = dev.kernel(Kernel::HvpRows)?;
        let ints = [self.dims.n_tr, r0, r1, self.dims.c].map(i32_of);
        let weights = [a_tr, a_val];
        let (gx_buf, gx_scale) = match gx {
            Some((g, s)) => (&mut g.0, s),
            None => (&mut self.dummy, 0.0f32),
        };
        let mut l = dev.stream().launch_builder(&f);
        l.arg(&self.z).arg(&self.labels).arg(&x.0);
        push(&mut l, &ints);
        push(&mut l, &weights);
        l.arg(&mut self.g).arg(gx_buf).arg(&gx_scale);
        // SAFETY: matches `hvp_rows`; gx has n_tr entries or gx_scale = 0 (never written).
        unsafe { l.launch(per_row(r1 - r0)) }?;
        Ok(())
    }

    /// `gx_i += scale/n_tr · σ'(x_i)·CE_i` over training rows `[r0, r1)` from their logits in
    /// `z` (row stride `c`): `scale·∇_x f` (on those rows).
    pub(super) fn grad_x(
        &self,
        dev: &GpuDevice,
        x: &GpuVec,
        (r0, r1): (usize, usize),
        scale: f32,
        gx: &mut GpuVec,
    ) -> Result<(), GpuError> {
        let d = self.dims;
        let f = dev.kernel(Kernel::XentDxRows)?;
        // The kernel's rows start at the views' starts: row r0 is its row 0.
        let ints = [r1 - r0, d.c].map(i32_of);
        let gx_scale = scale / d.n_tr as f32;
        let z = self.z.slice(r0 * d.c..);
        let labels = self.labels.slice(r0..);
        let xs = x.0.slice(r0..);
        let mut g = gx.0.slice_mut(r0..);
        let mut l = dev.stream().launch_builder(&f);
        l.arg(&z).arg(&ints[1]).arg(&labels).arg(&xs);
        push(&mut l, &ints);
        l.arg(&mut g).arg(&gx_scale);
        // SAFETY: matches `xent_dx_rows`; r1 ≤ n_tr, x and gx hold n_tr entries (checked by
        // the caller), z and labels n_all rows.
        unsafe { l.launch(per_row(r1 - r0)) }?;
        Ok(())
    }
}
