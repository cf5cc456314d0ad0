//! The lower level of few-shot meta-learning on a CUDA device: the linear N-way softmax heads
//! of all `m` tasks of a meta-batch as ONE bi-level problem, block-diagonal across tasks.
//!
//! `x` holds the features of every image of the meta-batch (`n_all × d`, row-major: the
//! support rows of task 0, 1, …, then the query rows of task 0, 1, …), `y` the `m` heads one
//! after another (head `t`: `W_t` row-major `d × N`, then `b_t`). With the per-task problem
//! [`bda_kernel::fewshot::FeatureHead`],
//!
//! * `f(x, y) = Σ_t [CE(support_t · W_t + b_t) + (λ/2)‖y_t‖²]` (mean cross-entropy per task),
//! * `F(x, y) = Σ_t CE(query_t · W_t + b_t)`,
//!
//! every task's variables enter only its own terms, so the gradients, Hessian products and
//! mixed products of the sums are exactly the per-task ones side by side, and one run of the
//! kernel's engine ([`Hypergrad::unrolled`](bda_kernel::backend::Hypergrad::unrolled)) on this
//! backend is `m` independent per-task runs: `φ_K = Σ_t φ_K,t` and `∂φ_K/∂x` holds each task's hypergradient in its own
//! rows. Per-task values (`φ_K,t` and the query accuracy of `y_K`) are kept by every
//! [`UpperGradient::upper_grad`] call ([`HeadGpu::task_losses`], [`HeadGpu::task_hits`]).
//!
//! A step is three launches (logits, per-row softmax terms, per-head accumulation), a reverse
//! step five; only `upper_grad` (it returns `F`), `dot_y` and `y_is_finite` wait for the device.

use bda_kernel::backend::{LowerStep, Methods, StepAdjoint, UpperGradient};
use cudarc::driver::{CudaSlice, PushKernelArg};

use crate::kernels::Kernel;
use crate::launch::{check, i32_of, push, scale, spread};
use crate::probe::guard;
use crate::{GpuDevice, GpuError, GpuVec, OnDevice};

/// Shorthands for the trait impls: a buffer, and a product's result.
type V = GpuVec;
type R<T = ()> = Result<T, GpuError>;

/// Shapes of a batched head problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadDims {
    /// Tasks `m`.
    pub tasks: usize,
    /// Classes `N` per task.
    pub ways: usize,
    /// Support rows per task.
    pub support: usize,
    /// Query rows per task.
    pub query: usize,
    /// Features `d` per row.
    pub dim: usize,
}

impl HeadDims {
    /// Checks that the shape is non-degenerate and fits 32-bit indices.
    pub fn validate(&self) -> Result<(), GpuError> {
        if self.tasks == 0 || self.support == 0 || self.query == 0 || self.dim == 0 {
            return Err(GpuError::Data(
                "a head problem needs tasks, support rows, query rows and features",
            ));
        }
        if self.ways < 2 || self.ways > 256 {
            return Err(GpuError::Data("the head needs 2 to 256 classes"));
        }
        let fits = |v: Option<usize>| v.is_some_and(|v| v <= i32::MAX as usize);
        if !fits(self.rows().checked_mul(self.dim.max(2 * self.ways)))
            || !fits(self.tasks.checked_mul((self.dim + 1) * self.ways))
        {
            return Err(GpuError::TooLarge("head problem"));
        }
        Ok(())
    }

    /// Rows of `x`: `m·(n_s + n_q)`.
    pub fn rows(&self) -> usize {
        self.tasks * (self.support + self.query)
    }

    /// First query row.
    pub fn first_query(&self) -> usize {
        self.tasks * self.support
    }

    /// Length of an `x` buffer, `rows·d`.
    pub fn x_len(&self) -> usize {
        self.rows() * self.dim
    }

    /// Length of a `y` buffer, `m·(d+1)·N`.
    pub fn y_len(&self) -> usize {
        self.tasks * (self.dim + 1) * self.ways
    }

