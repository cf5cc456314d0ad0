//! The hyper-cleaning network (`Classifier::Mlp { hidden: H }`, the authors' 784-300-10) on a
//! CUDA device: the products of [`bda_kernel::hyperclean::HypercleanReference`] as cuBLAS
//! GEMMs and three kinds of row kernels, for [`HypercleanMlpGpu`].
//!
//! # Layout
//!
//! * `feats`: the augmented rows `[u_i | 1 | 0 …]` of the parent module (training then
//!   validation, row stride `ld`). A `y` buffer is `[W₁; b₁ᵀ]` (`(d+1)×H`) then `[W₂; b₂ᵀ]`
//!   (`(H+1)×c`), both row-major: each layer is one GEMM with its bias.
//! * `hid`: `[relu(A) | 1 | 0 …]` per row (row stride `ldh = round_up(H + 1, 4)`), so the
//!   second layer's bias comes with its GEMM too; `relu(A) > 0` is also the ReLU mask.
//! * `hidt`: the tangent `R_h = (U·V₁ + v_{b₁}) ⊙ 1[A > 0]`, same layout with a 0 column.
//! * `z`: `[s | t]` per row (logits and tangent logits, row stride `2c`) for `hvp_rows`, or
//!   `s` alone (stride `c`); `g`, `g2`: per-row `ω(p − e)` / `R` terms; `gh`: `G_a`, `n × H`.
//!
//! # Products (rows `[r0, r1)`: training rows when `w_l ≠ 0`, validation rows when `w_u ≠ 0`)
//!
//! * forward: GEMM `hid = X̃·Ỹ₁`, `relu_aug`, GEMM `z = hid·Ỹ₂`;
//! * gradient: `xent_grad_rows` (`G`), GEMMs `∇Ỹ₂ = hidᵀ·G`, `G_a = G·W₂ᵀ`, `relu_mask`,
//!   `∇Ỹ₁ = X̃ᵀ·G_a`;
//! * Hessian in direction `v`: forward, GEMM `hidt = X̃·Ṽ₁`, `relu_mask`, GEMMs
//!   `t = hidt·Ỹ₂ + hid·Ṽ₂`, `hvp_rows` (`R` and the mixed `x` term), `xent_grad_rows`
//!   (`G`), GEMMs `∇Ỹ₂ = hidᵀ·R + hidtᵀ·G`, `R G_a = R·W₂ᵀ + G·V₂ᵀ`, `relu_mask`,
//!   `∇Ỹ₁ = X̃ᵀ·R G_a`. The forward pass is recomputed (no per-`y` cache on the device: it
//!   would cost 12.6 MB per kept iterate at Fashion-MNIST sizes; one more GEMM per set is
//!   cheap on a GPU).

use bda_kernel::backend::{
    Hypergrad, LowerHessian, LowerStep, MethodError, MethodSpec, Methods, StepAdjoint,
    UpperGradient,
};
use bda_kernel::hyperclean::{Classifier, HypercleanData};
use std::sync::Arc;

use bda_kernel::collective::Collective;
use cudarc::driver::{CudaSlice, CudaView, PushKernelArg};

use super::dims::Dims;
use super::rows::RowBufs;
use super::split::{
    RowSplit, Sink, Splittable, each_train_row, gather_train, settle, sum_rows, val_ce_sum,
};
use crate::gemm::RowMajor;
use crate::kernels::Kernel;
use crate::launch::{elementwise, i32_of, push};
use crate::probe::guard;
use crate::{GpuDevice, GpuError, GpuVec, OnDevice};

/// The device data and scratch of the network (see the module docs); used as
/// [`HypercleanMlpGpu`].
#[derive(Debug)]
pub struct HypercleanMlp {
    dims: Dims,
    /// Hidden units `H`.
    h: usize,
    /// Row stride of `hid`, `hidt`: `H + 1` rounded up to 4.
    ldh: usize,
    /// Offset of `[W₂; b₂ᵀ]` in a `y` buffer: `(d + 1)·H`.
    off2: usize,
    /// Length of a `y` buffer.
    y_len: usize,
    feats: CudaSlice<f32>,
    hid: CudaSlice<f32>,
    hidt: CudaSlice<f32>,
    gh: CudaSlice<f32>,
    /// Labels, logits, row terms, cross-entropies of every row.
    rows: RowBufs,
    g2: CudaSlice<f32>,
    /// A copy of the direction of `step_adjoint` (its buffer is updated in place); taken
    /// out while in use.
    v: Option<CudaSlice<f32>>,
    /// This rank's share of the rows, when split over ranks.
    split: Option<RowSplit>,
}

