//! Few-shot meta-learning on a CUDA device: the conv4 backbone ([`crate::conv4`]) gives the
//! features of a meta-batch, the kernel's engine ([`Hypergrad`]) runs RHG / T-RHG / BDA on
//! the batched head ([`HeadGpu`]: all tasks at once), and the backbone's backward pass turns
//! the hypergradient w.r.t. the features into the parameter gradient. Adam and episode
//! sampling stay with the caller (`bda-host`), so the same seed draws the same episodes on
//! every device.

use bda_kernel::backend::{Backend, Hypergrad, MethodError, MethodSpec};
use cudarc::driver::{CudaStream, PushKernelArg};
use std::sync::Arc;

use crate::conv4::Conv4Gpu;
use crate::head::{HeadDims, HeadGpu};
use crate::kernels::{Kernel, Kernels};
use crate::probe::guard;
use crate::shape::Conv4Shape;
use crate::softmax::{elementwise, i32_of};
use crate::{DeviceInfo, GpuDevice, GpuError, GpuVec};

/// The episodes of one meta-batch, all of the same shape: `tasks` tasks of `ways` classes with
/// `support` support and `query` query images each.
#[derive(Clone, Copy, Debug)]
pub struct Episodes<'a> {
    /// Tasks `m`.
    pub tasks: usize,
    /// Classes per task.
    pub ways: usize,
    /// Support images per task.
    pub support: usize,
    /// Query images per task.
    pub query: usize,
    /// Images (`side²` floats each, row-major): the support images of task 0, 1, …, then the
    /// query images of task 0, 1, … (the CPU path's stacking order, which fixes the
    /// batch-norm batch).
    pub images: &'a [f32],
    /// Support labels, task by task (`tasks·support`, each `< ways`).
    pub support_labels: &'a [u8],
    /// Query labels, task by task (`tasks·query`).
    pub query_labels: &'a [u8],
}

impl Episodes<'_> {
    /// Images in the batch.
    pub fn images_count(&self) -> usize {
        self.tasks * (self.support + self.query)
    }

    fn head_dims(&self, dim: usize) -> HeadDims {
        HeadDims {
            tasks: self.tasks,
            ways: self.ways,
            support: self.support,
            query: self.query,
            dim,
        }
    }
}

/// Per-task results of a meta-gradient.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskResults {
    /// `φ_K` of each task (query cross-entropy of its head after K steps).
    pub loss: Vec<f32>,
    /// Query accuracy of each task's `y_K`.
    pub accuracy: Vec<f64>,
}

/// Why a few-shot computation failed.
pub type FewshotError = MethodError<GpuError>;

/// The head of one episode shape and its buffers (the engine's are its own).
struct HeadState {
    head: HeadGpu,
    x: GpuVec,
    gx: GpuVec,
    y0: GpuVec,
    y_out: GpuVec,
    /// Engines for the last two specs (training alternates with evaluation), newest last.
    engines: Vec<Hypergrad<HeadGpu>>,
}

