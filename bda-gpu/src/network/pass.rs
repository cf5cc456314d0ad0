//! One set's passes through the whole network on the device: the forward pass with its
//! tape, the backward pass (the gradient of every weight), the tangent forward pass along a
//! direction `v`, and the backward pass with its tangent (`∇²L·v`) — the CPU's
//! `bda_cpu::network` passes, launch by launch.
//!
//! A convolution is `im2col` and one GEMM over the set's images (a task's set is small: no
//! chunks); its tangent `v_W ⊛ x + W ⊛ ẋ` is two GEMMs into one output. Batch norm's,
//! ReLU's and the pool's tangents are `network.cu`'s kernels; the head is GEMMs around
//! `softmax.cu`'s row kernels (`n_tr = 0`: every row weighted `1/n`).

use cudarc::driver::{CudaSlice, CudaView, PushKernelArg};

use super::ops::{Conv, Head};
use crate::conv4::{channel_major, launch_chunk};
use crate::kernels::Kernel;
use crate::launch::{i32_of, per_channel, per_row, spread};
use crate::{GpuDevice, GpuError};
use bda_kernel::fewshot::{BN_EPS, Network};

/// One block's tape (primal and tangent) for a set of `n` images.
#[derive(Debug)]
struct Block {
    /// Convolution output, `[ch][n·s²]`.
    z: CudaSlice<f32>,
    mean: CudaSlice<f32>,
    invstd: CudaSlice<f32>,
    /// Per pooled output, the index in `z` of the chosen input.
    argmax: CudaSlice<u32>,
    /// Pooled output `[ch][n·so²]`: the next block's input.
    out: CudaSlice<f32>,
    /// Tangent of `x̂` (`[ch][n·s²]`) and the per-channel `c` (`ι̇ = −c·ι`).
    xhat_dot: CudaSlice<f32>,
    c: CudaSlice<f32>,
    /// Tangent of the pooled output.
    out_dot: CudaSlice<f32>,
}

/// One set's images, labels, tape and scratch on the device.
#[derive(Debug)]
pub(super) struct SetPass {
    pub(super) n: usize,
    net: Network,
    /// Block 0's input, `[c_in][n·side²]`.
    images: CudaSlice<f32>,
    labels: CudaSlice<u8>,
    pub(super) host_labels: Vec<u8>,
    blocks: Vec<Block>,
    /// Features, their tangent, and the gradients of both (`n × d` rows).
    feats: CudaSlice<f32>,
    feats_dot: CudaSlice<f32>,
    dfeats: CudaSlice<f32>,
    dfeats_dot: CudaSlice<f32>,
    /// `[logits | tangent logits]` per row (`n × 2N`).
    pub(super) z2: CudaSlice<f32>,
    /// Cross-entropy gradient and Hessian row terms (`n × N`), per-row losses, ones.
    g: CudaSlice<f32>,
    h: CudaSlice<f32>,
    pub(super) ce: CudaSlice<f32>,
    ones: CudaSlice<f32>,
    /// Gradients at a block's normalised output and their tangents (`[ch][n·side²]`).
    dy: CudaSlice<f32>,
    dd: CudaSlice<f32>,
    /// Gradients of block outputs and their tangents, ping-pong.
    dp: [CudaSlice<f32>; 2],
    dp_dot: [CudaSlice<f32>; 2],
    /// im2col matrix (or `Wᵀ·dZ`) of the largest block.
    cols: CudaSlice<f32>,
}

/// Launches `kernel` with the arguments pushed by `args` on `cfg` (one place for the
/// `unsafe`: every caller checked its buffers against the kernel's extents).
macro_rules! launch {
    ($dev:expr, $k:expr, $cfg:expr, $($arg:expr),+ $(,)?) => {{
        let f = $dev.kernel($k)?;
        let mut lb = $dev.stream().launch_builder(&f);
        $( lb.arg($arg); )+
        // SAFETY: the buffers were sized by `SetPass::new` for this set's shape, which the
        // integer arguments describe; each kernel's extents are in `kernels/*.cu`.
        unsafe { lb.launch($cfg) }?;
    }};
}