impl Splittable for HypercleanMlp {
    fn split_mut(&mut self) -> &mut Option<RowSplit> {
        &mut self.split
    }
}

/// Data hyper-cleaning with the authors' network on one CUDA device: the same capability
/// traits as [`crate::HypercleanGpu`], `T = f32`, `X = Y =` [`GpuVec`].
pub type HypercleanMlpGpu = OnDevice<HypercleanMlp>;

impl HypercleanMlpGpu {
    /// Checks `data` (the network, [`Classifier::Mlp`]) and uploads it to the opened device.
    pub fn new(dev: &GpuDevice, data: &HypercleanData<'_>) -> Result<Self, GpuError> {
        data.validate().map_err(GpuError::Data)?;
        let Classifier::Mlp { hidden: h } = data.classifier else {
            return Err(GpuError::Data(
                "this backend computes the network; HypercleanGpu computes softmax regression",
            ));
        };
        let dims = Dims::features(data)?;
        let ldh = (h + 1).div_ceil(4) * 4;
        let fits = |v: Option<usize>| v.is_some_and(|v| v <= i32::MAX as usize);
        if !fits(dims.n_all.checked_mul(ldh)) || !fits(Some(data.y_len())) {
            return Err(GpuError::TooLarge("hidden layer"));
        }
        guard(|| {
            let stream = dev.stream();
            let n = dims.n_all;
            let p = HypercleanMlp {
                dims,
                h,
                ldh,
                off2: (dims.d + 1) * h,
                y_len: data.y_len(),
                feats: stream.clone_htod(&dims.pack_features(data))?,
                hid: stream.alloc_zeros(n * ldh)?,
                hidt: stream.alloc_zeros(n * ldh)?,
                gh: stream.alloc_zeros(n * h)?,
                rows: RowBufs::new(dev, dims, data)?,
                g2: stream.alloc_zeros(n * dims.c)?,
                v: Some(stream.alloc_zeros(data.y_len())?),
                split: None,
            };
            let backend = OnDevice::with_problem(dev, dims.n_tr, data.y_len(), p)?;
            dev.synchronize()?;
            Ok(backend)
        })
    }

    /// This backend as one of the ranks of `comm`, as
    /// [`HypercleanGpu::with_ranks`](crate::HypercleanGpu::with_ranks): each product passes
    /// over this rank's chunks of [`CHUNK_ROWS`](crate::CHUNK_ROWS) rows, the results put
    /// together in chunk order (the same bits for any number of ranks).
    pub fn with_ranks(mut self, comm: Arc<dyn Collective>) -> Result<Self, GpuError> {
        let (d, y_len) = (self.p.dims, self.p.y_len);
        self.p.split = Some(RowSplit::new(&self.dev, comm, d.n_tr, d.n_all, y_len)?);
        Ok(self)
    }

    /// Device bytes held by the uploaded data and the scratch buffers (not counting `x`/`y`
    /// buffers, the CUDA context and cuBLAS' workspace).
    pub fn resident_bytes(&self) -> usize {
        let p = &self.p;
        [&p.feats, &p.hid, &p.hidt, &p.gh, &p.g2]
            .iter()
            .map(|b| b.num_bytes())
            .sum::<usize>()
            + p.v.as_ref().map_or(0, |v| v.num_bytes())
            + p.rows.num_bytes()
            + p.split.as_ref().map_or(0, RowSplit::num_bytes)
            + self.scratch.num_bytes()
    }
}