    /// Rows a step with weights `(w_u, w_l)` touches: support rows when `w_l ≠ 0`, query rows
    /// when `w_u ≠ 0` (contiguous, so a range).
    fn rows_for(&self, w_u: f32, w_l: f32) -> (usize, usize) {
        let r0 = if w_l == 0.0 { self.first_query() } else { 0 };
        let r1 = if w_u == 0.0 {
            self.first_query()
        } else {
            self.rows()
        };
        (r0, r1.max(r0))
    }
}

/// The device buffers of a batched head problem (see the module docs); used as [`HeadGpu`].
#[derive(Debug)]
pub struct BatchedHead {
    dims: HeadDims,
    l2: f32,
    /// Row labels (support rows, then query rows), each `< N`.
    labels: CudaSlice<u8>,
    /// `rows × 2N` logits (row stride N, or 2N for `[z | u]`).
    z: CudaSlice<f32>,
    /// `rows × N` gradient row terms.
    g: CudaSlice<f32>,
    /// `rows × N` Hessian row terms.
    h: CudaSlice<f32>,
    /// Per-row cross-entropy and hit flags.
    ce: CudaSlice<f32>,
    hit: CudaSlice<f32>,
    /// Per-task loss and hit count of the last `upper_grad` / `query_hits`.
    task_loss: CudaSlice<f32>,
    task_hits: CudaSlice<f32>,
    last_loss: Vec<f32>,
    last_hits: Vec<f32>,
}

/// The batched head of one meta-batch on the device's stream: implements
/// [`Backend`](bda_kernel::backend::Backend), [`LowerStep`], [`UpperGradient`] and
/// [`StepAdjoint`] with `T = f32` and `X = Y =` [`GpuVec`].
pub type HeadGpu = OnDevice<BatchedHead>;

/// A step (or its adjoint) that touches no rows: only the weight decay `v ← decay·v`.
fn decay_only(dev: &GpuDevice, decay: f32, v: &mut GpuVec) -> Result<(), GpuError> {
    if decay == 1.0 {
        return Ok(());
    }
    scale(dev, decay, &mut v.0.as_view_mut())
}

/// `Ok` for an L2 weight the head accepts.
fn check_l2(l2: f32) -> Result<(), GpuError> {
    if l2.is_finite() && l2 >= 0.0 {
        Ok(())
    } else {
        Err(GpuError::Data(
            "the head's L2 weight must be finite and ≥ 0",
        ))
    }
}

impl HeadGpu {
    /// A head problem of shape `dims` with L2 weight `l2` on the lower level, on the opened
    /// device; labels are set by [`HeadGpu::set_labels`] (all 0 until then).
    pub fn open(dev: &GpuDevice, dims: HeadDims, l2: f32) -> Result<Self, GpuError> {
        dims.validate()?;
        check_l2(l2)?;
        let (rows, nw) = (dims.rows(), dims.ways);
        guard(|| {
            let s = dev.stream();
            let p = BatchedHead {
                dims,
                l2,
                labels: s.alloc_zeros(rows)?,
                z: s.alloc_zeros(rows * 2 * nw)?,
                g: s.alloc_zeros(rows * nw)?,
                h: s.alloc_zeros(rows * nw)?,
                ce: s.alloc_zeros(rows)?,
                hit: s.alloc_zeros(rows)?,
                task_loss: s.alloc_zeros(dims.tasks)?,
                task_hits: s.alloc_zeros(dims.tasks)?,
                last_loss: vec![f32::NAN; dims.tasks],
                last_hits: vec![0.0; dims.tasks],
            };
            OnDevice::with_problem(dev, dims.x_len(), dims.y_len(), p)
        })
    }

    /// The shape.
    pub fn dims(&self) -> HeadDims {
        self.p.dims
    }

    /// Sets the L2 weight of the lower level.
    pub(crate) fn set_l2(&mut self, l2: f32) -> Result<(), GpuError> {
        check_l2(l2)?;
        self.p.l2 = l2;
        Ok(())
    }