impl std::fmt::Debug for HeadState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeadState")
            .field("head", &self.head)
            .field(
                "engines",
                &self.engines.iter().map(|e| *e.spec()).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// Meta-training and evaluation of a conv4 backbone with linear per-task heads on one CUDA
/// device (see the module docs).
#[derive(Debug)]
pub struct FewshotGpu {
    info: DeviceInfo,
    stream: Arc<CudaStream>,
    conv: Conv4Gpu,
    kernels: Kernels,
    state: Option<HeadState>,
}

impl FewshotGpu {
    /// The few-shot backend on the opened device for a backbone of shape `shape`.
    /// Kernels are compiled on first use; [`FewshotGpu::warm_up`] does it now.
    pub fn new(dev: &GpuDevice, shape: Conv4Shape) -> Result<Self, GpuError> {
        shape.validate(1)?;
        let (ctx, info) = (dev.ctx.clone(), dev.info.clone());
        guard(|| {
            // SAFETY: all work of this backend is issued on the one stream created below, so
            // cudarc's cross-stream event tracking is not needed.
            unsafe { ctx.disable_event_tracking() };
            let stream = ctx.new_stream()?;
            let arch = dev.arch.clone();
            let conv = Conv4Gpu::new(
                stream.clone(),
                Kernels::new(ctx.clone(), arch.clone()),
                shape,
            )?;
            Ok(FewshotGpu {
                info,
                stream,
                conv,
                kernels: Kernels::new(ctx, arch),
                state: None,
            })
        })
    }

    /// The device in use.
    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    /// The backbone's shape.
    pub fn shape(&self) -> Conv4Shape {
        self.conv.shape()
    }

    /// Compiles (once per process) and loads every kernel now.
    pub fn warm_up(&mut self) -> Result<(), GpuError> {
        self.conv.kernels_mut().load_all()?;
        self.kernels.load_all()
    }

    /// Caps the backbone's im2col matrix at `floats` floats (default 2^26): smaller chunks
    /// of images per GEMM, less memory. Results do not depend on it beyond rounding.
    pub fn set_col_budget(&mut self, floats: usize) {
        self.conv.set_col_budget(floats);
    }

    /// Device bytes held by the backbone (parameters, gradient, tape, scratch) and the head.
    pub fn resident_bytes(&self) -> usize {
        let head = self.state.as_ref().map_or(0, |s| {
            let engines: usize = s.engines.iter().map(|e| e.spec().tape_len() + 4).sum();
            (s.x.len() + s.gx.len() + (2 + engines) * s.y0.len()) * 4
        });
        self.conv.resident_bytes() + head
    }

    /// Features of `n` images (`n × side²`) under `params`: `n × features`, row-major.
    pub fn features(
        &mut self,
        params: &[f32],
        images: &[f32],
        n: usize,
    ) -> Result<Vec<f32>, GpuError> {
        let nf = self.shape().features();
        self.conv.upload_params(params)?;
        let mut feats = self.stream.alloc_zeros(n * nf)?;
        self.conv.forward(images, n, &mut feats)?;
        let mut out = vec![0.0f32; n * nf];
        self.stream.memcpy_dtoh(&feats, &mut out)?;
        self.stream.synchronize()?;
        Ok(out)
    }

    /// The parameter gradient of `⟨dfeats, features(params, images)⟩` (one forward and one
    /// backward pass of the backbone).
    pub fn backbone_gradient(
        &mut self,
        params: &[f32],
        images: &[f32],
        n: usize,
        dfeats: &[f32],
        grad: &mut [f32],
    ) -> Result<(), GpuError> {
        let nf = self.shape().features();
        crate::softmax::check("feature gradient", dfeats.len(), n * nf)?;
        self.conv.upload_params(params)?;
        let mut feats = self.stream.alloc_zeros(n * nf)?;
        self.conv.forward(images, n, &mut feats)?;
        self.stream.memcpy_htod(dfeats, &mut feats)?;
        self.conv.backward(&feats)?;
        self.conv.download_grad(grad)
    }

    /// Makes the head state fit `ep` and an engine for `spec`, and runs the backbone forward
    /// into its `x`.
    fn prepare(
        &mut self,
        params: &[f32],
        ep: &Episodes<'_>,
        spec: &MethodSpec<f32>,
        l2: f32,
    ) -> Result<(), FewshotError> {
        let nf = self.shape().features();
        let dims = ep.head_dims(nf);
        dims.validate()?;
        crate::softmax::check(
            "images",
            ep.images.len(),
            ep.images_count() * self.shape().pixels(),
        )?;
        if self.state.as_ref().is_none_or(|s| s.head.dims() != dims) {
            self.state = None;
            let mut head = HeadGpu::new(self.stream.clone(), self.kernels_for_head(), dims, l2)?;
            let (x, gx) = (head.new_x()?, head.new_x()?);
            let (y0, y_out) = (head.new_y()?, head.new_y()?);
            self.state = Some(HeadState {
                head,
                x,
                gx,
                y0,
                y_out,
                engines: Vec::new(),
            });
        }
        let st = self.state.as_mut().expect("created above");
        match st.engines.iter().position(|e| e.spec() == spec) {
            Some(i) => {
                let e = st.engines.remove(i);
                st.engines.push(e);
            }
            None => {
                if st.engines.len() == 2 {
                    st.engines.remove(0);
                }
                let e = Hypergrad::unrolled(&mut st.head, *spec)?;
                st.engines.push(e);
            }
        }
        st.head.set_l2(l2)?;
        st.head.set_labels(ep.support_labels, ep.query_labels)?;
        st.head.zero_y(&mut st.y0)?;
        self.conv.upload_params(params)?;
        self.conv
            .forward(ep.images, ep.images_count(), &mut st.x.0)?;
        Ok(())
    }

    /// A fresh kernel table for a head (the compiled images are shared process-wide; loading a
    /// module into the context again is cheap and happens once per head shape).
    fn kernels_for_head(&self) -> Kernels {
        self.kernels.clone()
    }

    /// The meta-gradient of the mean `φ_K` over the tasks of `ep` w.r.t. the backbone
    /// parameters, into `grad` (the CPU layout); returns each task's `φ_K` and query accuracy.
    ///
    /// As on the CPU: features of all images together (batch norm over the meta-batch), the
    /// head from `y₀ = 0` through the K steps of `spec` and the reverse pass (the kernel's
    /// engine, all tasks at once), the features' gradient scaled by `1/m`, the backbone's
    /// backward pass. `l2` is the head's L2 weight λ.
    pub fn meta_gradient(
        &mut self,
        params: &[f32],
        ep: &Episodes<'_>,
        spec: &MethodSpec<f32>,
        l2: f32,
        grad: &mut [f32],
    ) -> Result<TaskResults, FewshotError> {
        crate::softmax::check("gradient", grad.len(), self.shape().num_params())?;
        self.prepare(params, ep, spec, l2)?;
        let st = self.state.as_mut().expect("prepared");
        let engine = st.engines.last_mut().expect("prepared");
        engine.hypergradient(&mut st.head, &st.x, &st.y0, &mut st.gx, &mut st.y_out)?;
        let loss = st.head.task_losses().to_vec();
        if loss.iter().any(|l| !l.is_finite()) {
            return Err(MethodError::NonFinite { ll_iter: 0 });
        }
        let accuracy = hits_to_accuracy(st.head.task_hits(), ep.query);
        // dfeats = ∂(mean φ)/∂x = gx / m, in place.
        let f = self.kernels.get(Kernel::Scale)?;
        let len = st.gx.len();
        let (s, n) = (1.0f32 / ep.tasks as f32, i32_of(len));
        let mut l = self.stream.launch_builder(&f);
        l.arg(&s).arg(&mut st.gx.0).arg(&n);
        // SAFETY: matches `scale`; n is gx's length.
        unsafe { l.launch(elementwise(len)) }.map_err(GpuError::from)?;
        self.conv.backward(&st.gx.0)?;
        self.conv.download_grad(grad)?;
        Ok(TaskResults { loss, accuracy })
    }

    /// Query accuracy (a fraction) of each task of `ep`, its head fitted by the lower-level
    /// solve of `spec` from 0 (pass `spec.lower_only()` for the evaluation procedure of every
    /// method: plain steps on the support set), with batch norm over the tasks of `ep`
    /// together.
    pub fn evaluate(
        &mut self,
        params: &[f32],
        ep: &Episodes<'_>,
        spec: &MethodSpec<f32>,
        l2: f32,
    ) -> Result<Vec<f64>, FewshotError> {
        self.prepare(params, ep, spec, l2)?;
        let st = self.state.as_mut().expect("prepared");
        let engine = st.engines.last_mut().expect("prepared");
        engine.solve_lower(&mut st.head, &st.x, &st.y0, &mut st.y_out)?;
        let hits = st.head.query_hits(&st.x, &st.y_out)?;
        Ok(hits_to_accuracy(hits, ep.query))
    }

    /// Waits until all queued work is done (for timing).
    pub fn synchronize(&self) -> Result<(), GpuError> {
        Ok(self.stream.synchronize()?)
    }
}

impl Drop for FewshotGpu {
    fn drop(&mut self) {
        let _ = self.stream.synchronize();
    }
}

fn hits_to_accuracy(hits: &[f32], query: usize) -> Vec<f64> {
    hits.iter()
        .map(|&h| f64::from(h) / query.max(1) as f64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_types_are_send_and_sync() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<FewshotGpu>();
        send_sync::<HeadGpu>();
        send_sync::<Conv4Shape>();
        send_sync::<Episodes<'static>>();
        send_sync::<TaskResults>();
    }

    #[test]
    fn new_without_cuda_is_an_error_not_a_panic() {
        let shape = Conv4Shape {
            channels: 4,
            side: 12,
            blocks: 3,
        };
        match GpuDevice::open(0) {
            Ok(dev) => {
                let gpu = FewshotGpu::new(&dev, shape).unwrap();
                eprintln!("CUDA present: {}", gpu.info());
                // A degenerate shape is reported before the device is touched.
                let bad = Conv4Shape {
                    channels: 0,
                    ..shape
                };
                assert!(matches!(FewshotGpu::new(&dev, bad), Err(GpuError::Data(_))));
            }
            Err(e) => assert!(!e.to_string().contains('\n')),
        }
    }
}