impl HypercleanMlp {
    /// `dst ← src` scaled by `s_w` on both weight matrices and `s_b` on the biases.
    fn scale_copy(
        &self,
        dev: &GpuDevice,
        src: &CudaSlice<f32>,
        dst: &mut CudaSlice<f32>,
        s_w: f32,
        s_b: f32,
    ) -> Result<(), GpuError> {
        let f = dev.kernel(Kernel::MaskedScaleCopy)?;
        let d = self.dims;
        // The two layers: (start, length, weights) of each.
        for (start, len, n_w) in [
            (0, self.off2, d.d * self.h),
            (self.off2, self.y_len - self.off2, self.h * d.c),
        ] {
            let (n, n_w) = (i32_of(len), i32_of(n_w));
            let s = src.slice(start..start + len);
            let mut t = dst.slice_mut(start..start + len);
            let mut l = dev.stream().launch_builder(&f);
            l.arg(&s).arg(&mut t).arg(&n).arg(&n_w).arg(&s_w).arg(&s_b);
            // SAFETY: matches `masked_scale_copy`; both views hold `len` entries.
            unsafe { l.launch(elementwise(len)) }?;
        }
        Ok(())
    }

    /// `hid[r0..r1] ← [relu(X̃·Ỹ₁) | 1 | 0]` and `z ← hid·Ỹ₂` (row stride `ldz`: `c`, or
    /// `2c` to leave room for the tangent).
    fn forward(
        &mut self,
        dev: &GpuDevice,
        y: &CudaSlice<f32>,
        (r0, r1): (usize, usize),
        ldz: usize,
    ) -> Result<(), GpuError> {
        let (d, h, ldh) = (self.dims, self.h, self.ldh);
        let rows = r1 - r0;
        let p = RowMajor {
            lda: d.ld,
            ldc: ldh,
            ..RowMajor::new(rows, h, d.d + 1)
        };
        let x = self.feats.slice(r0 * d.ld..);
        let mut hid = self.hid.slice_mut(r0 * ldh..);
        dev.gemm(p, 1.0, &x, &y.slice(..self.off2), 0.0, &mut hid)?;
        let f = dev.kernel(Kernel::ReluAug)?;
        let ints = [rows, h, ldh].map(i32_of);
        let mut l = dev.stream().launch_builder(&f);
        l.arg(&mut hid);
        push(&mut l, &ints);
        // SAFETY: matches `relu_aug`; hid holds rows·ldh entries from r0.
        unsafe { l.launch(elementwise(rows * ldh)) }?;
        // z = hid·Ỹ₂ (hid's 1-column adds b₂).
        let p = RowMajor {
            lda: ldh,
            ldc: ldz,
            ..RowMajor::new(rows, d.c, h + 1)
        };
        let hid = self.hid.slice(r0 * ldh..);
        let mut z = self.rows.z.slice_mut(r0 * ldz..);
        dev.gemm(p, 1.0, &hid, &y.slice(self.off2..), 0.0, &mut z)
    }

    /// `g ⊙ 1[hid > 0]` on rows `[r0, r1)` of `gh` (or of `hidt`, whose extra columns
    /// become 0, when `tangent`).
    fn mask(
        &mut self,
        dev: &GpuDevice,
        (r0, r1): (usize, usize),
        tangent: bool,
    ) -> Result<(), GpuError> {
        let (h, ldh) = (self.h, self.ldh);
        let rows = r1 - r0;
        let f = dev.kernel(Kernel::ReluMask)?;
        let (buf, ldg) = if tangent {
            (&mut self.hidt, ldh)
        } else {
            (&mut self.gh, h)
        };
        let mut g = buf.slice_mut(r0 * ldg..);
        let hid = self.hid.slice(r0 * ldh..);
        let ints = [ldg, ldh, rows, h].map(i32_of);
        let mut l = dev.stream().launch_builder(&f);
        l.arg(&mut g).arg(&ints[0]).arg(&hid);
        push(&mut l, &ints[1..]);
        // SAFETY: matches `relu_mask`; g holds rows·ldg and hid rows·ldh entries from r0.
        unsafe { l.launch(elementwise(rows * ldg)) }?;
        Ok(())
    }

