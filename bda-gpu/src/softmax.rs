//! The hyper-cleaning problem ([`bda_kernel::hyperclean`]) on a CUDA device: the math
//! primitives of [`bda_kernel::backend`], nothing else (the methods' loops stay in the kernel).
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

use std::sync::Arc;

use bda_kernel::backend::{Backend, LowerHessian, LowerStep, StepAdjoint, UpperGradient};
use bda_kernel::hyperclean::HypercleanData;
use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaContext, CudaSlice, CudaStream, LaunchConfig, PushKernelArg};

use crate::gemm::{RowMajor, gemm};
use crate::kernels::{Kernel, Kernels, arch_for};
use crate::probe::guard;
use crate::{DeviceInfo, GpuDevice, GpuError};

/// A device buffer of `f32`: the `X` and `Y` of [`HypercleanGpu`].
#[derive(Debug)]
pub struct GpuVec(pub(crate) CudaSlice<f32>);

impl GpuVec {
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.0.len() == 0
    }
    /// The underlying cudarc slice.
    pub fn as_slice(&self) -> &CudaSlice<f32> {
        &self.0
    }
}

/// Shapes of an instance (all validated to fit the 32-bit indices of the kernels and cuBLAS).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Dims {
    d: usize,
    c: usize,
    n_tr: usize,
    n_val: usize,
    n_all: usize,
    /// Row stride of `feats`: `d + 1` rounded up to a multiple of 4 (16-byte rows).
    ld: usize,
    /// `(d + 1)·c`.
    y_len: usize,
    /// `d·c`: the `W` part of a `y` buffer.
    n_w: usize,
    lambda: f32,
}

