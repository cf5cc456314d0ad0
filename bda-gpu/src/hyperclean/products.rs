//! The capability traits of [`HypercleanGpu`]: the launches and GEMMs of each product (the
//! launch sequences are listed in the crate README).

use bda_kernel::backend::{
    Hypergrad, LowerHessian, LowerStep, MethodError, MethodSpec, Methods, StepAdjoint,
    UpperGradient,
};
use cudarc::driver::PushKernelArg;

use super::split::{Sink, each_train_row, gather_train, settle, sum_rows, val_ce_sum};
use super::{Hyperclean, HypercleanGpu};
use crate::gemm::RowMajor;
use crate::kernels::Kernel;
use crate::launch::{elementwise, i32_of};
use crate::{GpuDevice, GpuError, GpuVec};

/// Shorthands for the trait impls: a buffer, and a product's result.
type V = GpuVec;
type R<T = ()> = Result<T, GpuError>;

/// The right-hand side of a logits GEMM: a `y` buffer (`c` columns) or the packed `[Ỹ | A]`
/// (`2c` columns: logits and tangent logits side by side).
enum Rhs<'a> {
    Y(&'a GpuVec),
    Packed,
}

/// The second block of a `pack`: kept as is, or scaled on its `W` part after packing.
enum PackSource<'a> {
    Keep(&'a GpuVec),
    Scale(&'a mut GpuVec, f32),
}

impl Hyperclean {
    /// `z[r0..r1] ← X̃[r0..r1]·B`, `B` a row-major `(d+1)×cols` matrix; `z` gets row stride
    /// `cols`.
    fn logits(
        &mut self,
        dev: &GpuDevice,
        rhs: Rhs<'_>,
        r0: usize,
        r1: usize,
    ) -> Result<(), GpuError> {
        let d = self.dims;
        let (b, cols) = match rhs {
            Rhs::Y(y) => (&y.0, d.c),
            Rhs::Packed => (&self.ya, 2 * d.c),
        };
        let p = RowMajor {
            lda: d.ld,
            ..RowMajor::new(r1 - r0, cols, d.d + 1)
        };
        let a = self.feats.slice(r0 * d.ld..);
        let mut z = self.rows.z.slice_mut(r0 * cols..);
        dev.gemm(p, 1.0, &a, b, 0.0, &mut z)
    }

    /// `out ← α·X̃[r0..r1]ᵀ·G[r0..r1] + β·out`, `G` (the `g` buffer) row-major with row stride
    /// `c`.
    fn back(&self, dev: &GpuDevice, r0: usize, r1: usize, into: Sink<'_>) -> Result<(), GpuError> {
        let d = self.dims;
        let p = RowMajor {
            m: d.d + 1,
            n: d.c,
            k: r1 - r0,
            trans_a: true,
            trans_b: false,
            lda: d.ld,
            ldb: d.c,
            ldc: d.c,
        };
        let a = self.feats.slice(r0 * d.ld..);
        let g = self.rows.g.slice(r0 * d.c..);
        let Sink {
            mut out,
            alpha,
            beta,
        } = into;
        dev.gemm(p, alpha, &a, &g, beta, &mut out)
    }

    /// `dst ← src ⊙ (s_w on W, s_b on b)`.
    fn masked_scale_copy(
        &self,
        dev: &GpuDevice,
        src: &GpuVec,
        dst: &mut GpuVec,
        s_w: f32,
        s_b: f32,
    ) -> Result<(), GpuError> {
        let f = dev.kernel(Kernel::MaskedScaleCopy)?;
        let (n, n_w) = (i32_of(self.dims.y_len), i32_of(self.dims.n_w));
        let mut l = dev.stream().launch_builder(&f);
        l.arg(&src.0)
            .arg(&mut dst.0)
            .arg(&n)
            .arg(&n_w)
            .arg(&s_w)
            .arg(&s_b);
        // SAFETY: argument list matches `masked_scale_copy`; both buffers hold y_len entries
        // (checked by the trait methods).
        unsafe { l.launch(elementwise(self.dims.y_len)) }?;
        Ok(())
    }

    /// `ya ← [Ỹ | A]`, and with [`PackSource::Scale`] `(a, s)`, `A_W ← s·A_W` afterwards.
    fn pack(&mut self, dev: &GpuDevice, y: &GpuVec, a: PackSource<'_>) -> Result<(), GpuError> {
        let d = self.dims;
        let (rows, c, n_w) = (i32_of(d.d + 1), i32_of(d.c), i32_of(d.n_w));
        let cfg = elementwise(d.y_len);
        match a {
            PackSource::Keep(a) => {
                let f = dev.kernel(Kernel::PackPair)?;
                let mut l = dev.stream().launch_builder(&f);
                l.arg(&y.0).arg(&a.0).arg(&mut self.ya).arg(&rows).arg(&c);
                // SAFETY: matches `pack_pair`; y, a: (d+1)·c entries, ya: 2(d+1)·c.
                unsafe { l.launch(cfg) }?;
            }
            PackSource::Scale(a, s_w) => {
                let f = dev.kernel(Kernel::PackPairScale)?;
                let mut l = dev.stream().launch_builder(&f);
                l.arg(&y.0)
                    .arg(&mut a.0)
                    .arg(&mut self.ya)
                    .arg(&rows)
                    .arg(&c)
                    .arg(&n_w)
                    .arg(&s_w);
                // SAFETY: matches `pack_pair_scale`; sizes as above.
                unsafe { l.launch(cfg) }?;
            }
        }
        Ok(())
    }
}

impl LowerStep for HypercleanGpu {
    /// Four launches: `masked_scale_copy`, GEMM, `xent_grad_rows`, GEMM (none when
    /// `w_u = w_l = 0`). Training rows are skipped when `w_l = 0`, validation rows when `w_u = 0`.
    fn lower_step(&mut self, x: &V, y: &V, w_u: f32, w_l: f32, y_out: &mut V) -> R {
        self.check_args("lower_step", [x], [y, y_out])?;
        let (dev, p) = (&self.dev, &mut self.p);
        let d = p.dims;
        let pre = p.masked_scale_copy(dev, y, y_out, 1.0 - 2.0 * d.lambda * w_u, 1.0);
        let rows = d.rows(w_u, w_l);
        if rows.0 == rows.1 {
            return pre;
        }
        let w = (w_l / d.n_tr as f32, w_u / d.n_val as f32);
        let into = Sink::of(y_out, -1.0, 1.0);
        sum_rows(p, dev, pre, rows, into, |p, (r0, r1), into| {
            p.logits(dev, Rhs::Y(y), r0, r1)?;
            p.rows.xent_grad(dev, x, (r0, r1), d.c, w, None)?;
            p.back(dev, r0, r1, into)
        })
    }
}

impl UpperGradient for HypercleanGpu {
    fn upper_depends_on_x(&self) -> bool {
        false // F = validation CE + λ‖W‖²
    }

    /// `F` does not depend on `x`: `gx` is left as it is. Waits for the device (the value).
    fn upper_grad(&mut self, x: &V, y: &V, gy: &mut V, gx: &mut V, _gx_scale: f32) -> R<f32> {
        self.check_args("upper_grad", [x, gx], [y, gy])?;
        let (dev, p) = (&self.dev, &mut self.p);
        let d = p.dims;
        let pre = p.masked_scale_copy(dev, y, gy, 2.0 * d.lambda, 0.0);
        let w = (0.0, 1.0 / d.n_val as f32);
        let into = Sink::of(gy, 1.0, 1.0);
        sum_rows(p, dev, pre, (d.n_tr, d.n_all), into, |p, (r0, r1), into| {
            p.logits(dev, Rhs::Y(y), r0, r1)?;
            p.rows.xent_grad(dev, x, (r0, r1), d.c, w, None)?;
            p.back(dev, r0, r1, into)
        })?;
        // Σ_j CE_j over validation rows (on the device into slot 0, or over the ranks) and
        // ‖W‖² into slot 1, one download.
        let scratch = &mut self.scratch;
        let value = (|| {
            let ce_sum = val_ce_sum(&p.split, dev, &p.rows.ce, d.n_tr, scratch)?;
            let w = y.0.slice(..d.n_w);
            scratch.dot(dev, &w, &w, 1)?;
            let [ce_dev, w2] = scratch.read(dev)?;
            let ce_sum = ce_sum.unwrap_or(ce_dev);
            Ok((ce_sum / d.n_val as f64 + f64::from(d.lambda) * w2) as f32)
        })();
        settle(p, value)
    }
}

impl StepAdjoint for HypercleanGpu {
    /// Four launches: `pack_pair_scale` (`[Ỹ | A]`, and `A_W ← (1 − 2λw_u)·A_W`), one GEMM for
    /// logits and tangent logits together, `hvp_rows` (HVP row terms and the mixed `x` term),
    /// GEMM `A ← A − X̃ᵀ·H`.
    fn step_adjoint(&mut self, x: &V, y: &V, w_u: f32, w_l: f32, a: &mut V, gx: &mut V) -> R {
        self.check_args("step_adjoint", [x, gx], [y, a])?;
        let (dev, p) = (&self.dev, &mut self.p);
        let d = p.dims;
        let rows = d.rows(w_u, w_l);
        if rows.0 == rows.1 {
            // w_u = w_l = 0: the step is the identity.
            return Ok(());
        }
        let pre = p.pack(dev, y, PackSource::Scale(a, 1.0 - 2.0 * d.lambda * w_u));
        let (n_tr, n_val) = (d.n_tr as f32, d.n_val as f32);
        let weights = (w_l / n_tr, w_u / n_val);
        let into = Sink::of(a, -1.0, 1.0);
        sum_rows(p, dev, pre, rows, into, |p, (r0, r1), into| {
            p.logits(dev, Rhs::Packed, r0, r1)?;
            let gx = Some((&mut *gx, -w_l / n_tr));
            p.rows.hvp(dev, x, (r0, r1), weights, gx)?;
            p.back(dev, r0, r1, into)
        })?;
        if rows.0 == 0 {
            gather_train(p, dev, gx)?;
        }
        Ok(())
    }
}

/// Every method: the backend has Hessian products.
impl Methods for HypercleanGpu {
    fn hypergrad(
        &mut self,
        spec: MethodSpec<f32>,
    ) -> Result<Hypergrad<Self>, MethodError<GpuError>> {
        Hypergrad::new(self, spec)
    }
}

impl LowerHessian for HypercleanGpu {
    fn lower_hvp(&mut self, x: &V, y: &V, v: &V, out: &mut V) -> R {
        self.check_args("lower_hvp", [x], [y, v, out])?;
        let (dev, p) = (&self.dev, &mut self.p);
        let n_tr = p.dims.n_tr;
        let pre = p.pack(dev, y, PackSource::Keep(v));
        let into = Sink::of(out, 1.0, 0.0);
        sum_rows(p, dev, pre, (0, n_tr), into, |p, (r0, r1), into| {
            p.logits(dev, Rhs::Packed, r0, r1)?;
            p.rows
                .hvp(dev, x, (r0, r1), (1.0 / n_tr as f32, 0.0), None)?;
            p.back(dev, r0, r1, into)
        })
    }

    fn lower_mixed_vjp(&mut self, x: &V, y: &V, v: &V, scale: f32, gx: &mut V) -> R {
        self.check_args("lower_mixed_vjp", [x, gx], [y, v])?;
        let (dev, p) = (&self.dev, &mut self.p);
        let n_tr = p.dims.n_tr;
        let pre = p.pack(dev, y, PackSource::Keep(v));
        let pre = settle(p, pre);
        pre?;
        let gx_scale = scale / n_tr as f32;
        each_train_row(p, dev, n_tr, gx, |p, (r0, r1), gx| {
            p.logits(dev, Rhs::Packed, r0, r1)?;
            p.rows
                .hvp(dev, x, (r0, r1), (0.0, 0.0), Some((gx, gx_scale)))
        })
    }

    fn lower_grad_x(&mut self, x: &V, y: &V, scale: f32, gx: &mut V) -> R {
        self.check_args("lower_grad_x", [x, gx], [y])?;
        let (dev, p) = (&self.dev, &mut self.p);
        let n_tr = p.dims.n_tr;
        each_train_row(p, dev, n_tr, gx, |p, rows, gx| {
            p.logits(dev, Rhs::Y(y), rows.0, rows.1)?;
            p.rows.grad_x(dev, x, rows, scale, gx)
        })
    }
}