    /// `out[Ỹ₂] ← α·(hidᵀ·g [+ hidtᵀ·g2]) + β·out[Ỹ₂]`, `gh ← g·W₂ᵀ [+ g2·V₂ᵀ]` masked,
    /// `out[Ỹ₁] ← α·X̃ᵀ·gh + β·out[Ỹ₁]`: the reverse of both layers over rows `[r0, r1)`.
    /// `v2` (the direction's second layer) is given for a Hessian pass.
    fn backward(
        &mut self,
        dev: &GpuDevice,
        y: &CudaSlice<f32>,
        v2: Option<&CudaSlice<f32>>,
        (r0, r1): (usize, usize),
        into: Sink<'_>,
    ) -> Result<(), GpuError> {
        let (d, h, ldh, c) = (self.dims, self.h, self.ldh, self.dims.c);
        let rows = r1 - r0;
        let Sink {
            mut out,
            alpha,
            beta,
        } = into;
        let off2 = self.off2;
        // Second layer: (H+1)×c = hidᵀ (H+1 × rows) · g (rows × c).
        let p2 = RowMajor {
            m: h + 1,
            n: c,
            k: rows,
            trans_a: true,
            trans_b: false,
            lda: ldh,
            ldb: c,
            ldc: c,
        };
        {
            let mut o2 = out.slice_mut(off2..);
            let hid = self.hid.slice(r0 * ldh..);
            dev.gemm(p2, alpha, &hid, &self.rows.g.slice(r0 * c..), beta, &mut o2)?;
            if v2.is_some() {
                let hidt = self.hidt.slice(r0 * ldh..);
                dev.gemm(p2, alpha, &hidt, &self.g2.slice(r0 * c..), 1.0, &mut o2)?;
            }
        }
        // G_a = g·W₂ᵀ (+ g2·V₂ᵀ): rows × H, W₂ stored H × c (its first H rows of Ỹ₂).
        let pa = RowMajor {
            m: rows,
            n: h,
            k: c,
            trans_a: false,
            trans_b: true,
            lda: c,
            ldb: c,
            ldc: h,
        };
        {
            let mut gh = self.gh.slice_mut(r0 * h..);
            let w2 = y.slice(off2..off2 + h * c);
            dev.gemm(pa, 1.0, &self.rows.g.slice(r0 * c..), &w2, 0.0, &mut gh)?;
            if let Some(v2) = v2 {
                let v2 = v2.slice(off2..off2 + h * c);
                dev.gemm(pa, 1.0, &self.g2.slice(r0 * c..), &v2, 1.0, &mut gh)?;
            }
        }
        self.mask(dev, (r0, r1), false)?;
        // First layer: (d+1)×H = X̃ᵀ·G_a.
        let p1 = RowMajor {
            m: d.d + 1,
            n: h,
            k: rows,
            trans_a: true,
            trans_b: false,
            lda: d.ld,
            ldb: h,
            ldc: h,
        };
        let mut o1 = out.slice_mut(..off2);
        let x = self.feats.slice(r0 * d.ld..);
        dev.gemm(p1, alpha, &x, &self.gh.slice(r0 * h..), beta, &mut o1)
    }

    /// Logits and tangent logits of `y` and `v` over rows `[r0, r1)` into `z` (`[s | t]`,
    /// row stride `2c`), `hid` and `hidt` set.
    fn tangent(
        &mut self,
        dev: &GpuDevice,
        y: &CudaSlice<f32>,
        v: &CudaSlice<f32>,
        (r0, r1): (usize, usize),
    ) -> Result<(), GpuError> {
        let (d, h, ldh, c) = (self.dims, self.h, self.ldh, self.dims.c);
        self.forward(dev, y, (r0, r1), 2 * c)?;
        let p = RowMajor {
            lda: d.ld,
            ldc: ldh,
            ..RowMajor::new(r1 - r0, h, d.d + 1)
        };
        {
            let x = self.feats.slice(r0 * d.ld..);
            let mut t = self.hidt.slice_mut(r0 * ldh..);
            dev.gemm(p, 1.0, &x, &v.slice(..self.off2), 0.0, &mut t)?;
        }
        self.mask(dev, (r0, r1), true)?;
        // t = R_h·Ỹ₂ (R_h's extra column is 0) + hid·Ṽ₂ (hid's 1-column adds v_b₂).
        let (y2, v2) = (y.slice(self.off2..), v.slice(self.off2..));
        self.second_layer_into_t(dev, &y2, (r0, r1), true)?;
        self.second_layer_into_t(dev, &v2, (r0, r1), false)
    }

