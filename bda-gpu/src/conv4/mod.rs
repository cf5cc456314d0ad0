//! The conv4 backbone on a CUDA device: forward pass with a tape, and the parameter gradient
//! from the gradient of the features — the CPU backbone of `bda-cpu` (`conv4`) with
//! the same conventions (padding 1, no convolution bias, batch norm with the statistics of
//! the whole batch and ε = 1e-5, ReLU, 2×2 max-pool with ceil mode, PyTorch's flatten order)
//! and the same parameter layout ([`Conv4Shape::offsets`]).
//!
//! # Layout and products
//!
//! Maps of the `n` images of a batch are channel-major over the whole batch (`[c][i·hw + p]`),
//! so a convolution is `Z = W·cols` (cuBLAS, row-major through [`GpuDevice::gemm`]) over the im2col matrix
//! of a chunk of images; the weight gradient is `Σ_chunks dZ·colsᵀ` and the input gradient
//! `col2im(Wᵀ·dZ)`. Chunks keep the im2col matrix under a budget of floats
//! ([`Conv4Gpu::set_col_budget`]); with the default budget a 5-way 1-shot meta-batch of 16
//! (1280 images) needs three chunks in block 2 and one elsewhere.
//!
//! Every reduction (batch-norm statistics, their adjoints) is a fixed-order per-channel sum in
//! double and the GEMMs accumulate over the chunks in order, so a seed gives the same
//! gradient on every run on the same device and library versions.

use cudarc::driver::{CudaSlice, CudaView, CudaViewMut, PushKernelArg};

use crate::gemm::RowMajor;
use crate::kernels::Kernel;
use crate::launch::{check, i32_of, per_channel, push, spread};
use crate::ranks::Slots;
use bda_kernel::fewshot::{BN_EPS, Conv4Shape};

use crate::{GpuDevice, GpuError};

mod split;

pub use split::CHUNK_IMAGES;
use split::ImageSplit;

/// Checks that `shape` is usable and that `images` images fit the 32-bit indices of the
/// kernels and cuBLAS (what [`crate::FewshotGpu::new`] checks for one image, and every batch
/// for its own size), so a caller can reject a shape before opening a device.
pub fn check_shape(shape: &Conv4Shape, images: usize) -> Result<(), GpuError> {
    shape.validate().map_err(GpuError::Data)?;
    let fits = |v: Option<usize>| v.is_some_and(|v| v <= i32::MAX as usize);
    let hw = shape.side * shape.side;
    let widest = shape.channels.max(shape.in_channels);
    if !fits(widest.checked_mul(hw).and_then(|v| v.checked_mul(images)))
        || !fits(
            shape
                .channels
                .checked_mul(9)
                .and_then(|v| v.checked_mul(widest)),
        )
    {
        return Err(GpuError::TooLarge("feature maps"));
    }
    Ok(())
}

/// Default budget of the im2col matrix: 2^26 floats (256 MiB).
const COL_BUDGET: usize = 1 << 26;

/// The im2col matrix of one chunk of images (and `Wᵀ·dZ` in the backward pass), and the
/// budget that sizes the chunks.
#[derive(Debug)]
struct Im2col {
    cols: CudaSlice<f32>,
    /// Floats the matrix may hold (at least one image's worth is used whatever the budget).
    budget: usize,
    /// Images per chunk regardless of the budget (split over ranks: every GEMM then has a
    /// chunk's shape whatever the number of ranks).
    fixed: Option<usize>,
}

impl Im2col {
    /// Images per chunk of block `l` for a batch of `n`.
    fn chunk(&self, shape: &Conv4Shape, l: usize, n: usize) -> usize {
        if let Some(images) = self.fixed {
            return images.clamp(1, n.max(1));
        }
        let per = shape.c_in(l) * 9 * shape.side_at(l).pow(2);
        (self.budget / per).clamp(1, n.max(1))
    }