    /// Uploads the row labels: all support labels (task by task), then all query labels.
    pub fn set_labels(&mut self, support: &[u8], query: &[u8]) -> Result<(), GpuError> {
        let d = self.p.dims;
        check("support labels", support.len(), d.first_query())?;
        check("query labels", query.len(), d.rows() - d.first_query())?;
        if support.iter().chain(query).any(|&l| l as usize >= d.ways) {
            return Err(GpuError::Data("a label is not below the number of classes"));
        }
        let all: Vec<u8> = support.iter().chain(query).copied().collect();
        self.dev.stream().memcpy_htod(&all, &mut self.p.labels)?;
        Ok(())
    }

    /// `φ_t = F_t(x, y)` of each task at the last [`UpperGradient::upper_grad`].
    pub fn task_losses(&self) -> &[f32] {
        &self.p.last_loss
    }

    /// Query rows classified correctly (first largest logit = label) per task, at the last
    /// `upper_grad` or [`HeadGpu::query_hits`].
    pub fn task_hits(&self) -> &[f32] {
        &self.p.last_hits
    }

    /// Per-task query hits of the heads `y` (a synchronisation point).
    pub fn query_hits(&mut self, x: &GpuVec, y: &GpuVec) -> Result<&[f32], GpuError> {
        self.check_args("query_hits", [x], [y])?;
        let (dev, p) = (&self.dev, &mut self.p);
        let (r0, r1) = (p.dims.first_query(), p.dims.rows());
        p.logits(dev, x, y, (r0, r1), p.dims.ways, 0)?;
        p.row_terms(dev, Rows::Xent, (r0, r1), (0.0, 0.0))?;
        p.read_task_stats(dev)?;
        Ok(&self.p.last_hits)
    }
}

/// Which per-row kernel [`BatchedHead::row_terms`] runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Rows {
    /// Softmax, cross-entropy, hits and `p − e`.
    Xent,
    /// The softmax Jacobian's row terms along a direction.
    Hvp,
}

impl BatchedHead {
    /// The integer arguments every head kernel takes a run of: `(d, N, m, n_s, n_q, r0, r1)`.
    fn ints(&self, (r0, r1): (usize, usize)) -> [i32; 7] {
        let d = self.dims;
        [d.dim, d.ways, d.tasks, d.support, d.query, r0, r1].map(i32_of)
    }

    /// `z[r][col + k] = x_r·W_t + b_t` for rows `[r0, r1)`, row stride `ldz`.
    fn logits(
        &mut self,
        dev: &GpuDevice,
        x: &GpuVec,
        y: &GpuVec,
        rows: (usize, usize),
        ldz: usize,
        col: usize,
    ) -> Result<(), GpuError> {
        let f = dev.kernel(Kernel::HeadLogits)?;
        let ints = self.ints(rows);
        let (ldz, col) = (i32_of(ldz), i32_of(col));
        let mut l = dev.stream().launch_builder(&f);
        l.arg(&x.0).arg(&y.0);
        push(&mut l, &ints);
        l.arg(&mut self.z).arg(&ldz).arg(&col);
        // SAFETY: matches `head_logits`; x: rows·d, y: m·(d+1)·N (checked by the trait
        // methods), z: rows·2N ≥ r1·ldz.
        unsafe { l.launch(spread((rows.1 - rows.0) * self.dims.ways)) }?;
        Ok(())
    }

    /// The per-row terms over `[r0, r1)` with weights `w_s` (support rows) and `w_q`
    /// (query rows): `head_xent_rows` from the logits (row stride N) into `g`, `ce` and
    /// `hit`, or with `Rows::Hvp`, `head_hvp_rows` from `[z | u]` (row stride 2N) into `g`
    /// and `h`.
    fn row_terms(
        &mut self,
        dev: &GpuDevice,
        which: Rows,
        rows: (usize, usize),
        (w_s, w_q): (f32, f32),
    ) -> Result<(), GpuError> {
        let f = dev.kernel(match which {
            Rows::Xent => Kernel::HeadXentRows,
            Rows::Hvp => Kernel::HeadHvpRows,
        })?;
        let ints = self.ints(rows);
        let mut l = dev.stream().launch_builder(&f);
        l.arg(&self.z);
        if which == Rows::Xent {
            l.arg(&ints[1]);
        }
        l.arg(&self.labels);
        push(&mut l, &ints[1..]);
        l.arg(&w_s).arg(&w_q).arg(&mut self.g);
        match which {
            Rows::Xent => l.arg(&mut self.ce).arg(&mut self.hit),
            Rows::Hvp => l.arg(&mut self.h),
        };
        // SAFETY: matches `head_xent_rows` (the logits' row stride is N) or `head_hvp_rows`
        // (z: rows·2N); the per-row buffers hold `rows` rows.
        unsafe { l.launch(spread(rows.1 - rows.0)) }?;
        Ok(())
    }