    /// `z[:, c..2c] (+)= A·W` with `A` = `hidt` (first, overwriting) or `hid` (adding).
    fn second_layer_into_t(
        &mut self,
        dev: &GpuDevice,
        w: &CudaView<'_, f32>,
        (r0, r1): (usize, usize),
        first: bool,
    ) -> Result<(), GpuError> {
        let (c, h, ldh) = (self.dims.c, self.h, self.ldh);
        let p = RowMajor {
            lda: ldh,
            ldc: 2 * c,
            ..RowMajor::new(r1 - r0, c, h + 1)
        };
        let a = if first { &self.hidt } else { &self.hid };
        let a = a.slice(r0 * ldh..);
        let mut z = self.rows.z.slice_mut(r0 * 2 * c + c..);
        dev.gemm(p, 1.0, &a, w, if first { 0.0 } else { 1.0 }, &mut z)
    }

    /// The Hessian pass of rows `[r0, r1)` in direction `v` with row weights `w`: the
    /// products into `into`, the mixed term into `gx` when given.
    #[allow(clippy::too_many_arguments)]
    fn hessian(
        &mut self,
        dev: &GpuDevice,
        x: &GpuVec,
        y: &CudaSlice<f32>,
        v: &CudaSlice<f32>,
        rows: (usize, usize),
        w: (f32, f32),
        gx: Option<(&mut GpuVec, f32)>,
        into: Option<Sink<'_>>,
    ) -> Result<(), GpuError> {
        self.tangent(dev, y, v, rows)?;
        self.rows.hvp(dev, x, rows, w, gx)?;
        let Some(into) = into else { return Ok(()) };
        self.rows
            .xent_grad(dev, x, rows, 2 * self.dims.c, w, Some(&mut self.g2))?;
        self.backward(dev, y, Some(v), rows, into)
    }
}

type V = GpuVec;
type R<T = ()> = Result<T, GpuError>;

impl LowerStep for HypercleanMlpGpu {
    fn lower_step(&mut self, x: &V, y: &V, w_u: f32, w_l: f32, y_out: &mut V) -> R {
        self.check_args("lower_step", [x], [y, y_out])?;
        let (dev, p) = (&self.dev, &mut self.p);
        let d = p.dims;
        let pre = p.scale_copy(dev, &y.0, &mut y_out.0, 1.0 - 2.0 * d.lambda * w_u, 1.0);
        let rows = d.rows(w_u, w_l);
        if rows.0 == rows.1 {
            return pre;
        }
        let w = (w_l / d.n_tr as f32, w_u / d.n_val as f32);
        let into = Sink::of(y_out, -1.0, 1.0);
        sum_rows(p, dev, pre, rows, into, |p, rows, into| {
            p.forward(dev, &y.0, rows, d.c)?;
            p.rows.xent_grad(dev, x, rows, d.c, w, None)?;
            p.backward(dev, &y.0, None, rows, into)
        })
    }
}

impl UpperGradient for HypercleanMlpGpu {
    fn upper_depends_on_x(&self) -> bool {
        false // F = validation CE + λ(‖W₁‖² + ‖W₂‖²)
    }

    /// Waits for the device (the value).
    fn upper_grad(&mut self, x: &V, y: &V, gy: &mut V, gx: &mut V, _gx_scale: f32) -> R<f32> {
        self.check_args("upper_grad", [x, gx], [y, gy])?;
        let (dev, p) = (&self.dev, &mut self.p);
        let d = p.dims;
        let pre = p.scale_copy(dev, &y.0, &mut gy.0, 2.0 * d.lambda, 0.0);
        let w = (0.0, 1.0 / d.n_val as f32);
        let into = Sink::of(gy, 1.0, 1.0);
        sum_rows(p, dev, pre, (d.n_tr, d.n_all), into, |p, rows, into| {
            p.forward(dev, &y.0, rows, d.c)?;
            p.rows.xent_grad(dev, x, rows, d.c, w, None)?;
            p.backward(dev, &y.0, None, rows, into)
        })?;
        // Σ CE over validation rows (on the device, or over the ranks) and ‖W₁‖², then
        // ‖W₂‖².
        let (off2, h) = (p.off2, p.h);
        let scratch = &mut self.scratch;
        let value = (|| {
            let ce_sum = val_ce_sum(&p.split, dev, &p.rows.ce, d.n_tr, scratch)?;
            let w1 = y.0.slice(..d.d * h);
            scratch.dot(dev, &w1, &w1, 1)?;
            let [ce_dev, w1_sq] = scratch.read(dev)?;
            let w2 = y.0.slice(off2..off2 + h * d.c);
            scratch.dot(dev, &w2, &w2, 1)?;
            let [_, w2_sq] = scratch.read(dev)?;
            let ce_sum = ce_sum.unwrap_or(ce_dev);
            Ok((ce_sum / d.n_val as f64 + f64::from(d.lambda) * (w1_sq + w2_sq)) as f32)
        })();
        settle(p, value)
    }
}