    /// `cols ← im2col(images i0 .. i0 + len of input)`, `input` holding `n` images of
    /// `c_in` channels of side `s`.
    fn fill(
        &mut self,
        dev: &GpuDevice,
        input: &CudaSlice<f32>,
        c_in: usize,
        n: usize,
        s: usize,
        chunk: (usize, usize),
    ) -> Result<(), GpuError> {
        let dims = [c_in, n, s, chunk.0, chunk.1];
        launch_chunk(dev, Kernel::Im2col, input, &mut self.cols, dims)
    }

    /// `din[images i0 .. i0 + len] ← col2im(cols)`, the adjoint of [`Im2col::fill`] (each
    /// input position gathers its at most 9 taps: no atomics).
    fn col2im(
        &self,
        dev: &GpuDevice,
        c_in: usize,
        n: usize,
        s: usize,
        chunk: (usize, usize),
        din: &mut CudaSlice<f32>,
    ) -> Result<(), GpuError> {
        let dims = [c_in, n, s, chunk.0, chunk.1];
        launch_chunk(dev, Kernel::Col2im, &self.cols, din, dims)
    }
}

/// Launches `im2col` (maps → cols) or `col2im` (cols → maps), whose arguments are both
/// `(src, c_in, n, s, i0, len, dst)`, for images `[i0, i0 + len)` of a batch of `n` images of
/// `c_in` channels of side `s`, after checking every extent.
pub(crate) fn launch_chunk(
    dev: &GpuDevice,
    k: Kernel,
    src: &CudaSlice<f32>,
    dst: &mut CudaSlice<f32>,
    [c_in, n, s, i0, len]: [usize; 5],
) -> Result<(), GpuError> {
    let total = c_in * 9 * len * s * s;
    let (maps, cols, threads) = match k {
        Kernel::Col2im => (dst.len(), src.len(), c_in * len * s * s),
        _ => (src.len(), dst.len(), total),
    };
    if cols < total || maps < c_in * n * s * s || i0 + len > n {
        return Err(GpuError::Shape {
            what: k.name(),
            expected: total,
            got: cols,
        });
    }
    let f = dev.kernel(k)?;
    let ints = [c_in, n, s, i0, len].map(i32_of);
    let mut lb = dev.stream().launch_builder(&f);
    lb.arg(src);
    push(&mut lb, &ints);
    lb.arg(dst);
    // SAFETY: matches `im2col` and `col2im`; the matrix holds c_in·9·len·s² floats, the
    // maps c_in·n·s², and the chunk lies inside the batch (all checked above).
    unsafe { lb.launch(spread(threads)) }?;
    Ok(())
}