    /// `dst ← s_dst·dst + Σ x̃ᵀ·src` per head over the sets in use (`src`: `h` with
    /// `use_h`, else `g`).
    fn param_acc(
        &mut self,
        dev: &GpuDevice,
        x: &GpuVec,
        use_h: bool,
        (use_s, use_q): (bool, bool),
        s_dst: f32,
        dst: &mut GpuVec,
    ) -> Result<(), GpuError> {
        let f = dev.kernel(Kernel::HeadParamAcc)?;
        let ints = self.ints((0, 0));
        let sets = [i32::from(use_s), i32::from(use_q)];
        let src = if use_h { &self.h } else { &self.g };
        let mut l = dev.stream().launch_builder(&f);
        l.arg(&x.0).arg(src);
        push(&mut l, &ints[..5]);
        push(&mut l, &sets);
        l.arg(&s_dst).arg(&mut dst.0);
        // SAFETY: matches `head_param_acc`; dst holds m·(d+1)·N floats.
        unsafe { l.launch(spread(self.dims.y_len())) }?;
        Ok(())
    }

    /// `gx[r] += scale·(g_r·Y1_tᵀ + h_r·Y2_tᵀ)` for rows `[r0, r1)` (`y2 = None`: no `h` term).
    fn dx(
        &self,
        dev: &GpuDevice,
        (y1, y2): (&GpuVec, Option<&GpuVec>),
        rows: (usize, usize),
        scale: f32,
        gx: &mut GpuVec,
    ) -> Result<(), GpuError> {
        let f = dev.kernel(Kernel::HeadDx)?;
        let ints = self.ints(rows);
        let use_h = i32::from(y2.is_some());
        let y2 = y2.unwrap_or(y1);
        let mut l = dev.stream().launch_builder(&f);
        l.arg(&self.g)
            .arg(&y1.0)
            .arg(&self.h)
            .arg(&y2.0)
            .arg(&use_h);
        push(&mut l, &ints);
        l.arg(&scale).arg(&mut gx.0);
        // SAFETY: matches `head_dx`; gx: rows·d, y1/y2: m·(d+1)·N, g/h: rows·N.
        unsafe { l.launch(spread((rows.1 - rows.0) * self.dims.dim)) }?;
        Ok(())
    }

    /// Per-task query loss and hits from `ce`/`hit`, downloaded (a synchronisation point).
    fn read_task_stats(&mut self, dev: &GpuDevice) -> Result<(), GpuError> {
        let f = dev.kernel(Kernel::HeadTaskStats)?;
        let ints = self.ints((0, 0));
        let mut l = dev.stream().launch_builder(&f);
        l.arg(&self.ce).arg(&self.hit);
        push(&mut l, &ints[2..5]);
        l.arg(&mut self.task_loss).arg(&mut self.task_hits);
        // SAFETY: matches `head_task_stats`; ce/hit: rows, task buffers: m.
        unsafe { l.launch(spread(self.dims.tasks)) }?;
        let s = dev.stream();
        s.memcpy_dtoh(&self.task_loss, self.last_loss.as_mut_slice())?;
        s.memcpy_dtoh(&self.task_hits, self.last_hits.as_mut_slice())?;
        dev.synchronize()
    }
}