impl StepAdjoint for HypercleanMlpGpu {
    fn step_adjoint(&mut self, x: &V, y: &V, w_u: f32, w_l: f32, a: &mut V, gx: &mut V) -> R {
        self.check_args("step_adjoint", [x, gx], [y, a])?;
        let (dev, p) = (&self.dev, &mut self.p);
        let d = p.dims;
        let rows = d.rows(w_u, w_l);
        if rows.0 == rows.1 {
            return Ok(());
        }
        // v ← a; a ← a·(1 − 2λw_u) on the weights; a −= (w_u H_F + w_l H_f)·v.
        let mut v =
            p.v.take()
                .ok_or(GpuError::Data("step_adjoint re-entered"))?;
        let pre = dev
            .stream()
            .memcpy_dtod(&a.0, &mut v)
            .map_err(GpuError::from)
            .and_then(|()| p.scale_copy(dev, &v, &mut a.0, 1.0 - 2.0 * d.lambda * w_u, 1.0));
        let (n_tr, n_val) = (d.n_tr as f32, d.n_val as f32);
        let w = (w_l / n_tr, w_u / n_val);
        let into = Sink::of(a, -1.0, 1.0);
        let r = sum_rows(p, dev, pre, rows, into, |p, rows, into| {
            let gx = Some((&mut *gx, -w_l / n_tr));
            p.hessian(dev, x, &y.0, &v, rows, w, gx, Some(into))
        });
        p.v = Some(v);
        r?;
        if rows.0 == 0 {
            gather_train(p, dev, gx)?;
        }
        Ok(())
    }
}

/// Every method: the backend has Hessian products.
impl Methods for HypercleanMlpGpu {
    fn hypergrad(
        &mut self,
        spec: MethodSpec<f32>,
    ) -> Result<Hypergrad<Self>, MethodError<GpuError>> {
        Hypergrad::new(self, spec)
    }
}

impl LowerHessian for HypercleanMlpGpu {
    fn lower_hvp(&mut self, x: &V, y: &V, v: &V, out: &mut V) -> R {
        self.check_args("lower_hvp", [x], [y, v, out])?;
        let (dev, p) = (&self.dev, &mut self.p);
        let n_tr = p.dims.n_tr;
        let w = (1.0 / n_tr as f32, 0.0);
        let into = Sink::of(out, 1.0, 0.0);
        sum_rows(p, dev, Ok(()), (0, n_tr), into, |p, rows, into| {
            p.hessian(dev, x, &y.0, &v.0, rows, w, None, Some(into))
        })
    }

    fn lower_mixed_vjp(&mut self, x: &V, y: &V, v: &V, scale: f32, gx: &mut V) -> R {
        self.check_args("lower_mixed_vjp", [x, gx], [y, v])?;
        let (dev, p) = (&self.dev, &mut self.p);
        let n_tr = p.dims.n_tr;
        let gx_scale = scale / n_tr as f32;
        each_train_row(p, dev, n_tr, gx, |p, rows, gx| {
            let gx = Some((gx, gx_scale));
            p.hessian(dev, x, &y.0, &v.0, rows, (0.0, 0.0), gx, None)
        })
    }

    fn lower_grad_x(&mut self, x: &V, y: &V, scale: f32, gx: &mut V) -> R {
        self.check_args("lower_grad_x", [x, gx], [y])?;
        let (dev, p) = (&self.dev, &mut self.p);
        let d = p.dims;
        each_train_row(p, dev, d.n_tr, gx, |p, rows, gx| {
            p.forward(dev, &y.0, rows, d.c)?;
            p.rows.grad_x(dev, x, rows, scale, gx)
        })
    }
}