/// Checks a set of `labels.len()` images for `net`: at least one image, labels below the
/// number of classes, `images` of the right length, indices that fit the kernels.
fn check_set(net: Network, images: &[f32], labels: &[u8]) -> Result<(), GpuError> {
    let n = labels.len();
    crate::conv4::check_shape(&net.shape, n.max(1))?;
    if n == 0 {
        return Err(GpuError::Data("a task's set needs at least one image"));
    }
    if labels.iter().any(|&l| l as usize >= net.ways) {
        return Err(GpuError::Data("a label is not below the number of classes"));
    }
    crate::launch::check("images", images.len(), n * net.shape.pixels())
}

impl SetPass {
    /// Buffers for `labels.len()` images of `net`, the images uploaded.
    pub(super) fn new(
        dev: &GpuDevice,
        net: Network,
        images: &[f32],
        labels: &[u8],
    ) -> Result<SetPass, GpuError> {
        let a = net.shape;
        let n = labels.len();
        check_set(net, images, labels)?;
        let s = dev.stream();
        let ch = a.channels;
        let mut blocks = Vec::with_capacity(a.blocks);
        for l in 0..a.blocks {
            let (hw, hwo) = (a.side_at(l).pow(2), a.side_at(l + 1).pow(2));
            blocks.push(Block {
                z: s.alloc_zeros(ch * n * hw)?,
                mean: s.alloc_zeros(ch)?,
                invstd: s.alloc_zeros(ch)?,
                argmax: s.alloc_zeros(ch * n * hwo)?,
                out: s.alloc_zeros(ch * n * hwo)?,
                xhat_dot: s.alloc_zeros(ch * n * hw)?,
                c: s.alloc_zeros(ch)?,
                out_dot: s.alloc_zeros(ch * n * hwo)?,
            });
        }
        let (d, ways) = (a.features(), net.ways);
        let cols = (0..a.blocks)
            .map(|l| a.c_in(l) * 9 * n * a.side_at(l).pow(2))
            .max()
            .unwrap_or(1);
        let big = ch * n * a.side.pow(2);
        let maps = (ch * n * a.side_at(1).pow(2)).max(1);
        let planes = channel_major(images, n, a.in_channels, a.side * a.side);
        Ok(SetPass {
            n,
            net,
            images: s.clone_htod(&planes)?,
            labels: s.clone_htod(labels)?,
            host_labels: labels.to_vec(),
            blocks,
            feats: s.alloc_zeros(n * d)?,
            feats_dot: s.alloc_zeros(n * d)?,
            dfeats: s.alloc_zeros(n * d)?,
            dfeats_dot: s.alloc_zeros(n * d)?,
            z2: s.alloc_zeros(n * 2 * ways)?,
            g: s.alloc_zeros(n * ways)?,
            h: s.alloc_zeros(n * ways)?,
            ce: s.alloc_zeros(n)?,
            ones: s.clone_htod(&vec![1.0f32; n])?,
            dy: s.alloc_zeros(big)?,
            dd: s.alloc_zeros(big)?,
            dp: [s.alloc_zeros(maps)?, s.alloc_zeros(maps)?],
            dp_dot: [s.alloc_zeros(maps)?, s.alloc_zeros(maps)?],
            cols: s.alloc_zeros(cols)?,
        })
    }

    /// Another task's set of the same size in these buffers (images and labels uploaded);
    /// `false`, nothing changed, when the size differs.
    pub(super) fn reload(
        &mut self,
        dev: &GpuDevice,
        images: &[f32],
        labels: &[u8],
    ) -> Result<bool, GpuError> {
        if labels.len() != self.n {
            return Ok(false);
        }
        check_set(self.net, images, labels)?;
        let a = self.net.shape;
        let planes = channel_major(images, self.n, a.in_channels, a.side * a.side);
        let s = dev.stream();
        s.memcpy_htod(&planes, &mut self.images)?;
        s.memcpy_htod(labels, &mut self.labels)?;
        self.host_labels = labels.to_vec();
        Ok(true)
    }

