//! The conv4 backbone on a CUDA device: forward pass with a tape, and the parameter gradient
//! from the gradient of the features — the CPU backbone of `bda-host` (`fewshot::conv4`) with
//! the same conventions (padding 1, no convolution bias, batch norm with the statistics of
//! the whole batch and ε = 1e-5, ReLU, 2×2 max-pool with ceil mode, PyTorch's flatten order)
//! and the same parameter layout ([`Conv4Shape::offsets`]).
//!
//! # Layout and products
//!
//! Maps of the `n` images of a batch are channel-major over the whole batch (`[c][i·hw + p]`),
//! so a convolution is `Z = W·cols` (cuBLAS, row-major through [`gemm`]) over the im2col matrix
//! of a chunk of images; the weight gradient is `Σ_chunks dZ·colsᵀ` and the input gradient
//! `col2im(Wᵀ·dZ)`. Chunks keep the im2col matrix under a budget of floats
//! ([`Conv4Gpu::set_col_budget`]); with the default budget a 5-way 1-shot meta-batch of 16
//! (1280 images) needs three chunks in block 2 and one elsewhere.
//!
//! Every reduction (batch-norm statistics, their adjoints) is a fixed-order per-channel sum in
//! double and the GEMMs accumulate over the chunks in order, so a seed gives the same
//! gradient on every run on the same device and library versions.

use std::sync::Arc;

use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaSlice, CudaStream, LaunchConfig, PushKernelArg};

use crate::GpuError;
use crate::gemm::{RowMajor, gemm};
use crate::kernels::{Kernel, Kernels};
use crate::shape::Conv4Shape;
use crate::softmax::{check, i32_of};

/// Batch norm's ε (PyTorch's default, as the CPU backbone).
pub const BN_EPS: f32 = 1e-5;

/// Default budget of the im2col matrix: 2^26 floats (256 MiB).
const COL_BUDGET: usize = 1 << 26;