impl LowerStep for HeadGpu {
    /// `y_out ← (1 − w_l λ)·y − w_u ∇_y F − w_l ∇_y CE_support`: a copy, then logits,
    /// per-row terms and the per-head accumulation over the rows in use.
    fn lower_step(&mut self, x: &V, y: &V, w_u: f32, w_l: f32, y_out: &mut V) -> R {
        self.check_args("lower_step", [x], [y, y_out])?;
        let (dev, p) = (&self.dev, &mut self.p);
        let decay = 1.0 - w_l * p.l2;
        dev.stream().memcpy_dtod(&y.0, &mut y_out.0)?;
        let rows = p.dims.rows_for(w_u, w_l);
        if rows.0 == rows.1 {
            return decay_only(dev, decay, y_out);
        }
        p.logits(dev, x, y, rows, p.dims.ways, 0)?;
        p.row_terms(dev, Rows::Xent, rows, (-w_l, -w_u))?;
        p.param_acc(dev, x, false, (w_l != 0.0, w_u != 0.0), decay, y_out)
    }
}

impl UpperGradient for HeadGpu {
    /// Returns `Σ_t F_t` (and keeps the per-task values and query hits).
    fn upper_grad(&mut self, x: &V, y: &V, gy: &mut V, gx: &mut V, gx_scale: f32) -> R<f32> {
        self.check_args("upper_grad", [x, gx], [y, gy])?;
        let (dev, p) = (&self.dev, &mut self.p);
        let rows = (p.dims.first_query(), p.dims.rows());
        p.logits(dev, x, y, rows, p.dims.ways, 0)?;
        p.row_terms(dev, Rows::Xent, rows, (0.0, 1.0))?;
        p.param_acc(dev, x, false, (false, true), 0.0, gy)?;
        if gx_scale != 0.0 {
            p.dx(dev, (y, None), rows, gx_scale, gx)?;
        }
        p.read_task_stats(dev)?;
        Ok(p.last_loss.iter().map(|&v| f64::from(v)).sum::<f64>() as f32)
    }
}

/// No Hessian products: RHG, T-RHG and BDA.
impl Methods for HeadGpu {}

impl StepAdjoint for HeadGpu {
    /// Logits of `y` and `a` together (`[z | u]`), the per-row terms, the mixed products into
    /// `gx` (with the old `a`), then `a ← (1 − w_l λ)·a + Σ x̃ᵀ·h` in place.
    fn step_adjoint(&mut self, x: &V, y: &V, w_u: f32, w_l: f32, a: &mut V, gx: &mut V) -> R {
        self.check_args("step_adjoint", [x, gx], [y, a])?;
        let (dev, p) = (&self.dev, &mut self.p);
        let decay = 1.0 - w_l * p.l2;
        let rows = p.dims.rows_for(w_u, w_l);
        if rows.0 == rows.1 {
            return decay_only(dev, decay, a);
        }
        let nw = p.dims.ways;
        p.logits(dev, x, y, rows, 2 * nw, 0)?;
        p.logits(dev, x, a, rows, 2 * nw, nw)?;
        p.row_terms(dev, Rows::Hvp, rows, (-w_l, -w_u))?;
        p.dx(dev, (a, Some(y)), rows, 1.0, gx)?;
        p.param_acc(dev, x, true, (w_l != 0.0, w_u != 0.0), decay, a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dims_and_row_ranges() {
        let d = HeadDims {
            tasks: 3,
            ways: 5,
            support: 5,
            query: 75,
            dim: 256,
        };
        assert!(d.validate().is_ok());
        assert_eq!((d.rows(), d.first_query()), (240, 15));
        assert_eq!(d.y_len(), 3 * 257 * 5);
        assert_eq!(d.rows_for(0.0, 0.1), (0, 15));
        assert_eq!(d.rows_for(0.2, 0.1), (0, 240));
        assert_eq!(d.rows_for(0.2, 0.0), (15, 240));
        assert_eq!(d.rows_for(0.0, 0.0), (15, 15));
        assert!(HeadDims { ways: 1, ..d }.validate().is_err());
        assert!(HeadDims { query: 0, ..d }.validate().is_err());
    }
}