    /// Device bytes held.
    pub(super) fn num_bytes(&self) -> usize {
        let blocks: usize = self
            .blocks
            .iter()
            .map(|b| {
                b.z.num_bytes()
                    + b.mean.num_bytes()
                    + b.invstd.num_bytes()
                    + b.argmax.num_bytes()
                    + b.out.num_bytes()
                    + b.xhat_dot.num_bytes()
                    + b.c.num_bytes()
                    + b.out_dot.num_bytes()
            })
            .sum();
        let rows = [
            &self.images,
            &self.feats,
            &self.feats_dot,
            &self.dfeats,
            &self.dfeats_dot,
            &self.z2,
            &self.g,
            &self.h,
            &self.ce,
            &self.ones,
            &self.dy,
            &self.dd,
            &self.dp[0],
            &self.dp[1],
            &self.dp_dot[0],
            &self.dp_dot[1],
            &self.cols,
        ];
        blocks + rows.iter().map(|b| b.num_bytes()).sum::<usize>() + self.labels.num_bytes()
    }

    /// `cols ← im2col(block l's input, or its tangent with `tangent`)`.
    fn im2col(&mut self, dev: &GpuDevice, l: usize, tangent: bool) -> Result<(), GpuError> {
        let a = self.net.shape;
        let src = match (l, tangent) {
            (0, _) => &self.images,
            (_, false) => &self.blocks[l - 1].out,
            (_, true) => &self.blocks[l - 1].out_dot,
        };
        let dims = [a.c_in(l), self.n, a.side_at(l), 0, self.n];
        launch_chunk(dev, Kernel::Im2col, src, &mut self.cols, dims)
    }

    /// The forward pass at weights `y`: the tape, the logits (first half of `z2`'s rows),
    /// the per-row losses `ce` and the logits' gradient `g` of the mean loss.
    pub(super) fn forward(&mut self, dev: &GpuDevice, y: &CudaSlice<f32>) -> Result<(), GpuError> {
        let a = self.net.shape;
        let (ch, n) = (a.channels, self.n);
        for l in 0..a.blocks {
            let (wo, go, _) = a.offsets(l);
            let (s, so) = (a.side_at(l), a.side_at(l + 1));
            self.im2col(dev, l, false)?;
            let b = &mut self.blocks[l];
            let w = y.slice(wo..go);
            Conv::of(&a, n, l).forward(dev, &w, &self.cols, 0.0, &mut b.z)?;
            let (m, eps) = (i32_of(n * s * s), BN_EPS as f32);
            let cfg = per_channel(ch)?;
            launch!(
                dev,
                Kernel::BnStats,
                cfg,
                &b.z,
                &m,
                &eps,
                &mut b.mean,
                &mut b.invstd
            );
            let gb = y.slice(go..go + 2 * ch);
            let dims = [ch, n, s, so].map(i32_of);
            let cfg = spread(ch * n * so * so);
            launch!(
                dev,
                Kernel::BnReluPool,
                cfg,
                &b.z,
                &b.mean,
                &b.invstd,
                &gb,
                &dims[0],
                &dims[1],
                &dims[2],
                &dims[3],
                &mut b.out,
                &mut b.argmax
            );
        }
        self.rows(dev, false, false)?;
        let ways = self.net.ways;
        let (w, bias) = self.head(y);
        Head::of(&self.net, n).logits(dev, &self.feats, &w, 0.0, &mut self.z2, 0)?;
        self.add_bias(dev, &bias, 0)?;
        let ints = [2 * ways, 0, 0, 0, n, ways].map(i32_of);
        let (a_tr, a_val) = (0.0f32, 1.0 / n as f32);
        launch!(
            dev,
            Kernel::XentGradRows,
            per_row(n),
            &self.z2,
            &ints[0],
            &self.labels,
            &self.ones,
            &ints[1],
            &ints[2],
            &ints[4],
            &ints[5],
            &a_tr,
            &a_val,
            &mut self.g,
            &mut self.ce
        );
        Ok(())
    }