impl Dims {
    fn of(data: &HypercleanData<'_>) -> Result<Self, GpuError> {
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
    fn pack_features(&self, data: &HypercleanData<'_>) -> Vec<f32> {
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

    /// The rows a step with weights `(w_u, w_l)` touches: training rows only when `w_l ≠ 0`,
    /// validation rows only when `w_u ≠ 0` (they are contiguous, so a range).
    fn rows(&self, w_u: f32, w_l: f32) -> (usize, usize) {
        let r0 = if w_l == 0.0 { self.n_tr } else { 0 };
        let r1 = if w_u == 0.0 { self.n_tr } else { self.n_all };
        (r0, r1.max(r0))
    }
}

pub(crate) fn i32_of(v: usize) -> i32 {
    // Every value passed here is bounded by a product that the backend's shape check
    // (`Dims::of`, `Conv4Shape::validate`, `HeadDims::new`) bounded by i32::MAX.
    v as i32
}

/// One thread per element, 256 per block.
pub(crate) fn elementwise(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n.div_ceil(256).max(1) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One thread per sample row, 128 per block.
fn per_row(rows: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows.div_ceil(128).max(1) as u32, 1, 1),
        block_dim: (128, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// The single-block reductions.
pub(crate) const REDUCE: LaunchConfig = LaunchConfig {
    grid_dim: (1, 1, 1),
    block_dim: (1024, 1, 1),
    shared_mem_bytes: 0,
};

pub(crate) fn check(what: &'static str, got: usize, expected: usize) -> Result<(), GpuError> {
    if got == expected {
        Ok(())
    } else {
        Err(GpuError::Shape {
            what,
            expected,
            got,
        })
    }
}

/// `Z[r0..r1] ← X̃[r0..r1]·B`, `B` a row-major `(d+1)×cols` matrix; `Z` has row stride `cols`.
#[allow(clippy::too_many_arguments)]
fn logits(
    blas: &CudaBlas,
    dims: &Dims,
    feats: &CudaSlice<f32>,
    b: &CudaSlice<f32>,
    cols: usize,
    r0: usize,
    r1: usize,
    z: &mut CudaSlice<f32>,
) -> Result<(), GpuError> {
    let p = RowMajor {
        lda: dims.ld,
        ..RowMajor::new(r1 - r0, cols, dims.d + 1)
    };
    let a = feats.slice(r0 * dims.ld..);
    let mut zv = z.slice_mut(r0 * cols..);
    gemm(blas, p, 1.0, &a, b, 0.0, &mut zv)
}

/// `out ← α·X̃[r0..r1]ᵀ·G[r0..r1] + β·out`, `G` row-major with row stride `c`.
#[allow(clippy::too_many_arguments)]
fn back(
    blas: &CudaBlas,
    dims: &Dims,
    feats: &CudaSlice<f32>,
    g: &CudaSlice<f32>,
    r0: usize,
    r1: usize,
    alpha: f32,
    beta: f32,
    out: &mut CudaSlice<f32>,
) -> Result<(), GpuError> {
    let p = RowMajor {
        m: dims.d + 1,
        n: dims.c,
        k: r1 - r0,
        trans_a: true,
        trans_b: false,
        lda: dims.ld,
        ldb: dims.c,
        ldc: dims.c,
    };
    let a = feats.slice(r0 * dims.ld..);
    let gv = g.slice(r0 * dims.c..);
    gemm(blas, p, alpha, &a, &gv, beta, out)
}

/// Data hyper-cleaning (softmax regression with per-sample weights `σ(x_i)`) on one CUDA
/// device, implementing [`Backend`], [`LowerStep`], [`UpperGradient`], [`StepAdjoint`] and
/// [`LowerHessian`] with `T = f32` and `X = Y =` [`GpuVec`].
///
/// The data are uploaded once by [`HypercleanGpu::new`]. Every operation is queued on one
/// stream; only [`UpperGradient::upper_grad`] (the value `F`), [`Backend::dot_y`],
/// [`Backend::y_is_finite`] and the downloads wait for the device.
#[derive(Debug)]
pub struct HypercleanGpu {
    info: DeviceInfo,
    dims: Dims,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    kernels: Kernels,
    /// `n_all × ld` augmented features (see the module docs).
    feats: CudaSlice<f32>,
    /// `n_all` labels.
    labels: CudaSlice<u8>,
    /// `n_all × 2c` logits (row stride `c`, or `2c` for `[z | t]` pairs).
    z: CudaSlice<f32>,
    /// `n_all × c` per-row gradient / HVP terms.
    g: CudaSlice<f32>,
    /// `n_all` cross-entropies.
    ce: CudaSlice<f32>,
    /// `(d+1) × 2c` packed `[Ỹ | A]`.
    ya: CudaSlice<f32>,
    /// Reduction results.
    red: CudaSlice<f64>,
    /// `y_is_finite` result.
    flag: CudaSlice<u32>,
    /// Stands for "no gx" in `hvp_rows` (never written: its scale is 0 then).
    dummy: CudaSlice<f32>,
}

impl HypercleanGpu {
    /// Checks `data` and uploads it to the opened device. The kernels
    /// are compiled on first use; call [`HypercleanGpu::warm_up`] to do it now.
    pub fn new(dev: &GpuDevice, data: &HypercleanData<'_>) -> Result<Self, GpuError> {
        data.validate().map_err(GpuError::Data)?;
        let dims = Dims::of(data)?;
        guard(|| Self::upload(dev.ctx.clone(), dev.info.clone(), dims, data))
    }

    fn upload(
        ctx: Arc<CudaContext>,
        info: DeviceInfo,
        dims: Dims,
        data: &HypercleanData<'_>,
    ) -> Result<Self, GpuError> {
        // SAFETY: this backend issues all its work on the one stream created below, so cudarc's
        // cross-stream event tracking is not needed (and would record two events per launch).
        // It only affects buffers allocated from now on in this context.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream()?;
        let blas = CudaBlas::new(stream.clone())?;
        let kernels = Kernels::new(ctx.clone(), arch_for(info.compute_capability)?);
        let feats = stream.clone_htod(&dims.pack_features(data))?;
        let labels: Vec<u8> = data
            .train_labels
            .iter()
            .chain(data.val_labels)
            .copied()
            .collect();
        let labels = stream.clone_htod(&labels)?;
        let z = stream.alloc_zeros(dims.n_all * 2 * dims.c)?;
        let g = stream.alloc_zeros(dims.n_all * dims.c)?;
        let ce = stream.alloc_zeros(dims.n_all)?;
        let ya = stream.alloc_zeros(dims.y_len * 2)?;
        let red = stream.alloc_zeros(2)?;
        let flag = stream.alloc_zeros(1)?;
        let dummy = stream.alloc_zeros(1)?;
        stream.synchronize()?;
        Ok(HypercleanGpu {
            info,
            dims,
            stream,
            blas,
            kernels,
            feats,
            labels,
            z,
            g,
            ce,
            ya,
            red,
            flag,
            dummy,
        })
    }

    /// The device in use.
    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    /// The NVRTC target architecture, e.g. `sm_90`.
    pub fn arch(&self) -> &str {
        self.kernels.arch()
    }

    /// Compiles (once per process) and loads every kernel now.
    pub fn warm_up(&mut self) -> Result<(), GpuError> {
        self.kernels.load_all()
    }

    /// Waits until all queued work is done (for timing).
    pub fn synchronize(&self) -> Result<(), GpuError> {
        Ok(self.stream.synchronize()?)
    }

    /// Length of a `y` buffer, `(d + 1)·c`.
    pub fn y_len(&self) -> usize {
        self.dims.y_len
    }

    /// Length of an `x` buffer, `n_tr`.
    pub fn x_len(&self) -> usize {
        self.dims.n_tr
    }

    /// Device bytes held by the uploaded data and the scratch buffers (not counting `x`/`y`
    /// buffers, the CUDA context and cuBLAS' workspace).
    pub fn resident_bytes(&self) -> usize {
        self.feats.num_bytes()
            + self.labels.num_bytes()
            + self.z.num_bytes()
            + self.g.num_bytes()
            + self.ce.num_bytes()
            + self.ya.num_bytes()
            + self.red.num_bytes()
            + self.flag.num_bytes()
            + self.dummy.num_bytes()
    }

    fn check_x(&self, what: &'static str, x: &GpuVec) -> Result<(), GpuError> {
        check(what, x.len(), self.dims.n_tr)
    }

    fn check_y(&self, what: &'static str, y: &GpuVec) -> Result<(), GpuError> {
        check(what, y.len(), self.dims.y_len)
    }

    /// `dst ← src ⊙ (s_w on W, s_b on b)`.
    fn masked_scale_copy(
        &mut self,
        src: &GpuVec,
        dst: &mut GpuVec,
        s_w: f32,
        s_b: f32,
    ) -> Result<(), GpuError> {
        let f = self.kernels.get(Kernel::MaskedScaleCopy)?;
        let (n, n_w) = (i32_of(self.dims.y_len), i32_of(self.dims.n_w));
        let mut l = self.stream.launch_builder(&f);
        l.arg(&src.0)
            .arg(&mut dst.0)
            .arg(&n)
            .arg(&n_w)
            .arg(&s_w)
            .arg(&s_b);
        // SAFETY: argument list matches `masked_scale_copy`; both buffers hold y_len entries.
        unsafe { l.launch(elementwise(self.dims.y_len)) }?;
        Ok(())
    }

    /// `ya ← [Ỹ | A]`, and with `scale_a = Some(s)`, `A_W ← s·A_W` afterwards.
    fn pack(&mut self, y: &GpuVec, a: PackSource<'_>) -> Result<(), GpuError> {
        let (rows, c, n_w) = (
            i32_of(self.dims.d + 1),
            i32_of(self.dims.c),
            i32_of(self.dims.n_w),
        );
        let cfg = elementwise(self.dims.y_len);
        match a {
            PackSource::Keep(a) => {
                let f = self.kernels.get(Kernel::PackPair)?;
                let mut l = self.stream.launch_builder(&f);
                l.arg(&y.0).arg(&a.0).arg(&mut self.ya).arg(&rows).arg(&c);
                // SAFETY: matches `pack_pair`; y, a: (d+1)·c entries, ya: 2(d+1)·c.
                unsafe { l.launch(cfg) }?;
            }
            PackSource::Scale(a, s_w) => {
                let f = self.kernels.get(Kernel::PackPairScale)?;
                let mut l = self.stream.launch_builder(&f);
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

    /// `xent_grad_rows` over `[r0, r1)` with logits of row stride `c` in `z`.
    fn xent_grad_rows(
        &mut self,
        x: &GpuVec,
        r0: usize,
        r1: usize,
        a_tr: f32,
        a_val: f32,
    ) -> Result<(), GpuError> {
        let f = self.kernels.get(Kernel::XentGradRows)?;
        let (ldz, c, n_tr) = (
            i32_of(self.dims.c),
            i32_of(self.dims.c),
            i32_of(self.dims.n_tr),
        );
        let (row0, row1) = (i32_of(r0), i32_of(r1));
        let mut l = self.stream.launch_builder(&f);
        l.arg(&self.z)
            .arg(&ldz)
            .arg(&self.labels)
            .arg(&x.0)
            .arg(&n_tr);
        l.arg(&row0)
            .arg(&row1)
            .arg(&c)
            .arg(&a_tr)
            .arg(&a_val)
            .arg(&mut self.g)
            .arg(&mut self.ce);
        // SAFETY: matches `xent_grad_rows`; rows < n_all, z: n_all·2c ≥ n_all·c, x: n_tr.
        unsafe { l.launch(per_row(r1 - r0)) }?;
        Ok(())
    }

    /// `hvp_rows` over `[r0, r1)` with `[z | t]` pairs (row stride `2c`) in `z`.
    #[allow(clippy::too_many_arguments)]
    fn hvp_rows(
        &mut self,
        x: &GpuVec,
        r0: usize,
        r1: usize,
        a_tr: f32,
        a_val: f32,
        gx: Option<&mut GpuVec>,
        gx_scale: f32,
    ) -> Result<(), GpuError> {
        let f = self.kernels.get(Kernel::HvpRows)?;
        let (c, n_tr) = (i32_of(self.dims.c), i32_of(self.dims.n_tr));
        let (row0, row1) = (i32_of(r0), i32_of(r1));
        let (gx_buf, gx_scale) = match gx {
            Some(g) => (&mut g.0, gx_scale),
            None => (&mut self.dummy, 0.0f32),
        };
        let mut l = self.stream.launch_builder(&f);
        l.arg(&self.z)
            .arg(&self.labels)
            .arg(&x.0)
            .arg(&n_tr)
            .arg(&row0)
            .arg(&row1)
            .arg(&c);
        l.arg(&a_tr)
            .arg(&a_val)
            .arg(&mut self.g)
            .arg(gx_buf)
            .arg(&gx_scale);
        // SAFETY: matches `hvp_rows`; gx has n_tr entries or gx_scale = 0 (never written).
        unsafe { l.launch(per_row(r1 - r0)) }?;
        Ok(())
    }

    /// `red[slot] ← Σ a_i b_i` over the first `n` entries.
    fn reduce_dot(
        &mut self,
        a: &CudaSlice<f32>,
        b: &CudaSlice<f32>,
        n: usize,
        slot: usize,
    ) -> Result<(), GpuError> {
        let f = self.kernels.get(Kernel::ReduceDot)?;
        let n32 = i32_of(n);
        let mut out = self.red.slice_mut(slot..slot + 1);
        let mut l = self.stream.launch_builder(&f);
        l.arg(a).arg(b).arg(&n32).arg(&mut out);
        // SAFETY: matches `reduce_dot`; a, b hold at least n entries (checked by callers).
        unsafe { l.launch(REDUCE) }?;
        Ok(())
    }

    /// Downloads the two reduction slots (a synchronisation point).
    fn read_red(&self) -> Result<[f64; 2], GpuError> {
        let mut host = [0.0f64; 2];
        self.stream.memcpy_dtoh(&self.red, &mut host)?;
        self.stream.synchronize()?;
        Ok(host)
    }
}

impl Drop for HypercleanGpu {
    /// Waits for queued work before the modules and buffers go (errors cannot be reported
    /// from a drop and are ignored).
    fn drop(&mut self) {
        let _ = self.stream.synchronize();
    }
}

/// The second block of a `pack`: kept as is, or scaled on its `W` part after packing.
enum PackSource<'a> {
    Keep(&'a GpuVec),
    Scale(&'a mut GpuVec, f32),
}

impl Backend for HypercleanGpu {
    crate::buffers::device_buffer_ops!();
}

impl LowerStep for HypercleanGpu {
    /// Four launches: `masked_scale_copy`, GEMM, `xent_grad_rows`, GEMM (none when
    /// `w_u = w_l = 0`). Training rows are skipped when `w_l = 0`, validation rows when `w_u = 0`.
    fn lower_step(
        &mut self,
        x: &GpuVec,
        y: &GpuVec,
        w_u: f32,
        w_l: f32,
        y_out: &mut GpuVec,
    ) -> Result<(), GpuError> {
        self.check_x("lower_step x", x)?;
        self.check_y("lower_step y", y)?;
        self.check_y("lower_step y_out", y_out)?;
        let d = self.dims;
        self.masked_scale_copy(y, y_out, 1.0 - 2.0 * d.lambda * w_u, 1.0)?;
        let (r0, r1) = d.rows(w_u, w_l);
        if r0 == r1 {
            return Ok(());
        }
        logits(&self.blas, &d, &self.feats, &y.0, d.c, r0, r1, &mut self.z)?;
        self.xent_grad_rows(x, r0, r1, w_l / d.n_tr as f32, w_u / d.n_val as f32)?;
        back(
            &self.blas,
            &d,
            &self.feats,
            &self.g,
            r0,
            r1,
            -1.0,
            1.0,
            &mut y_out.0,
        )
    }
}

impl UpperGradient for HypercleanGpu {
    fn upper_depends_on_x(&self) -> bool {
        false // F = validation CE + λ‖W‖²
    }

    /// `F` does not depend on `x`: `gx` is left as it is. Waits for the device (the value).
    fn upper_grad(
        &mut self,
        x: &GpuVec,
        y: &GpuVec,
        gy: &mut GpuVec,
        gx: &mut GpuVec,
        _gx_scale: f32,
    ) -> Result<f32, GpuError> {
        self.check_x("upper_grad x", x)?;
        self.check_y("upper_grad y", y)?;
        self.check_y("upper_grad gy", gy)?;
        self.check_x("upper_grad gx", gx)?;
        let d = self.dims;
        self.masked_scale_copy(y, gy, 2.0 * d.lambda, 0.0)?;
        let (r0, r1) = (d.n_tr, d.n_all);
        logits(&self.blas, &d, &self.feats, &y.0, d.c, r0, r1, &mut self.z)?;
        self.xent_grad_rows(x, r0, r1, 0.0, 1.0 / d.n_val as f32)?;
        back(
            &self.blas,
            &d,
            &self.feats,
            &self.g,
            r0,
            r1,
            1.0,
            1.0,
            &mut gy.0,
        )?;
        // Σ_j CE_j over validation rows into red[0], ‖W‖² into red[1].
        {
            let f = self.kernels.get(Kernel::ReduceSum)?;
            let n = i32_of(d.n_val);
            let ce_val = self.ce.slice(d.n_tr..);
            let mut out = self.red.slice_mut(0..1);
            let mut l = self.stream.launch_builder(&f);
            l.arg(&ce_val).arg(&n).arg(&mut out);
            // SAFETY: matches `reduce_sum`; ce_val holds n_val entries.
            unsafe { l.launch(REDUCE) }?;
        }
        self.reduce_dot(&y.0, &y.0, d.n_w, 1)?;
        let [ce_sum, w2] = self.read_red()?;
        Ok((ce_sum / d.n_val as f64 + f64::from(d.lambda) * w2) as f32)
    }
}

impl StepAdjoint for HypercleanGpu {
    /// Four launches: `pack_pair_scale` (`[Ỹ | A]`, and `A_W ← (1 − 2λw_u)·A_W`), one GEMM for
    /// logits and tangent logits together, `hvp_rows` (HVP row terms and the mixed `x` term),
    /// GEMM `A ← A − X̃ᵀ·H`.
    fn step_adjoint(
        &mut self,
        x: &GpuVec,
        y: &GpuVec,
        w_u: f32,
        w_l: f32,
        a: &mut GpuVec,
        gx: &mut GpuVec,
    ) -> Result<(), GpuError> {
        self.check_x("step_adjoint x", x)?;
        self.check_y("step_adjoint y", y)?;
        self.check_y("step_adjoint a", a)?;
        self.check_x("step_adjoint gx", gx)?;
        let d = self.dims;
        let (r0, r1) = d.rows(w_u, w_l);
        let s_w = 1.0 - 2.0 * d.lambda * w_u;
        if r0 == r1 {
            // w_u = w_l = 0: the step is the identity.
            return Ok(());
        }
        self.pack(y, PackSource::Scale(a, s_w))?;
        logits(
            &self.blas,
            &d,
            &self.feats,
            &self.ya,
            2 * d.c,
            r0,
            r1,
            &mut self.z,
        )?;
        let (n_tr, n_val) = (d.n_tr as f32, d.n_val as f32);
        self.hvp_rows(x, r0, r1, w_l / n_tr, w_u / n_val, Some(gx), -w_l / n_tr)?;
        back(
            &self.blas,
            &d,
            &self.feats,
            &self.g,
            r0,
            r1,
            -1.0,
            1.0,
            &mut a.0,
        )
    }
}

impl HypercleanGpu {
    /// Logits of `y` and of the direction `v` together (one GEMM with `[y | v]`) over the
    /// training rows, into `z`: what both second-derivative products of `f` start from.
    fn train_tangent_logits(&mut self, y: &GpuVec, v: &GpuVec) -> Result<(), GpuError> {
        let d = self.dims;
        self.pack(y, PackSource::Keep(v))?;
        logits(
            &self.blas,
            &d,
            &self.feats,
            &self.ya,
            2 * d.c,
            0,
            d.n_tr,
            &mut self.z,
        )
    }
}

impl LowerHessian for HypercleanGpu {
    fn lower_hvp(
        &mut self,
        x: &GpuVec,
        y: &GpuVec,
        v: &GpuVec,
        out: &mut GpuVec,
    ) -> Result<(), GpuError> {
        self.check_x("lower_hvp x", x)?;
        self.check_y("lower_hvp y", y)?;
        self.check_y("lower_hvp v", v)?;
        self.check_y("lower_hvp out", out)?;
        let d = self.dims;
        self.train_tangent_logits(y, v)?;
        self.hvp_rows(x, 0, d.n_tr, 1.0 / d.n_tr as f32, 0.0, None, 0.0)?;
        back(
            &self.blas,
            &d,
            &self.feats,
            &self.g,
            0,
            d.n_tr,
            1.0,
            0.0,
            &mut out.0,
        )
    }

    fn lower_mixed_vjp(
        &mut self,
        x: &GpuVec,
        y: &GpuVec,
        v: &GpuVec,
        scale: f32,
        gx: &mut GpuVec,
    ) -> Result<(), GpuError> {
        self.check_x("lower_mixed_vjp x", x)?;
        self.check_y("lower_mixed_vjp y", y)?;
        self.check_y("lower_mixed_vjp v", v)?;
        self.check_x("lower_mixed_vjp gx", gx)?;
        let d = self.dims;
        self.train_tangent_logits(y, v)?;
        self.hvp_rows(x, 0, d.n_tr, 0.0, 0.0, Some(gx), scale / d.n_tr as f32)
    }

    fn lower_grad_x(
        &mut self,
        x: &GpuVec,
        y: &GpuVec,
        scale: f32,
        gx: &mut GpuVec,
    ) -> Result<(), GpuError> {
        self.check_x("lower_grad_x x", x)?;
        self.check_y("lower_grad_x y", y)?;
        self.check_x("lower_grad_x gx", gx)?;
        let d = self.dims;
        logits(
            &self.blas,
            &d,
            &self.feats,
            &y.0,
            d.c,
            0,
            d.n_tr,
            &mut self.z,
        )?;
        let f = self.kernels.get(Kernel::XentDxRows)?;
        let (ldz, c, n_tr) = (i32_of(d.c), i32_of(d.c), i32_of(d.n_tr));
        let gx_scale = scale / d.n_tr as f32;
        let mut l = self.stream.launch_builder(&f);
        l.arg(&self.z)
            .arg(&ldz)
            .arg(&self.labels)
            .arg(&x.0)
            .arg(&n_tr)
            .arg(&c)
            .arg(&mut gx.0)
            .arg(&gx_scale);
        // SAFETY: matches `xent_dx_rows`; x and gx hold n_tr entries.
        unsafe { l.launch(per_row(d.n_tr)) }?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data<'a>(
        train_x: &'a [f32],
        train_labels: &'a [u8],
        val_x: &'a [f32],
        val_labels: &'a [u8],
    ) -> HypercleanData<'a> {
        HypercleanData {
            dim: 3,
            classes: 2,
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
        send_sync::<HypercleanGpu>();
        send_sync::<GpuVec>();
        send_sync::<GpuError>();
        send_sync::<DeviceInfo>();
    }
}