/// The chunks `(first image, images)` of a batch of `n` images, `per` (at least 1) at a time.
fn chunks(n: usize, per: usize) -> impl Iterator<Item = (usize, usize)> {
    let per = per.max(1);
    (0..n).step_by(per).map(move |i0| (i0, per.min(n - i0)))
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

/// The conv4 backbone on the device's stream (see the module docs).
#[derive(Debug)]
pub(crate) struct Conv4Gpu {
    shape: Conv4Shape,
    dev: GpuDevice,
    /// Parameters in the CPU layout.
    params: CudaSlice<f32>,
    /// Gradient of the last [`Conv4Gpu::backward`].
    grad: CudaSlice<f32>,
    im2col: Im2col,
    buffers: Option<Buffers>,
    /// Whether the tape holds a forward pass of the current parameters.
    taped: bool,
    /// This rank's share of the batches, when split over ranks.
    split: Option<ImageSplit>,
}

impl Conv4Gpu {
    /// A backbone of shape `shape` on `dev` (parameters all 0 until uploaded).
    pub(crate) fn new(dev: &GpuDevice, shape: Conv4Shape) -> Result<Self, GpuError> {
        check_shape(&shape, 1)?;
        let s = dev.stream();
        Ok(Conv4Gpu {
            shape,
            params: s.alloc_zeros(shape.num_params())?,
            grad: s.alloc_zeros(shape.num_params())?,
            im2col: Im2col {
                cols: s.alloc_zeros(1)?,
                budget: COL_BUDGET,
                fixed: None,
            },
            dev: dev.clone(),
            buffers: None,
            taped: false,
            split: None,
        })
    }

    pub(crate) fn shape(&self) -> Conv4Shape {
        self.shape
    }

    /// Caps the im2col matrix at `floats` floats (at least one image per chunk).
    pub(crate) fn set_col_budget(&mut self, floats: usize) {
        self.im2col.budget = floats.max(1);
    }

    /// Device bytes of the parameters, gradient, tape and scratch.
    pub(crate) fn resident_bytes(&self) -> usize {
        let mut b = self.params.num_bytes() + self.grad.num_bytes() + self.im2col.cols.num_bytes();
        b += self.split.as_ref().map_or(0, ImageSplit::num_bytes);
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
        self.dev.stream().memcpy_htod(params, &mut self.params)?;
        self.taped = false;
        Ok(())
    }

    /// Downloads the gradient of the last backward pass.
    pub(crate) fn download_grad(&self, out: &mut [f32]) -> Result<(), GpuError> {
        check("backbone gradient", out.len(), self.shape.num_params())?;
        self.dev.stream().memcpy_dtoh(&self.grad, out)?;
        self.dev.synchronize()
    }

    /// Sizes the tape and scratch for `n` images (reallocating only when `n` changes).
    fn ensure(&mut self, n: usize) -> Result<(), GpuError> {
        check_shape(&self.shape, n)?;
        let a = self.shape;
        let ch = a.channels;
        let cols_len = (0..a.blocks)
            .map(|l| self.im2col.chunk(&a, l, n) * a.c_in(l) * 9 * a.side_at(l).pow(2))
            .max()
            .unwrap_or(1);
        if self.im2col.cols.len() < cols_len {
            self.im2col.cols = self.dev.stream().alloc_zeros(cols_len)?;
        }
        if self.buffers.as_ref().is_some_and(|b| b.n == n) {
            return Ok(());
        }
        self.buffers = None; // free the old tape first
        let s = self.dev.stream();
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

    /// Features of `n` images (`images`: `n × in_channels·side²`, each channel-major) into `feats`
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
        self.upload_images(images, n)?;
        for l in 0..a.blocks {
            self.conv_layer(l)?;
            self.bn_stats_layer(l)?;
            self.pool_layer(l)?;
        }
        self.features_out(&mut feats.as_view_mut())?;
        self.taped = true;
        Ok(())
    }

    /// Sizes the tape for `n` images and uploads them as block 0's input.
    fn upload_images(&mut self, images: &[f32], n: usize) -> Result<(), GpuError> {
        self.ensure(n)?;
        let a = self.shape;
        let stream = self.dev.stream();
        let buf = self.buffers.as_mut().expect("sized by ensure");
        if a.in_channels == 1 {
            stream.memcpy_htod(images, &mut buf.layers[0].input)?;
        } else {
            let planes = channel_major(images, n, a.in_channels, a.side * a.side);
            stream.memcpy_htod(&planes, &mut buf.layers[0].input)?;
        }
        Ok(())
    }

    /// Block `l`'s convolution, chunk by chunk: `Z[:, i0·hw ..] = W · im2col(images i0 ..
    /// i0 + len)`.
    fn conv_layer(&mut self, l: usize) -> Result<(), GpuError> {
        let a = self.shape;
        let buf = self.buffers.as_mut().expect("sized by ensure");
        let n = buf.n;
        let (c_in, s) = (a.c_in(l), a.side_at(l));
        let hw = s * s;
        let (wo, go, _) = a.offsets(l);
        let lt = &mut buf.layers[l];
        for (i0, len) in chunks(n, self.im2col.chunk(&a, l, n)) {
            self.im2col
                .fill(&self.dev, &lt.input, c_in, n, s, (i0, len))?;
            let p = RowMajor {
                ldc: n * hw,
                ..RowMajor::new(a.channels, len * hw, c_in * 9)
            };
            let w = self.params.slice(wo..go);
            let mut zc = lt.z.slice_mut(i0 * hw..);
            self.dev.gemm(p, 1.0, &w, &self.im2col.cols, 0.0, &mut zc)?;
        }
        Ok(())
    }

    /// Block `l`'s batch statistics over this device's batch.
    fn bn_stats_layer(&mut self, l: usize) -> Result<(), GpuError> {
        let a = self.shape;
        let f = self.dev.kernel(Kernel::BnStats)?;
        let buf = self.buffers.as_mut().expect("sized by ensure");
        let lt = &mut buf.layers[l];
        let m = i32_of(buf.n * a.side_at(l).pow(2));
        let eps = BN_EPS as f32;
        let mut lb = self.dev.stream().launch_builder(&f);
        lb.arg(&lt.z)
            .arg(&m)
            .arg(&eps)
            .arg(&mut lt.mean)
            .arg(&mut lt.invstd);
        // SAFETY: matches `bn_stats`; z holds ch·m floats, mean and invstd ch.
        unsafe { lb.launch(per_channel(a.channels)?) }?;
        Ok(())
    }

    /// Block `l`'s normalisation, ReLU and pool into the next block's input (or the output).
    fn pool_layer(&mut self, l: usize) -> Result<(), GpuError> {
        let a = self.shape;
        let f = self.dev.kernel(Kernel::BnReluPool)?;
        let buf = self.buffers.as_mut().expect("sized by ensure");
        let (ch, n, s, so) = (a.channels, buf.n, a.side_at(l), a.side_at(l + 1));
        let (_, go, _) = a.offsets(l);
        let (head, tail) = buf.layers.split_at_mut(l + 1);
        let lt = &mut head[l];
        let next = match tail.first_mut() {
            Some(t) => &mut t.input,
            None => &mut buf.out,
        };
        let gb = self.params.slice(go..go + 2 * ch);
        let (ch32, n32, s32, so32) = (i32_of(ch), i32_of(n), i32_of(s), i32_of(so));
        let mut lb = self.dev.stream().launch_builder(&f);
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
        Ok(())
    }

    /// The last block's output maps as feature rows (`n × features`).
    fn features_out(&mut self, feats: &mut CudaViewMut<'_, f32>) -> Result<(), GpuError> {
        let a = self.shape;
        let f = self.dev.kernel(Kernel::MapsToRows)?;
        let buf = self.buffers.as_ref().expect("sized by ensure");
        let (ch, n, hwo) = (a.channels, buf.n, a.side_at(a.blocks).pow(2));
        let (ch32, n32, hw32) = (i32_of(ch), i32_of(n), i32_of(hwo));
        let mut lb = self.dev.stream().launch_builder(&f);
        lb.arg(&buf.out).arg(&ch32).arg(&n32).arg(&hw32).arg(feats);
        // SAFETY: matches `maps_to_rows`; both buffers hold ch·n·hwo floats (feats checked
        // by the callers).
        unsafe { lb.launch(spread(ch * n * hwo)) }?;
        Ok(())
    }

    /// The parameter gradient of `⟨dfeats, features⟩` at the last forward pass, into the
    /// device gradient buffer ([`Conv4Gpu::download_grad`]).
    pub(crate) fn backward(&mut self, dfeats: &CudaSlice<f32>) -> Result<(), GpuError> {
        let a = self.shape;
        let n = self.taped_batch()?;
        check("feature gradient", dfeats.len(), n * a.features())?;
        self.features_in(&dfeats.as_view())?;
        let mut cur = 0; // dmaps[cur] holds the gradient of the current block's output
        for l in (0..a.blocks).rev() {
            self.unpool_layer(l, cur)?;
            self.bn_sums_layer(l)?;
            self.bn_dz_layer(l, n)?;
            self.conv_back_layer(l, cur, None)?;
            cur = 1 - cur;
        }
        Ok(())
    }

    /// The batch of the tape, when it holds a forward pass of the current parameters.
    fn taped_batch(&self) -> Result<usize, GpuError> {
        match self.buffers.as_ref().filter(|_| self.taped) {
            Some(buf) => Ok(buf.n),
            None => Err(GpuError::Data(
                "backward needs a forward pass of the current parameters",
            )),
        }
    }

    /// The feature gradient (`n × features` rows) as maps of the last block's output.
    fn features_in(&mut self, dfeats: &CudaView<'_, f32>) -> Result<(), GpuError> {
        let a = self.shape;
        let f = self.dev.kernel(Kernel::RowsToMaps)?;
        let buf = self.buffers.as_mut().expect("taped");
        let (ch, n, hwo) = (a.channels, buf.n, a.side_at(a.blocks).pow(2));
        let (ch32, n32, hw32) = (i32_of(ch), i32_of(n), i32_of(hwo));
        let mut lb = self.dev.stream().launch_builder(&f);
        lb.arg(dfeats)
            .arg(&ch32)
            .arg(&n32)
            .arg(&hw32)
            .arg(&mut buf.dmaps[0]);
        // SAFETY: matches `rows_to_maps`; dfeats holds ch·n·hwo floats (checked by the
        // callers), dmaps[0] at least as many (block 1's maps are larger than the output's).
        unsafe { lb.launch(spread(ch * n * hwo)) }?;
        Ok(())
    }

    /// `dy` ← the gradient at block `l`'s batch-norm output, through its pool and ReLU from
    /// `dmaps[cur]`.
    fn unpool_layer(&mut self, l: usize, cur: usize) -> Result<(), GpuError> {
        let a = self.shape;
        let f = self.dev.kernel(Kernel::PoolReluBackward)?;
        let stream = self.dev.stream();
        let buf = self.buffers.as_mut().expect("taped");
        let (ch, n, hw, hwo) = (
            a.channels,
            buf.n,
            a.side_at(l).pow(2),
            a.side_at(l + 1).pow(2),
        );
        let (_, go, _) = a.offsets(l);
        let lt = &buf.layers[l];
        let gb = self.params.slice(go..go + 2 * ch);
        let (ch32, n32, hwo32) = (i32_of(ch), i32_of(n), i32_of(hwo));
        let mut dy = buf.dy.slice_mut(..ch * n * hw);
        stream.memset_zeros(&mut dy)?;
        let mut lb = stream.launch_builder(&f);
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
        Ok(())
    }

    /// `∂γ, ∂β` of block `l` over this device's batch, into the gradient buffer.
    fn bn_sums_layer(&mut self, l: usize) -> Result<(), GpuError> {
        let a = self.shape;
        let f = self.dev.kernel(Kernel::BnBackwardSums)?;
        let buf = self.buffers.as_mut().expect("taped");
        let (ch, m) = (a.channels, buf.n * a.side_at(l).pow(2));
        let (_, go, _) = a.offsets(l);
        let lt = &buf.layers[l];
        let (ch32, m32) = (i32_of(ch), i32_of(m));
        let dy = buf.dy.slice(..ch * m);
        let mut dgb = self.grad.slice_mut(go..go + 2 * ch);
        let mut lb = self.dev.stream().launch_builder(&f);
        lb.arg(&dy)
            .arg(&lt.z)
            .arg(&lt.mean)
            .arg(&lt.invstd)
            .arg(&ch32)
            .arg(&m32)
            .arg(&mut dgb);
        // SAFETY: matches `bn_backward_sums`; dy and z hold ch·m floats, dgb 2ch.
        unsafe { lb.launch(per_channel(ch)?) }?;
        Ok(())
    }

    /// `dy` ← the gradient at block `l`'s convolution output (batch norm's backward, with
    /// the statistics of a batch of `batch` images, all of this device's or more).
    fn bn_dz_layer(&mut self, l: usize, batch: usize) -> Result<(), GpuError> {
        let a = self.shape;
        let f = self.dev.kernel(Kernel::BnDz)?;
        let buf = self.buffers.as_mut().expect("taped");
        let (ch, hw) = (a.channels, a.side_at(l).pow(2));
        let m = buf.n * hw;
        let (_, go, _) = a.offsets(l);
        let lt = &buf.layers[l];
        let gb = self.params.slice(go..go + 2 * ch);
        let dgb = self.grad.slice(go..go + 2 * ch);
        let (ch32, m32, batch32) = (i32_of(ch), i32_of(m), i32_of(batch * hw));
        let mut dy = buf.dy.slice_mut(..ch * m);
        let mut lb = self.dev.stream().launch_builder(&f);
        lb.arg(&mut dy)
            .arg(&lt.z)
            .arg(&lt.mean)
            .arg(&lt.invstd)
            .arg(&gb)
            .arg(&dgb)
            .arg(&ch32)
            .arg(&m32)
            .arg(&batch32);
        // SAFETY: matches `bn_dz`; dy and z hold ch·m floats, gb and dgb 2ch.
        unsafe { lb.launch(spread(ch * m)) }?;
        Ok(())
    }

    /// Block `l`'s weight gradient `Σ_chunks dZ·colsᵀ` (into the gradient buffer, or chunk
    /// `k`'s into slot `k` of `slots`) and, below block 0, `dmaps[1 − cur] = col2im(Wᵀ·dZ)`.
    fn conv_back_layer(
        &mut self,
        l: usize,
        cur: usize,
        mut slots: Option<&mut Slots>,
    ) -> Result<(), GpuError> {
        let a = self.shape;
        let dev = &self.dev;
        let buf = self.buffers.as_mut().expect("taped");
        let (ch, n, c_in, s) = (a.channels, buf.n, a.c_in(l), a.side_at(l));
        let hw = s * s;
        let (wo, go, _) = a.offsets(l);
        let lt = &buf.layers[l];
        let (lo, hi) = buf.dmaps.split_at_mut(1);
        let din = if cur == 0 { &mut hi[0] } else { &mut lo[0] };
        for (k, (i0, len)) in chunks(n, self.im2col.chunk(&a, l, n)).enumerate() {
            self.im2col.fill(dev, &lt.input, c_in, n, s, (i0, len))?;
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
            match slots.as_deref_mut() {
                None => {
                    let beta = if i0 == 0 { 0.0 } else { 1.0 };
                    let mut gw = self.grad.slice_mut(wo..go);
                    dev.gemm(p, 1.0, &dz, &self.im2col.cols, beta, &mut gw)?;
                }
                Some(slots) => {
                    let mut gw = slots.slot(k);
                    dev.gemm(p, 1.0, &dz, &self.im2col.cols, 0.0, &mut gw)?;
                }
            }
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
                dev.gemm(p, 1.0, &w, &dz, 0.0, &mut self.im2col.cols)?;
                self.im2col.col2im(dev, c_in, n, s, (i0, len), din)?;
            }
        }
        Ok(())
    }
}

/// Images (`n × c·hw`, each channel-major) to the layout of a block input, `[c][n·hw]`.
pub(crate) fn channel_major(images: &[f32], n: usize, c: usize, hw: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(n * c * hw);
    for ci in 0..c {
        for img in images.chunks_exact(c * hw) {
            out.extend_from_slice(&img[ci * hw..(ci + 1) * hw]);
        }
    }
    out
}