    /// The head's `W` (`N × d`) and `b` in a weight vector (or a direction).
    fn head<'y>(&self, y: &'y CudaSlice<f32>) -> (CudaView<'y, f32>, CudaView<'y, f32>) {
        let at = self.net.shape.num_params();
        let wl = self.net.ways * self.net.shape.features();
        (
            y.slice(at..at + wl),
            y.slice(at + wl..at + wl + self.net.ways),
        )
    }

    /// `z2[r][col + k] += b[k]`.
    fn add_bias(
        &mut self,
        dev: &GpuDevice,
        b: &CudaView<'_, f32>,
        col: usize,
    ) -> Result<(), GpuError> {
        let ways = self.net.ways;
        let ints = [2 * ways, col, self.n, ways].map(i32_of);
        launch!(
            dev,
            Kernel::AddBiasRows,
            spread(self.n * ways),
            &mut self.z2,
            &ints[0],
            &ints[1],
            b,
            &ints[2],
            &ints[3]
        );
        Ok(())
    }

    /// The last block's pooled output (or its tangent) as feature rows, or the feature
    /// gradient rows (or their tangent) back as maps into `dp[0]` (`dp_dot[0]`) with `back`.
    fn rows(&mut self, dev: &GpuDevice, tangent: bool, back: bool) -> Result<(), GpuError> {
        let a = self.net.shape;
        let ints = [a.channels, self.n, a.side_at(a.blocks).pow(2)].map(i32_of);
        let cfg = spread(a.channels * self.n * a.side_at(a.blocks).pow(2));
        let last = self.blocks.last_mut().expect("a backbone has blocks");
        let (src, dst) = match (tangent, back) {
            (false, false) => (&last.out, &mut self.feats),
            (true, false) => (&last.out_dot, &mut self.feats_dot),
            (false, true) => (&self.dfeats, &mut self.dp[0]),
            (true, true) => (&self.dfeats_dot, &mut self.dp_dot[0]),
        };
        let k = if back {
            Kernel::RowsToMaps
        } else {
            Kernel::MapsToRows
        };
        launch!(dev, k, cfg, src, &ints[0], &ints[1], &ints[2], dst);
        Ok(())
    }

    /// `dy ← unpool(dp[cur])` (or `dd ← unpool(dp_dot[cur])` with `tangent`) of block `l`:
    /// each pooled output's gradient routed to its chosen input where the ReLU passed it.
    fn unpool(
        &mut self,
        dev: &GpuDevice,
        y: &CudaSlice<f32>,
        l: usize,
        tangent: bool,
        cur: usize,
    ) -> Result<(), GpuError> {
        let a = self.net.shape;
        let (ch, n, hw, hwo) = (
            a.channels,
            self.n,
            a.side_at(l).pow(2),
            a.side_at(l + 1).pow(2),
        );
        let (_, go, _) = a.offsets(l);
        let gb = y.slice(go..go + 2 * ch);
        let (src, dst) = if tangent {
            (&self.dp_dot[cur], &mut self.dd)
        } else {
            (&self.dp[cur], &mut self.dy)
        };
        let mut dst = dst.slice_mut(..ch * n * hw);
        dev.stream().memset_zeros(&mut dst)?;
        let b = &self.blocks[l];
        let ints = [ch, n, hwo].map(i32_of);
        launch!(
            dev,
            Kernel::PoolReluBackward,
            spread(ch * n * hwo),
            src,
            &b.argmax,
            &b.z,
            &b.mean,
            &b.invstd,
            &gb,
            &ints[0],
            &ints[1],
            &ints[2],
            &mut dst
        );
        Ok(())
    }

    /// The gradient of the mean loss at the last forward pass's weights `y`, into `gout`
    /// (every weight).
    pub(super) fn backward(
        &mut self,
        dev: &GpuDevice,
        y: &CudaSlice<f32>,
        gout: &mut CudaSlice<f32>,
    ) -> Result<(), GpuError> {
        let a = self.net.shape;
        let (ch, n) = (a.channels, self.n);
        let (w, _) = self.head(y);
        let head = Head::of(&self.net, n);
        head.param_grad(dev, (&self.g, &self.feats), None, &self.ones, gout)?;
        head.feature_grad(dev, &self.g, &w, 0.0, &mut self.dfeats)?;
        self.rows(dev, false, true)?;
        let mut cur = 0;
        for l in (0..a.blocks).rev() {
            let (wo, go, _) = a.offsets(l);
            let m = n * a.side_at(l).pow(2);
            self.unpool(dev, y, l, false, cur)?;
            let b = &self.blocks[l];
            let ints = [ch, m].map(i32_of);
            let cfg = per_channel(ch)?;
            let mut dgb = gout.slice_mut(go..go + 2 * ch);
            launch!(
                dev,
                Kernel::BnBackwardSums,
                cfg,
                &self.dy,
                &b.z,
                &b.mean,
                &b.invstd,
                &ints[0],
                &ints[1],
                &mut dgb
            );
            let (gb, dgb) = (y.slice(go..go + 2 * ch), gout.slice(go..go + 2 * ch));
            launch!(
                dev,
                Kernel::BnDz,
                spread(ch * m),
                &mut self.dy,
                &b.z,
                &b.mean,
                &b.invstd,
                &gb,
                &dgb,
                &ints[0],
                &ints[1],
                &ints[1]
            );
            self.im2col(dev, l, false)?;
            let conv = Conv::of(&a, n, l);
            conv.weight_grad(dev, &self.dy, &self.cols, 0.0, &mut gout.slice_mut(wo..go))?;
            if l > 0 {
                conv.input_grad(dev, &y.slice(wo..go), &self.dy, 0.0, &mut self.cols)?;
                conv.col2im(dev, &self.cols, &mut self.dp[1 - cur])?;
                cur = 1 - cur;
            }
        }
        Ok(())
    }

    /// The tangent forward pass along `v` at the last forward pass's weights `y`: the
    /// tangent tape, the tangent logits (second half of `z2`'s rows) and the Hessian row
    /// terms `h` of the mean loss.
    pub(super) fn tangent(
        &mut self,
        dev: &GpuDevice,
        y: &CudaSlice<f32>,
        v: &CudaSlice<f32>,
    ) -> Result<(), GpuError> {
        let a = self.net.shape;
        let (ch, n) = (a.channels, self.n);
        for l in 0..a.blocks {
            let (wo, go, _) = a.offsets(l);
            let conv = Conv::of(&a, n, l);
            self.im2col(dev, l, false)?;
            conv.forward(
                dev,
                &v.slice(wo..go),
                &self.cols,
                0.0,
                &mut self.blocks[l].xhat_dot,
            )?;
            if l > 0 {
                self.im2col(dev, l, true)?;
                let w = y.slice(wo..go);
                conv.forward(dev, &w, &self.cols, 1.0, &mut self.blocks[l].xhat_dot)?;
            }
            let b = &mut self.blocks[l];
            let m = i32_of(n * a.side_at(l).pow(2));
            let cfg = per_channel(ch)?;
            launch!(
                dev,
                Kernel::BnTangent,
                cfg,
                &mut b.xhat_dot,
                &b.z,
                &b.mean,
                &b.invstd,
                &m,
                &mut b.c
            );
            let (gb, vgb) = (y.slice(go..go + 2 * ch), v.slice(go..go + 2 * ch));
            let hwo = a.side_at(l + 1).pow(2);
            let ints = [ch, n, hwo].map(i32_of);
            launch!(
                dev,
                Kernel::PoolTangent,
                spread(ch * n * hwo),
                &b.xhat_dot,
                &b.argmax,
                &b.z,
                &b.mean,
                &b.invstd,
                &gb,
                &vgb,
                &ints[0],
                &ints[1],
                &ints[2],
                &mut b.out_dot
            );
        }
        self.rows(dev, true, false)?;
        let ways = self.net.ways;
        let ((w, _), (vw, vb)) = (self.head(y), self.head(v));
        let head = Head::of(&self.net, n);
        head.logits(dev, &self.feats_dot, &w, 0.0, &mut self.z2, ways)?;
        head.logits(dev, &self.feats, &vw, 1.0, &mut self.z2, ways)?;
        self.add_bias(dev, &vb, ways)?;
        let ints = [0, 0, n, ways].map(i32_of);
        let (a_tr, a_val, gx_scale) = (0.0f32, 1.0 / n as f32, 0.0f32);
        // gx is never touched with gx_scale = 0 (any buffer will do).
        launch!(
            dev,
            Kernel::HvpRows,
            per_row(n),
            &self.z2,
            &self.labels,
            &self.ones,
            &ints[0],
            &ints[1],
            &ints[2],
            &ints[3],
            &a_tr,
            &a_val,
            &mut self.h,
            &mut self.dfeats_dot,
            &gx_scale
        );
        Ok(())
    }

    /// `∇²L(y)·v` into `out`, after [`SetPass::forward`] at `y` and [`SetPass::tangent`]
    /// along `v`: the backward pass and its tangent, block by block from the head down.
    pub(super) fn hvp_backward(
        &mut self,
        dev: &GpuDevice,
        y: &CudaSlice<f32>,
        v: &CudaSlice<f32>,
        out: &mut CudaSlice<f32>,
    ) -> Result<(), GpuError> {
        let a = self.net.shape;
        let (ch, n) = (a.channels, self.n);
        let ((w, _), (vw, _)) = (self.head(y), self.head(v));
        let head = Head::of(&self.net, n);
        let tangent_rows = Some((&self.g, &self.feats_dot));
        head.param_grad(dev, (&self.h, &self.feats), tangent_rows, &self.ones, out)?;
        head.feature_grad(dev, &self.g, &w, 0.0, &mut self.dfeats)?;
        head.feature_grad(dev, &self.h, &w, 0.0, &mut self.dfeats_dot)?;
        head.feature_grad(dev, &self.g, &vw, 1.0, &mut self.dfeats_dot)?;
        self.rows(dev, false, true)?;
        self.rows(dev, true, true)?;
        let mut cur = 0;
        for l in (0..a.blocks).rev() {
            let (wo, go, _) = a.offsets(l);
            let m = n * a.side_at(l).pow(2);
            self.unpool(dev, y, l, false, cur)?;
            self.unpool(dev, y, l, true, cur)?;
            let b = &self.blocks[l];
            let (gb, vgb) = (y.slice(go..go + 2 * ch), v.slice(go..go + 2 * ch));
            let ints = [ch, m].map(i32_of);
            let mut dgb = out.slice_mut(go..go + 2 * ch);
            launch!(
                dev,
                Kernel::BnTangentBackward,
                per_channel(ch)?,
                &mut self.dy,
                &mut self.dd,
                &b.z,
                &b.mean,
                &b.invstd,
                &b.xhat_dot,
                &b.c,
                &gb,
                &vgb,
                &ints[0],
                &ints[1],
                &mut dgb
            );
            let conv = Conv::of(&a, n, l);
            self.im2col(dev, l, false)?;
            let mut gw = out.slice_mut(wo..go);
            conv.weight_grad(dev, &self.dd, &self.cols, 0.0, &mut gw)?;
            if l > 0 {
                self.im2col(dev, l, true)?;
                conv.weight_grad(dev, &self.dy, &self.cols, 1.0, &mut gw)?;
                let (w, vw) = (y.slice(wo..go), v.slice(wo..go));
                conv.input_grad(dev, &w, &self.dy, 0.0, &mut self.cols)?;
                conv.col2im(dev, &self.cols, &mut self.dp[1 - cur])?;
                conv.input_grad(dev, &vw, &self.dy, 0.0, &mut self.cols)?;
                conv.input_grad(dev, &w, &self.dd, 1.0, &mut self.cols)?;
                conv.col2im(dev, &self.cols, &mut self.dp_dot[1 - cur])?;
                cur = 1 - cur;
            }
        }
        Ok(())
    }
}