/// Grid-stride launches: 256 threads per block, at most 2^20 blocks.
fn spread(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n.div_ceil(256).clamp(1, 1 << 20) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One block per channel for the per-channel reductions.
fn per_channel(ch: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (ch as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// What the backward pass needs from one block's forward pass.
#[derive(Debug)]
struct LayerTape {
    /// Block input, `[c_in][n·hw]`.
    input: CudaSlice<f32>,
    /// Convolution output before batch norm, `[ch][n·hw]`.
    z: CudaSlice<f32>,
    mean: CudaSlice<f32>,
    invstd: CudaSlice<f32>,
    /// For each pooled output, the index in `z` of the chosen input.
    argmax: CudaSlice<u32>,
}

/// The backbone's device buffers for batches of `n` images.
#[derive(Debug)]
struct Buffers {
    n: usize,
    layers: Vec<LayerTape>,
    /// Output maps of the last block, `[ch][n·hwo]`.
    out: CudaSlice<f32>,
    /// Gradient at a block's batch-norm input (`[ch][n·hw]`, largest block).
    dy: CudaSlice<f32>,
    /// Gradients of block outputs / inputs, ping-pong (`[ch][n·hw]` of block 1).
    dmaps: [CudaSlice<f32>; 2],
}

/// The conv4 backbone on one stream (see the module docs).
#[derive(Debug)]
pub(crate) struct Conv4Gpu {
    shape: Conv4Shape,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    kernels: Kernels,
    /// Parameters in the CPU layout.
    params: CudaSlice<f32>,
    /// Gradient of the last [`Conv4Gpu::backward`].
    grad: CudaSlice<f32>,
    /// im2col matrix (and `Wᵀ·dZ` in the backward pass).
    cols: CudaSlice<f32>,
    col_budget: usize,
    buffers: Option<Buffers>,
    /// Whether the tape holds a forward pass of the current parameters.
    taped: bool,
}

impl Conv4Gpu {
    pub(crate) fn new(
        stream: Arc<CudaStream>,
        kernels: Kernels,
        shape: Conv4Shape,
    ) -> Result<Self, GpuError> {
        shape.validate(1)?;
        let blas = CudaBlas::new(stream.clone())?;
        let params = stream.alloc_zeros(shape.num_params())?;
        let grad = stream.alloc_zeros(shape.num_params())?;
        let cols = stream.alloc_zeros(1)?;
        Ok(Conv4Gpu {
            shape,
            stream,
            blas,
            kernels,
            params,
            grad,
            cols,
            col_budget: COL_BUDGET,
            buffers: None,
            taped: false,
        })
    }

    pub(crate) fn shape(&self) -> Conv4Shape {
        self.shape
    }

    pub(crate) fn kernels_mut(&mut self) -> &mut Kernels {
        &mut self.kernels
    }

    /// Caps the im2col matrix at `floats` floats (at least one image per chunk).
    pub(crate) fn set_col_budget(&mut self, floats: usize) {
        self.col_budget = floats.max(1);
    }

    /// Device bytes of the parameters, gradient, tape and scratch.
    pub(crate) fn resident_bytes(&self) -> usize {
        let mut b = self.params.num_bytes() + self.grad.num_bytes() + self.cols.num_bytes();
        if let Some(buf) = &self.buffers {
            b += buf.out.num_bytes()
                + buf.dy.num_bytes()
                + buf.dmaps.iter().map(|d| d.num_bytes()).sum::<usize>();
            for l in &buf.layers {
                b += l.input.num_bytes()
                    + l.z.num_bytes()
                    + l.mean.num_bytes()
                    + l.invstd.num_bytes()
                    + l.argmax.num_bytes();
            }
        }
        b
    }

    /// Uploads a parameter vector (CPU layout).
    pub(crate) fn upload_params(&mut self, params: &[f32]) -> Result<(), GpuError> {
        check("backbone parameters", params.len(), self.shape.num_params())?;
        self.stream.memcpy_htod(params, &mut self.params)?;
        self.taped = false;
        Ok(())
    }

    /// Downloads the gradient of the last backward pass.
    pub(crate) fn download_grad(&self, out: &mut [f32]) -> Result<(), GpuError> {
        check("backbone gradient", out.len(), self.shape.num_params())?;
        self.stream.memcpy_dtoh(&self.grad, out)?;
        self.stream.synchronize()?;
        Ok(())
    }

    /// Images per im2col chunk of block `l`.
    fn chunk(&self, l: usize, n: usize) -> usize {
        let per = self.shape.c_in(l) * 9 * self.shape.side_at(l).pow(2);
        (self.col_budget / per).clamp(1, n.max(1))
    }

    /// Sizes the tape and scratch for `n` images (reallocating only when `n` changes).
    fn ensure(&mut self, n: usize) -> Result<(), GpuError> {
        self.shape.validate(n)?;
        let a = self.shape;
        let ch = a.channels;
        let cols_len = (0..a.blocks)
            .map(|l| self.chunk(l, n) * a.c_in(l) * 9 * a.side_at(l).pow(2))
            .max()
            .unwrap_or(1);
        if self.cols.len() < cols_len {
            self.cols = self.stream.alloc_zeros(cols_len)?;
        }
        if self.buffers.as_ref().is_some_and(|b| b.n == n) {
            return Ok(());
        }
        self.buffers = None; // free the old tape first
        let s = self.stream.clone();
        let mut layers = Vec::with_capacity(a.blocks);
        for l in 0..a.blocks {
            let (hw, hwo) = (a.side_at(l).pow(2), a.side_at(l + 1).pow(2));
            layers.push(LayerTape {
                input: s.alloc_zeros(a.c_in(l) * n * hw)?,
                z: s.alloc_zeros(ch * n * hw)?,
                mean: s.alloc_zeros(ch)?,
                invstd: s.alloc_zeros(ch)?,
                argmax: s.alloc_zeros(ch * n * hwo)?,
            });
        }
        let big = ch * n * a.side.pow(2);
        let maps = ch * n * a.side_at(1).pow(2);
        self.buffers = Some(Buffers {
            n,
            layers,
            out: s.alloc_zeros(ch * n * a.side_at(a.blocks).pow(2))?,
            dy: s.alloc_zeros(big)?,
            dmaps: [s.alloc_zeros(maps.max(1))?, s.alloc_zeros(maps.max(1))?],
        });
        Ok(())
    }

    /// Features of `n` images (`images`: `n × side²`, row-major) into `feats`
    /// (`n × features`, row-major), keeping the tape for [`Conv4Gpu::backward`].
    pub(crate) fn forward(
        &mut self,
        images: &[f32],
        n: usize,
        feats: &mut CudaSlice<f32>,
    ) -> Result<(), GpuError> {
        let a = self.shape;
        if n == 0 {
            return Err(GpuError::Data("a batch needs at least one image"));
        }
        check("images", images.len(), n * a.pixels())?;
        check("features", feats.len(), n * a.features())?;
        self.ensure(n)?;
        let ch = a.channels;
        let chunks: Vec<usize> = (0..a.blocks).map(|l| self.chunk(l, n)).collect();
        let f_im2col = self.kernels.get(Kernel::Im2col)?;
        let f_stats = self.kernels.get(Kernel::BnStats)?;
        let f_pool = self.kernels.get(Kernel::BnReluPool)?;
        let f_rows = self.kernels.get(Kernel::MapsToRows)?;
        let buf = self.buffers.as_mut().expect("sized by ensure");
        self.stream.memcpy_htod(images, &mut buf.layers[0].input)?;
        for l in 0..a.blocks {
            let (c_in, s, so) = (a.c_in(l), a.side_at(l), a.side_at(l + 1));
            let hw = s * s;
            let (wo, go, _) = a.offsets(l);
            let (head, tail) = buf.layers.split_at_mut(l + 1);
            let lt = &mut head[l];
            // Convolution, chunk by chunk: Z[:, i0·hw ..] = W · im2col(images i0 .. i0 + len).
            let mut i0 = 0;
            while i0 < n {
                let len = chunks[l].min(n - i0);
                launch_im2col(
                    &self.stream,
                    &f_im2col,
                    &lt.input,
                    c_in,
                    n,
                    s,
                    i0,
                    len,
                    &mut self.cols,
                )?;
                let p = RowMajor {
                    ldc: n * hw,
                    ..RowMajor::new(ch, len * hw, c_in * 9)
                };
                let w = self.params.slice(wo..go);
                let mut zc = lt.z.slice_mut(i0 * hw..);
                gemm(&self.blas, p, 1.0, &w, &self.cols, 0.0, &mut zc)?;
                i0 += len;
            }
            // Batch statistics, then normalise + ReLU + pool into the next block's input.
            let m = i32_of(n * hw);
            let eps = BN_EPS;
            let mut lb = self.stream.launch_builder(&f_stats);
            lb.arg(&lt.z)
                .arg(&m)
                .arg(&eps)
                .arg(&mut lt.mean)
                .arg(&mut lt.invstd);
            // SAFETY: matches `bn_stats`; z holds ch·m floats, mean and invstd ch.
            unsafe { lb.launch(per_channel(ch)) }?;
            let next = match tail.first_mut() {
                Some(t) => &mut t.input,
                None => &mut buf.out,
            };
            let gb = self.params.slice(go..go + 2 * ch);
            let (ch32, n32, s32, so32) = (i32_of(ch), i32_of(n), i32_of(s), i32_of(so));
            let mut lb = self.stream.launch_builder(&f_pool);
            lb.arg(&lt.z)
                .arg(&lt.mean)
                .arg(&lt.invstd)
                .arg(&gb)
                .arg(&ch32)
                .arg(&n32)
                .arg(&s32)
                .arg(&so32)
                .arg(next)
                .arg(&mut lt.argmax);
            // SAFETY: matches `bn_relu_pool`; z: ch·n·s², out and argmax: ch·n·so², gb: 2ch.
            unsafe { lb.launch(spread(ch * n * so * so)) }?;
        }
        let hwo = a.side_at(a.blocks).pow(2);
        let (ch32, n32, hw32) = (i32_of(ch), i32_of(n), i32_of(hwo));
        let mut lb = self.stream.launch_builder(&f_rows);
        lb.arg(&buf.out).arg(&ch32).arg(&n32).arg(&hw32).arg(feats);
        // SAFETY: matches `maps_to_rows`; both buffers hold ch·n·hwo floats.
        unsafe { lb.launch(spread(ch * n * hwo)) }?;
        self.taped = true;
        Ok(())
    }

    /// The parameter gradient of `⟨dfeats, features⟩` at the last forward pass, into the
    /// device gradient buffer ([`Conv4Gpu::download_grad`]).
    pub(crate) fn backward(&mut self, dfeats: &CudaSlice<f32>) -> Result<(), GpuError> {
        let a = self.shape;
        let Some(buf) = self.buffers.as_mut().filter(|_| self.taped) else {
            return Err(GpuError::Data(
                "backward needs a forward pass of the current parameters",
            ));
        };
        let n = buf.n;
        let ch = a.channels;
        check("feature gradient", dfeats.len(), n * a.features())?;
        let chunks: Vec<usize> = (0..a.blocks)
            .map(|l| {
                let per = a.c_in(l) * 9 * a.side_at(l).pow(2);
                (self.col_budget / per).clamp(1, n)
            })
            .collect();
        let k = &mut self.kernels;
        let (f_maps, f_pool_b, f_sums, f_dz, f_im2col, f_col2im) = (
            k.get(Kernel::RowsToMaps)?,
            k.get(Kernel::PoolReluBackward)?,
            k.get(Kernel::BnBackwardSums)?,
            k.get(Kernel::BnDz)?,
            k.get(Kernel::Im2col)?,
            k.get(Kernel::Col2im)?,
        );
        let hwo_last = a.side_at(a.blocks).pow(2);
        {
            let (ch32, n32, hw32) = (i32_of(ch), i32_of(n), i32_of(hwo_last));
            let mut lb = self.stream.launch_builder(&f_maps);
            lb.arg(dfeats)
                .arg(&ch32)
                .arg(&n32)
                .arg(&hw32)
                .arg(&mut buf.dmaps[0]);
            // SAFETY: matches `rows_to_maps`; dfeats holds ch·n·hwo floats, dmaps[0] at least
            // as many (block 1's maps are larger than the output's).
            unsafe { lb.launch(spread(ch * n * hwo_last)) }?;
        }
        let mut cur = 0; // dmaps[cur] holds the gradient of the current block's output
        for l in (0..a.blocks).rev() {
            let (c_in, s, so) = (a.c_in(l), a.side_at(l), a.side_at(l + 1));
            let (hw, hwo) = (s * s, so * so);
            let (wo, go, _) = a.offsets(l);
            let lt = &buf.layers[l];
            let gb = self.params.slice(go..go + 2 * ch);
            let (ch32, n32, hwo32, m32) = (i32_of(ch), i32_of(n), i32_of(hwo), i32_of(n * hw));
            let mut dy = buf.dy.slice_mut(..ch * n * hw);
            self.stream.memset_zeros(&mut dy)?;
            let mut lb = self.stream.launch_builder(&f_pool_b);
            lb.arg(&buf.dmaps[cur])
                .arg(&lt.argmax)
                .arg(&lt.z)
                .arg(&lt.mean)
                .arg(&lt.invstd)
                .arg(&gb)
                .arg(&ch32)
                .arg(&n32)
                .arg(&hwo32)
                .arg(&mut dy);
            // SAFETY: matches `pool_relu_backward`; argmax indexes z/dy (ch·n·hw), dout holds
            // ch·n·hwo floats.
            unsafe { lb.launch(spread(ch * n * hwo)) }?;
            let mut dgb = self.grad.slice_mut(go..go + 2 * ch);
            let mut lb = self.stream.launch_builder(&f_sums);
            lb.arg(&mut dy)
                .arg(&lt.z)
                .arg(&lt.mean)
                .arg(&lt.invstd)
                .arg(&ch32)
                .arg(&m32)
                .arg(&mut dgb);
            // SAFETY: matches `bn_backward_sums`; dy and z hold ch·m floats, dgb 2ch.
            unsafe { lb.launch(per_channel(ch)) }?;
            let dgb = self.grad.slice(go..go + 2 * ch);
            let mut lb = self.stream.launch_builder(&f_dz);
            lb.arg(&mut dy)
                .arg(&lt.z)
                .arg(&lt.mean)
                .arg(&lt.invstd)
                .arg(&gb)
                .arg(&dgb)
                .arg(&ch32)
                .arg(&m32);
            // SAFETY: matches `bn_dz`; dy and z hold ch·m floats, gb and dgb 2ch.
            unsafe { lb.launch(spread(ch * n * hw)) }?;
            // Weight gradient Σ_chunks dZ·colsᵀ and, below block 0, dinput = col2im(Wᵀ·dZ).
            let (lo, hi) = buf.dmaps.split_at_mut(1);
            let din = if cur == 0 { &mut hi[0] } else { &mut lo[0] };
            let mut i0 = 0;
            while i0 < n {
                let len = chunks[l].min(n - i0);
                launch_im2col(
                    &self.stream,
                    &f_im2col,
                    &lt.input,
                    c_in,
                    n,
                    s,
                    i0,
                    len,
                    &mut self.cols,
                )?;
                let dz = buf.dy.slice(i0 * hw..ch * n * hw);
                let p = RowMajor {
                    m: ch,
                    n: c_in * 9,
                    k: len * hw,
                    trans_a: false,
                    trans_b: true,
                    lda: n * hw,
                    ldb: len * hw,
                    ldc: c_in * 9,
                };
                let beta = if i0 == 0 { 0.0 } else { 1.0 };
                let mut gw = self.grad.slice_mut(wo..go);
                gemm(&self.blas, p, 1.0, &dz, &self.cols, beta, &mut gw)?;
                if l > 0 {
                    let p = RowMajor {
                        m: c_in * 9,
                        n: len * hw,
                        k: ch,
                        trans_a: true,
                        trans_b: false,
                        lda: c_in * 9,
                        ldb: n * hw,
                        ldc: len * hw,
                    };
                    let w = self.params.slice(wo..go);
                    gemm(&self.blas, p, 1.0, &w, &dz, 0.0, &mut self.cols)?;
                    let (c32, n32, s32, i032, len32) =
                        (i32_of(c_in), i32_of(n), i32_of(s), i32_of(i0), i32_of(len));
                    let mut lb = self.stream.launch_builder(&f_col2im);
                    lb.arg(&self.cols)
                        .arg(&c32)
                        .arg(&n32)
                        .arg(&s32)
                        .arg(&i032)
                        .arg(&len32)
                        .arg(&mut *din);
                    // SAFETY: matches `col2im`; cols holds c_in·9·len·hw floats, din
                    // c_in·n·hw ≥ the chunk's entries.
                    unsafe { lb.launch(spread(c_in * len * hw)) }?;
                }
                i0 += len;
            }
            cur = 1 - cur;
        }
        Ok(())
    }
}

/// `cols ← im2col(images i0 .. i0 + len of input)`.
#[allow(clippy::too_many_arguments)]
fn launch_im2col(
    stream: &CudaStream,
    f: &cudarc::driver::CudaFunction,
    input: &CudaSlice<f32>,
    c_in: usize,
    n: usize,
    s: usize,
    i0: usize,
    len: usize,
    cols: &mut CudaSlice<f32>,
) -> Result<(), GpuError> {
    let total = c_in * 9 * len * s * s;
    if cols.len() < total || input.len() < c_in * n * s * s || i0 + len > n {
        return Err(GpuError::Shape {
            what: "im2col",
            expected: total,
            got: cols.len(),
        });
    }
    let (c32, n32, s32, i032, len32) =
        (i32_of(c_in), i32_of(n), i32_of(s), i32_of(i0), i32_of(len));
    let mut lb = stream.launch_builder(f);
    lb.arg(input)
        .arg(&c32)
        .arg(&n32)
        .arg(&s32)
        .arg(&i032)
        .arg(&len32)
        .arg(cols);
    // SAFETY: matches `im2col`; extents checked above.
    unsafe { lb.launch(spread(total)) }?;
    Ok(())
}
